"""Live latency benchmark: capture→annotated-frame latency and achieved fps of
``camvideo live`` with the default model, with and without ``--stride``.

The "camera" is a clip played at its own pace (``camvideo live CLIP --realtime``): a
reader thread releases each frame at its timestamp, exactly as a 30 fps webcam would, and
the latest-frame policy drops what the model cannot keep up with. Latency runs from the
moment a frame is released (decoded, "captured") to the moment its annotated version
reaches the outputs (after model, smoothing, colouring, labels; before encoding).

Clips (:mod:`camvideo.testing.synth`, real photos): 30 fps pans, 640x360 and 1280x720, cached in
``--cache``. Each configuration runs ``--seconds`` (default 10); the first second is left
out of the figures (warm-up).

Usage::

    python benchmarks/bench_live.py [--seconds 10] [--json out.json] [--readme]

``--readme`` replaces the "## Live latency" section of benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from camvideo.testing import synth  # noqa: E402
from camvideo.live.session import run_live  # noqa: E402
from camvideo.options import DEFAULT_MODEL
from camvideo.model.registry import load_model  # noqa: E402
from camvideo.model.device import cpu_count  # noqa: E402

SIZES = {"640x360": (640, 360), "1280x720": (1280, 720)}
STRIDES = (1, 3)
#: (clip, model input short side): the default 224, and 448 on 720p, where the network
#: alone cannot keep up with 30 fps and the latest-frame policy has to drop frames.
CONFIGS = (("640x360", 224), ("1280x720", 224), ("1280x720", 448))


def clip(cache: Path, name: str, size: tuple[int, int], seconds: float) -> Path:
    path = cache / f"live-{name}-{seconds:g}s.mp4"
    if not path.exists():
        synth.make_clip("pan", path, size=size, n=int(30 * seconds), fps=30,
                        photo="coffee")
    return path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def measure(path: Path, model, stride: int, size: int, seconds: float) -> dict:
    s = run_live(str(path), realtime=True, window="off", duration=seconds, model=model,
                 stride=stride, size=size, device="cpu")
    frames = [f for f in s.frames if f[1] >= 1.0]  # leave the first second out
    lat = np.array([f[2] for f in frames])
    times = [f[1] for f in frames]
    early = [f[2] for f in frames if f[1] < 3.0]
    late = [f[2] for f in frames if f[1] >= times[-1] - 2.0]
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    return {"stride": stride, "input": size, "shown": len(frames), "captured": s.captured,
            "dropped_pct": 100.0 * s.dropped / max(1, s.captured),
            "fps": (len(frames) - 1) / span, "network_fps": s.network_frames / s.seconds,
            "p50_ms": 1000 * float(np.percentile(lat, 50)),
            "p95_ms": 1000 * float(np.percentile(lat, 95)),
            "max_ms": 1000 * float(lat.max()),
            "drift_ms": 1000 * float(np.median(late) - np.median(early))}


def table(rows: list[dict]) -> str:
    out = ["| source | model input | stride | latency p50 | latency p95 | max | drift | "
           "shown fps | network fps | dropped |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['size']} 30 fps | {r['input']} px | {r['stride']} | "
                   f"{r['p50_ms']:.0f} ms | "
                   f"{r['p95_ms']:.0f} ms | {r['max_ms']:.0f} ms | "
                   f"{r['drift_ms']:+.0f} ms | {r['fps']:.1f} | "
                   f"{r['network_fps']:.1f} | {r['dropped_pct']:.0f}% |")
    return "\n".join(out)


def section(rows: list[dict], seconds: float, wall: float, load: tuple) -> str:
    machine = (f"{cpu_count()}-core CPU ({cpu_name()}), torch {torch.__version__}, "
               f"{platform.python_implementation()} {platform.python_version()};\n1-minute "
               f"load average {load[0]:.1f} at the start (other jobs were running if well "
               "above 0)")
    return f"""## Live latency

`python benchmarks/bench_live.py --readme`: `camvideo live CLIP --realtime` (the clip is
released frame by frame at its own pace, as a 30 fps camera would deliver it), default
model {DEFAULT_MODEL} (input short side 224 px unless said), batch size 1, causal
smoothing, no window; {seconds:g} s per row, the first second left out.
{machine}; {wall:.0f} s in all.

{table(rows)}

- latency: from the moment a frame is captured (decoded and released by the reader) to
  its annotated version reaching the outputs (window, preview, recording); drift: median
  latency of the last 2 s minus that of the first 2 s (a queue would make it grow by
  seconds); network fps: frames the network actually ran on, per second; dropped:
  captured frames that were never annotated because a newer one had arrived (the
  latest-frame policy).
- With `--stride 3` the network runs on every third frame; the frames between carry the
  last map moved with the image motion (optical flow), which is cheaper, so more frames
  are shown and fewer are dropped. Latency does not grow with time (drift): stale
  frames are dropped, never queued (`tests/test_live.py` checks this with a model made
  artificially slow). The 448 px rows are where the network alone is slower than the
  camera.
"""


def update_readme(text: str) -> None:
    readme = ROOT / "benchmarks" / "README.md"
    old = readme.read_text(encoding="utf-8") if readme.exists() else "# Benchmarks\n"
    pattern = re.compile(r"^## Live latency\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(old):
        new = pattern.sub(lambda m: text.rstrip() + "\n\n", old, count=1)
    else:
        new = old.rstrip() + "\n\n\n" + text
    readme.write_text(new.rstrip() + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "camvideo-bench")
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--readme", action="store_true")
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    t0, load0 = time.monotonic(), os.getloadavg()[0]
    model = load_model(DEFAULT_MODEL, device=torch.device("cpu"))
    rows = []
    for name, size in CONFIGS:
        if name not in args.sizes:
            continue
        path = clip(args.cache, name, SIZES[name], args.seconds + 2)
        run_live(str(path), realtime=True, window="off", duration=1.5, model=model,
                 size=size, device="cpu")  # warm-up (first-call costs), not counted
        for stride in STRIDES:
            r = measure(path, model, stride, size, args.seconds)
            r["size"] = name
            rows.append(r)
            print(table([r]).splitlines()[-1], flush=True)
    wall = time.monotonic() - t0
    load = (load0, os.getloadavg()[0])
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.readme:
        update_readme(section(rows, args.seconds, wall, load))
    return 0


if __name__ == "__main__":
    sys.exit(main())
