"""``camvideo batch``: folders of generated clips (nested, plus broken files), resume,
isolation, containment, Ctrl-C and ``--jobs`` (the Ray backend: tests/test_batch_ray.py).

Clips are tiny (160x96, 12-24 frames) and the model input small (``size=64``): what is
tested is the batch machinery; the default model is still the real one (loaded once), so
that ``--jobs 2`` sharing it across threads is checked against ``--jobs 1``.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

from batch_tools import (BAD, FAST, GOOD, after_interrupt, by_rel, check_done, frame_count,
                         interrupt_after_first_output, partials, popen_batch)
from camvideo.batch.runner import (DONE, FAILED, INTERRUPTED, PENDING, SKIPPED,
                                   clean_stale_partials, find_videos, plan, run_batch)
from camvideo.errors import ExitCode, InputError, ModelError, OptionError
from camvideo.media.sink import source_of
from camvideo.testing import synth
from camvideo.model.registry import load_model


# --------------------------------------------------------------------------- pieces

def test_find_videos_patterns_hidden_links(tree, tmp_path):
    found, refused = find_videos(tree)
    rels = [p.relative_to(tree).as_posix() for p in found]
    assert sorted(rels) == sorted([*GOOD, *BAD])  # .MOV matched; .txt, hidden left out
    assert [(Path(r.path).name, r.status) for r in refused] == [("link.mp4", SKIPPED)]
    assert "outside IN_DIR" in refused[0].reason
    found, _ = find_videos(tree, ["sub/deep/*", "A.MP4"])
    assert sorted(p.relative_to(tree).as_posix() for p in found) == \
        ["a.mp4", "sub/deep/c.mkv", "sub/deep/d.mp4"]
    out_inside = tree / "sub" / "results"
    shutil.copytree(tree / "sub" / "deep", out_inside)
    found, _ = find_videos(tree, exclude=[out_inside])
    assert not [p for p in found if out_inside in p.parents]


def test_plan_mirrors_tree_and_separates_name_clashes(tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    for rel in ("x/a.mov", "x/a.avi", "x/b.mkv"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(b"")
    jobs, refused = plan(src, dst, sorted(src.rglob("*.*")), sidecar=True)
    assert refused == []
    outs = {j.input.name: j.output.relative_to(dst).as_posix() for j in jobs}
    assert outs == {"a.avi": "x/a.avi.mp4", "a.mov": "x/a.mov.mp4", "b.mkv": "x/b.mp4"}
    assert all(j.json == j.output.with_suffix(".jsonl") for j in jobs)
    assert (dst / "x").is_dir()


def test_name_clash_appearing_later_keeps_the_done_output(tmp_path, lite0):
    """``a.mov`` done as ``a.mp4``; then ``a.mkv`` appears: ``a.mov`` is not redone
    under a new name (its output says what it was made from), ``a.mkv`` gets its whole
    name; and when ``a.mov`` goes, ``a.mkv`` keeps that name too."""
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    synth.make_clip("pan", src / "a.mov", size=(96, 64), n=6, fps=24)
    s1 = run_batch(src, dst, model=lite0, **FAST)
    assert [r.status for r in s1.records] == [DONE] and source_of(dst / "a.mp4") == "a.mov"
    synth.make_clip("zoom", src / "a.mkv", size=(96, 64), n=5, fps=24)
    s2 = run_batch(src, dst, model=lite0, **FAST)
    got = {Path(r.path).name: (r.status, Path(r.output).name) for r in s2.records}
    assert got == {"a.mov": (SKIPPED, "a.mp4"), "a.mkv": (DONE, "a.mkv.mp4")}
    assert source_of(dst / "a.mkv.mp4") == "a.mkv" and frame_count(dst / "a.mkv.mp4") == 5
    (src / "a.mov").unlink()
    s3 = run_batch(src, dst, model=lite0, **FAST)
    assert [(r.status, Path(r.output).name) for r in s3.records] == [(SKIPPED, "a.mkv.mp4")]
    assert sorted(p.name for p in dst.iterdir()) == ["a.mkv.mp4", "a.mp4"]


def test_outputs_never_escape_out_dir_through_links(tmp_path):
    src, dst, elsewhere = tmp_path / "in", tmp_path / "out", tmp_path / "elsewhere"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "v.mp4").write_bytes(b"")
    (src / "ok.mp4").write_bytes(b"")
    dst.mkdir()
    elsewhere.mkdir()
    (dst / "sub").symlink_to(elsewhere, target_is_directory=True)  # planted link
    (dst / "ok.mp4").symlink_to(elsewhere / "victim.mp4")
    jobs, refused = plan(src, dst, [src / "sub" / "v.mp4", src / "ok.mp4"])
    assert jobs == []
    reasons = {Path(r.path).name: r.reason for r in refused}
    assert "outside OUT_DIR" in reasons["v.mp4"] and "link" in reasons["ok.mp4"]
    assert list(elsewhere.iterdir()) == []


def test_outputs_never_overwrite_inputs_when_out_dir_contains_in_dir(tmp_path):
    dst = tmp_path / "o"
    src = dst / "in"
    (src / "in").mkdir(parents=True)
    for rel in ("x.mp4", "in/x.mp4"):
        (src / rel).write_bytes(b"")
    jobs, refused = plan(src, dst, [src / "x.mp4", src / "in" / "x.mp4"])
    assert [j.output for j in jobs] == [dst / "x.mp4"]
    assert [Path(r.path) for r in refused] == [src / "in" / "x.mp4"]  # → o/in/x.mp4
    assert "inside IN_DIR" in refused[0].reason


def test_stale_partials_removed_live_ones_kept(tmp_path):
    (tmp_path / "d").mkdir()
    dead = tmp_path / "d" / ".clip.2.999999999.1.partial.mp4"  # pid 999999999: none
    dead_json = tmp_path / ".clip.jsonl.999999999.partial"
    live = tmp_path / f".clip.{os.getpid()}.1.partial.mp4"
    user = tmp_path / "clip.partial.mp4"  # not hidden: not ours
    for p in (dead, dead_json, live, user):
        p.write_bytes(b"x")
    assert clean_stale_partials(tmp_path) == 2
    assert not dead.exists() and not dead_json.exists() and live.exists() and user.exists()


def test_partial_pattern_matches_the_sinks_temporary_names(tmp_path):
    """The sweep knows the sinks' naming: the PID it reads is this process's."""
    from camvideo.api import JsonLinesSink
    from camvideo.batch.files import _PARTIAL
    from camvideo.media.sink import _temp_path

    side = JsonLinesSink(tmp_path / "v.2.jsonl")
    names = [_temp_path(tmp_path / "v.2.mp4").name, side.tmp.name]
    side.abort()
    for name in names:
        m = _PARTIAL[0].match(name) or _PARTIAL[1].match(name)
        assert m and int(m.group(1)) == os.getpid(), name


# --------------------------------------------------------------------------- one machine

def test_batch_done_failed_report_then_resume(tree, tmp_path, lite0):
    out, report = tmp_path / "out", tmp_path / "report.json"
    t0 = time.monotonic()
    s = run_batch(tree, out, json=True, jobs=2, report=report, model=lite0, **FAST)
    first = time.monotonic() - t0
    recs = by_rel(s, tree)
    assert set(recs) == {*GOOD, *BAD, "link.mp4"}
    for rel in GOOD:
        check_done(recs[rel], tree, rel, sidecar=True)
    for rel, words in BAD.items():
        assert recs[rel].status == FAILED and words in recs[rel].reason, recs[rel]
    assert recs["link.mp4"].status == SKIPPED
    assert s.counts == {DONE: 4, SKIPPED: 1, FAILED: 3, INTERRUPTED: 0,
                        PENDING: 0}
    assert s.frames == sum(n for _, n in GOOD.values()) and s.fps > 0
    assert s.exit_code == ExitCode.PARTIAL
    assert partials(out) == [] and not (out / "readme.mp4").exists()
    rep = json.loads(report.read_text())
    assert (rep["done"], rep["skipped"], rep["failed"]) == (4, 1, 3)
    assert {Path(r["path"]).name: r["status"] for r in rep["records"]}["trunc.mp4"] == FAILED
    for r in rep["records"]:
        assert set(r) == {"path", "output", "status", "reason", "frames", "seconds",
                          "warnings", "hint"}
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4")}

    # A stale temporary file of a killed run: removed, and never taken for an output.
    stale = out / "sub" / "deep" / ".d.999999999.1.partial.mp4"
    stale.write_bytes(b"half")
    (out / "sub" / "deep" / "d.jsonl").unlink()  # sidecar missing: d is redone
    s2 = run_batch(tree, out, json=True, jobs=2, report=report, model=lite0, **FAST)
    recs2 = by_rel(s2, tree)
    assert {r: recs2[r].status for r in GOOD} == {"a.mp4": SKIPPED, "sub/b.MOV": SKIPPED,
                                                  "sub/deep/c.mkv": SKIPPED,
                                                  "sub/deep/d.mp4": DONE}
    assert all(recs2[r].status == FAILED for r in BAD)
    check_done(recs2["sub/deep/d.mp4"], tree, "sub/deep/d.mp4", sidecar=True)
    assert not stale.exists() and partials(out) == []
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items() if p.stem != "d")

    # Only bad files and done ones left: a third run touches nothing and is quick.
    t0 = time.monotonic()
    s3 = run_batch(tree, out, json=True, report=report, model=lite0, **FAST)
    third = time.monotonic() - t0
    assert s3.counts[SKIPPED] == 5 and s3.counts[DONE] == 0
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items() if p.stem != "d")
    assert third < first / 4, (first, third)
    # --force redoes them.
    s4 = run_batch(tree, out, patterns=["a.mp4"], force=True, model=lite0, **FAST)
    assert [r.status for r in s4.records] == [DONE]
    assert (out / "a.mp4").stat().st_mtime_ns != mtimes[out / "a.mp4"]


def test_jobs_share_one_model_safely(tree, tmp_path, lite0):
    """Two files at a time on one shared model give exactly the sidecars (classes,
    scores to 1e-6, peaks, boxes) and frame counts of one at a time."""
    globs = list(GOOD)
    res = {}
    for jobs in (1, 2):
        out = tmp_path / f"out{jobs}"
        s = run_batch(tree, out, patterns=globs, json=True, jobs=jobs, model=lite0,
                      size=96, bbox=True)
        assert s.counts[DONE] == len(GOOD)
        res[jobs] = {p.relative_to(out).as_posix(): p.read_text()
                     for p in sorted(out.rglob("*.jsonl"))}
    assert len(res[1]) == len(GOOD) and res[1] == res[2]


def test_stop_event_aborts_cleanly(tree, tmp_path, lite0):
    import threading

    stop = threading.Event()
    seen = []

    def progress(p):
        seen.append(p)
        if p.last is not None and p.last.status == DONE:
            stop.set()

    out = tmp_path / "out"
    s = run_batch(tree, out, patterns=list(GOOD), jobs=1, model=lite0, progress=progress,
                  stop=stop, **FAST)
    assert s.interrupted and s.exit_code == ExitCode.INTERRUPTED
    # stopped as the first file ended: none was in progress, the others never began
    assert s.counts[DONE] == 1 and s.counts[INTERRUPTED] == 0
    assert s.counts[PENDING] == len(GOOD) - 1
    assert partials(out) == []
    for r in s.records:
        assert Path(r.output).exists() == (r.status == DONE)
    assert seen[-1].videos_total == len(GOOD) and any(p.current for p in seen)
    first = next(p.last for p in seen if p.last is not None)
    assert max(p.frames for p in seen) >= first.frames > 0


def test_stop_tells_files_begun_from_files_never_begun(tree, tmp_path, lite0):
    """A stop in the middle of the second file: that file is interrupted (its temporary
    files removed), the files after it were never begun and are pending, not
    interrupted; the report says so, and a rerun does both."""
    import threading

    stop = threading.Event()
    first: list = []

    def progress(p):
        if p.last is not None and p.last.status == DONE:
            first.append(p.frames)
        elif first and p.current and p.frames > first[0]:  # the second file's frames
            stop.set()

    out, report = tmp_path / "out", tmp_path / "r.json"
    s = run_batch(tree, out, patterns=list(GOOD), jobs=1, model=lite0, progress=progress,
                  stop=stop, report=report, **FAST)
    assert s.interrupted and s.exit_code == ExitCode.INTERRUPTED
    statuses = [r.status for r in s.records]  # sorted by path: a.mp4, then sub/...
    assert sorted(statuses) == [DONE, INTERRUPTED] + [PENDING] * (len(GOOD) - 2), statuses
    assert s.counts == {DONE: 1, SKIPPED: 0, FAILED: 0, INTERRUPTED: 1,
                        PENDING: len(GOOD) - 2}
    rep = json.loads(report.read_text())  # "interrupted" counts files; "stopped": the batch
    assert rep["stopped"] is True
    assert (rep["done"], rep["interrupted"], rep["pending"]) == (1, 1, len(GOOD) - 2)
    assert sorted(r["status"] for r in rep["records"]) == sorted(statuses)
    for rec in rep["records"]:
        assert rec["reason"] == {DONE: "", INTERRUPTED: "interrupted",
                                 PENDING: "not started"}[rec["status"]]
        assert Path(rec["output"]).exists() == (rec["status"] == DONE)
    assert partials(out) == []
    again = run_batch(tree, out, patterns=list(GOOD), jobs=1, model=lite0, **FAST)
    assert again.counts[SKIPPED] == 1 and again.counts[DONE] == len(GOOD) - 1


def test_cli_errors_are_one_line(tmp_path, capsys, tree):
    cases = [([str(tmp_path / "nope"), str(tmp_path / "o")], ExitCode.INPUT, "not found"),
             ([str(tree), str(tree)], ExitCode.USAGE, "must not be IN_DIR"),
             ([str(tree), str(tmp_path / "o"), "--ext", "gif"], ExitCode.USAGE, "--ext"),
             ([str(tree), str(tmp_path / "o"), "--glob", "*.none"], ExitCode.INPUT,
              "no video"),
             ([str(tree), str(tmp_path / "o"), "--jobs", "0"], ExitCode.USAGE, "jobs"),
             ([str(tree), str(tmp_path / "o"), "-m", "nonet"], ExitCode.MODEL, "nonet"),
             ([str(tree), str(tmp_path / "o"), "--report", str(tmp_path / "no" / "r.json")],
              ExitCode.OUTPUT, "--report folder does not exist"),
             ([str(tree), str(tmp_path / "o"), "--report", str(tmp_path)], ExitCode.OUTPUT,
              "--report is a directory"),
             ([str(tree), str(tmp_path / "o"), "--ext", "webm", "--codec", "libx265"],
              ExitCode.USAGE, ".webm files cannot hold"),
             ([str(tree), str(tmp_path / "o"), "--codec", "aac"], ExitCode.USAGE,
              "not a video encoder"),
             ([str(tree), str(tmp_path / "o"), "--device", "tpu"], ExitCode.USAGE,
              "device")]
    from camvideo.commands.main import main
    for args, code, words in cases:
        rc = main(["batch", *args, "-q"])
        err = capsys.readouterr().err
        assert rc == code, (args, err)
        assert err.count("\n") == 1 and err.startswith(("camvideo: error: ",
                                                         "camvideo batch: error: ")), err
        assert words in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.*"))


def test_cli_summary_report_and_exit_code(tree, tmp_path, capsys, lite0, monkeypatch):
    monkeypatch.setattr("camvideo.model.registry.load_model", lambda *a, **k: lite0)
    from camvideo.commands.main import main
    out, report = tmp_path / "out", tmp_path / "r.json"
    rc = main(["batch", str(tree), str(out), "--json", "--size", "64", "--smooth", "0",
               "--report", str(report), "-q", "--glob", "*.MP4", "--glob", "*.avi"])
    err = capsys.readouterr().err
    assert rc == ExitCode.PARTIAL
    assert "2 done, 1 skipped, 3 failed" in err and "Traceback" not in err, err
    for rel in BAD:
        assert f"failed: {tree / rel}:" in err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.*")) == \
        ["a.jsonl", "a.mp4", "sub/deep/d.jsonl", "sub/deep/d.mp4"]
    assert json.loads(report.read_text())["done"] == 2
    rc = main(["batch", str(tree), str(out), "--json", "-q", "--glob", "a.mp4"])
    assert rc == ExitCode.OK and "0 done, 1 skipped, 0 failed" in capsys.readouterr().err


def test_a_files_hint_is_said_by_its_flag_on_the_command_line(tree, tmp_path, capsys,
                                                              lite0, monkeypatch):
    """A file's error that points at a setting getting past it (``use {option}``:
    audio=False) says the batch's flag on the terminal, as one file's line does in
    ``camvideo IN OUT``; the report keeps the library's words and the hint."""
    import camvideo.api as api
    from camvideo.commands.main import main
    from camvideo.errors import OutputError

    real = api.annotate

    def annotate(input, output, *args, **kw):
        if Path(input).name == "a.mp4":
            raise OutputError("cannot re-encode the audio (x); use {option}",
                              hint=("audio", False))
        return real(input, output, *args, **kw)

    monkeypatch.setattr(api, "annotate", annotate)
    monkeypatch.setattr("camvideo.model.registry.load_model", lambda *a, **k: lite0)
    out, report = tmp_path / "out", tmp_path / "r.json"
    rc = main(["batch", str(tree), str(out), "--size", "64", "--report", str(report),
               "--glob", "a.mp4", "--glob", "*.MOV"])
    err = capsys.readouterr().err
    assert rc == ExitCode.PARTIAL and "1 done, 0 skipped, 1 failed" in err, err
    said = "cannot re-encode the audio (x); use --no-audio"
    assert f"failed: {tree / 'a.mp4'}: {said}" in err          # the summary
    assert f"failed: {tree / 'a.mp4'} ({said})" in err          # the file's own line
    assert "audio=False" not in err, err
    rec = next(r for r in json.loads(report.read_text())["records"]
               if r["path"].endswith("a.mp4"))
    assert rec["reason"] == "cannot re-encode the audio (x); use audio=False"
    assert rec["hint"] == ["audio", False]


