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

**Keyframes**: a stream joined between two keyframes gives nothing decodable until the
next one, which may be many seconds away (x264's default GOP is 250 frames; IP cameras'
"smart" codecs use long ones too). The packets arriving meanwhile keep the source alive
(:mod:`camvideo.media.streams`): the reader logs and shows ``waiting for a keyframe``
and waits up to ``--open-timeout`` from the start of the opening (or from the last
picture) before giving up with a line naming the cause. Packets read while probing the
stream are kept (no ``fflags nobuffer``: it would throw away the first keyframe when the
probing needed it to learn the picture size), and probing stops after half the open
timeout (``analyzeduration``), the rest of the wait being the reader's.

**Reconnecting** (``reconnect=N``, ``--reconnect``): a camera or URL that is lost (stalls,
fails) or ends is opened again, up to ``N`` attempts with a back-off (0.5 s, 1 s, 2 s...,
at most 10 s between them; the count starts again once a picture came), each waiting up
to the open timeout. The recording goes on across the gap (see
:class:`~camvideo.media.streams.Reopened`); when the attempts run out, the source is lost.

**Audio**: a stream's audio packets are demuxed beside the video into an
:class:`~camvideo.media.audio.AudioFeed`, anchored to the capture clock by each opening's
first picture; a file played as a camera gives its own audio, moved to its first frame
played (:meth:`LiveSource.audio_from <camvideo.media.streams.LiveSource.audio_from>`).
"""
from __future__ import annotations

import logging
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import av
import numpy as np

from ..errors import InputError, OptionError, SourceLostError, first_line
from .audio import AudioFeed, AudioFrom, audio_streams
from .files import FileSource
from .frames import Frame
from .streams import (DATA, DEFAULT_OPEN_TIMEOUT, DEFAULT_READ_TIMEOUT, LIVE_TIME_BASE,
                      LiveSource, Reopened, Status, explain)

log = logging.getLogger(__name__)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

#: Seconds without a picture (while packets arrive) before the reader says it is
#: waiting for a keyframe, and before it warns about it.
KEYFRAME_NOTE, KEYFRAME_WARN = 1.0, 3.0
#: Seconds before reconnection attempt ``k`` (1-based): ``min(0.5 * 2 ** (k - 1), 10)``.
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 10.0

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


def _vf_time(vf: av.VideoFrame) -> float | None:
    return vf.time


def _open_interruptibly(target: str, fmt: str | None, options: dict[str, str],
                        timeouts: tuple[float, float], label: str,
                        stop: threading.Event | None = None) -> Any:
    """``av.open`` on a helper thread, the caller waiting in short steps so that a
    KeyboardInterrupt (Ctrl-C, SIGTERM via the CLI), or ``stop`` being set, ends the wait
    at once.

    On KeyboardInterrupt or ``stop`` the open is abandoned: its thread finishes on its
    own (within the open timeout) and closes the container if it got one after all.

    Returns:
        The container, or None when ``stop`` was set.

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

    def abandon() -> None:
        with lock:
            state["abandoned"] = True
            container = state.pop("container", None)
        if container is not None:
            container.close()
        log.debug("%s: open abandoned", label)

    thread = threading.Thread(target=work, name="camvideo-open", daemon=True)
    thread.start()
    try:
        while not done.wait(0.05):
            if stop is not None and stop.is_set():
                abandon()
                return None
    except BaseException:  # KeyboardInterrupt: give up the open, close what it returns
        abandon()
        raise
    if "error" in state:
        raise state["error"]
    return state["container"]


@dataclass
class _Opened:
    """One opening of a camera or URL: its container, streams, feed epoch, and when the
    opening began (``time.monotonic()``)."""

    container: Any
    video: Any
    audio: list = field(default_factory=list)
    epoch: int = 0
    started: float = 0.0
    closed: bool = False


def _lost(e: BaseException, label: str) -> str:
    """The reason in a lost-source error, without the source's name in front."""
    text = str(e)
    return text[len(label) + 2:] if text.startswith(f"{label}: ") else text


