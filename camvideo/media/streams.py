"""Live sources for ``camvideo live``: webcams, capture devices, network streams, and files
played at their own pace, all read with a **latest-frame policy**.

Every source has one ``start/read/stop`` shape (:class:`LiveSource`):

- a **reader thread** decodes continuously (PyAV releases the GIL) and keeps only the
  newest decoded frame in a one-frame slot; a frame that is overwritten before anyone took
  it is *dropped* (counted in :attr:`LiveSource.dropped`), never queued, so a consumer
  slower than the camera always gets a fresh frame and latency cannot build up;
- :meth:`LiveSource.read` takes the newest frame, converts it to RGB only then (dropped
  frames are never converted) and stamps it with its **capture time**: the moment it was
  decoded here, in seconds since the first frame read (``pts`` in milliseconds).

A **watchdog** bounds every wait: PyAV's ``timeout=(open_s, read_s)`` interrupts a
network read that gets no data, and :meth:`LiveSource.read` itself gives up when no new
frame arrived for ``read_s + 1`` seconds (a camera driver that hangs). Either way the
result is a :class:`~camvideo.errors.SourceLostError` with one clear line.

With ``drop=False`` (a file previewed as fast as the pipeline goes, see
:func:`camvideo.media.sources.open_live`) the reader waits for each frame to be taken instead:
nothing is dropped. Opening sources is :mod:`camvideo.media.sources`.
"""
from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from typing import Any, Callable, Iterator

import av
import numpy as np

from ..errors import CamVideoError, SourceLostError, first_line
from .frames import Frame

__all__ = ["DEFAULT_OPEN_TIMEOUT", "DEFAULT_READ_TIMEOUT", "LIVE_TIME_BASE", "LiveSource"]

log = logging.getLogger(__name__)

#: Time base of live frames' ``pts`` (milliseconds of capture time).
LIVE_TIME_BASE = Fraction(1, 1000)
DEFAULT_OPEN_TIMEOUT = 10.0  #: seconds to open a source (connect, probe the stream)
DEFAULT_READ_TIMEOUT = 5.0   #: seconds without data before a source counts as stalled

