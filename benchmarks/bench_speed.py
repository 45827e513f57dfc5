"""Speed benchmark: camvideo's pipeline against its own stages and against the frame-by-frame
loops people write today (torchcam CAM, pytorch-grad-cam GradCAM, OpenCV I/O).

Everything is measured in one run on the same clip, so the ratios hold even on a busy
machine; ``--repeat N`` repeats the whole set and reports medians.

Measured (frames per second):

- ``decode``: PyAV decoding to arrays as the pipeline's reader does: I420
  (:mod:`camvideo.pixels`), on the CPU and for the GPU alike.
- ``transcode``: decode + encode with the pipeline's default encoder settings (libx264,
  CRF 20, superfast with mb-tree: :func:`camvideo.media.encoding.encoder_options`), serially in
  one thread (x264 runs its own frame threads): the I/O stages' cost per frame.
- ``model+CAM``: resize/normalise + forward + CAM maps at the pipeline's batch size and
  concurrency (two batches at once on the CPU; the backbone traced and fused as the
  pipeline runs it, :mod:`camvideo.model.trace`), on frames already decoded (``engine``:
  plus smoothing, colouring, blending and labels, in stream order).
- ``pipeline``: ``camvideo.annotate`` in this process with defaults, the model already
  loaded, and ``pipeline --stride 3``; unless ``--no-rss``, also ``python -m camvideo IN
  OUT`` as a child process (its own fps line: start-up and model loading are left
  out, tracing the backbone on the first batch, ~0.6 s, is in) with its peak RSS.
- ``torchcam loop`` / ``grad-cam loop`` (``benchmarks/loops.py``): the same weights (timm
  ``tf_efficientnet_lite0``) and input size, a ``cv2.VideoCapture`` → model → map →
  ``cv2.applyColorMap`` + ``addWeighted`` + label → ``cv2.VideoWriter`` (mp4v) loop,
  torch's default threads, on the first ``--loop-frames`` frames.

On a GPU the clip is the standard clip five times over (3000 frames: 600 are ~2 s
there). The standard clip is 720p30, 20 s, made by :mod:`camvideo.testing.synth` from real photos (pans
and zooms), cached in ``--cache``. ``--memory`` instead compares the pipeline's peak RSS
on a 10-minute 720p clip (the standard clip repeated by stream copy) with a 10-second one.

Usage::

    python benchmarks/bench_speed.py [--clip FILE] [--repeat 3] [--json out.json]
    python benchmarks/bench_speed.py --memory [--minutes 10]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import torch  # noqa: E402

from camvideo import api  # noqa: E402
from camvideo.runtime.engine import build_engine  # noqa: E402
from camvideo.cam import cam_maps  # noqa: E402
from camvideo.media.files import FileSource  # noqa: E402
from camvideo.media.frames import Frame  # noqa: E402
from camvideo.media.sink import FileSink  # noqa: E402
from camvideo.model.device import cpu_count, default_batch_size, resolve_device  # noqa: E402
from camvideo.model.registry import load_model  # noqa: E402
from camvideo.options import DEFAULT_MODEL, Options  # noqa: E402
from clips import CACHE, repeat_clip, standard_clip  # noqa: E402  (benchmarks/clips.py)
from loops import bench_gradcam, bench_torchcam  # noqa: E402  (benchmarks/loops.py)



# ---------------------------------------------------------------------------------------
# measurements


def _timed(fn) -> tuple[float, float, object]:
    """``(wall s, process CPU s, result)`` of ``fn()`` (CPU time over all threads)."""
    w, c = time.perf_counter(), time.process_time()
    r = fn()
    return time.perf_counter() - w, time.process_time() - c, r


def bench_decode(path: Path, i420: bool) -> tuple[float, float]:
    wall, cpu, n = _timed(lambda: sum(1 for _ in FileSource(path, i420=i420)))
    return n / wall, cpu / n


def bench_transcode(path: Path, out: Path, i420: bool) -> tuple[float, float]:
    src = FileSource(path, i420=i420)
    frames = iter(src)
    first = next(frames)
    sink = FileSink(out, src.info, first.size[::-1])

    def work() -> int:
        sink.write(first.image, first.pts, first.time)
        n = 1
        for f in frames:
            sink.write(f.image, f.pts, f.time)
            n += 1
        sink.close()
        return n

    wall, cpu, n = _timed(work)
    src.close()
    return n / wall, cpu / n


def bench_pipeline(path: Path, out: Path, model, **options) -> tuple[float, float]:
    """The pipeline in this process (``camvideo.annotate``, model already loaded):
    (fps, CPU seconds per frame)."""
    wall, cpu, s = _timed(lambda: api.annotate(path, out, model=model, overwrite=True,
                                               audio=False, **options))
    return s.frames / s.seconds, cpu / s.frames


def held_frames(path: Path, k: int, i420: bool) -> list[Frame]:
    out = []
    for f in FileSource(path, i420=i420):
        out.append(f)
        if len(out) == k:
            break
    return out


def bench_engine(model, images: list[Frame], n: int, bs: int,
                 precision: str) -> tuple[float, float, float, float]:
    """(model+CAM fps, its CPU s/frame, engine fps, its CPU s/frame) on held frames.

    Both run as in the pipeline: ``engine.infer_workers`` batches at once (2 on the CPU),
    the engine's smoothing and rendering in stream order."""
    opts = Options(device=str(model.device), precision=precision)
    engine = build_engine(opts, model)
    frames = [Frame(i, images[i % len(images)].image, i, i / 30, images[i % len(images)].fmt)
              for i in range(n)]
    batches = [frames[i:i + bs] for i in range(0, n, bs)]
    w = model.weight.float()
    engine.process(frames[:bs])  # warm-up (kernels, oneDNN primitives), sets the size

    @torch.inference_mode()
    def model_cam(batch: list[Frame]) -> None:
        if engine.device.type == "cuda":
            x, _ = model.preprocess(engine._upload(batch), engine._size)
        else:
            x, _ = engine._preprocess_cpu(batch)
        feats, logits = engine._forward(x)
        cam_maps(feats, w, logits.argmax(1)).cpu()

    with ThreadPoolExecutor(engine.infer_workers) as pool:
        list(pool.map(model_cam, batches[:engine.infer_workers]))
        t, c = time.perf_counter(), time.process_time()
        list(pool.map(model_cam, batches))
        t_model, c_model = time.perf_counter() - t, time.process_time() - c
    engine = build_engine(opts, model)
    engine.process(frames[:bs])
    with ThreadPoolExecutor(engine.infer_workers) as pool:
        t, c = time.perf_counter(), time.process_time()
        for inferred in pool.map(engine.infer, batches):  # concurrent, results in order
            engine.finish(inferred)
        engine.flush()
        t_engine, c_engine = time.perf_counter() - t, time.process_time() - c
    return n / t_model, c_model / n, n / t_engine, c_engine / n


