"""Command line: argument parsing, terminal output and exit codes only; calls the API.

This module imports only the standard library: everything else (argument definitions,
which import the API and torch; PyAV) is imported inside :func:`main`, so that Ctrl-C
during those seconds of start-up is handled like any other (one line, exit code 130),
not a traceback.
"""
from __future__ import annotations

import logging
import signal
import sys
from typing import Callable, Sequence

log = logging.getLogger("camvideo")

_INTERRUPTED = 130  #: ExitCode.INTERRUPTED, known before camvideo.errors is imported
_INTERRUPTED_LINE = "camvideo: interrupted; nothing was left half written"


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("camvideo: %(message)s"))
    root = logging.getLogger("camvideo")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use)
        pass


def _progress_bar(quiet: bool, unit: str = "frame") -> tuple[Callable[[int, int], None],
                                                              Callable[[], None]]:
    """A tqdm bar on a terminal (frames, fps, ETA); nothing when quiet or piped."""
    if quiet or not sys.stderr.isatty():
        return (lambda done, total: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(unit=unit, dynamic_ncols=True, file=sys.stderr)

    def update(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return update, bar.close


def run_main(argv: Sequence[str]) -> int:
    from . import args as cliargs
    from ..errors import ExitCode

    ns = cliargs.main_parser().parse_args(argv)
    _setup_logging(ns.verbose)
    from ..api import annotate

    update, close = _progress_bar(ns.quiet)
    try:
        summary = annotate(ns.input, ns.output, progress=update, **cliargs.options_from(ns))
    finally:
        close()
    if not ns.quiet and not sys.stderr.isatty():  # piped or scripted: one line
        print(f"camvideo: wrote {summary.output}: {summary.frames} frames in "
              f"{summary.seconds:.1f} s ({summary.fps:.1f} fps)", file=sys.stderr)
    else:
        log.info("%s: %d frames in %.1f s (%.1f fps)", summary.output, summary.frames,
                 summary.seconds, summary.fps)
    return ExitCode.OK


def run_models(argv: Sequence[str]) -> int:
    from . import args as cliargs
    from ..errors import ExitCode

    cliargs.models_parser().parse_args(argv)
    from ..model.registry import describe_models

    rows = describe_models()
    width = max(len(n) for n, _ in rows)
    for name, note in rows:
        print(f"{name:<{width}}  {note}")
    return ExitCode.OK


# Subcommands, imported only when used: the main job's start-up stays small.
_SUBCOMMANDS = {"models": f"{__name__}:run_models", "live": "camvideo.commands.live:run_cli",
                "batch": "camvideo.commands.batch:run_cli"}


def _subcommand(name: str) -> Callable[[Sequence[str]], int]:
    import importlib

    module, func = _SUBCOMMANDS[name].split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``camvideo``: returns the process exit code (see ExitCode)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _sigterm_as_interrupt()
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also while importing, before _main's handlers exist
        print(_INTERRUPTED_LINE, file=sys.stderr)
        return _INTERRUPTED


def _main(argv: list[str]) -> int:
    from ..errors import CamVideoError, ExitCode

    try:
        if argv and argv[0] in _SUBCOMMANDS:
            return int(_subcommand(argv[0])(argv[1:]))
        return int(run_main(argv))
    except CamVideoError as e:
        print(f"camvideo: error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        print(_INTERRUPTED_LINE, file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except SystemExit as e:  # argparse: --help, --version, usage errors
        return int(e.code) if isinstance(e.code, int) else ExitCode.USAGE
    except BrokenPipeError:
        return int(ExitCode.OK)
    except Exception as e:  # noqa: BLE001 - a bug; say so on one line
        log.debug("internal error", exc_info=True)
        print(f"camvideo: internal error: {type(e).__name__}: {e} "
              "(please report it; -vv shows the traceback)", file=sys.stderr)
        return int(ExitCode.INTERNAL)
