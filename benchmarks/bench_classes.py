"""What several classes, tracked boxes and the timeline strip cost: ``camvideo.annotate``
fps on the standard 720p clip with the default options, ``--classes 3``, ``--timeline``
and ``--classes 3 --timeline``, in interleaved rounds (one model, loaded once; a warm-up
run first), medians and each setting's fps ratio to the default within a round.

    python benchmarks/bench_classes.py [--rounds 3] [--seconds 10]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

import torch

import camvideo
from camvideo.model.registry import load_model

from clips import CACHE, standard_clip

SETTINGS = {"default": {}, "--classes 3": {"classes": 3},
            "--timeline": {"timeline": 10.0},
            "--classes 3 --timeline": {"classes": 3, "timeline": 10.0}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    clip = standard_clip(CACHE / f"standard_720p_{args.seconds:g}s.mp4", seconds=args.seconds)
    model = load_model()
    fps: dict[str, list[float]] = {k: [] for k in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.mp4"
        camvideo.annotate(clip, out, model=model, overwrite=True)          # warm-up
        for r in range(args.rounds):
            for name, kw in SETTINGS.items():
                s = camvideo.annotate(clip, out, model=model, overwrite=True, **kw)
                fps[name].append(s.fps)
                print(f"round {r + 1}: {name}: {s.fps:.1f} fps", flush=True)
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"\n{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}; clip 1280x720, {args.seconds:g} s\n")
    print("| setting | fps (median) | runs | ratio to default (median of rounds) |")
    print("|---|---:|---|---:|")
    for name, v in fps.items():
        ratios = [a / b for a, b in zip(v, fps["default"])]
        print(f"| {name} | {statistics.median(v):.1f} | {', '.join(f'{x:.1f}' for x in v)} "
              f"| {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
