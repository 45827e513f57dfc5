"""What ``camvideo live SOURCE`` names and how it is opened: a camera (index, device
path, DirectShow name), a URL or a file (:func:`parse_source`), opened as a
:class:`~camvideo.media.streams.LiveSource` (:func:`open_live`).

**Opening** a camera or URL (``av.open``: connect, probe) runs on a helper thread while the
caller waits in short steps, so Ctrl-C (KeyboardInterrupt) ends the wait at once: PyAV's
interrupt callback only watches the clock, and a main thread inside ``av.open`` would not
see the signal before the open timeout. The abandoned open is left to finish on its own;
a container it opens after all is closed there, never leaked.

**The end of a stream**: a camera does not end, and neither does a live-protocol URL
(:data:`LIVE_SCHEMES`: ``rtsp``, ``rtsps``, ``rtmp``, ``rtmps``, ``udp``, ``tcp``, ``srt``,
``rtp``): its end means the server went away, a lost source
(:class:`~camvideo.errors.SourceLostError`, so a watchdog can restart the command).
``http(s)://`` and other URLs (which may serve a finite file) and files end normally.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np

from ..errors import InputError, OptionError, SourceLostError, first_line
from .files import FileSource
from .frames import Frame
from .streams import DEFAULT_OPEN_TIMEOUT, DEFAULT_READ_TIMEOUT, LiveSource

log = logging.getLogger(__name__)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

#: URL schemes of live protocols: the end of such a stream is a lost source, not an end.
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp"})


@dataclass(frozen=True)
class SourceSpec:
    """What ``camvideo live SOURCE`` names.

    Attributes:
        kind: ``camera`` (index or device path), ``url`` (anything PyAV opens by URL) or
            ``file``.
        target: what ``av.open`` gets (``/dev/video0``, the URL, the path).
        format: FFmpeg input format (``v4l2``, ``avfoundation``, ``dshow``) or None.
        label: how messages name it (``camera 0 (/dev/video0)``).
    """

    kind: str
    target: str
    format: str | None
    label: str

    @property
    def endless(self) -> bool:
        """A camera or a live-protocol URL (:data:`LIVE_SCHEMES`): its stream ending
        means the source was lost."""
        if self.kind == "camera":
            return True
        return self.kind == "url" and \
            self.target.split(":", 1)[0].lower() in LIVE_SCHEMES


def parse_source(text: str) -> SourceSpec:
    """A webcam index (``0``), a device path (``/dev/video0``), ``video=NAME`` (Windows
    DirectShow), a URL (``rtsp://``, ``udp://``, ``tcp://``, ``http://``...) or a file.

    Raises:
        OptionError: empty, or a camera index where no capture API is known.
    """
    text = (text or "").strip()
    if not text:
        raise OptionError("empty source; give a camera index, a device, a URL or a file")
    if text.isdigit():
        if sys.platform.startswith("linux"):
            dev = f"/dev/video{int(text)}"
            return SourceSpec("camera", dev, "v4l2", f"camera {int(text)} ({dev})")
        if sys.platform == "darwin":
            return SourceSpec("camera", text, "avfoundation", f"camera {text}")
        raise OptionError("camera indexes work on Linux and macOS; on Windows give the "
                          "camera's name as video=NAME")
    if text.startswith("video="):
        return SourceSpec("camera", text, "dshow", f"camera {text[6:]}")
    if text.startswith("/dev/"):
        return SourceSpec("camera", text, "v4l2", f"camera {text}")
    if _URL.match(text):
        return SourceSpec("url", text, None, _redact(text))
    return SourceSpec("file", text, None, text)


def _redact(url: str) -> str:
    """The URL without a password (``rtsp://user:secret@host`` → ``rtsp://user:***@host``)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/:@]*):[^/@]*@", r"\1:***@", url)


# ---------------------------------------------------------------------------------------
# Opening


def _vf_to_rgb(vf: av.VideoFrame) -> tuple[np.ndarray, int]:
    return vf.to_ndarray(format="rgb24"), int(getattr(vf, "rotation", 0) or 0) % 360


def _decode(container: Any, stream: Any, label: str) -> Iterator[av.VideoFrame]:
    """Decoded frames of a live container; undecodable packets are skipped (a stream
    joined mid-GOP starts with some)."""
    skipped = 0
    for packet in container.demux(stream):
        try:
            yield from packet.decode()
        except av.FFmpegError as e:
            skipped += 1
            if skipped in (1, 10, 100, 1000):
                log.info("%s: %d undecodable packets skipped (%s)", label, skipped,
                         first_line(e))


def _open_interruptibly(target: str, fmt: str | None, options: dict[str, str],
                        timeouts: tuple[float, float], label: str) -> Any:
    """``av.open`` on a helper thread, the caller waiting in short steps so that a
    KeyboardInterrupt (Ctrl-C, SIGTERM via the CLI) ends the wait at once.

    On KeyboardInterrupt the open is abandoned: its thread finishes on its own (within
    the open timeout) and closes the container if it got one after all.

    Raises:
        KeyboardInterrupt: interrupted while waiting.
        Whatever ``av.open`` raised.
    """
    lock = threading.Lock()
    done = threading.Event()
    state: dict[str, Any] = {"abandoned": False}

    def work() -> None:
        try:
            container = av.open(target, "r", format=fmt, options=options,
                                timeout=timeouts)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            with lock:
                state["error"] = e
        else:
            with lock:
                abandoned = state["abandoned"]
                if not abandoned:
                    state["container"] = container
            if abandoned:  # nobody wants it any more: do not leak it
                try:
                    container.close()
                except Exception as e:  # noqa: BLE001
                    log.debug("%s: closing an abandoned open failed: %s", label, e)
                log.debug("%s: abandoned open finished; container closed", label)
        finally:
            done.set()

    thread = threading.Thread(target=work, name="camvideo-open", daemon=True)
    thread.start()
    try:
        while not done.wait(0.05):
            pass
    except BaseException:  # KeyboardInterrupt: give up the open, close what it returns
        with lock:
            state["abandoned"] = True
            container = state.pop("container", None)
        if container is not None:
            container.close()
        log.debug("%s: open abandoned", label)
        raise
    if "error" in state:
        raise state["error"]
    return state["container"]


def _open_stream(spec: SourceSpec, timeouts: tuple[float, float],
                 options: dict[str, str], *, read_timeout: float) -> LiveSource:
    """A camera or URL: ``av.open`` with ``timeout=(open_s, read_s)`` (interruptible)."""
    opts = dict(options)
    if spec.kind == "url":
        opts.setdefault("fflags", "nobuffer")  # no input buffering: lower latency
    try:
        container = _open_interruptibly(spec.target, spec.format, opts, timeouts,
                                        spec.label)
    except av.ExitError:
        raise SourceLostError(f"cannot open {spec.label}: nothing received within "
                              f"{timeouts[0]:g} s (see --open-timeout)") from None
    except (av.FFmpegError, OSError, ValueError) as e:
        raise SourceLostError(f"cannot open {spec.label}: {first_line(e)}") from None
    try:
        video = [v for v in container.streams.video if v.codec_context is not None]
        if not video:
            raise SourceLostError(f"no video stream in {spec.label}")
        stream = video[0]
        stream.thread_type = "SLICE"  # frame threading would hold frames back: latency
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate or 0
        log.info("%s: %s %dx%d, %.3g fps announced", spec.label, stream.codec_context.name,
                 stream.codec_context.width, stream.codec_context.height, float(rate))
        return LiveSource(spec.label, _decode(container, stream, spec.label), _vf_to_rgb,
                          container.close, read_timeout=read_timeout, drop=True,
                          nominal_fps=float(rate), kind=spec.kind, endless=spec.endless)
    except BaseException:  # no video, or interrupted: the container is not handed over
        container.close()
        raise


def _paced(source: FileSource, stop: threading.Event) -> Iterator[Frame]:
    """A file's frames released at their own pace, as a camera would deliver them."""
    start: float | None = None
    for f in source:
        if start is None:
            start = time.monotonic() - f.time
        wait = start + f.time - time.monotonic()
        if wait > 0 and stop.wait(wait):
            return
        yield f


def open_live(text: str, *, realtime: bool = False,
              open_timeout: float = DEFAULT_OPEN_TIMEOUT,
              read_timeout: float = DEFAULT_READ_TIMEOUT,
              options: dict[str, str] | None = None) -> LiveSource:
    """Open ``camvideo live``'s SOURCE (call :meth:`LiveSource.start` to start reading:
    right away for a camera or stream, whose buffers would otherwise fill up; when the
    model is ready for a file, which would otherwise play unseen).

    Args:
        text: see :func:`parse_source`.
        realtime: a file is played at its own pace as if it were a camera (latest-frame
            policy, capture timing). Without it a file is previewed as fast as the
            pipeline goes: every frame, the file's own timing, nothing dropped.
        open_timeout: seconds to connect and find the video stream.
        read_timeout: seconds without data before the source counts as stalled.
        options: FFmpeg input options (``video_size``, ``framerate``, ``input_format``,
            ``rtsp_transport``...).

    Raises:
        SourceLostError: a camera or URL that cannot be opened (or times out).
        InputError: a file that cannot be read.
        OptionError: a bad SOURCE or timeout.
    """
    if not (open_timeout > 0 and read_timeout > 0):
        raise OptionError("timeouts must be > 0 seconds")
    spec = parse_source(text)
    if spec.kind == "file":
        if not Path(spec.target).exists():
            raise InputError(f"input not found: {spec.target} (a camera is an index such "
                             "as 0 or a device such as /dev/video0, a stream a URL)")
        fs = FileSource(spec.target)
        if realtime:
            halt = threading.Event()
            src = LiveSource(spec.label, _paced(fs, halt), lambda f: (f.image, 0), fs.close,
                             read_timeout=read_timeout, drop=True,
                             nominal_fps=float(fs.info.fps), stopping=halt, kind="file")
        else:
            src = LiveSource(spec.label, iter(fs), lambda f: (f.image, 0), fs.close,
                             read_timeout=max(read_timeout, 30.0), drop=False,
                             timing=lambda f: (f.pts, f.time), time_base=fs.info.time_base,
                             nominal_fps=float(fs.info.fps), kind="file")
        return src
    return _open_stream(spec, (open_timeout, read_timeout), options or {},
                        read_timeout=read_timeout)
