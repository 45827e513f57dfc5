"""How the backbone runs on the CPU: eager, traced per batch, traced frame by frame.

Two measurements, interleaved rounds in one process (medians printed):

1. The backbone alone (default model, 224x384 input, one thread, ``--precision``): ms per
   frame at batch sizes 1, 2 and 4, eager, traced as a whole batch (camvideo's file path)
   and frame by frame through the batch-1 graph (``--stride`` key frames, live batches).
2. The engine stage (resize, network, carry, smoothing, render; no decode or encode) with
   ``--stride 3`` on the first 240 frames of the standard 720p clip, eager against traced
   frame by frame (the graph traced before the timed rounds).

    python benchmarks/bench_trace.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from camvideo.options import Options
from camvideo.runtime.engine import build_engine
from camvideo import api
from camvideo.model.device import resolve_precision
from camvideo.media.files import FileSource
from camvideo.model.registry import load_model
from camvideo.model.rewrite import optimize_model
from camvideo.model.trace import TracedBackbone

from clips import CACHE, standard_clip


def backbone(rounds: int, precision: str) -> None:
    torch.set_num_threads(1)
    dtype = resolve_precision(precision, torch.device("cpu"))
    model = optimize_model(load_model())
    traced = TracedBackbone(model, dtype)
    xs = {n: torch.rand(n, 3, 224, 384).contiguous(memory_format=torch.channels_last)
          for n in (1, 2, 4)}
    ways = {"eager": model.backbone, "traced, whole batch": traced,
            "traced, frame by frame": traced.per_frame}
    ctx = (lambda: torch.autocast("cpu", dtype=dtype)) if dtype else \
        (lambda: torch.autocast("cpu", enabled=False))
    times: dict[tuple[str, int], list[float]] = {}
    with torch.inference_mode(), ctx():
        for n in (4, 2, 1):  # whole-batch graphs per size (a smaller batch alone is padded)
            traced._batch = 0
            traced(xs[n])
            traced.per_frame(xs[n])
        for _ in range(rounds):
            for n, (name, run) in itertools.product((1, 2, 4), ways.items()):
                traced._batch = 0  # time each batch size's own graph, not padding
                t = time.perf_counter()
                for _ in range(4):
                    run(xs[n])
                times.setdefault((name, n), []).append((time.perf_counter() - t) / 4 / n)
    print(f"backbone, ms per frame (1 thread, {precision}):")
    for n in (1, 2, 4):
        print(f"  batch {n}: " + ", ".join(
            f"{name} {statistics.median(times[(name, n)]) * 1e3:.1f}" for name in ways))


def engine(rounds: int) -> None:
    clip = standard_clip(CACHE / "std-720p30-20s.mp4")
    with FileSource(clip, i420=True) as src:
        frames = list(itertools.islice(src, 240))
    model = load_model()
    build_engine(Options(stride=3), model).process(frames[:4])  # trace once
    times: dict[bool, list[float]] = {}
    for _ in range(rounds):
        for trace in (False, True):
            eng = build_engine(Options(stride=3), model, trace=trace)
            t = time.perf_counter()
            done = sum(len(eng.finish(eng.infer(frames[i:i + 4])))
                       for i in range(0, len(frames), 4)) + len(eng.flush())
            times.setdefault(trace, []).append(time.perf_counter() - t)
            assert done == len(frames)
    eager, traced = (statistics.median(times[k]) for k in (False, True))
    print(f"engine --stride 3, 720p, {len(frames)} frames: eager {len(frames) / eager:.1f} "
          f"fps, traced frame by frame {len(frames) / traced:.1f} fps "
          f"(x{eager / traced:.2f})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--precision", default="auto")
    args = ap.parse_args()
    backbone(args.rounds, args.precision)
    engine(args.rounds)


if __name__ == "__main__":
    main()
