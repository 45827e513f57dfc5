"""Batch jobs: every video of a folder tree, resumable, on one machine or a Ray cluster.

``camvideo batch IN_DIR OUT_DIR`` annotates every video under ``IN_DIR`` (recursively;
``--glob`` patterns, default: common video extensions, case-insensitive) into the same
relative path under ``OUT_DIR`` with the output extension (``.mp4`` by default), and with
``--json`` a ``NAME.jsonl`` sidecar beside each output. With ``--report-html DIR``, each
video's HTML report page goes to the same relative path under ``DIR`` (``NAME.html``),
and ``DIR/index.html`` lists them all (:mod:`camvideo.report`).

- **Resume.** Outputs are only ever renamed into place when complete (the sinks write a
  hidden ``.NAME.PID.TID.partial.EXT`` first), so an existing output *is* a finished one: a
  rerun skips it (``--force`` redoes it). Temporary files left by a killed run (their
  process is gone) are removed at the start.
- **Isolation.** A file that cannot be read or written is recorded as failed (path and the
  one-line reason) and the rest go on; the exit code is then ``ExitCode.PARTIAL``.
- **One machine** (:func:`run_batch`, ``--jobs N``): N files at a time in threads sharing
  one loaded model, so decoding and encoding of some files overlap with the forward passes
  of others. Concurrent forward passes on a shared model in ``inference_mode`` are safe
  (nothing in an eval-mode model is mutated); the tests check that ``--jobs 2`` gives the
  same frames and sidecars as ``--jobs 1``.
- **Many machines** (``--ray [ADDRESS]``): one Ray task per video, see
  :mod:`camvideo.batch.ray_backend`. ``IN_DIR`` and ``OUT_DIR`` must then be paths that every node
  sees (a shared filesystem mounted at the same place).
- **Containment.** Outputs never land outside ``OUT_DIR``: every output folder is resolved
  (symbolic links followed) and checked before anything is created; symbolic links under
  ``IN_DIR`` that point outside it are skipped, and linked folders are not descended into.
- **Interrupt.** Ctrl-C (or ``stop``) aborts the files in progress, whose temporary files
  are removed; the report, when asked for, lists them as ``interrupted``, and the files
  not begun yet as ``pending`` (a rerun does both).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .files import (DEFAULT_GLOBS, DONE, FAILED, INTERRUPTED, OUTPUT_EXTS, PENDING,
                    SKIPPED, Job, Record, clean_stale_partials, find_videos, is_complete,
                    plan)
from .jobs import BatchInterrupted, BatchProgress, BatchSummary, Tracker, process_job
from ..errors import InputError, OptionError, OutputError, first_line
from ..media.sink import check_writable
from ..options import Options

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_GLOBS", "OUTPUT_EXTS", "DONE", "SKIPPED", "FAILED", "INTERRUPTED",
           "PENDING",
           "Job", "Record", "BatchProgress", "BatchSummary", "BatchInterrupted",
           "run_batch", "process_job",
           "find_videos", "plan", "is_complete", "clean_stale_partials"]


# --------------------------------------------------------------------------- the batch

def run_batch(in_dir: str | os.PathLike, out_dir: str | os.PathLike,
              options: Options | None = None, *, model: Any = None,
              patterns: Sequence[str] | None = None, ext: str = ".mp4",
              json: bool = False, force: bool = False, jobs: int = 2,
              ray: bool = False, ray_address: str | None = None, ray_gpus: float = 1.0,
              ray_cpus: float = 1.0, report: str | os.PathLike | None = None,
              report_html: str | os.PathLike | None = None,
              progress: Callable[[BatchProgress], None] | None = None,
              stop: threading.Event | None = None, **overrides: Any) -> BatchSummary:
    """Annotate every video under ``in_dir`` into the mirrored tree under ``out_dir``.

    Args:
        in_dir: folder searched recursively.
        out_dir: output root (created); must not be ``in_dir`` (it may lie inside it: it
            is then left out of the search).
        options, **overrides: the per-file :class:`~camvideo.options.Options` (not
            ``json``/``overwrite``: see ``json`` and ``force``).
        model: a loaded :class:`~camvideo.model.cammodel.CamModel` shared by every file
            (on Ray only its name is used: each worker loads its own), or a name.
        patterns: ``--glob`` patterns (default :data:`DEFAULT_GLOBS`).
        ext: output extension (:data:`OUTPUT_EXTS`).
        json: write a ``NAME.jsonl`` sidecar beside each output.
        force: redo files whose output exists (default: skip them, i.e. resume).
        jobs: files processed at once on this machine (threads sharing one model).
        ray: run on Ray (one task per file); ``ray_address`` as for ``ray.init`` (None:
            the running instance, ``RAY_ADDRESS``, or a new local one); ``ray_gpus`` GPUs
            per task when the cluster has GPUs (a fraction shares one), ``ray_cpus`` CPUs
            per task. Folders must be on a filesystem all nodes share.
        report: write the JSON report there (also when interrupted).
        report_html: a folder: each video's HTML report page at its relative path there
            (``NAME.html``, written with the video), and ``index.html`` listing every
            input (also when interrupted).
        progress: called with a :class:`BatchProgress` as files start, advance and end.
        stop: set it to stop: files in progress are aborted and recorded as interrupted.

    Returns:
        A :class:`BatchSummary` (records sorted by input path).

    Raises:
        InputError: ``in_dir`` missing or nothing matched. OutputError: ``out_dir``
        unusable. OptionError, ModelError: bad options or model (before any file).
        BatchInterrupted: Ctrl-C (a KeyboardInterrupt, raised after the files in
        progress were cleaned up and the report written; its ``summary`` is what was
        done).
    """
    t0 = time.monotonic()
    # absolute: Ray workers do not run in this directory
    src, dst = Path(in_dir).absolute(), Path(out_dir).absolute()
    ext = _check_ext(ext)
    if jobs < 1:
        raise OptionError(f"jobs must be ≥ 1, got {jobs}", option="jobs")
    if report is not None:
        check_writable(Path(report), "report")
    html_dir = Path(report_html).absolute() if report_html is not None else None
    if html_dir is not None:
        try:
            html_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot create {report_html}: {e.strerror or e}") from None
        check_writable(html_dir / "index.html", "report_html")
    if not src.is_dir():
        raise InputError(f"input folder not found: {in_dir}")
    if isinstance(model, str):
        overrides = {**overrides, "model": model}
        model = None
    # torch (the device) from here: the folder was checked first
    opts = _validate_options(Options.of(options, **overrides), ext)
    if model is not None:  # a loaded model: its name (and maps) is what Ray workers load
        opts = opts.replace(model=model.name, fine_maps=model.fine_maps)
    if dst.resolve() == src.resolve():
        raise OptionError("OUT_DIR must not be IN_DIR (outputs mirror the inputs' names)")
    try:
        dst.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {out_dir}: {e.strerror or e}") from None
    if not os.access(dst, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {out_dir}")
    inputs, refused = find_videos(src, patterns or DEFAULT_GLOBS, exclude=[dst])
    if not inputs and not refused:
        raise InputError(f"no video under {in_dir} matches "
                         f"{' '.join(patterns or DEFAULT_GLOBS)}")
    clean_stale_partials(dst)
    todo, bad = plan(src, dst, inputs, ext=ext, sidecar=json)
    refused += bad
    listed = {str(p) for p in inputs}
    tracker = Tracker(len(inputs) + sum(r.path not in listed for r in refused), progress)
    for rec in refused:
        tracker.finished(rec)
    if not force:
        for job in [j for j in todo if is_complete(j)]:
            todo.remove(job)
            tracker.finished(Record(str(job.input), str(job.output), SKIPPED,
                                    "output exists"))
    if html_dir is not None:
        todo = [dataclasses.replace(j, html=_page(html_dir, j.rel)) for j in todo]
        for j in todo:
            j.html.parent.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
    stop = stop or threading.Event()
    interrupted = ctrl_c = False
    try:
        if todo and ray:
            from .ray_backend import run_ray
            run_ray(todo, opts, tracker, address=ray_address, gpus=ray_gpus,
                    cpus=ray_cpus, stop=stop)
        elif todo:
            _run_local(todo, opts, model, tracker, jobs, stop)
    except KeyboardInterrupt:
        interrupted = ctrl_c = True
    finally:
        interrupted = interrupted or stop.is_set()
        for job in todo:  # what the stop (or a fatal error) left without a record
            if str(job.input) not in tracker.records:
                tracker.records[str(job.input)] = Record(
                    str(job.input), str(job.output),
                    *((INTERRUPTED, "interrupted") if str(job.input) in tracker.begun
                      else (PENDING, "not started")))
        recs = sorted(tracker.records.values(), key=lambda r: r.path)
        summary = BatchSummary(str(src), str(dst), recs, time.monotonic() - t0,
                               interrupted=interrupted)
        if report is not None:
            summary.write_report(report)
        if html_dir is not None:
            _write_index(html_dir, src, recs)
    if ctrl_c:
        raise BatchInterrupted(summary)
    return summary


def _page(html_dir: Path, rel: str) -> Path:
    """The report page of the input at ``rel`` (``a/b.mov`` → ``html_dir/a/b.mov.html``:
    the input's whole name, so twins ``b.mov`` and ``b.mkv`` get their own pages)."""
    return html_dir / f"{rel}.html"


def _write_index(html_dir: Path, src: Path, records: Sequence[Record]) -> None:
    from ..report import write_index

    entries = []
    for r in records:
        try:
            rel = Path(r.path).relative_to(src).as_posix()
        except ValueError:
            rel = r.path
        page = _page(html_dir, rel)
        entries.append({"input": rel, "status": r.status, "reason": r.reason,
                        "page": str(page) if page.is_file() else None})
    write_index(html_dir, entries)


def _check_ext(ext: str) -> str:
    e = ext if ext.startswith(".") else f".{ext}"
    if e.lower() not in OUTPUT_EXTS:
        raise OptionError(f"ext must be one of {', '.join(OUTPUT_EXTS)}, got {ext!r}",
                          option="ext")
    return e.lower()


def _validate_options(opts: Options, ext: str) -> Options:
    """Check the per-file options once, before any file (what every file would refuse
    alike: an encoder the container cannot hold, an unknown device); returns them with
    ``weights``/``labels`` as absolute paths (for Ray workers)."""
    from ..media.encoding import check_preset
    from ..media.sink import check_video_codec
    from ..model.device import parse_device

    if opts.json or opts.overwrite:
        raise OptionError("json and overwrite are not batch options (see run_batch's "
                          "json and force)", option="json" if opts.json else "overwrite")
    if opts.tracks or opts.html_report:
        raise OptionError("tracks and html_report are not batch options (see run_batch's "
                          "report_html)", option="tracks" if opts.tracks else "html_report")
    check_preset(opts.codec, opts.preset)
    check_video_codec(opts.codec, ext)
    parse_device(opts.device)
    return opts.replace(**{k: str(Path(getattr(opts, k)).absolute())
                           for k in ("weights", "labels") if getattr(opts, k)})


def _run_local(todo: list[Job], opts: Options, model: Any, tracker: Tracker, jobs: int,
               stop: threading.Event) -> None:
    """Threads sharing one model; the first ModelError stops the batch and is raised."""
    from ..model.cammodel import CamModel
    from ..model.device import resolve_device
    from ..model.registry import load_model

    if not isinstance(model, CamModel):
        model = load_model(opts.model, opts.weights, opts.labels,
                           device=resolve_device(opts.device),
                           fine=opts.fine_maps)  # once, for every file
    if opts.cls is not None:
        model.class_index(opts.cls)  # an unknown class is fatal, not per file
    if isinstance(opts.classes, tuple):
        for c in opts.classes:
            model.class_index(c)
    pending: queue.SimpleQueue[Job] = queue.SimpleQueue()
    for job in todo:
        pending.put(job)
    fatal: list[BaseException] = []

    n_threads = min(jobs, len(todo))
    running = [n_threads]
    count_lock = threading.Lock()
    all_done = threading.Event()

    def work() -> None:
        try:
            _work()
        finally:
            with count_lock:
                running[0] -= 1
                if running[0] == 0:
                    all_done.set()

    def _work() -> None:
        while not stop.is_set():
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            tracker.started(job)
            try:
                rec = process_job(job, model, opts, stop=stop,
                                  progress=lambda done, total, j=job: tracker.frame(j, done))
            except BaseException as e:  # noqa: BLE001 - ModelError: stop everything
                fatal.append(e)
                stop.set()
                rec = Record(str(job.input), str(job.output), FAILED, first_line(e))
            tracker.finished(rec, job.rel)

    threads = [threading.Thread(target=work, name=f"camvideo-batch-{i}")
               for i in range(n_threads)]
    for t in threads:
        t.start()
    # Wait on an Event, not Thread.join: on Python ≤ 3.11 a KeyboardInterrupt landing
    # inside join(timeout) marks the still running thread as stopped, and the process
    # could then exit in the middle of a file, leaving its temporary files behind.
    try:
        while not all_done.wait(0.2):
            pass
    except KeyboardInterrupt:
        stop.set()  # the workers abort their files (temporary files removed) and return
        while not all_done.wait(0.2):
            pass
        raise
    for t in threads:
        t.join()
    if fatal:
        raise fatal[0]
