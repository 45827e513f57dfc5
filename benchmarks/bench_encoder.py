"""Encoder settings for the pipeline's output: CPU per frame, file size and quality.

x264 is the largest single cost of ``camvideo IN OUT`` on a CPU (more than the network
with the ``veryfast`` preset), and heatmap overlays cost more bits than the source clip.
This measures, on camvideo's own rendered output of the standard clip (held in memory as
lossless YUV 4:2:0, so decoding is not counted):

- CPU ms per frame of the encoder (all its threads, process CPU time);
- the file size;
- luma PSNR against the lossless frames.

Each setting is ``PRESET;CRF[;x264-params]``; ``default`` is what camvideo uses
(:func:`camvideo.media.files.encoder_options` with no preset given). Settings are run in turn,
``--repeat`` times (medians), so noise from other load hits them alike.

Usage::

    python benchmarks/bench_encoder.py [--frames 240] [--repeat 3] [SETTING ...]
"""
from __future__ import annotations

import argparse
import io
import resource
import statistics
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from camvideo.media.encoding import (DEFAULT_PRESET, DEFAULT_X264_PARAMS,  # noqa: E402
                                     encoder_options)

SETTINGS = ["default", "veryfast;20", "superfast;20", "ultrafast;20", "faster;20",
            "superfast;22", "veryfast;20;me=dia:partitions=i8x8,i4x4"]


def reference(clip: Path, out: Path) -> Path:
    """camvideo's output of ``clip``, losslessly encoded (x264 CRF 0), cached."""
    if not out.exists():
        tmp = out.with_name("tmp-" + out.name)
        subprocess.run([sys.executable, "-m", "camvideo", str(clip), str(tmp), "-y", "-q",
                        "--no-audio", "--crf", "0", "--preset", "ultrafast"],
                       check=True, cwd=ROOT)
        tmp.replace(out)
    return out


def load_frames(path: Path, n: int) -> list[np.ndarray]:
    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(f.to_ndarray(format="yuv420p"))
            if len(out) == n:
                break
    return out


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def options(setting: str) -> dict[str, str]:
    if setting == "default":
        return encoder_options("libx264", 20)
    preset, crf, *params = setting.split(";")
    return encoder_options("libx264", int(crf), preset, params[0] if params else "")


def encode(frames: list[np.ndarray], opts: dict[str, str], fps: int = 30
           ) -> tuple[float, bytes]:
    """(encoder CPU seconds per frame, the MP4 file's bytes)."""
    h, w = frames[0].shape[0] * 2 // 3, frames[0].shape[1]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.time_base = s.codec_context.time_base = Fraction(1, fps)
        s.codec_context.thread_type = "FRAME"   # as camvideo's FileSink
        s.codec_context.options = opts
        vframes = [av.VideoFrame.from_ndarray(a, format="yuv420p") for a in frames]
        for i, f in enumerate(vframes):
            f.pts = i
        c0 = _cpu()
        for f in vframes:
            out.mux(s.encode(f))
        out.mux(s.encode())
        cpu = _cpu() - c0
    return cpu / len(frames), buf.getvalue()


def psnr_y(data: bytes, ref: list[np.ndarray]) -> float:
    h = ref[0].shape[0] * 2 // 3
    mse = []
    with av.open(io.BytesIO(data)) as c:
        for a, f in zip(ref, c.decode(video=0)):
            b = f.to_ndarray(format="yuv420p")
            mse.append(np.mean((a[:h].astype(np.float32) - b[:h]) ** 2))
    if len(mse) != len(ref):
        raise RuntimeError(f"decoded {len(mse)} of {len(ref)} frames")
    return float(10 * np.log10(255.0 ** 2 / np.mean(mse)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("settings", nargs="*", default=SETTINGS,
                   help="PRESET;CRF[;x264-params] or 'default' [a built-in list]")
    p.add_argument("--clip", type=Path, help="source clip (default: the standard clip)")
    p.add_argument("--frames", type=int, default=240)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    cache = Path(tempfile.gettempdir()) / "camvideo-bench"
    if args.clip is None:
        from clips import standard_clip
        args.clip = standard_clip(cache / "std-720p30-20s.mp4")
    ref = load_frames(reference(args.clip, cache / f"ref-{args.clip.stem}.mkv"),
                      args.frames)
    print(f"{len(ref)} frames of camvideo's output of {args.clip.name}; default = "
          f"{DEFAULT_PRESET} + {DEFAULT_X264_PARAMS}", flush=True)
    cpu: dict[str, list[float]] = {s: [] for s in args.settings}
    result: dict[str, tuple[int, float]] = {}
    for _ in range(args.repeat):
        for s in args.settings:
            c, data = encode(ref, options(s))
            cpu[s].append(c)
            if s not in result:
                result[s] = (len(data), psnr_y(data, ref))
    base = statistics.median(cpu.get("veryfast;20") or [float("nan")])
    base_size = result.get("veryfast;20", (float("nan"),))[0]
    print(f"{'setting':44s} {'CPU ms/f':>8s} {'vs vf':>6s} {'MB':>6s} {'vs vf':>6s} "
          f"{'PSNR-Y':>7s}")
    for s in args.settings:
        c = statistics.median(cpu[s])
        size, q = result[s]
        print(f"{s:44s} {1000 * c:8.1f} {c / base:6.2f} {size / 1e6:6.2f} "
              f"{size / base_size:6.2f} {q:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