class _StreamReader:
    """The reader of a camera or URL (run on :class:`LiveSource`'s thread): demuxes and
    decodes, puts the audio packets into ``feed``, says when it waits for a keyframe and
    gives up after the open timeout, and with ``reconnect`` opens a lost or ended input
    again (see the module docs)."""

    def __init__(self, spec: SourceSpec, opened: _Opened, *,
                 timeouts: tuple[float, float], options: dict[str, str], reconnect: int,
                 stopping: threading.Event, feed: AudioFeed | None) -> None:
        self.spec, self.label = spec, spec.label
        self._opened = opened
        self._timeouts, self._options = timeouts, options
        self._reconnect = int(reconnect)
        self._stopping = stopping
        self._feed = feed
        self._failures = 0  # reconnection attempts since the last picture
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ opening
    def connect(self, stop: threading.Event | None = None) -> _Opened | None:
        """Open the input (None: ``stop`` was set meanwhile).

        Raises:
            SourceLostError: it cannot be opened, times out, or has no video.
        """
        spec, (open_s, _) = self.spec, self._timeouts
        started = time.monotonic()
        try:
            container = _open_interruptibly(spec.target, spec.format, self._options,
                                            self._timeouts, spec.label, stop)
        except av.ExitError:
            raise SourceLostError(f"cannot open {spec.label}: nothing received within "
                                  f"{open_s:g} s (see {{option}})",
                                  hint=("open_timeout", None)) from None
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SourceLostError(f"cannot open {spec.label}: {first_line(e)}") from None
        if container is None:
            return None
        try:
            video = [v for v in container.streams.video if v.codec_context is not None]
            if not video:
                raise SourceLostError(f"no video stream in {spec.label}")
            stream = video[0]
            stream.thread_type = "SLICE"  # frame threading would hold frames back: latency
            sound = audio_streams(container) if self._feed is not None else []
            epoch = self._feed.begin(sound) if self._feed is not None else 0
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate or 0
            cc = stream.codec_context
            log.info("%s: %s %dx%d, %.3g fps announced%s", spec.label, cc.name, cc.width,
                     cc.height, float(rate), f", {len(sound)} audio" if sound else "")
            return _Opened(container, stream, sound, epoch, started)
        except BaseException:  # no video, or interrupted: the container is not handed over
            container.close()
            raise

    def close(self, opened: _Opened | None = None) -> None:
        """Close ``opened`` (default: the current opening); again is a no-op."""
        opened = opened or self._opened
        with self._lock:
            if opened is None or opened.closed:
                return
            opened.closed = True
        if self._feed is not None:
            self._feed.end(opened.epoch)
        opened.container.close()

    # ------------------------------------------------------------------ reading
    def __iter__(self) -> Iterator[Any]:
        opened: _Opened | None = self._opened
        while opened is not None:
            try:
                yield from self._read(opened)
                if not self._reconnect or self._stopping.is_set():
                    return
                reason = "stream ended (the sender closed it or went away)"
            except Exception as e:  # noqa: BLE001 - lost: reopened, or raised as it is
                if not self._reconnect or self._stopping.is_set():
                    raise
                reason = _lost(explain(e, self.label, self._timeouts[1]), self.label)
            finally:
                self.close(opened)
            opened = yield from self._reopen(reason)
            self._opened = opened

    def _read(self, opened: _Opened) -> Iterator[Any]:
        """One opening's frames (and signals), until it ends or fails."""
        video, feed = opened.video, self._feed
        slots = {s.index: i for i, s in enumerate(opened.audio)}
        last: float | None = None  # when the last picture came
        clock: tuple[float, float] | None = None  # its source time and arrival
        waiting = warned = False
        skipped = 0
        for packet in opened.container.demux(video, *opened.audio):
            if packet.stream.index != video.index:
                if feed is not None:
                    feed.put(opened.epoch, slots[packet.stream.index], packet)
                yield DATA
                continue
            try:
                frames = packet.decode()
            except av.FFmpegError as e:
                frames = []
                skipped += 1
                if skipped in (1, 10, 100, 1000):
                    log.debug("%s: %d undecodable packets skipped (%s)", self.label,
                              skipped, first_line(e))
            now = time.monotonic()
            if frames:
                if waiting:
                    log.info("%s: keyframe after %.1f s", self.label,
                             now - (last if last is not None else opened.started))
                    waiting = warned = False
                    yield Status(None)
                last = now
                self._failures = 0
                for vf in frames:
                    clock = yield from self._clock(vf, clock, now, opened)
                    yield vf
                continue
            since = last if last is not None else opened.started
            yield from self._keyframe_wait(now - since, last is None, waiting, warned)
            waiting = waiting or now - since >= KEYFRAME_NOTE
            warned = warned or now - since >= KEYFRAME_WARN

    def _clock(self, vf: av.VideoFrame, clock: tuple[float, float] | None, now: float,
               opened: _Opened) -> Iterator[Any]:
        """Watch the source's clock: a jump (back, or ahead by over a second more than
        the time that passed) starts a new epoch, timed afresh; returns the new
        ``(source time, arrival)``."""
        t = vf.time
        if t is None:
            return clock
        if clock is not None:
            back, ahead = t < clock[0] - 0.5, t - clock[0] > now - clock[1] + 1.0
            if back or ahead:
                reason = (f"the stream's clock jumped {'back' if back else 'ahead'} "
                          f"{abs(t - clock[0]):.1f} s")
                log.info("%s: %s; timed afresh", self.label, reason)
                if self._feed is not None:
                    self._feed.end(opened.epoch)
                    opened.epoch = self._feed.begin(opened.audio)
                yield Reopened(reason, now, 0)
        return t, now

    def _keyframe_wait(self, waited: float, first: bool, waiting: bool,
                       warned: bool) -> Iterator[Any]:
        """Signals for a packet that gave no picture ``waited`` s after the opening
        (``first``) or the last picture; gives up after the open timeout."""
        limit = self._timeouts[0]
        if waited > limit:
            if first:
                raise SourceLostError(
                    f"{self.label}: no picture within {limit:g} s of connecting: data "
                    "arrives, but no keyframe to start decoding from (keyframes further "
                    "apart? raise {option})", hint=("open_timeout", None))
            raise SourceLostError(
                f"{self.label}: no picture for {limit:g} s: data arrives, but nothing "
                "decodable (waiting for a keyframe; see {option})",
                hint=("open_timeout", None))
        if waited >= KEYFRAME_NOTE and not waiting:
            log.info("%s: waiting for a keyframe (data arrives, nothing decodable yet)",
                     self.label)
            yield Status("waiting for a keyframe")
        if waited >= KEYFRAME_WARN and not warned:
            log.warning("%s: waiting for a keyframe: data arrives, nothing decodable yet "
                        "(%.0f s; giving up after %g s: the open timeout)", self.label,
                        waited, limit)
        yield DATA

    def _reopen(self, reason: str) -> Iterator[Any]:
        """Open the input again (signals while trying); returns the opening, or None
        when stopped.

        Raises:
            SourceLostError: the attempts ran out.
        """
        lost_at = time.monotonic()
        n = self._reconnect
        log.warning("%s: %s; reconnecting", self.label, reason)
        last = ""
        while self._failures < n:
            self._failures += 1
            k = self._failures
            yield Status(f"reconnecting (attempt {k} of {n})", bounded=True)
            if self._stopping.wait(min(BACKOFF_FIRST * 2 ** (k - 1), BACKOFF_MAX)):
                return None
            try:
                opened = self.connect(self._stopping)
            except SourceLostError as e:
                last = _lost(e, self.label)
                log.info("%s: attempt %d of %d: %s", self.label, k, n, e)
                continue
            if opened is None:
                return None
            log.info("%s: reopened (attempt %d of %d)", self.label, k, n)
            yield Reopened(reason, lost_at, k)
            return opened
        raise SourceLostError(f"{self.label}: {reason}; not back after {n} reconnection "
                              f"attempts (last: {last or 'no attempt'})")


