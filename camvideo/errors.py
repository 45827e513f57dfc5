"""Errors a user can cause, and the exit codes the CLI maps them to.

The library raises these; only :mod:`camvideo.commands.main` turns them into one line on stderr
and an exit code. Anything else escaping the library is a bug (exit code ``INTERNAL``).
"""
from __future__ import annotations

import enum
import sys
from collections.abc import Callable


class ExitCode(enum.IntEnum):
    """Process exit codes of every ``camvideo`` command."""

    OK = 0
    INTERNAL = 1        #: a bug: an unexpected exception
    USAGE = 2           #: bad command line or option value (argparse uses 2 too)
    INPUT = 3           #: missing, unreadable or undecodable input
    OUTPUT = 4          #: output exists, is the input, or cannot be written
    MODEL = 5           #: unknown model, bad weights, unsupported head, unknown class
    PARTIAL = 6         #: batch: some inputs failed, the rest were done
    SOURCE_LOST = 7     #: live: the camera or stream disappeared or stalled
    INTERRUPTED = 130   #: Ctrl-C / SIGINT (128 + 2)


class CamVideoError(Exception):
    """Base class of the errors a user can cause; ``str(e)`` is the one line shown.

    A message can point at a setting that gets past it: ``{option}`` in ``message``, and
    ``hint=(name, value)`` naming a :class:`camvideo.options.Options` field (or another
    parameter of the call) and the value to give it, None for "this one". ``str(e)``
    says it in the library's words (``use audio=False``); the command line, which owns
    the flags' names, says its flag (``use --no-audio``) through :meth:`render`.
    """

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str = "", *, hint: tuple[str, object] | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def render(self, name_of: Callable[[str, object], str]) -> str:
        """The message with ``{option}`` said by ``name_of(name, value)``."""
        text = str(self.args[0]) if self.args else ""
        return text if self.hint is None else text.replace("{option}", name_of(*self.hint))

    def __str__(self) -> str:
        return self.render(setting)


def setting(name: str, value: object = None) -> str:
    """A hint in the library's words: ``audio=False``, or ``open_timeout`` alone."""
    return name if value is None else f"{name}={value}"


class OptionError(CamVideoError, ValueError):
    """An option value is out of range or unknown.

    ``option`` names the :class:`camvideo.options.Options` field (or parameter) at fault,
    when there is one; the message then starts with that name, which the command line
    shows as its flag (``size must be ...`` → ``--size must be ...``).
    """

    exit_code = ExitCode.USAGE

    def __init__(self, message: str, option: str | None = None, *,
                 hint: tuple[str, object] | None = None) -> None:
        super().__init__(message, hint=hint)
        self.option = option


class InputError(CamVideoError):
    """The input is missing, unreadable, not a video, or cannot be decoded."""

    exit_code = ExitCode.INPUT


class OutputError(CamVideoError):
    """The output cannot be written (exists, is the input, disk full, ...)."""

    exit_code = ExitCode.OUTPUT


class ModelError(CamVideoError):
    """The model cannot be built or loaded, or is unsuitable for CAM."""

    exit_code = ExitCode.MODEL


class ClassNameError(ModelError):
    """``--class`` names no class of the model's label set."""


class SourceLostError(CamVideoError):
    """A live source could not be opened, disappeared or stalled."""

    exit_code = ExitCode.SOURCE_LOST


def first_line(e: BaseException) -> str:
    """A short reason: FFmpeg's own words without errno numbers and repeated file names."""
    reason = getattr(e, "strerror", None)
    av = sys.modules.get("av")  # an FFmpeg error comes from a loaded PyAV, if any
    ffmpeg = isinstance(e, av.FFmpegError) if av is not None else False
    if (ffmpeg or isinstance(e, OSError)) and reason:
        return str(reason)
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
