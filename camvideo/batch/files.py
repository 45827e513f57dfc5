"""Which files a batch works on and where their outputs go, safely.

Discovery (:func:`find_videos`: recursive, case-insensitive patterns, hidden files, linked
folders and links leaving IN_DIR left out), the output plan (:func:`plan`: the tree
mirrored under OUT_DIR, name clashes separated, every output folder resolved and checked
to lie inside OUT_DIR before it is created), resume (:func:`is_complete`) and the sweep of
temporary files left by killed runs (:func:`clean_stale_partials`).
"""
from __future__ import annotations

import dataclasses
import fnmatch
import glob
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..errors import CamVideoError
from ..media.sink import source_of

log = logging.getLogger(__name__)

#: Default ``--glob`` patterns (matched case-insensitively against file names).
DEFAULT_GLOBS = ("*.mp4", "*.m4v", "*.mov", "*.mkv", "*.webm", "*.avi", "*.mpg", "*.mpeg",
                 "*.ts", "*.mts", "*.m2ts", "*.wmv", "*.flv", "*.3gp", "*.ogv")
OUTPUT_EXTS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")
DONE, SKIPPED, FAILED, INTERRUPTED = "done", "skipped", "failed", "interrupted"
#: A file a stopped batch never began (left for the rerun, which resumes it).
PENDING = "pending"
#: Temporary files of :class:`camvideo.media.sink.FileSink` and the JSON Lines sidecar.
#: ``.NAME.PID.TID.partial.EXT`` (video) or ``.NAME.PID.partial`` (sidecar, report).
_PARTIAL = (re.compile(r"^\..+\.(\d+)\.\d+\.partial\.[A-Za-z0-9]+$"),
            re.compile(r"^\..+\.(\d+)\.partial$"))


@dataclass(frozen=True)
class Job:
    """One input and where its results go (``json`` is None without ``--json``, ``html``
    without ``--report-html``)."""

    input: Path
    output: Path
    json: Path | None
    rel: str  #: input path relative to IN_DIR, ``/``-separated
    html: Path | None = None  #: its HTML report page


@dataclass
class Record:
    """What happened to one input: ``status`` is done, skipped, failed, interrupted (begun,
    then aborted by a stop) or pending (a stop came before it began);
    ``warnings``: what decoding it warned about (``68 of 444 frames decodable``), also
    in ``reason`` for a file done. A failure whose error points at a setting that gets
    past it (:class:`~camvideo.errors.CamVideoError`'s ``hint``) keeps its message with
    the ``{option}`` placeholder in ``template`` and the hint in ``hint``, so that
    :meth:`said` can name it as the caller does (``reason`` says it in the library's
    words: ``use audio=False``)."""

    path: str
    output: str | None
    status: str
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0
    warnings: list = dataclasses.field(default_factory=list)
    template: str = ""
    hint: tuple | None = None

    def said(self, name_of: Callable[[str, object], str]) -> str:
        """``reason`` with its hint's setting said by ``name_of(name, value)`` (the
        command line: ``use --no-audio``); ``reason`` itself without a hint."""
        if not self.template or self.hint is None:
            return self.reason
        return CamVideoError(self.template, hint=self.hint).render(name_of)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def as_report(self) -> dict:
        """Its record in a batch report: :meth:`as_dict` without ``template`` (the hint,
        ``[name, value]`` or null, says which setting gets past a failure)."""
        d = self.as_dict()
        del d["template"]
        return d


# --------------------------------------------------------------------------- discovery

def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def find_videos(in_dir: str | os.PathLike, patterns: Sequence[str] = DEFAULT_GLOBS, *,
                exclude: Iterable[str | os.PathLike] = ()) -> tuple[list[Path], list[Record]]:
    """Files under ``in_dir`` matching ``patterns``, sorted, and records of those refused.

    Patterns match case-insensitively: a pattern with a ``/`` against the path relative to
    ``in_dir``, any other against the file name. Hidden files and folders (``.name``) are
    left out, folders in ``exclude`` (the output folder) too; linked folders are not
    entered, and linked files pointing outside ``in_dir`` are refused (skipped).
    """
    root = Path(in_dir)
    real_root = root.resolve()
    excluded = {Path(e).resolve() for e in exclude}
    pats = [p.lower() for p in patterns]
    found: list[Path] = []
    refused: list[Record] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and (here / d).resolve() not in excluded)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = here / name
            rel = path.relative_to(root).as_posix().lower()
            if not any(fnmatch.fnmatchcase(rel if "/" in p else name.lower(), p)
                       for p in pats):
                continue
            if path.is_symlink() and not _inside(path.resolve(), real_root):
                refused.append(Record(str(path), None, SKIPPED,
                                      "symbolic link to a file outside IN_DIR"))
                continue
            found.append(path)
    return found, refused


