"""What ``camvideo batch`` (and ``camvideo IN OUT``) tell: decode warnings in the report
and the summary, the summary of an interrupted batch, and one line per result when
stderr is not a terminal (piped, scripted), unless ``-q``. The network is a tiny random
convolution (``use_tiny_model`` in-process; a prelude in the child process)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pytest

from camvideo.batch.jobs import BatchInterrupted
from camvideo.batch.runner import DONE, INTERRUPTED, PENDING, run_batch
from camvideo.commands.main import main
from camvideo.errors import ExitCode
from camvideo.testing import synth

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny(monkeypatch):
    """Batch jobs load their model through the registry: a tiny random one here."""
    from conftest import use_tiny_model

    model = use_tiny_model(monkeypatch)
    monkeypatch.setattr("camvideo.model.registry.load_model", lambda *a, **k: model)
    return model


def damaged(src: Path, dst: Path, broken: slice) -> Path:
    """A copy of ``src`` whose video packets ``broken`` have a garbage NAL length: the
    decoder refuses them, the container still counts them."""
    data = bytearray(src.read_bytes())
    with av.open(str(src)) as c:
        packets = [p for p in c.demux(video=0) if p.size]
    for p in packets[broken]:
        data[p.pos:p.pos + 4] = b"\xff\xff\xff\xff"
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    synth.make_clip("pan", root / "good.mp4", size=(160, 96), n=12, fps=24)
    whole = synth.make_clip("pan", tmp_path / "whole.mp4", size=(160, 96), n=24, fps=24)
    damaged(whole.path, root / "bad.mp4", slice(8, 14))  # 18 of 24 decodable
    return root


def test_decode_warnings_go_into_the_report_and_the_summary(tiny, tree, tmp_path, capsys):
    out, report = tmp_path / "out", tmp_path / "r.json"
    rc = main(["batch", str(tree), str(out), "--report", str(report), "-q", "--size", "64"])
    err = capsys.readouterr().err
    assert rc == ExitCode.OK, err
    rec = {Path(r["path"]).name: r for r in json.loads(report.read_text())["records"]}
    assert rec["good.mp4"]["status"] == DONE and rec["good.mp4"]["warnings"] == []
    assert rec["good.mp4"]["reason"] == ""
    bad = rec["bad.mp4"]
    assert bad["status"] == DONE and bad["frames"] == 18
    assert "18 of 24 frames decodable (truncated or damaged input?)" in bad["warnings"]
    assert "6 undecodable packets/frames skipped" in bad["warnings"]
    assert bad["reason"] == "; ".join(bad["warnings"])
    assert json.loads(report.read_text())["warned"] == 1
    assert "camvideo batch: 2 done (1 with warnings), 0 skipped, 0 failed" in err, err
    assert f"  warning: {tree / 'bad.mp4'}: " in err and "18 of 24 frames decodable" in err


def test_piped_batch_says_one_line_per_file_unless_quiet(tiny, tree, tmp_path, capsys):
    """capsys: stderr is not a terminal (no progress bars): a line per file instead."""
    rc = main(["batch", str(tree), str(tmp_path / "o1"), "--size", "64"])
    err = capsys.readouterr().err
    assert rc == ExitCode.OK, err
    lines = [ln for ln in err.splitlines() if ln.startswith("camvideo: done: ")]
    assert sorted(ln.split(" (")[0] for ln in lines) == \
        [f"camvideo: done: {tree / 'bad.mp4'}", f"camvideo: done: {tree / 'good.mp4'}"]
    good = next(ln for ln in lines if "good.mp4" in ln)
    assert "(12 frames, " in good and good.endswith("/2]")
    assert "18 of 24 frames decodable" in next(ln for ln in lines if "bad.mp4" in ln)
    assert err.splitlines()[-2].startswith("camvideo batch: 2 done")  # then the summary
    rc = main(["batch", str(tree), str(tmp_path / "o2"), "--size", "64", "-q"])
    err = capsys.readouterr().err
    assert rc == ExitCode.OK and "camvideo: done:" not in err
    assert "camvideo batch: 2 done (1 with warnings)" in err


def test_piped_run_says_its_result_unless_quiet(tiny, tmp_path, capsys):
    clip = synth.make_clip("pan", tmp_path / "in.mp4", size=(160, 96), n=12, fps=24)
    out = tmp_path / "out.mp4"
    assert main([str(clip.path), str(out), "--size", "64"]) == ExitCode.OK
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"camvideo: wrote {out}: 12 frames in ")
    assert main([str(clip.path), str(out), "--size", "64", "-y", "-q"]) == ExitCode.OK
    assert capsys.readouterr().err == ""


def test_stop_in_process_raises_with_the_summary(tiny, tree, tmp_path, monkeypatch):
    """Ctrl-C (a KeyboardInterrupt in the caller's thread) still cleans up and writes the
    report; the exception it becomes carries the summary."""
    import camvideo.batch.runner as runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_run_local", interrupted)
    with pytest.raises(BatchInterrupted) as info:
        run_batch(tree, tmp_path / "out", report=tmp_path / "r.json", size=64)
    s = info.value.summary
    assert isinstance(info.value, KeyboardInterrupt) and s.interrupted
    assert s.counts[INTERRUPTED] == 0 and s.counts[PENDING] == 2  # none had begun
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["stopped"] is True and (rep["interrupted"], rep["pending"]) == (0, 2)
    assert {r["status"] for r in rep["records"]} == {PENDING}


PRELUDE = (
    "import sys, time, torch\n"
    "import camvideo.model.registry as reg\n"
    "from camvideo.model.registry import from_modules\n"
    "torch.manual_seed(0)\n"
    "class Slow(torch.nn.Module):\n"
    "    def forward(self, x):\n"
    "        if torch.jit.is_tracing(): raise RuntimeError('no tracing')\n"
    "        time.sleep(0.05); return x\n"
    "m = from_modules(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 32, stride=32), Slow()),"
    " torch.nn.Linear(8, 5), labels=list('abcde'))\n"
    "reg.load_model = lambda *a, **k: m\n"
    "from camvideo.commands.main import main\n")


def test_interrupted_batch_prints_its_summary(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        synth.make_clip("pan", src / f"v{i}.mp4", size=(160, 96), n=30, fps=24)
    out = tmp_path / "out"
    code = PRELUDE + (f"sys.exit(main(['batch', {str(src)!r}, {str(out)!r}, '--jobs', '1',"
                      " '--size', '64']))\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not any(not p.name.startswith(".") for p in out.rglob("*.mp4")):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == ExitCode.INTERRUPTED, err
    lines = err.strip().splitlines()
    summary = next(ln for ln in lines if ln.startswith("camvideo batch: "))
    done = len([p for p in out.rglob("*.mp4") if not p.name.startswith(".")])
    # one file at a time: at most one was in progress; the others never began
    m = re.match(r"camvideo batch: (\d+) done, 0 skipped, 0 failed, (\d+) interrupted"
                 r"(?:, (\d+) not started)?; ", summary)
    assert m, err
    interrupted, pending = int(m[2]), int(m[3] or 0)
    assert int(m[1]) == done and interrupted <= 1 and done + interrupted + pending == 4, err
    assert pending >= 1 if done + interrupted < 4 else m[3] is None, err
    assert lines[-1] == "camvideo: interrupted; nothing was left half written"
    assert "Traceback" not in err