_FPS_LINE = re.compile(r": (\d+) frames in ([\d.]+) s")


def bench_cli(path: Path, out: Path, *args: str) -> tuple[float, float]:
    """Run ``python -m camvideo``; return (fps from its own log line, peak RSS MiB)."""
    cmd = [sys.executable, "-m", "camvideo", str(path), str(out), "-y", "-q", "-v",
           "--no-audio", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env=env, cwd=ROOT)
    err = proc.stderr.read().decode()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err}")
    m = _FPS_LINE.search(err)
    if m is None:
        raise RuntimeError(f"no fps line in:\n{err}")
    return int(m.group(1)) / float(m.group(2)), usage.ru_maxrss / 1024


# ---------------------------------------------------------------------------------------


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{name}, {cpu_count()} cores{gpu}"


def run_once(args, clip: Path, model, work: Path, with_rss: bool) -> dict:
    """One set of measurements: ``r[name] = fps`` and ``r[name + "_cpu"]`` = CPU
    seconds per frame (all threads; robust to other load on the machine)."""
    r: dict = {}
    bs = args.batch_size or default_batch_size(model.device)

    def put(name: str, result) -> None:
        r[name], r[name + "_cpu"] = result

    i420 = True  # what the pipeline decodes to on the CPU and the GPU (camvideo.pixels)
    put("decode", bench_decode(clip, i420))
    put("transcode", bench_transcode(clip, work / "transcode.mp4", i420))
    images = held_frames(clip, 48, i420)
    mc, mc_cpu, eng, eng_cpu = bench_engine(model, images, args.engine_frames, bs,
                                            args.precision)
    r.update(model_cam=mc, model_cam_cpu=mc_cpu, engine=eng, engine_cpu=eng_cpu)
    del images
    opts = dict(device=args.device, precision=args.precision, batch_size=args.batch_size)
    put("pipeline", bench_pipeline(clip, work / "pipe.mp4", model, **opts))
    put("stride3", bench_pipeline(clip, work / "pipe3.mp4", model, stride=3, **opts))
    if with_rss:  # the CLI as users run it, in a child process of its own
        extra = ["--device", args.device, "--precision", args.precision]
        if args.batch_size:
            extra += ["--batch-size", str(args.batch_size)]
        r["cli"], r["cli_rss"] = bench_cli(clip, work / "cli.mp4", *extra)
        r["cli_stride3"], r["cli_stride3_rss"] = bench_cli(clip, work / "cli3.mp4",
                                                           "--stride", "3", *extra)
    if not args.no_loops:
        torch.set_num_threads(cpu_count())  # the loops run with torch's defaults
        size = model.input_size(*_frame_hw(clip), args.size)
        put("torchcam", bench_torchcam(clip, work / "tc.mp4", args.loop_frames, size,
                                       model.labels))
        put("gradcam", bench_gradcam(clip, work / "gc.mp4", args.loop_frames, size,
                                     model.labels))
    return r