class LiveSource:
    """A source read on its own thread, newest frame first (see the module docs).

    Args:
        label: how messages name the source.
        produce: iterator run on the reader thread; yields one decoded frame object per
            captured frame (the slot keeps the newest).
        convert: turns a produced object into ``(image, rotation)`` with ``image``
            ``(H, W, 3)`` uint8 RGB, rotation not yet applied (called on take only).
        close: releases the device; called on the reader thread when it ends.
        read_timeout: seconds without a new frame before :meth:`read` raises
            :class:`SourceLostError` (plus one second of grace).
        drop: keep only the newest frame (live). False: the reader waits until each
            frame is taken (every frame of a file, no drops).
        timing: ``capture`` (pts/time from capture time) or a callable giving
            ``(pts, time)`` from the produced object (a file's own timing).
        nominal_fps: the source's announced rate (0 if unknown), for the recording.
        stopping: event set by :meth:`stop` (``produce`` may wait on it).
        kind: what it is (``camera``, ``url``, ``file``).
        endless: the stream never ends by itself, so its end is a lost source
            (:class:`SourceLostError`); default: ``kind == "camera"``.
    """

    def __init__(self, label: str, produce: Iterator[Any],
                 convert: Callable[[Any], tuple[np.ndarray, int]], close: Callable[[], None],
                 *, read_timeout: float = DEFAULT_READ_TIMEOUT, drop: bool = True,
                 timing: str | Callable[[Any], tuple[int, float]] = "capture",
                 time_base: Fraction = LIVE_TIME_BASE, nominal_fps: float = 0.0,
                 stopping: threading.Event | None = None, kind: str = "url",
                 endless: bool | None = None) -> None:
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
        self._produce, self._convert, self._close = produce, convert, close
        self._timing = timing
        self._cond = threading.Condition()
        self._item: tuple[Any, float] | None = None
        self._ended = False
        self._error: BaseException | None = None
        self._stopping = stopping or threading.Event()
        self._finished = threading.Event()  # the reader thread is done (Event, not join:
        # a KeyboardInterrupt inside Thread.join can mark a live thread finished)
        self._thread = threading.Thread(target=self._run, name="camvideo-capture",
                                        daemon=True)
        self._t0: float | None = None
        self._last_pts = -1
        self._size: tuple[int, int] | None = None
        self._capture_at: dict[int, float] = {}

    # ------------------------------------------------------------------ reader thread
    def start(self) -> "LiveSource":
        """Start the reader thread (once)."""
        if self._thread.ident is None and not self._ended:
            self._thread.start()
        return self

    def _run(self) -> None:
        try:
            for obj in self._produce:
                now = time.monotonic()
                with self._cond:
                    while not self.drop and self._item is not None \
                            and not self._stopping.is_set():
                        self._cond.wait(0.1)
                    if self._stopping.is_set():
                        break
                    if self._item is not None:
                        self.dropped += 1
                    self._item = (obj, now)
                    self.captured += 1
                    self._cond.notify_all()
                if self._stopping.is_set():
                    break
            else:
                if self.kind == "camera":  # a camera does not end: it was unplugged
                    raise SourceLostError(f"{self.label}: camera disappeared (its stream "
                                          "ended)")
                if self.endless:  # a live stream does not end: its server went away
                    raise SourceLostError(f"{self.label}: stream ended (the sender "
                                          "closed it or went away)")
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            err = self._explain(e)
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

    def _explain(self, e: BaseException) -> BaseException:
        """One clear error for what stopped the reader."""
        if isinstance(e, CamVideoError):
            return e
        if isinstance(e, av.ExitError):  # PyAV's read timeout interrupted FFmpeg
            return SourceLostError(f"{self.label}: stream stalled: no data for "
                                   f"{self.read_timeout:g} s")
        if isinstance(e, (av.FFmpegError, OSError)):
            return SourceLostError(f"{self.label}: source lost ({first_line(e)})")
        return e

    # ------------------------------------------------------------------ consumer side
    def read(self, stop: threading.Event | None = None) -> Frame | None:
        """The newest frame not yet taken, waiting for one if needed.

        Returns:
            A :class:`Frame` (``index``: frames returned so far; ``time``: capture time in
            seconds since the first one; ``pts`` in :attr:`time_base`), or None when the
            source ended or ``stop`` was set.

        Raises:
            SourceLostError: the source failed, disappeared, or produced nothing for
                ``read_timeout`` (+1) seconds.
        """
        deadline = time.monotonic() + self.read_timeout + 1.0
        with self._cond:
            while self._item is None:
                if self._error is not None:
                    raise self._error
                if self._ended or (stop is not None and stop.is_set()):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceLostError(f"{self.label}: stream stalled: no frame for "
                                          f"{self.read_timeout + 1:g} s")
                self._cond.wait(min(0.1, left))
            obj, captured_at = self._item
            self._item = None
            self._cond.notify_all()
        return self._frame(obj, captured_at)

    def _frame(self, obj: Any, captured_at: float) -> Frame:
        image, rot = self._convert(obj)
        if rot:
            image = np.ascontiguousarray(np.rot90(image, k=rot // 90))
        h, w = image.shape[:2]
        if self._size is None:
            self._size = (h, w)
        elif self._size != (h, w):  # resolution changed mid-stream: keep the first size
            import cv2

            image = cv2.resize(image, (self._size[1], self._size[0]))
        if self._timing == "capture":
            if self._t0 is None:
                self._t0 = captured_at
            pts = round((captured_at - self._t0) / self.time_base)
        else:
            pts, _ = self._timing(obj)  # type: ignore[operator]
        pts = max(int(pts), self._last_pts + 1)
        self._last_pts = pts
        index = self.delivered
        self.delivered += 1
        self._capture_at[index] = captured_at
        return Frame(index, image, pts, float(pts * self.time_base))

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
