"""The benchmarks' standard clips, generated from real photos (:mod:`camvideo.testing.synth`) and
cached: ``bench_speed.py`` and ``bench_encoder.py`` use them."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import av

from camvideo.testing import synth

CACHE = Path(tempfile.gettempdir()) / "camvideo-bench"
SEGMENTS = [("pan", "chelsea", "coffee"), ("zoom", "coffee", None),
            ("pan", "motorcycle", "china"), ("zoom", "china", None),
            ("pan", "rocket", "flower"), ("zoom", "flower", None)]


def standard_clip(path: Path, size=(1280, 720), fps=30, seconds=20.0,
                  preset="veryfast") -> Path:
    """Pans and zooms over real photos, cycling :data:`SEGMENTS` (cached)."""
    if path.exists():
        return path
    n = int(round(seconds * fps))
    per = max(1, n // len(SEGMENTS))
    seqs = []
    for kind, photo, bg in SEGMENTS:
        if kind == "pan":
            seqs.append(synth.pan_frames(photo, size, per, scale=0.7, background=bg)[0])
        else:
            seqs.append(synth.zoom_frames(photo, size, per, zoom=(1.0, 1.5))[0])

    def frames():
        for i in range(n):
            k = min(i // per, len(seqs) - 1)
            yield seqs[k][min(i - k * per, len(seqs[k]) - 1)]

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    synth.write_clip(tmp, frames(), fps=fps, preset=preset, crf=20)
    os.replace(tmp, path)
    return path


def repeat_clip(src: Path, dst: Path, times: int) -> Path:
    """``src`` repeated ``times`` times by stream copy (packets with shifted timestamps)."""
    if dst.exists():
        return dst
    tmp = dst.with_name(dst.stem + ".tmp" + dst.suffix)
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        ins = inp.streams.video[0]
        outs = out.add_stream_from_template(ins)
        packets = [p for p in inp.demux(ins) if p.dts is not None]
        span = max(p.pts + (p.duration or 1) for p in packets) - min(p.pts for p in packets)
        for k in range(times):
            for p in packets:
                q = av.Packet(bytes(p))
                q.pts, q.dts = p.pts + k * span, p.dts + k * span
                q.duration, q.is_keyframe, q.time_base = p.duration, p.is_keyframe, p.time_base
                q.stream = outs
                out.mux(q)
    os.replace(tmp, dst)
    return dst