def _frame_hw(clip: Path) -> tuple[int, int]:
    s = FileSource(clip)
    s.close()
    return s.info.height, s.info.width


def derived(r: dict) -> dict:
    """Ratios. Per-frame costs: wall ``1 / fps``; "stage sum" = transcode (decode +
    encode) + engine (resize, network, CAM, smoothing, render, labels), each measured
    alone."""
    d = {}
    for suffix, cost in (("", lambda k: 1 / r[k]), ("_cpu", lambda k: r[k + "_cpu"])):
        stages = cost("transcode") + cost("engine")
        d["time_vs_stage_sum" + suffix] = cost("pipeline") / stages
    d["vs_slowest_stage"] = r["pipeline"] / min(r["transcode"], r["engine"])
    d["vs_transcode"] = r["pipeline"] / r["transcode"]
    d["vs_model_cam"] = r["pipeline"] / r["model_cam"]
    if "torchcam" in r:
        for loop in ("torchcam", "gradcam"):
            d[f"vs_{loop}"] = r["pipeline"] / r[loop]
            d[f"vs_{loop}_cpu"] = r[loop + "_cpu"] / r["pipeline_cpu"]
    return d


ROWS = [("decode (PyAV → I420)", "decode"), ("transcode (decode + x264, I420)", "transcode"),
        ("model+CAM (batch, no I/O)", "model_cam"),
        ("engine (model+CAM+smooth+render)", "engine"), ("pipeline", "pipeline"),
        ("pipeline --stride 3", "stride3"), ("torchcam CAM loop", "torchcam"),
        ("grad-cam GradCAM loop", "gradcam")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clip", type=Path, help="video to use (default: the standard clip)")
    p.add_argument("--cache", type=Path, default=CACHE, help=f"clip cache [{CACHE}]")
    p.add_argument("--repeat", type=int, default=1, help="repetitions; medians reported")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto")
    p.add_argument("--size", type=int, default=224, help="model input short side [224]")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--engine-frames", type=int, default=240,
                   help="frames for the model+CAM and engine measurements [240]")
    p.add_argument("--loop-frames", type=int, default=150,
                   help="frames each frame-by-frame loop runs on [150]")
    p.add_argument("--no-loops", action="store_true", help="skip the torchcam/grad-cam loops")
    p.add_argument("--no-rss", action="store_true", help="skip the CLI peak-RSS runs")
    p.add_argument("--memory", action="store_true",
                   help="peak RSS: a 10-minute 720p clip vs a 10-second one")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--memory-args", default="",
                   help="extra camvideo options for the --memory runs (e.g. '--stride 3')")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    print(f"machine: {machine()}; torch {torch.__version__}, PyAV {av.__version__}",
          flush=True)
    work = Path(tempfile.mkdtemp(prefix="camvideo-bench-"))
    try:
        return memory(args, work) if args.memory else speed(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def speed(args, work: Path) -> int:
    dev = resolve_device(args.device)
    clip = args.clip or standard_clip(args.cache / "std-720p30-20s.mp4")
    if args.clip is None and dev.type == "cuda":  # 600 frames are ~2 s on a GPU: 5x that
        clip = repeat_clip(clip, args.cache / "std-720p30-100s.mp4", 5)
    model = load_model(DEFAULT_MODEL, device=dev)
    runs = []
    for k in range(args.repeat):
        r = run_once(args, clip, model, work, with_rss=k == 0 and not args.no_rss)
        r.update(derived(r))
        runs.append(r)
        print(f"run {k + 1}: " + ", ".join(f"{key} {v:.3g}" for key, v in r.items()),
              flush=True)
    med = {key: statistics.median(r[key] for r in runs if key in r) for key in runs[0]}
    h, w = _frame_hw(clip)
    print(f"\nclip {clip} ({w}x{h}), {args.repeat} run(s), medians:")
    print(f"  {'stage':<36} {'fps':>7} {'CPU ms/frame':>13}")
    for name, key in ROWS:
        if key in med:
            print(f"  {name:<36} {med[key]:7.1f} {1000 * med[key + '_cpu']:13.1f}")
    print("  ratios (pipeline):")
    for key, v in med.items():
        if key.startswith(("time_vs", "vs_")):
            print(f"    {key:<34} {v:7.2f}")
    if "cli_rss" in med:
        print(f"  CLI: {med['cli']:.1f} fps, peak RSS {med['cli_rss']:.0f} MiB; --stride 3 "
              f"{med['cli_stride3']:.1f} fps, peak RSS {med['cli_stride3_rss']:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "clip": str(clip),
                                         "runs": runs, "median": med}, indent=1))
    return 0


def memory(args, work: Path) -> int:
    base = standard_clip(args.cache / "std-720p30-20s.mp4")
    short = args.cache / "mem-720p-10s.mp4"
    if not short.exists():
        standard_clip(short, seconds=10.0)
    times = max(1, int(round(args.minutes * 60 / 20)))
    long = repeat_clip(base, args.cache / f"mem-720p-{times * 20}s.mp4", times)
    extra = args.memory_args.split()
    results = {}
    for name, clip in (("10 s", short), (f"{times * 20 / 60:g} min", long)):
        t = time.monotonic()
        fps, rss = bench_cli(clip, work / "mem.mp4", *extra)
        results[name] = rss
        print(f"  {name:>8}: peak RSS {rss:7.0f} MiB ({fps:.1f} fps, "
              f"{time.monotonic() - t:.0f} s)", flush=True)
    a, b = results.values()
    print(f"  ratio long/short: {b / a:.3f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "rss_mib": results,
                                         "ratio": b / a, "args": extra}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
