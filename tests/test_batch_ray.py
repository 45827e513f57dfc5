"""``camvideo batch --ray``: the Ray backend on a small local instance gives the same
records as the local backend, and survives Ctrl-C mid-batch, then resumes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from batch_tools import (BAD, FAST, GOOD, after_interrupt, by_rel, check_done, frame_count,
                         interrupt_after_first_output, partials, popen_batch)
from camvideo.batch.runner import DONE, FAILED, SKIPPED, run_batch
from camvideo.errors import ExitCode


@pytest.fixture(scope="module")
def ray_local():
    """A small local Ray instance for this module (2 CPUs)."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install "
                                            "'camvideo[ray]'; part of the test extra)")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_ray_same_records_as_local(ray_local, tree, tmp_path):
    out, report = tmp_path / "out", tmp_path / "r.json"
    s = run_batch(tree, out, ray=True, json=True, report=report, **FAST)
    recs = by_rel(s, tree)
    for rel in GOOD:
        check_done(recs[rel], tree, rel, sidecar=True)
    for rel, words in BAD.items():
        assert recs[rel].status == FAILED and words in recs[rel].reason
    assert recs["link.mp4"].status == SKIPPED
    assert s.exit_code == ExitCode.PARTIAL and partials(out) == []
    assert json.loads(report.read_text())["failed"] == 3
    s2 = run_batch(tree, out, ray=True, json=True, **FAST)
    assert s2.counts[SKIPPED] == 5 and s2.counts[DONE] == 0


def test_ray_relative_folders_from_another_directory(ray_local, tree, tmp_path):
    """The cluster's workers do not run in the CLI's directory: relative IN_DIR and
    OUT_DIR (and --weights/--labels) are made absolute before the tasks go out."""
    address = ray_local.get_runtime_context().gcs_address
    assert tree == tmp_path / "in"
    proc = popen_batch(["in", "out", "--ray", address, "--size", "128"], cwd=tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == ExitCode.PARTIAL, err  # the tree's bad files fail
    for rel, (_, n) in GOOD.items():
        assert frame_count(tmp_path / "out" / Path(rel).with_suffix(".mp4")) == n, err


def test_ray_connection_failure_is_one_line(tree, tmp_path, capsys, monkeypatch):
    ray = pytest.importorskip("ray")

    def refuse(*a, **k):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    from camvideo.commands.main import main
    rc = main(["batch", str(tree), str(tmp_path / "out"), "--ray", "auto", "-q"])
    err = capsys.readouterr().err
    assert rc == ExitCode.USAGE and err.count("\n") == 1, err
    assert err.startswith("camvideo: error: cannot connect to Ray at auto: Could not find")


def test_ray_sigint_then_resume(ray_local, long_tree, tmp_path):
    address = ray_local.get_runtime_context().gcs_address
    out, report = tmp_path / "out", tmp_path / "r.json"
    proc = popen_batch([str(long_tree), str(out), "--ray", address, "--json",
                         "--size", "128", "--report", str(report)])
    interrupt_after_first_output(proc, out, limit=90)
    done = after_interrupt(proc, out, report)
    s = run_batch(long_tree, out, ray=True, json=True, **FAST)
    st = {Path(r.output).relative_to(out).as_posix(): r.status for r in s.records}
    assert {k for k, v in st.items() if v == SKIPPED} == done
    assert s.counts[DONE] == 6 - len(done) and s.exit_code == ExitCode.OK
    assert all(frame_count(p) == 30 for p in out.rglob("*.mp4"))
    assert partials(out) == []
