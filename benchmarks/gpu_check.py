"""The GPU check (run it through ``benchmarks/gpu_check.sh``, which installs first): on a
machine with a CUDA GPU, ``tests/test_cuda.py`` and the GPU speed figures, printed as one
table; on one without, one line saying so and exit code 2.

Figures (one 720p30 clip, the standard pans and zooms over real photos, 300 frames,
generated once into the clip cache; default model, ``--device cuda``, automatic
precision (fp16) and batch size (32)):

- ``transcode``: decode + encode with the pipeline's encoder settings, frames decoded as
  I420 (YUV 4:2:0), as the pipeline decodes when it keeps frames in YUV: the I/O cost
  alone. The encoder is the pipeline's default (libx264 on every core: data-centre GPUs
  such as the H100/H200 have no NVENC) unless ``--codec`` says otherwise;
- ``model+CAM``: resize/normalise, forward pass and maps on frames already decoded,
  batches as the pipeline makes them (``bench_speed.bench_engine``);
- ``engine``: model+CAM plus smoothing, colouring, blending and labels;
- ``pipeline``: ``camvideo.annotate`` in this process, model loaded (decode, device,
  render, encode overlapped); then its ratio to ``transcode`` (the goal of issue 19:
  >= 0.8) and to ``model+CAM``.

Exit code: 0 when the tests passed and every figure was measured, 1 when a test failed
or a figure could not be measured (the table says which), 2 without a GPU.

    python benchmarks/gpu_check.py [--frames 300] [--codec h264_nvenc] [--skip-tests]
"""
from __future__ import annotations

import argparse
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def gpu_or_reason() -> tuple[bool, str]:
    """(True, GPU name) or (False, why there is none)."""
    try:
        import torch
    except ImportError as e:
        return False, f"torch cannot be imported ({e})"
    if not torch.backends.cuda.is_built():
        return False, f"this torch ({torch.__version__}) is built without CUDA"
    if not torch.cuda.is_available():
        return False, (f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no "
                       "usable CUDA GPU (no device, CUDA_VISIBLE_DEVICES empty, or a "
                       "driver too old for this build)")
    return True, torch.cuda.get_device_name(0)


def run_tests() -> tuple[str, bool]:
    """``tests/test_cuda.py``: (pytest's summary line, passed)."""
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                          "tests/test_cuda.py"], cwd=ROOT, capture_output=True, text=True,
                         timeout=240)
    lines = [ln for ln in res.stdout.splitlines() if re.search(r"\d+ (passed|failed|error)",
                                                               ln)]
    if res.returncode != 0:
        sys.stderr.write(res.stdout[-4000:] + res.stderr[-2000:])
    return (lines[-1].strip("= ") if lines else f"pytest exit {res.returncode}"), \
        res.returncode == 0


def encoder_used(path: Path) -> str:
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.name + (f" ({s.metadata.get('encoder')})"
                                       if s.metadata.get("encoder") else "")


def figures(frames: int, codec: str | None, work: Path) -> dict[str, object]:
    import torch
    from bench_speed import bench_engine, bench_pipeline, bench_transcode, held_frames
    from clips import CACHE, standard_clip

    from camvideo.media.files import FileSource
    from camvideo.model.device import default_batch_size
    from camvideo.model.registry import load_model

    clip = standard_clip(CACHE / f"std-720p30-{frames}f.mp4", seconds=frames / 30)
    dev = torch.device("cuda")
    model = load_model(device=dev)
    r: dict[str, object] = {"clip": f"{clip.name}, 1280x720, {frames} frames"}
    opts = {"codec": codec} if codec else {}
    r["transcode"], _ = bench_transcode(clip, work / "t.mp4", i420=True)
    images = held_frames(clip, 48, False)
    bs = default_batch_size(dev)
    mc, _, eng, _ = bench_engine(model, images, min(frames, 480), bs, "auto")
    r["model_cam"], r["engine"] = mc, eng
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    r["pipeline"], _ = bench_pipeline(clip, work / "p.mp4", model, device="cuda", **opts)
    r["pipeline_wall"] = time.perf_counter() - t
    r["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    r["encoder"] = encoder_used(work / "p.mp4")
    n = sum(1 for _ in FileSource(work / "p.mp4"))
    r["frames_out"] = n
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300, help="720p frames [300]")
    ap.add_argument("--codec", help="encoder for the pipeline (default: camvideo's)")
    ap.add_argument("--skip-tests", action="store_true")
    args = ap.parse_args(argv)
    ok, what = gpu_or_reason()
    if not ok:
        print(f"gpu_check: no GPU: {what}; nothing was measured", flush=True)
        return 2
    import av
    import torch

    t0 = time.monotonic()
    rows: list[tuple[str, str]] = [
        ("machine", f"{what}, {platform.processor() or platform.machine()}, "
                    f"{__import__('os').cpu_count()} CPUs"),
        ("software", f"torch {torch.__version__} (CUDA {torch.version.cuda}), "
                     f"PyAV {av.__version__}, Python {platform.python_version()}")]
    passed = True
    if not args.skip_tests:
        summary, passed = run_tests()
        rows.append(("tests/test_cuda.py", summary))
    with tempfile.TemporaryDirectory(prefix="camvideo-gpu-") as tmp:
        try:
            r = figures(args.frames, args.codec, Path(tmp))
        except Exception as e:  # noqa: BLE001 - reported in the table
            rows.append(("figures", f"FAILED: {type(e).__name__}: {str(e)[:300]}"))
            r = None
    if r is not None:
        rows += [("clip", str(r["clip"])),
                 ("transcode (I420 decode + encode), fps", f"{r['transcode']:.1f}"),
                 ("model+CAM (fp16, batch 32), fps", f"{r['model_cam']:.1f}"),
                 ("engine (+ smoothing, render), fps", f"{r['engine']:.1f}"),
                 ("pipeline (camvideo.annotate), fps", f"{r['pipeline']:.1f}"),
                 ("pipeline / transcode (goal >= 0.8)", f"{r['pipeline'] / r['transcode']:.2f}"),
                 ("pipeline / model+CAM", f"{r['pipeline'] / r['model_cam']:.2f}"),
                 ("encoder used by the pipeline", str(r["encoder"])),
                 ("frames written", str(r["frames_out"])),
                 ("peak GPU memory (pipeline), MiB", f"{r['peak_gpu_mib']:.0f}")]
    rows.append(("gpu_check time, s", f"{time.monotonic() - t0:.0f}"))
    width = max(len(k) for k, _ in rows)
    print("\n| " + "measure".ljust(width) + " | value |")
    print("|" + "-" * (width + 2) + "|---|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")
    return 0 if passed and r is not None else 1


if __name__ == "__main__":
    sys.exit(main())
