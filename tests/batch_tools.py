"""Shared pieces of the ``camvideo batch`` tests (tests/test_batch.py, local, and
tests/test_batch_ray.py, the Ray backend): what the input trees hold (the trees
themselves are fixtures in conftest.py), the checks of outputs, and running the CLI in a
child process to interrupt it."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from camvideo.batch.runner import DONE
from camvideo.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
FAST = {"size": 64, "smooth": 0.0, "topk": 1}
GOOD = {"a.mp4": ("pan", 16), "sub/b.MOV": ("zoom", 12), "sub/deep/c.mkv": ("cuts", 18),
        "sub/deep/d.mp4": ("pan", 12)}
BAD = {"sub/trunc.mp4": "not a readable video", "empty.mp4": "empty",
       "notes.avi": "not a readable video"}


def frame_count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def partials(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if "partial" in p.name)


def by_rel(summary, in_dir: Path) -> dict[str, object]:
    return {Path(r.path).relative_to(in_dir).as_posix(): r for r in summary.records}


def check_done(rec, in_dir: Path, rel: str, sidecar: bool = False) -> None:
    """The output exists, decodes, and has as many frames as the input."""
    assert rec.status == DONE, rec
    out = Path(rec.output)
    assert out.is_file() and out.suffix == ".mp4"
    n = frame_count(in_dir / rel)
    assert frame_count(out) == n == rec.frames == GOOD[rel][1]
    if sidecar:
        lines = out.with_suffix(".jsonl").read_text().splitlines()
        assert [json.loads(x)["frame"] for x in lines] == list(range(n))


def popen_batch(args: list[str], cwd: Path = ROOT) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "camvideo", "batch", *args, "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=str(cwd))


def interrupt_after_first_output(proc: subprocess.Popen, out: Path, limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if any(not p.name.startswith(".") for p in out.rglob("*.mp4")):
            proc.send_signal(signal.SIGINT)
            return
        time.sleep(0.02)
    proc.kill()
    pytest.fail(f"no output within {limit} s: {proc.communicate()[1][-2000:]}")


def after_interrupt(proc, out: Path, report: Path) -> set[str]:
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, f"rc {proc.returncode}: {err[-3000:]}"
    assert "interrupted" in err and "Traceback" not in err, err[-3000:]
    assert partials(out) == []
    done = {p.relative_to(out).as_posix() for p in out.rglob("*.mp4")}
    assert 1 <= len(done) < 6
    for p in out.rglob("*.mp4"):  # every output there is complete
        assert frame_count(p) == 30
    rep = json.loads(report.read_text())
    assert rep["stopped"] is True and rep["done"] == len(done)
    assert rep["interrupted"] == sum(r["status"] == "interrupted" for r in rep["records"])
    return done
