"""Before/after speed: ``bench_speed.py`` of two checkouts, in alternating rounds.

A change that should cost nothing (a refactor, a new layer between the loop and its
sinks) is checked by running each checkout's own ``bench_speed.py`` in turn on the same
clip, ``--rounds`` times, before, after, before, after..., so that load and thermal
drift fall on both alike; the table gives each stage's median fps and CPU ms per frame
on both sides and after ÷ before.

    python benchmarks/bench_ab.py --before ../base --rounds 3 [-- bench_speed options]

``--before`` is a checkout (``git worktree add ../base <commit>``); "after" is this one.
Each side runs with its own checkout first on ``PYTHONPATH``. Default bench_speed
options: ``--no-loops --no-rss --repeat 1``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def one(checkout: Path, extra: list[str], out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout))
    cmd = [sys.executable, str(checkout / "benchmarks" / "bench_speed.py"), "--json",
           str(out), *extra]
    subprocess.run(cmd, cwd=checkout, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["median"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", type=Path, required=True, help="checkout to compare with")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, help="write every round's medians here")
    p.add_argument("extra", nargs="*", help="bench_speed.py options (after --)")
    args = p.parse_args(argv)
    extra = args.extra or ["--no-loops", "--no-rss", "--repeat", "1"]
    sides = {"before": args.before.resolve(), "after": HERE}
    res: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            for name, checkout in sides.items():
                r = one(checkout, extra, Path(tmp) / f"{name}{k}.json")
                res[name].append(r)
                print(f"round {k + 1} {name}: pipeline {r['pipeline']:.1f} fps, "
                      f"model+CAM {r['model_cam']:.1f} fps", flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    keys = [k for k in res["after"][0] if k in res["before"][0] and not k.endswith("_cpu")]
    print(f"\n{args.rounds} alternating rounds, medians (fps, or the ratios bench_speed "
          "reports; CPU ms/frame):")
    print(f"| stage | before | after | after ÷ before | per-round ratios |")
    print("|---|---:|---:|---:|---|")
    for key in keys:
        b = [r[key] for r in res["before"]]
        a = [r[key] for r in res["after"]]
        rounds = ", ".join(f"{x / y:.2f}" for x, y in zip(a, b))
        cpu = ""
        if (not key.startswith(("time_vs", "vs_")) and key + "_cpu" in res["after"][0]
                and key + "_cpu" in res["before"][0]):
            cb = statistics.median(r[key + "_cpu"] for r in res["before"]) * 1000
            ca = statistics.median(r[key + "_cpu"] for r in res["after"]) * 1000
            cpu = f" ({cb:.1f} → {ca:.1f} ms)"
        print(f"| {key}{cpu} | {statistics.median(b):.3g} | {statistics.median(a):.3g} | "
              f"{statistics.median(a) / statistics.median(b):.2f} | {rounds} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
