"""What fine maps (``--fine-maps``, output stride 16) cost: the network alone and the whole
``camvideo IN OUT`` job, coarse and fine in alternating rounds of one run (load and
drift fall on both alike); the table gives medians and fine / coarse.

    python benchmarks/bench_finemaps.py [--rounds 3] [--readme]

Network: the default model's ``forward`` (backbone + head) on a batch of 8 frames at
224x384 (a 16:9 frame's input), eager, torch on one thread, after a warm-up. Job:
:func:`camvideo.annotate` on ``samples/cat_and_mug.mp4`` with the default options (the
engine's rewrites, tracing and threads), model loaded beforehand, cache off.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CAMVIDEO_CACHE", "off")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import camvideo  # noqa: E402
from camvideo.model.registry import load_model  # noqa: E402
from quality import machine, write_readme  # noqa: E402

HEADING = "## Fine maps: cost"
SAMPLE = ROOT / "samples" / "cat_and_mug.mp4"


@torch.inference_mode()
def network_ms(model, x: torch.Tensor, n: int = 5) -> float:
    """Median ms per frame of ``model(x)``, torch on one thread (the job sets its own)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model(x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    torch.set_num_threads(threads)
    return 1000 * statistics.median(times) / len(x)


def job_fps(model, out: Path) -> float:
    t0 = time.perf_counter()
    s = camvideo.annotate(SAMPLE, out, model=model, overwrite=True)
    return s.frames / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--readme", action="store_true", help="write the table into "
                    "benchmarks/README.md (its own section)")
    args = ap.parse_args(argv)
    load = os.getloadavg()[0]
    torch.manual_seed(0)
    x = torch.randn(8, 3, 224, 384).contiguous(memory_format=torch.channels_last)
    res: dict[str, dict[str, list[float]]] = {k: {"net": [], "job": []}
                                              for k in ("coarse", "fine")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for kind in ("coarse", "fine"):
                # a fresh model each time: the job's engine rewrites the network in place
                res[kind]["net"].append(network_ms(load_model(fine=kind == "fine"), x))
                res[kind]["job"].append(job_fps(load_model(fine=kind == "fine"),
                                                Path(tmp) / f"{kind}.mp4"))
                print(r, kind, {k: round(v[-1], 2) for k, v in res[kind].items()},
                      flush=True)
    med = {k: {m: statistics.median(v) for m, v in d.items()} for k, d in res.items()}
    c, f = med["coarse"], med["fine"]
    text = (f"{HEADING}\n\n`python benchmarks/bench_finemaps.py --rounds {args.rounds} "
            f"--readme`: {machine()}, AVX2 only, KVM, 1-minute load average {load:.1f} at "
            f"the start, torch {torch.__version__}; medians of {args.rounds} alternating "
            "rounds.\n\n"
            "| | coarse (7x12 maps) | `--fine-maps` (14x24) | fine / coarse |\n"
            "|---|---:|---:|---:|\n"
            f"| network alone, eager, 1 thread, batch 8 at 224x384 (ms/frame) | {c['net']:.1f} | "
            f"{f['net']:.1f} | {f['net'] / c['net']:.2f}x |\n"
            f"| whole job, `samples/cat_and_mug.mp4` (fps) | {c['job']:.1f} | "
            f"{f['job']:.1f} | {f['job'] / c['job']:.2f}x |\n")
    print(text)
    if args.readme:
        write_readme(text, HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