def plan(in_dir: str | os.PathLike, out_dir: str | os.PathLike, inputs: Sequence[Path], *,
         ext: str = ".mp4", sidecar: bool = False) -> tuple[list[Job], list[Record]]:
    """Map inputs to outputs mirroring the tree, and refuse any that would leave ``out_dir``.

    Two inputs that would share an output (``a.mov`` and ``a.avi``) keep their whole name
    instead (``a.mov.mp4``, ``a.avi.mp4``). Outputs of earlier runs keep their names: an
    output records the input it was made from (its ``comment`` tag,
    :func:`camvideo.media.sink.source_of`), so adding ``a.avi`` beside a done ``a.mov`` (or
    removing one of the pair) does not redo the other under a new name. Output folders
    are created here.
    """
    root, out_root = Path(in_dir), Path(out_dir)
    real_in, real_out = root.resolve(), out_root.resolve()
    wanted: dict[Path, Path] = {p: out_root / p.relative_to(root).with_suffix(ext)
                                for p in inputs}
    keys: dict[str, list[Path]] = {}
    for p, o in wanted.items():
        keys.setdefault(str(o).lower(), []).append(p)
    taken = {k for k, v in keys.items() if len(v) == 1}
    for key, group in ((k, v) for k, v in keys.items() if len(v) > 1):
        owner = next((p for p in group if _made_from(wanted[p], p)), None)
        if owner is not None:  # an earlier run's output of one of them: it stays
            taken.add(key)
        for p in (p for p in group if p is not owner):
            o, n = wanted[p].with_name(p.name + ext), 1
            while str(o).lower() in taken:
                n += 1
                o = wanted[p].with_name(f"{p.name}.{n}{ext}")
            taken.add(str(o).lower())
            wanted[p] = o
    for p in (v[0] for v in keys.values() if len(v) == 1):
        whole = wanted[p].with_name(p.name + ext)  # made so beside a former twin?
        if str(whole).lower() not in taken and whole.is_file() and \
                _made_from(whole, p) and not _made_from(wanted[p], p):
            wanted[p] = whole
    jobs: list[Job] = []
    refused: list[Record] = []
    for p, o in wanted.items():
        reason = ""
        if not _inside(o.parent.resolve(), real_out):
            reason = "output folder would be outside OUT_DIR (symbolic link)"
        elif o.is_symlink():
            reason = "output path is a symbolic link"
        elif _inside(o.parent.resolve(), real_in) and not _inside(real_out, real_in):
            reason = "output would land inside IN_DIR (OUT_DIR contains IN_DIR)"
        else:
            try:
                o.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                reason = f"cannot create {o.parent}: {e.strerror or e}"
            if not reason and not _inside(o.parent.resolve(), real_out):
                reason = "output folder would be outside OUT_DIR (symbolic link)"
        if reason:
            refused.append(Record(str(p), str(o), FAILED, reason))
            continue
        js = o.with_suffix(".jsonl") if sidecar else None
        jobs.append(Job(p, o, js, p.relative_to(root).as_posix()))
    return jobs, refused


def _made_from(output: Path, source: Path) -> bool:
    """``output`` exists and was made from a file named like ``source``."""
    return output.is_file() and source_of(output) == source.name


def is_complete(job: Job) -> bool:
    """The outputs exist (they only ever appear complete) and are not links."""
    return all(p.is_file() and not p.is_symlink() for p in (job.output, job.json) if p)


def clean_stale_partials(out_dir: str | os.PathLike) -> int:
    """Remove camvideo's temporary files under ``out_dir`` whose process is gone.

    Only hidden ``.NAME.PID[.TID].partial[.EXT]`` files are touched, and only when no
    process ``PID`` runs on this machine. Returns the number removed.
    """
    removed = 0
    for dirpath, dirnames, filenames in os.walk(out_dir, followlinks=False):
        for name in filenames:
            m = _PARTIAL[0].match(name) or _PARTIAL[1].match(name)
            if not m or _pid_alive(int(m.group(1))):
                continue
            try:
                os.unlink(os.path.join(dirpath, name))
                removed += 1
                log.info("removed stale temporary file %s", os.path.join(dirpath, name))
            except OSError:
                pass
    return removed


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_own_partials(job: Job, pid: int | None = None) -> None:
    """Remove the temporary files of ``job``'s outputs written by process ``pid`` (this
    one by default): the clean-up of a task interrupted in the middle of its own."""
    pid = os.getpid() if pid is None else pid
    patterns = [f".{glob.escape(job.output.stem)}.{pid}.*.partial{job.output.suffix}"]
    if job.json is not None:
        patterns.append(f".{glob.escape(job.json.name)}.{pid}.partial")
    for pattern in patterns:
        for p in job.output.parent.glob(pattern):
            p.unlink(missing_ok=True)
