"""``camvideo batch IN_DIR OUT_DIR``: arguments (:func:`build_parser`) and terminal output.

The work itself is :func:`camvideo.batch.runner.run_batch`; this module only parses, shows the
progress bars (on a terminal) and the summary, and returns the exit code.
"""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Sequence

from . import args as cliargs
from ..batch.runner import DEFAULT_GLOBS, DONE, FAILED, INTERRUPTED, OUTPUT_EXTS, run_batch
from ..batch.jobs import BatchInterrupted, BatchProgress, BatchSummary


def build_parser() -> cliargs.Parser:
    """The ``camvideo batch`` parser: the main command's model, render, smoothing, output
    and device options, plus the batch group (``--json`` is a flag here, and ``-y`` is
    ``--force``)."""
    p = cliargs.Parser(
        prog="camvideo batch", conflict_handler="resolve",
        description="Annotate every video under IN_DIR into the same relative path under "
                    "OUT_DIR. Resumable: existing outputs are complete ones and are "
                    "skipped. A file that fails is reported and the rest go on (exit "
                    "code 6 when any failed). With --ray, IN_DIR and OUT_DIR must be on a "
                    "filesystem every node sees at the same path.")
    p.add_argument("in_dir", metavar="IN_DIR", help="folder of videos (searched recursively)")
    p.add_argument("out_dir", metavar="OUT_DIR", help="output root (created; the input "
                   "tree is mirrored there)")
    cliargs.add_model_args(p)
    cliargs.add_render_args(p)
    cliargs.add_smooth_args(p, ("causal", "centered"))
    cliargs.add_output_args(p)
    cliargs.add_device_args(p)
    cliargs.add_terminal_args(p)
    g = p.add_argument_group("batch")
    # These two replace the main command's --json PATH and -y/--overwrite (resolve).
    g.add_argument("--json", action="store_true",
                   help="write a JSON Lines sidecar NAME.jsonl beside each output")
    g.add_argument("-f", "--force", "-y", "--overwrite", dest="force", action="store_true",
                   help="redo videos whose output exists (default: skip them, i.e. resume)")
    g.add_argument("--glob", dest="patterns", action="append", metavar="PATTERN",
                   help="file pattern, repeatable, case-insensitive; with a / it matches "
                        "the path under IN_DIR, else the name [common video extensions: "
                        f"{' '.join(DEFAULT_GLOBS[:6])} ...]")
    g.add_argument("--ext", default=".mp4", metavar="EXT",
                   help=f"output extension: {', '.join(OUTPUT_EXTS)} [.mp4]")
    g.add_argument("-j", "--jobs", type=cliargs._unit(1, 64, int), default=2, metavar="N",
                   help="videos at once on this machine, sharing one model [2]")
    g.add_argument("--report", metavar="FILE.json",
                   help="write one record per input (path, output, status, reason, "
                        "frames, seconds)")
    g.add_argument("--report-html", metavar="DIR",
                   help="an HTML report page per video in DIR (its relative path + .html: "
                        "class timeline, screen times, thumbnails, settings) and "
                        "DIR/index.html listing them")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run one task per video on a Ray cluster (pip install "
                        "'camvideo[ray]'); ADDRESS as for ray.init (auto, HOST:PORT, "
                        "ray://HOST:PORT); none: RAY_ADDRESS or a new local instance")
    g.add_argument("--ray-gpus", type=cliargs._unit(0.01, 8.0), default=1.0, metavar="G",
                   help="GPUs per task when the cluster has GPUs; a fraction shares one [1]")
    g.add_argument("--ray-cpus", type=cliargs._unit(0.01, 256.0), default=1.0, metavar="C",
                   help="CPUs per task [1]")
    return p


def _why(r) -> str:
    """A record's reason in the command line's words (a hint's setting as its flag:
    ``use --no-audio``, where the library says ``use audio=False``)."""
    return r.said(_say())


@functools.lru_cache(maxsize=1)
def _say():
    return cliargs.speaker((build_parser(),))


