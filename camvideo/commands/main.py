"""Command line: argument parsing, terminal output and exit codes only; calls the API.

This module imports only the standard library: everything else is imported inside
:func:`main`, so that Ctrl-C during start-up is handled like any other (one line, exit
code 130), not a traceback. ``--help``, ``camvideo models``, bad options and bad inputs
or outputs are answered before torch is imported (it takes seconds); the model loads
last.
"""
from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from typing import Callable, NoReturn, Sequence

log = logging.getLogger("camvideo")

_INTERRUPTED = 130  #: ExitCode.INTERRUPTED, known before camvideo.errors is imported
_INTERRUPTED_LINE = "camvideo: interrupted; nothing was left half written"


def _sigterm_as_interrupt() -> None:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (embedded use)
        pass


def run_main(argv: Sequence[str]) -> int:
    from . import args as cliargs
    from . import terminal
    from ..errors import ExitCode

    ns = cliargs.main_parser().parse_args(argv)
    terminal.setup_logging(ns.verbose)
    options = cliargs.options_from(ns)
    # the input and output are checked before torch and the model load (seconds)
    from ..media.files import FileSource
    from ..media.sink import check_output_path

    FileSource(ns.input).close()
    check_output_path(ns.output, [ns.input], options.overwrite)
    from ..api import annotate

    update, close = terminal.progress_bar(ns.quiet)
    try:
        summary = annotate(ns.input, ns.output, options, progress=update)
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
    from ..model.families import describe_models  # the table: no torch

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


def _as_flags(e: BaseException) -> str:
    """The error's line in the command line's words: the option at fault named by its
    flag (the library names it by its :class:`~camvideo.options.Options` field:
    ``batch_size`` → ``--batch-size``), and so is the setting a hint points at
    (``use audio=False`` → ``use --no-audio``)."""
    from ..errors import CamVideoError
    from . import args, batch, live

    say = args.speaker((args.main_parser(), live.build_parser(), batch.build_parser()))
    text = e.render(say) if isinstance(e, CamVideoError) else str(e)
    option = getattr(e, "option", None)
    if not option or not text.startswith(option):
        return text
    return say(option) + text[len(option):]  # the option itself where no flag gives it


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``camvideo``: returns the process exit code (see ExitCode)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _sigterm_as_interrupt()
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also while importing, before _main's handlers exist
        print(_INTERRUPTED_LINE, file=sys.stderr)
        return _INTERRUPTED


def run() -> NoReturn:
    """The ``camvideo`` console script, ``python -m camvideo`` and ``bin/camvideo``:
    :func:`main`, then :func:`exit_now`. (Tests call :func:`main` in-process instead.)"""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` without the interpreter's slow teardown.

    Finalisation garbage-collects every loaded module's objects: with torch and the
    model's libraries loaded that took 1.1-1.2 s after the work was done
    (benchmarks/README.md, "Start-up"). Everything a normal exit does that matters is
    done first, in the same order: the non-daemon threads are joined, the ``atexit``
    handlers run (``logging.shutdown``, Ray's, temporary directories' finalizers), and
    stdout and stderr are flushed; then ``os._exit``.
    """
    me = threading.current_thread()
    for t in threading.enumerate():
        if t is not me and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):  # closed pipe, closed or no stream
            pass
    os._exit(code)


def _main(argv: list[str]) -> int:
    from ..errors import CamVideoError, ExitCode

    try:
        if argv and argv[0] in _SUBCOMMANDS:
            return int(_subcommand(argv[0])(argv[1:]))
        return int(run_main(argv))
    except CamVideoError as e:
        print(f"camvideo: error: {_as_flags(e)}", file=sys.stderr)
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
