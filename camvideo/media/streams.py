"""Live sources for ``camvideo live``: webcams, capture devices, network streams, and files
played at their own pace, all read with a **latest-frame policy**.

Every source has one ``start/read/stop`` shape (:class:`LiveSource`):

- a **reader thread** decodes continuously (PyAV releases the GIL) and keeps only the
  newest decoded frame in a one-frame slot; a frame that is overwritten before anyone took
  it is *dropped* (counted in :attr:`LiveSource.dropped`), never queued, so a consumer
  slower than the camera always gets a fresh frame and latency cannot build up;
- :meth:`LiveSource.read` takes the newest frame, converts it to RGB only then (dropped
  frames are never converted) and stamps it with its **capture time**: the moment it was
  decoded here, in seconds since the first frame read (``pts`` in milliseconds). Where
  the source has its own clock (``source_time``: a stream's timestamps, a camera's), the
  frames after the first of an opening follow that clock from there: capture times
  without the jitter of the network and the decoder (a frame decoded late, in a burst
  after the stream was probed, keeps its place), and the stream's audio
  (:class:`~camvideo.media.audio.AudioFeed`) lines up with them exactly. A jump in the
  source's clock starts a new opening (:class:`Reopened` with no attempts); a clock that
  stands still, goes back a little or drifts :data:`CLOCK_SLACK` away from the capture
  clock is left for the capture clock (re-anchoring the audio there).

**Liveness counts data, not pictures.** A watchdog bounds every wait: PyAV's
``timeout=(open_s, read_s)`` interrupts a network read that gets no data, and
:meth:`LiveSource.read` itself gives up when neither a frame nor a packet arrived for
``read_s + 1`` seconds (a camera driver that hangs). Either way the result is a
:class:`~camvideo.errors.SourceLostError` with one clear line. Packets that decode to
nothing (a stream joined between two keyframes, which may be many seconds apart) keep the
source alive: the reader says so (:attr:`LiveSource.status` ``waiting for a keyframe``)
and bounds that wait itself (:mod:`camvideo.media.sources`).

Besides frames, a reader may produce **signals** (:class:`Signal`): :data:`DATA` (a packet
arrived), :class:`Status` (what it is waiting for) and :class:`Reopened` (it lost its
input and opened it again: ``--reconnect``). After a reopening, the first frame taken is
marked :attr:`Frame.cut <camvideo.media.frames.Frame.cut>` (the smoother starts afresh, as
at a scene cut), capture times go on with the wall clock (the recording shows the gap as
a gap) and the gap is recorded in :attr:`LiveSource.gaps`.

With ``drop=False`` (a file previewed as fast as the pipeline goes, see
:func:`camvideo.media.sources.open_live`) the reader waits for each frame to be taken instead:
nothing is dropped. Opening sources is :mod:`camvideo.media.sources`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any, Callable, Iterator, Union

import av
import numpy as np

from ..errors import CamVideoError, SourceLostError, first_line
from .audio import AudioFeed, AudioSource
from .frames import Frame

__all__ = ["DATA", "DEFAULT_OPEN_TIMEOUT", "DEFAULT_READ_TIMEOUT", "LIVE_TIME_BASE", "Gap",
           "LiveSource", "Reopened", "Signal", "Status", "explain"]

log = logging.getLogger(__name__)

#: Time base of live frames' ``pts`` (milliseconds of capture time).
LIVE_TIME_BASE = Fraction(1, 1000)
DEFAULT_OPEN_TIMEOUT = 10.0  #: seconds to open a source (connect, probe the stream)
DEFAULT_READ_TIMEOUT = 5.0   #: seconds without data before a source counts as stalled
#: A source clock this far (s) from the capture clock, or one that stands still or goes
#: back, is not followed: from that frame on, the capture clock is.
CLOCK_SLACK = 1.0


class Signal:
    """Something a reader produces besides frames (see the module docs)."""


@dataclass(frozen=True)
class _Data(Signal):
    """A packet arrived that gave no picture (yet): the source is alive."""


DATA = _Data()  #: the one :class:`Signal` for "a packet arrived"


@dataclass(frozen=True)
class Status(Signal):
    """What the reader is waiting for (``text`` None: nothing, frames flow).

    ``bounded``: the reader bounds this wait itself (reconnecting), so the consumer's
    watchdog stays quiet meanwhile."""

    text: str | None
    bounded: bool = False


@dataclass(frozen=True)
class Reopened(Signal):
    """The reader lost its input (``reason``, one line) at ``lost_at``
    (``time.monotonic()``) and opened it again after ``attempts`` attempts; 0: the
    source's clock jumped on the same connection (a sender that restarted), so the
    frames after it are timed afresh, without a cut."""

    reason: str
    lost_at: float
    attempts: int


@dataclass(frozen=True)
class Gap:
    """A hole in a live source: it was lost and reopened (``--reconnect``).

    Attributes:
        start: capture time (s) of the last frame taken before it.
        end: capture time (s) of the first frame taken after it.
        reason: why the source was lost (one line).
        attempts: openings it took to get it back (0: not lost, its clock jumped).
    """

    start: float
    end: float
    reason: str
    attempts: int

    @property
    def seconds(self) -> float:
        """How long no frame came (the hole in the recording)."""
        return self.end - self.start

    def as_dict(self) -> dict:
        return {**asdict(self), "seconds": round(self.seconds, 4)}


def explain(e: BaseException, label: str, read_timeout: float) -> BaseException:
    """One clear error for what stopped a reader (a :class:`SourceLostError`, unless it
    is already a camvideo error or not a media error at all)."""
    if isinstance(e, CamVideoError):
        return e
    if isinstance(e, av.ExitError):  # PyAV's read timeout interrupted FFmpeg
        return SourceLostError(f"{label}: stream stalled: no data for {read_timeout:g} s")
    if isinstance(e, (av.FFmpegError, OSError)):
        return SourceLostError(f"{label}: source lost ({first_line(e)})")
    return e


class LiveSource:
    """A source read on its own thread, newest frame first (see the module docs).

    Args:
        label: how messages name the source.
        produce: iterator run on the reader thread; yields one decoded frame object per
            captured frame (the slot keeps the newest), and :class:`Signal` objects.
        convert: turns a produced object into ``(image, rotation)`` with ``image``
            ``(H, W, 3)`` uint8 RGB, rotation not yet applied (called on take only).
        close: releases the device; called on the reader thread when it ends.
        read_timeout: seconds without a new frame or packet before :meth:`read` raises
            :class:`SourceLostError` (plus one second of grace).
        drop: keep only the newest frame (live). False: the reader waits until each
            frame is taken (every frame of a file, no drops).
        timing: ``capture`` (pts/time from capture time, see the module docs) or a
            callable giving ``(pts, time)`` from the produced object (called on take, in
            order).
        nominal_fps: the source's announced rate (0 if unknown), for the recording.
        stopping: event set by :meth:`stop` (``produce`` may wait on it).
        kind: what it is (``camera``, ``url``, ``file``).
        endless: the stream never ends by itself, so its end is a lost source
            (:class:`SourceLostError`); default: ``kind == "camera"``.
        source_time: the produced object's time on the source's own clock, in seconds
            (None: unknown): with ``capture`` timing, frames follow it from the first of
            each opening on, and with an :class:`AudioFeed` as ``audio`` that frame
            anchors the feed's audio there.
        audio: where a recording of this source gets its audio (:meth:`audio_from`): an
            :class:`AudioFeed` (the reader puts the stream's audio packets there,
            beginning one feed epoch per opening), or a callable returning an
            :class:`~camvideo.media.audio.AudioSource` once a frame was taken.
    """

    def __init__(self, label: str, produce: Iterator[Any],
                 convert: Callable[[Any], tuple[np.ndarray, int]], close: Callable[[], None],
                 *, read_timeout: float = DEFAULT_READ_TIMEOUT, drop: bool = True,
                 timing: str | Callable[[Any], tuple[int, float]] = "capture",
                 time_base: Fraction = LIVE_TIME_BASE, nominal_fps: float = 0.0,
                 stopping: threading.Event | None = None, kind: str = "url",
                 endless: bool | None = None,
                 source_time: Callable[[Any], float | None] | None = None,
                 audio: Union[AudioFeed, Callable[[], AudioSource | None], None] = None
                 ) -> None:
        self.label = label
        self.kind = kind  #: ``camera``, ``url`` or ``file`` (see :class:`camvideo.media.sources.SourceSpec`)
        self.endless = kind == "camera" if endless is None else bool(endless)
        self.read_timeout = float(read_timeout)
        self.drop = drop
        self.time_base = time_base
        self.nominal_fps = float(nominal_fps or 0.0)
        self.captured = 0   #: frames decoded
        self.dropped = 0    #: frames overwritten before they were taken
        self.delivered = 0  #: frames returned by :meth:`read`
        self.packets = 0    #: packets that arrived without giving a frame (yet)
        self.gaps: list[Gap] = []  #: times the source was lost and reopened
        self._produce, self._convert, self._close = produce, convert, close
        self._timing = timing
        self._source_time = source_time
        self._audio = audio
        self._cond = threading.Condition()
        self._item: tuple[Any, float, int] | None = None  # (object, captured at, epoch)
        self._ended = False
        self._error: BaseException | None = None
        self._status: Status = Status(None)
        self._last_data: float | None = None  # time.monotonic() of the last frame/packet
        self._epoch = 1  # one per opening of the input (as AudioFeed.begin counts them)
        self._reopened: dict[int, Reopened] = {}
        self._stopping = stopping or threading.Event()
        self._finished = threading.Event()  # the reader thread is done (Event, not join:
        # a KeyboardInterrupt inside Thread.join can mark a live thread finished)
        self._thread = threading.Thread(target=self._run, name="camvideo-capture",
                                        daemon=True)
        self._t0: float | None = None
        self._last_pts = -1
        self._last_time: float | None = None
        self._taken_epoch = 0
        self._offset: float | None = None  # capture time − source time, this opening
        self._last_source: float | None = None
        self._size: tuple[int, int] | None = None
        self._capture_at: dict[int, float] = {}

    @property
    def status(self) -> str | None:
        """What the source is waiting for (``waiting for a keyframe``, ``reconnecting
        (attempt 2 of 5)``), for a HUD; None while frames flow."""
        return self._status.text

    def audio_from(self) -> AudioSource | None:
        """Where a recording of this source gets its audio (None: it has none); ask once
        a frame was taken (a file played as a camera is moved to the first one)."""
        if self._audio is None or isinstance(self._audio, AudioFeed):
            return self._audio
        return self._audio()

    # ------------------------------------------------------------------ reader thread
    def start(self) -> "LiveSource":
        """Start the reader thread (once)."""
        if self._thread.ident is None and not self._ended:
            self._thread.start()
        return self

    def _signal(self, sig: Signal, now: float) -> None:
        with self._cond:
            self._last_data = now
            if isinstance(sig, _Data):
                self.packets += 1
            elif isinstance(sig, Status):
                self._status = sig
            elif isinstance(sig, Reopened):
                self._epoch += 1
                self._reopened[self._epoch] = sig
                self._status = Status(None)
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            for obj in self._produce:
                now = time.monotonic()
                if isinstance(obj, Signal):
                    self._signal(obj, now)
                    continue
                with self._cond:
                    while not self.drop and self._item is not None \
                            and not self._stopping.is_set():
                        self._cond.wait(0.1)
                    if self._stopping.is_set():
                        break
                    if self._item is not None:
                        self.dropped += 1
                    self._item = (obj, now, self._epoch)
                    self._last_data = now
                    self.captured += 1
                    self._cond.notify_all()
                if self._stopping.is_set():
                    break
            else:
                if self._stopping.is_set():  # stopped while the reader waited
                    pass
                elif self.kind == "camera":  # a camera does not end: it was unplugged
                    raise SourceLostError(f"{self.label}: camera disappeared (its stream "
                                          "ended)")
                elif self.endless:  # a live stream does not end: its server went away
                    raise SourceLostError(f"{self.label}: stream ended (the sender "
                                          "closed it or went away)")
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            err = explain(e, self.label, self.read_timeout)
            with self._cond:
                self._error = err
                self._cond.notify_all()
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()
            try:
                self._close()
            except Exception as e:  # noqa: BLE001 - closing a dead device
                log.debug("%s: close failed: %s", self.label, e)
            self._finished.set()

    # ------------------------------------------------------------------ consumer side
    def read(self, stop: threading.Event | None = None) -> Frame | None:
        """The newest frame not yet taken, waiting for one if needed.

        Returns:
            A :class:`Frame` (``index``: frames returned so far; ``time``: capture time in
            seconds since the first one; ``pts`` in :attr:`time_base`; ``cut``: the
            first after a gap), or None when the source ended or ``stop`` was set.

        Raises:
            SourceLostError: the source failed, disappeared, or sent nothing at all (no
                frame, no packet) for ``read_timeout`` (+1) seconds.
        """
        began = time.monotonic()
        with self._cond:
            while self._item is None:
                if self._error is not None:
                    raise self._error
                if self._ended or (stop is not None and stop.is_set()):
                    return None
                now = time.monotonic()
                quiet = now - max(began, self._last_data or began)
                left = self.read_timeout + 1.0 - quiet
                if left <= 0 and not self._status.bounded:
                    raise SourceLostError(f"{self.label}: stream stalled: no frame for "
                                          f"{self.read_timeout + 1:g} s")
                self._cond.wait(min(0.1, max(left, 0.01)))
            obj, captured_at, epoch = self._item
            self._item = None
            self._cond.notify_all()
        return self._frame(obj, captured_at, epoch)

    def _frame(self, obj: Any, captured_at: float, epoch: int) -> Frame:
        image, rot = self._convert(obj)
        if rot:
            image = np.ascontiguousarray(np.rot90(image, k=rot // 90))
        h, w = image.shape[:2]
        if self._size is None:
            self._size = (h, w)
        elif self._size != (h, w):  # resolution changed mid-stream: keep the first size
            import cv2

            image = cv2.resize(image, (self._size[1], self._size[0]))
        first = epoch != self._taken_epoch  # the first frame taken of an opening
        if self._timing == "capture":
            if self._t0 is None:
                self._t0 = captured_at
            t = captured_at - self._t0
            source = self._source_time(obj) if self._source_time else None
            if first:
                self._offset = None if source is None else t - source
            elif source is not None and self._offset is not None:
                on_source = source + self._offset  # the source's clock, from the first
                if self._last_source is not None and source <= self._last_source:
                    log.debug("%s: source clock stands still or goes back; capture "
                              "times from here", self.label)
                    self._offset = None
                elif abs(on_source - t) > CLOCK_SLACK:
                    log.debug("%s: source clock %.3f s off the capture clock; "
                              "re-anchored", self.label, on_source - t)
                    self._offset = t - source
                    if isinstance(self._audio, AudioFeed):
                        self._audio.anchor(epoch, self._offset, again=True)
                else:
                    t = on_source
            self._last_source = source
            pts = round(t / self.time_base)
        else:
            pts, _ = self._timing(obj)  # type: ignore[operator]
        pts = max(int(pts), self._last_pts + 1)
        self._last_pts = pts
        t = float(pts * self.time_base)
        cut = False
        if first:
            reopened = self._reopened.pop(epoch, None)
            if reopened is not None and self._last_time is not None:
                cut = reopened.attempts > 0
                gap = Gap(round(self._last_time, 4), round(t, 4), reopened.reason,
                          reopened.attempts)
                self.gaps.append(gap)
                if cut:
                    log.warning("%s: back after %.1f s (%s)", self.label, gap.seconds,
                                reopened.reason)
            self._taken_epoch = epoch
            if isinstance(self._audio, AudioFeed) and self._offset is not None:
                self._audio.anchor(epoch, self._offset)
        self._last_time = t
        index = self.delivered
        self.delivered += 1
        self._capture_at[index] = captured_at
        return Frame(index, image, pts, t, cut=cut)

    def _thread_never_ran(self) -> None:
        with self._cond:
            if self._ended:
                return
            self._ended = True
        try:
            self._close()
        except Exception as e:  # noqa: BLE001
            log.debug("%s: close failed: %s", self.label, e)

    def capture_time(self, index: int) -> float | None:
        """``time.monotonic()`` when frame ``index`` was decoded (each asked once)."""
        return self._capture_at.pop(index, None)

    def stop(self, wait: float | None = None) -> None:
        """Stop the reader and release the device (waits up to ``wait`` seconds, default
        the read timeout + 1; a reader stuck in a driver is left behind, as a daemon)."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.ident is None:  # never started: release the device here
            self._thread_never_ran()
        elif not self._finished.wait(self.read_timeout + 1.0 if wait is None else wait):
            log.debug("%s: reader still blocked; left behind", self.label)
        else:
            self._thread.join(1.0)

    def __enter__(self) -> "LiveSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
