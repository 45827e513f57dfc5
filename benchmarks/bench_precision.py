"""The backbone in fp32 and bf16 on this CPU, each way camvideo can run it, and the batch
size sweep behind the CPU default (:func:`camvideo.model.device.default_batch_size`).

Default model, 224x384 input, one thread (the pipeline's per-pass setting on 2 cores),
medians of interleaved rounds in one process. A way that fails on this CPU says why
(on AVX2-only CPUs oneDNN has no bf16 convolutions: the fused and traced bf16 ways fail,
the plain one runs torch's reference kernels).

    python benchmarks/bench_precision.py [--rounds 5]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time
from contextlib import nullcontext

import torch

from camvideo.model.device import cpu_caps
from camvideo.model.registry import load_model
from camvideo.model.rewrite import fold_batchnorm, optimize_model
from camvideo.model.trace import TracedBackbone


def _ctx(dtype: torch.dtype | None):
    return torch.autocast("cpu", dtype=dtype) if dtype else nullcontext()


def precision_ways(rounds: int) -> None:
    base = load_model()
    x = torch.rand(4, 3, 224, 384).contiguous(memory_format=torch.channels_last)
    plain = copy.deepcopy(base.backbone).eval().to(memory_format=torch.channels_last)
    fused, _ = fold_batchnorm(base.backbone, x[:2], fuse=True)
    fused.to(memory_format=torch.channels_last)
    ways = {"plain (eager, unfolded)": lambda dt: plain,
            "folded + fused (eager)": lambda dt: fused,
            "traced (the pipeline's)": lambda dt: TracedBackbone(
                optimize_model(load_model()), dt)}
    times: dict[tuple[str, str], list[float]] = {}
    failed: dict[tuple[str, str], str] = {}
    nets = {}
    for name, make in ways.items():
        for label, dt in (("fp32", None), ("bf16", torch.bfloat16)):
            net = make(dt)
            try:
                with torch.inference_mode(), _ctx(dt):
                    net(x)
                    net(x)
                nets[(name, label)] = (net, dt)
            except RuntimeError as e:
                failed[(name, label)] = str(e).splitlines()[0][:100]
            if isinstance(net, TracedBackbone) and not failed.get((name, label)) \
                    and None in net._graphs.values():
                failed[(name, label)] = "tracing failed: the eager network ran"
    for _ in range(rounds):
        for key, (net, dt) in nets.items():
            if key in failed:
                continue
            with torch.inference_mode(), _ctx(dt):
                t = time.perf_counter()
                net(x)
                times.setdefault(key, []).append((time.perf_counter() - t) / x.shape[0])
    print(f"backbone on {cpu_caps().name}, 224x384, batch 4, 1 thread, ms per frame:")
    for name in ways:
        cells = []
        for label in ("fp32", "bf16"):
            key = (name, label)
            cells.append(f"{label} " + (f"fails ({failed[key]})" if key in failed else
                                        f"{statistics.median(times[key]) * 1e3:.1f}"))
        print(f"  {name}: " + "; ".join(cells))


def batch_sizes(rounds: int) -> None:
    dt = torch.bfloat16 if cpu_caps().native_bf16 else None
    tb = TracedBackbone(optimize_model(load_model()), dt)
    sizes = (1, 2, 4, 8)
    xs = {n: torch.rand(n, 3, 224, 384).contiguous(memory_format=torch.channels_last)
          for n in sizes}
    times: dict[int, list[float]] = {}
    with torch.inference_mode(), _ctx(dt):
        for n in sizes:
            tb._batch = 0  # each size its own graph, not padding
            tb(xs[n])
        for _ in range(rounds):
            for n in sizes:
                tb._batch = 0
                t = time.perf_counter()
                tb(xs[n])
                times.setdefault(n, []).append((time.perf_counter() - t) / n)
    label = "bf16" if dt else "fp32"
    print(f"traced backbone ({label}, the auto precision here), 1 thread, img/s by batch: "
          + ", ".join(f"{n}: {1 / statistics.median(times[n]):.1f}" for n in sizes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    precision_ways(args.rounds)
    batch_sizes(args.rounds)


if __name__ == "__main__":
    main()
