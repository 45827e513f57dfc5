"""The one core loop: :class:`Stream`, what :func:`camvideo.stream` returns and every
front-end iterates (``annotate`` into a file and sidecar, ``live`` into a window, a
preview and a recording, a researcher into arrays).

A stream is an iterator of :class:`~camvideo.options.FrameResult`, in frame order, and a
context manager. Iterating starts the pipeline (:func:`camvideo.runtime.pipeline.
run_stream`: reader, device and render threads with bounded queues, in a background
thread); each result is handed to the iterating thread through a small queue, so memory
stays flat however long the video. Leaving the loop early (``break``, an exception,
Ctrl-C) or :meth:`Stream.close` stops every thread at once (the forward pass in progress
finishes) and closes the source; an error in any stage is raised in the iterating thread.

Live sources (:class:`camvideo.media.streams.LiveSource` that keep only the newest frame)
are paced by two credits, so latency cannot build up: the reader takes a frame from the
capture slot only when the device stage is free (returned after each forward pass), and
at most ``batch_size + 2`` frames are in flight (returned when the iterating thread asks
for the next result, i.e. once it has shown or written the last one), plus the frames the
engine holds back (a video network's clip, :attr:`CamEngine.held_frames
<camvideo.runtime.engine.CamEngine.held_frames>`).
"""
from __future__ import annotations

import atexit
import logging
import queue
import threading
import weakref
from typing import Any, Iterator, Sequence

import cv2

from ..errors import OptionError
from ..media.frames import Frame
from ..options import FrameResult
from .engine import CamEngine
from .pipeline import run_stream

log = logging.getLogger(__name__)

_END = object()
_STOP_WAIT_S = 60.0  #: how long closing waits for the stages before giving up
#: Streams whose stages run: closed at exit, while their (daemon) threads still can stop
#: (an iterator left suspended at module level is closed only as the interpreter is
#: torn down, when they no longer run: the exit waited the full _STOP_WAIT_S).
_RUNNING: "weakref.WeakSet[Stream]" = weakref.WeakSet()


@atexit.register
def _close_running() -> None:
    for stream in list(_RUNNING):
        stream.close()


class _AnyEvent:
    """Set when any of ``events`` is, or when set itself: what the pipeline and a live
    source's ``read`` wait on (the caller's ``stop``, or the stream closing)."""

    def __init__(self, *events: threading.Event) -> None:
        self._events = events
        self._own = threading.Event()

    def is_set(self) -> bool:
        return self._own.is_set() or any(e.is_set() for e in self._events)

    def set(self) -> None:
        self._own.set()


class _Gated:
    """The engine as ``run_stream`` sees it, returning a device credit after each forward
    pass (live sources: the next frame is taken from the capture slot only then)."""

    def __init__(self, engine: CamEngine, credit: threading.Semaphore) -> None:
        self._engine, self._credit = engine, credit
        self.infer_workers = engine.infer_workers

    def infer(self, frames: Sequence[Frame]) -> Any:
        try:
            return self._engine.infer(frames)
        finally:
            self._credit.release(max(1, len(frames)))

    def infer_flush(self) -> Any:
        return self._engine.infer_flush()

    def finish(self, batch: Any) -> Any:
        return self._engine.finish(batch)


