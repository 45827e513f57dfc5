"""One file of a batch and the batch's records: :func:`process_job` annotates a file and
turns any failure into a :class:`~camvideo.batch.files.Record`, :class:`Tracker` collects
records and progress from worker threads, :class:`BatchSummary` is the result."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .files import DONE, FAILED, INTERRUPTED, PENDING, SKIPPED, Job, Record
from ..errors import CamVideoError, ExitCode, ModelError, OutputError, first_line
from ..options import Options

log = logging.getLogger(__name__)


@dataclass
class BatchProgress:
    """A snapshot handed to ``progress`` callbacks (from worker threads, serialised)."""

    videos_done: int    #: finished, skipped or failed so far
    videos_total: int
    frames: int         #: frames rendered so far (all files)
    current: tuple[str, ...]  #: relative paths of the files in progress
    last: Record | None = None  #: the record that just finished, if any


@dataclass
class BatchSummary:
    """What a batch did: one record per input, sorted by path."""

    in_dir: str
    out_dir: str
    records: list[Record]
    seconds: float
    interrupted: bool = False
    counts: dict = field(init=False)

    def __post_init__(self) -> None:
        self.counts = {s: sum(r.status == s for r in self.records)
                       for s in (DONE, SKIPPED, FAILED, INTERRUPTED, PENDING)}

    @property
    def warned(self) -> int:
        """Files done with decode warnings (:attr:`Record.warnings`)."""
        return sum(r.status == DONE and bool(r.warnings) for r in self.records)

    @property
    def frames(self) -> int:
        """Frames written by the files done in this run."""
        return sum(r.frames for r in self.records if r.status == DONE)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        return ExitCode.PARTIAL if self.counts[FAILED] else ExitCode.OK

    def as_dict(self) -> dict:
        """The report: the counts per status (``interrupted``: files begun and aborted),
        ``stopped``: whether a stop (Ctrl-C) ended the batch, and one record per input."""
        return {"in_dir": self.in_dir, "out_dir": self.out_dir, **self.counts,
                "warned": self.warned, "frames": self.frames, "seconds": round(self.seconds, 3),
                "fps": round(self.fps, 2), "stopped": self.interrupted,
                "records": [r.as_report() for r in self.records]}

    def write_report(self, path: str | os.PathLike) -> None:
        """Write :meth:`as_dict` as JSON (temporary file, then renamed)."""
        p = Path(path)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.partial")
        try:
            tmp.write_text(json.dumps(self.as_dict(), indent=1) + "\n", encoding="utf-8")
            os.replace(tmp, p)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise OutputError(f"cannot write report {path}: {e.strerror or e}") from None


class BatchInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a batch (raised by :func:`camvideo.batch.runner.run_batch` after the
    files in progress were cleaned up and the report written); ``summary`` is what it did
    so far."""

    def __init__(self, summary: BatchSummary) -> None:
        super().__init__()
        self.summary = summary


# --------------------------------------------------------------------------- one file

def process_job(job: Job, model: Any, options: Options, *,
                stop: threading.Event | None = None,
                progress: Callable[[int, int], None] | None = None) -> Record:
    """Annotate one file with ``options`` (its own output and sidecar) and ``model`` (a
    loaded one, shared by every file, or a name); any error becomes a failed
    :class:`Record` (never raised), except :class:`~camvideo.errors.ModelError` (the model
    is unusable for every file) and ``KeyboardInterrupt`` when ``stop`` is not set (a
    real Ctrl-C)."""
    from ..api import annotate

    t0 = time.monotonic()
    base = Record(str(job.input), str(job.output), FAILED)
    try:
        s = annotate(job.input, job.output,
                     options.replace(overwrite=True,
                                     json=str(job.json) if job.json else None,
                                     html_report=str(job.html) if job.html else None),
                     model=model, progress=progress, stop=stop)
    except ModelError:
        raise
    except CamVideoError as e:
        return dataclasses.replace(base, reason=str(e), seconds=time.monotonic() - t0,
                                   template=str(e.args[0]) if e.hint and e.args else "",
                                   hint=tuple(e.hint) if e.hint else None)
    except KeyboardInterrupt:
        if stop is None or not stop.is_set():
            raise
        return dataclasses.replace(base, status=INTERRUPTED, reason="interrupted",
                                   seconds=time.monotonic() - t0)
    except Exception as e:  # noqa: BLE001 - one bad file must not stop the batch
        log.debug("internal error on %s", job.input, exc_info=True)
        return dataclasses.replace(base, reason=f"internal error: {type(e).__name__}: "
                                   f"{first_line(e)}", seconds=time.monotonic() - t0)
    warnings = list(s.extra.get("warnings", []))
    return dataclasses.replace(base, status=DONE, frames=s.frames, seconds=s.seconds,
                               warnings=warnings, reason="; ".join(warnings))


class Tracker:
    """Collects records and counts from worker threads; feeds ``progress`` callbacks."""

    def __init__(self, total: int, progress: Callable[[BatchProgress], None] | None) -> None:
        self._lock = threading.Lock()
        self._progress = progress
        self.total = total
        self.records: dict[str, Record] = {}
        self.frames = 0
        self._current: dict[str, int] = {}
        #: inputs begun (on one machine) or handed to a worker (Ray): a stop leaves those
        #: without a record interrupted, the others pending
        self.begun: set[str] = set()

    def _emit(self, last: Record | None = None) -> None:
        if self._progress is not None:
            self._progress(BatchProgress(len(self.records), self.total, self.frames,
                                         tuple(self._current), last))

    def sent(self, job: Job) -> None:
        """``job`` was handed to a worker that may begin it any time (Ray)."""
        with self._lock:
            self.begun.add(str(job.input))

    def started(self, job: Job) -> None:
        with self._lock:
            self.begun.add(str(job.input))
            self._current[job.rel] = 0
            self._emit()

    def frame(self, job: Job, done: int) -> None:
        with self._lock:
            self.frames += done - self._current.get(job.rel, 0)
            self._current[job.rel] = done
            self._emit()

    def finished(self, rec: Record, rel: str | None = None) -> None:
        with self._lock:
            if rel is not None and rel not in self._current and rec.status == DONE:
                self.frames += rec.frames  # remote jobs report frames only at the end
            self._current.pop(rel, None)
            self.records[rec.path] = rec
            self._emit(rec)
        if rec.status == FAILED:
            log.info("failed: %s: %s", rec.path, rec.reason)
        elif rec.status == DONE and rec.warnings:
            log.info("done with warnings: %s: %s", rec.output, rec.reason)
        elif rec.status == DONE:
            log.info("done: %s (%d frames, %.1f s)", rec.output, rec.frames, rec.seconds)