def test_missing_ray_is_a_clear_error(tree, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError
    with pytest.raises(OptionError, match=r"camvideo\[ray\]"):
        run_batch(tree, tmp_path / "out", ray=True, patterns=["a.mp4"], **FAST)


def test_unknown_model_stops_before_any_file(tree, tmp_path):
    with pytest.raises(ModelError):
        run_batch(tree, tmp_path / "out", model="no_such_net", **FAST)
    with pytest.raises(InputError):
        run_batch(tmp_path / "missing", tmp_path / "out")


def test_sigint_leaves_no_partial_and_rerun_completes(long_tree, tmp_path, lite0):
    out, report = tmp_path / "out", tmp_path / "r.json"
    proc = popen_batch([str(long_tree), str(out), "--jobs", "1", "--json", "--size",
                         "128", "--report", str(report)])
    interrupt_after_first_output(proc, out, limit=60)
    done = after_interrupt(proc, out, report)
    s = run_batch(long_tree, out, json=True, jobs=2, model=lite0, **FAST)
    st = {Path(r.output).relative_to(out).as_posix(): r.status for r in s.records}
    assert {k for k, v in st.items() if v == SKIPPED} == done
    assert s.counts[DONE] == 6 - len(done) and s.exit_code == ExitCode.OK
    assert all(frame_count(p) == 30 for p in out.rglob("*.mp4"))
    assert len(list(out.rglob("*.jsonl"))) == 6 and partials(out) == []