class _Bars:
    """Two tqdm bars on a terminal (videos, frames) and the file in progress; elsewhere
    (piped, scripted: ``lines``) one line per file as it ends."""

    def __init__(self, enabled: bool, lines: bool = False) -> None:
        self.enabled = enabled
        self.lines = lines and not enabled
        if not enabled:
            return
        from tqdm import tqdm

        kw = dict(dynamic_ncols=True, file=sys.stderr, leave=True)
        self.videos = tqdm(desc="videos", unit="video", total=0, position=0, **kw)
        self.frames = tqdm(desc="frames", unit="frame", position=1, **kw)
        self._current = ""

    def __call__(self, p: BatchProgress) -> None:
        if self.lines and p.last is not None and p.last.status in (DONE, FAILED,
                                                                   INTERRUPTED):
            r = p.last
            what = f"{r.frames} frames, {r.seconds:.1f} s" if r.status == DONE else _why(r)
            if r.status == DONE and r.warnings:
                what += f"; {r.reason}"
            print(f"camvideo: {r.status}: {r.path} ({what}) [{p.videos_done}/"
                  f"{p.videos_total}]", file=sys.stderr, flush=True)
        if not self.enabled:
            return
        if self.videos.total != p.videos_total:
            self.videos.total = p.videos_total
            self.videos.refresh()
        current = p.current[-1] if p.current else ""
        if current != self._current:
            self._current = current
            self.videos.set_postfix_str(current, refresh=False)
        self.videos.update(p.videos_done - self.videos.n)
        self.frames.update(p.frames - self.frames.n)
        if p.last is not None and p.last.status == FAILED:
            self.videos.write(f"camvideo: failed: {p.last.path}: {_why(p.last)}",
                              file=sys.stderr)

    def close(self) -> None:
        if self.enabled:
            self.frames.close()
            self.videos.close()


def _print_summary(s: BatchSummary) -> None:
    c = s.counts
    warned = f" ({s.warned} with warnings)" if s.warned else ""
    stopped = f", {c['interrupted']} interrupted" if s.interrupted else ""
    if c["pending"]:
        stopped += f", {c['pending']} not started"
    print(f"camvideo batch: {c['done']} done{warned}, {c['skipped']} skipped, "
          f"{c['failed']} failed{stopped}; {s.frames} frames in {s.seconds:.1f} s "
          f"({s.fps:.1f} fps)", file=sys.stderr)
    for r in s.records:
        if r.status == FAILED:
            print(f"  failed: {r.path}: {_why(r)}", file=sys.stderr)
        elif r.status == DONE and r.warnings:
            print(f"  warning: {r.path}: {r.reason}", file=sys.stderr)


def run_cli(argv: Sequence[str]) -> int:
    """Run ``camvideo batch``; returns the exit code (0, or PARTIAL when any failed)."""
    ns = build_parser().parse_args(argv)
    from .terminal import setup_logging

    setup_logging(ns.verbose)
    # --json and -f/--force are the batch's own flags (json: a bool here, not a path)
    options = cliargs.options_from(argparse.Namespace(**{**vars(ns), "json": None})) \
        .replace(overwrite=False)
    bars = _Bars(not ns.quiet and sys.stderr.isatty(), lines=not ns.quiet)
    try:
        summary = run_batch(ns.in_dir, ns.out_dir, patterns=ns.patterns, ext=ns.ext,
                            json=ns.json, force=ns.force, jobs=ns.jobs,
                            ray=ns.ray is not None, ray_address=ns.ray or None,
                            ray_gpus=ns.ray_gpus, ray_cpus=ns.ray_cpus, report=ns.report,
                            report_html=ns.report_html,
                            progress=bars, options=options)
    except BatchInterrupted as e:  # what was done so far, then the interrupted line
        bars.close()
        _print_summary(e.summary)
        raise
    finally:
        bars.close()
    _print_summary(summary)
    return int(summary.exit_code)