def _open_stream(spec: SourceSpec, timeouts: tuple[float, float],
                 options: dict[str, str], *, read_timeout: float,
                 reconnect: int = 0) -> LiveSource:
    """A camera or URL: ``av.open`` with ``timeout=(open_s, read_s)`` (interruptibly),
    read by a :class:`_StreamReader`."""
    opts = dict(options)
    if spec.kind == "url":  # probing leaves half of the open timeout to the reader
        opts.setdefault("analyzeduration", str(round(min(5.0, timeouts[0] / 2) * 1e6)))
    stopping = threading.Event()
    reader = _StreamReader(spec, None, timeouts=timeouts, options=opts,  # type: ignore[arg-type]
                           reconnect=reconnect, stopping=stopping, feed=AudioFeed())
    opened = reader.connect()
    assert opened is not None
    if not opened.audio:
        reader._feed = None  # no audio at the start: recordings have none
    reader._opened = opened
    video = opened.video
    rate = video.average_rate or video.guessed_rate or video.base_rate or 0
    return LiveSource(spec.label, iter(reader), _vf_to_rgb, reader.close,
                      read_timeout=read_timeout, drop=True, nominal_fps=float(rate),
                      stopping=stopping, kind=spec.kind, endless=spec.endless,
                      source_time=_vf_time, audio=reader._feed)


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
              options: dict[str, str] | None = None, reconnect: int = 0) -> LiveSource:
    """Open ``camvideo live``'s SOURCE (call :meth:`LiveSource.start` to start reading:
    right away for a camera or stream, whose buffers would otherwise fill up; when the
    model is ready for a file, which would otherwise play unseen).

    Args:
        text: see :func:`parse_source`.
        realtime: a file is played at its own pace as if it were a camera (latest-frame
            policy; frames keep the file's times, counted from the first frame played,
            so its audio stays in step). Without it a file is previewed as fast as the
            pipeline goes: every frame, the file's own timing, nothing dropped.
        open_timeout: seconds to connect and find the video stream, and to get its first
            picture (a keyframe).
        read_timeout: seconds without data before the source counts as stalled.
        options: FFmpeg input options (``video_size``, ``framerate``, ``input_format``,
            ``rtsp_transport``...).
        reconnect: reopen a camera or URL that is lost or ends, up to this many attempts
            (0: never; see the module docs). Files are not reopened.

    Raises:
        SourceLostError: a camera or URL that cannot be opened (or times out).
        InputError: a file that cannot be read.
        OptionError: a bad SOURCE, timeout or attempt count.
    """
    if not (open_timeout > 0 and read_timeout > 0):
        raise OptionError("timeouts must be > 0 seconds")
    if reconnect < 0:
        raise OptionError(f"reconnect must be ≥ 0 attempts, got {reconnect}",
                          option="reconnect")
    spec = parse_source(text)
    if spec.kind == "file":
        if not Path(spec.target).exists():
            raise InputError(f"input not found: {spec.target} (a camera is an index such "
                             "as 0 or a device such as /dev/video0, a stream a URL)")
        fs = FileSource(spec.target)
        path, has_audio = spec.target, fs.info.audio_streams > 0
        if realtime:
            halt = threading.Event()
            first: list[float] = []

            def timing(f: Frame) -> tuple[int, float]:
                if not first:  # times count from the first frame played
                    first.append(f.time)
                t = f.time - first[0]
                return round(t / LIVE_TIME_BASE), t

            def moved() -> AudioFrom | None:
                return AudioFrom(path, offset=-first[0], start=0.0) if first else None

            src = LiveSource(spec.label, _paced(fs, halt), lambda f: (f.image, 0), fs.close,
                             read_timeout=read_timeout, drop=True, timing=timing,
                             nominal_fps=float(fs.info.fps), stopping=halt, kind="file",
                             audio=moved if has_audio else None)
        else:
            src = LiveSource(spec.label, iter(fs), lambda f: (f.image, 0), fs.close,
                             read_timeout=max(read_timeout, 30.0), drop=False,
                             timing=lambda f: (f.pts, f.time), time_base=fs.info.time_base,
                             nominal_fps=float(fs.info.fps), kind="file",
                             audio=(lambda: AudioFrom(path)) if has_audio else None)
        return src
    return _open_stream(spec, (open_timeout, read_timeout), options or {},
                        read_timeout=read_timeout, reconnect=reconnect)
