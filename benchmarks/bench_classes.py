"""What several classes, tracked boxes and the timeline strip cost, two ways:

1. ``camvideo.annotate`` fps on the standard 720p clip with the default options,
   ``--classes 3``, ``--timeline`` and ``--classes 3 --timeline``, in interleaved rounds
   (one model, loaded once; a warm-up run first): medians, and each setting's fps ratio to
   the default within a round. On a shared machine fps moves with the others' load.
2. The part that changes, alone: the engine's render stage (:meth:`CamEngine.finish`:
   smoothing, the choice of classes, boxes, tracks, colour, blend, legend, strip) on the
   same network results (computed once, 120 frames of the clip, I420 as the pipeline
   decodes them), as the process's CPU time per frame (``time.process_time``, all threads:
   little moved by other processes), interleaved rounds, medians.

    python benchmarks/bench_classes.py [--rounds 3] [--seconds 10] [--no-fps]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path

import time

import torch

import camvideo
from camvideo.media.files import FileSource
from camvideo.model.registry import load_model
from camvideo.options import Options
from camvideo.runtime.engine import build_engine

from clips import CACHE, standard_clip

SETTINGS = {"default": {}, "--classes 3": {"classes": 3},
            "--timeline": {"timeline": 10.0},
            "--classes 3 --timeline": {"classes": 3, "timeline": 10.0}}


def render_stage(clip: Path, model, rounds: int, frames: int = 120) -> dict[str, list[float]]:
    """CPU ms per frame of :meth:`CamEngine.finish` per setting (see the module's notes)."""
    with FileSource(str(clip), i420=True) as src:
        decoded = [f for _, f in zip(range(frames), src)]
    first = build_engine(Options(), model, infer_workers=1)
    batches = [first.infer(decoded[i:i + 4]) for i in range(0, len(decoded), 4)]
    ms: dict[str, list[float]] = {k: [] for k in SETTINGS}
    for _ in range(rounds):
        for name, kw in SETTINGS.items():
            engine = build_engine(Options(**kw), model, infer_workers=1)
            t = time.process_time()
            n = sum(len(engine.finish(b)) for b in batches)
            n += len(engine.finish(engine.infer_flush()))
            ms[name].append((time.process_time() - t) * 1000 / n)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--no-fps", action="store_true", help="only the render stage")
    args = ap.parse_args()
    clip = standard_clip(CACHE / f"standard_720p_{args.seconds:g}s.mp4", seconds=args.seconds)
    model = load_model()
    stage = render_stage(clip, model, args.rounds)
    print("| setting | render stage, CPU ms/frame (median) | runs | minus default |")
    print("|---|---:|---|---:|")
    for name, v in stage.items():
        print(f"| {name} | {statistics.median(v):.2f} | {', '.join(f'{x:.2f}' for x in v)} "
              f"| {statistics.median(v) - statistics.median(stage['default']):+.2f} |",
              flush=True)
    if args.no_fps:
        return
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