class Stream:
    """Results of a model over a source, frame by frame (see the module's notes).

    Made by :func:`camvideo.stream`; iterate it once, ideally in a ``with`` block.

    Args:
        source: an iterable of :class:`Frame` (a file source, or any frames in order), or
            a live source (an object with ``read(stop)``, ``drop`` and ``start()``, as
            :class:`camvideo.media.streams.LiveSource`).
        engine: the device stage.
        batch_size: frames per device batch.
        duration: stop after this many seconds of stream time (None: to the end).
        stop: set it to end early and gracefully: no more frames are read, the ones
            already read still come out (:func:`camvideo.annotate` then discards its
            output).
        info: the source's :class:`~camvideo.media.frames.VideoInfo`, when known.

    Attributes:
        engine: the :class:`~camvideo.runtime.engine.CamEngine` (``engine.model`` is the
            model, ``engine.network_frames`` the frames the network ran on).
        info: as given.
    """

    def __init__(self, source: Any, engine: CamEngine, *, batch_size: int,
                 duration: float | None = None, stop: threading.Event | None = None,
                 info: Any = None) -> None:
        if duration is not None and not duration > 0:
            raise OptionError(f"duration must be > 0 seconds, got {duration}",
                              option="duration")
        self.source = source
        self.engine = engine
        self.batch_size = int(batch_size)
        self.duration = duration
        self.info = info
        self.stop = stop if stop is not None else threading.Event()
        self.live = hasattr(source, "read") and hasattr(source, "drop")
        self._gated = self.live and bool(getattr(source, "drop", False))
        self._abort = threading.Event()   # the consumer left: stop everything at once
        self._ending = _AnyEvent(self.stop, self._abort)  # stop reading
        self._started = False
        self._done = threading.Event()
        self._errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._left_early = False  # closed before the end: the stages' errors are moot

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> Iterator[FrameResult]:
        if self._started:
            raise RuntimeError("a stream is iterated once")
        self._started = True
        return self._results()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def skipped(self) -> int:
        """Input frames the source could not decode (files)."""
        return int(getattr(self.source, "skipped", 0))

    def close(self) -> None:
        """Stop every stage (at once: results not yet taken are dropped) and close the
        source. Safe to call more than once, and from ``finally`` blocks."""
        if self._closed:
            return
        self._closed = True
        self._left_early = self._started and not self._done.is_set()
        self._abort.set()
        try:
            self._wait()
        finally:
            _RUNNING.discard(self)
            self._close_source()

    def _close_source(self) -> None:
        for name in ("stop", "close"):  # LiveSource.stop(), FileSource.close()
            fn = getattr(self.source, name, None)
            if callable(fn) and not isinstance(fn, threading.Event):
                try:
                    fn()
                except Exception as e:  # noqa: BLE001 - closing: log, go on
                    log.debug("closing the source: %s", e)
                break

    def _wait(self) -> None:
        """Wait for the pipeline thread; a Ctrl-C meanwhile is recorded and raised after
        (nothing may still run when the caller cleans up)."""
        if self._thread is None:
            return
        interrupted: BaseException | None = None
        while not self._done.is_set():
            try:
                if not self._done.wait(_STOP_WAIT_S):
                    log.warning("the pipeline did not stop within %.0f s", _STOP_WAIT_S)
                    break
            except BaseException as e:  # noqa: BLE001 - Ctrl-C again: wait, raise after
                interrupted = interrupted or e
                self._abort.set()
        if interrupted is not None:
            raise interrupted

    # ------------------------------------------------------------------ internals
    def _frames(self) -> Iterator[Frame]:
        """The source's frames, ended by ``stop`` or ``duration``, resized to the first
        frame's size when a stream changes size mid-way."""
        first_time: float | None = None
        size: tuple[int, int] | None = None
        for f in self._read():
            if first_time is None:
                first_time = f.time
            if self.duration is not None and f.time - first_time >= self.duration:
                return
            if size is None:
                size = f.size
            elif f.size != size:  # the stream changed size mid-way: keep the first size
                h, w = size
                f = Frame(f.index, cv2.resize(f.rgb(), (w, h)), f.pts, f.time)
            yield f

    def _read(self) -> Iterator[Frame]:
        if not self.live:
            it = iter(self.source)
            try:
                for f in it:
                    if self._ending.is_set():
                        return
                    yield f
            finally:
                close = getattr(it, "close", None)
                if close is not None:
                    close()
            return
        src = self.source
        while not self._ending.is_set():
            if self._device_credit is not None:
                if not self._device_credit.acquire(timeout=0.1):
                    continue
                while not self._flight_credit.acquire(timeout=0.1):  # type: ignore[union-attr]
                    if self._ending.is_set():
                        return
            f = src.read(self._ending)
            if f is None:
                return
            yield f

    def _results(self) -> Iterator[FrameResult]:
        out: queue.Queue = queue.Queue(maxsize=max(2, 2 * self.batch_size))
        self._device_credit = threading.Semaphore(self.batch_size) if self._gated else None
        # in flight: a batch, two results on their way, and what the engine holds back
        # (a video network's clip)
        held = int(getattr(self.engine, "held_frames", 0))
        self._flight_credit = threading.Semaphore(self.batch_size + 2 + held) \
            if self._gated else None
        engine: Any = _Gated(self.engine, self._device_credit) \
            if self._device_credit is not None else self.engine

        def consume(r: FrameResult) -> None:
            while not self._abort.is_set():
                try:
                    out.put(r, timeout=0.1)
                    return
                except queue.Full:
                    continue

        def work() -> None:
            try:
                run_stream(self._frames(), engine, consume, batch_size=self.batch_size,
                           live=self.live, stop=self._ending,  # type: ignore[arg-type]
                           halt=self._abort, queue_batches=1 if self.live else 2)
            except BaseException as e:  # noqa: BLE001 - raised in the iterating thread
                self._errors.append(e)
            finally:
                self._done.set()
                while True:  # the end marker, unless nobody is left to take it
                    try:
                        out.put(_END, timeout=0.1)
                        break
                    except queue.Full:
                        if self._abort.is_set():
                            break

        if self.live and hasattr(self.source, "start"):
            self.source.start()
        self._thread = threading.Thread(target=work, name="camvideo-stream", daemon=True)
        _RUNNING.add(self)
        self._thread.start()
        taken = False
        try:
            while True:
                if taken and self._flight_credit is not None:
                    self._flight_credit.release()  # the last result was shown/written
                taken = False
                item = _END
                while not self._closed:  # with a timeout: Ctrl-C lands here at once
                    try:
                        item = out.get(timeout=0.2)
                        break
                    except queue.Empty:
                        continue
                if item is _END or self._closed:
                    break
                taken = True
                yield item
        finally:
            self.close()
        if self._errors and not self._left_early:
            raise self._errors[0]

