"""The streaming pipeline: source → batches → model+CAM → smoother → renderer → sink.

Four threads joined by small bounded queues:

- **read** iterates the source (PyAV decodes in its own threads, releasing the GIL);
- the **caller's thread** groups frames into batches and runs the network
  (:meth:`CamEngine.infer`: resize/normalise, forward pass, fp32 features and scores);
  with ``engine.infer_workers`` > 1 (the CPU default: 2) it hands each batch to a small
  thread pool instead, so that many forward passes run at once; their results reach the
  render thread in stream order (a queue of futures). Live streams run one at a time;
- **render** smooths and draws each batch in order (:meth:`CamEngine.finish`: the
  smoother, then colour, blend and labels; on CUDA on the device with one uint8 copy
  back per batch, on the CPU with OpenCV uint8 calls);
- **write** hands every frame, in order, to ``consume`` (encoding, sidecar).

torch, OpenCV and PyAV release the GIL, so the stages overlap and the slowest sets the
pace; the queues hold at most a few batches, so memory stays flat however long the video.
On a 2-core CPU two single-threaded forward passes and everything else (decode,
smoothing, rendering, x264) share the cores through the OS scheduler: no stage waits
for a core another one leaves idle, and no OpenMP team spins at a barrier.

The device work itself is :class:`camvideo.runtime.engine.CamEngine`; device, precision and
threads are in :mod:`camvideo.model.device`, the network's inference rewrites in
:mod:`camvideo.model.rewrite`. Measurements:
benchmarks/README.md, "Speed".
"""
from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

from ..options import FrameResult
from .engine import CamEngine
from ..errors import OptionError
from ..media.frames import Frame

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker inside the queues (never exposed)


# ---------------------------------------------------------------------------------------
# Threads


class _Worker(threading.Thread):
    """A pipeline thread that records its exception and stops the others on failure."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event,
                 errors: list[BaseException]) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self._stop_event = stop
        self._errors = errors
        self.done = threading.Event()  #: set when the target has returned or raised

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self._errors.append(e)  # list.append is atomic: the first error stays first
            self._stop_event.set()
        finally:
            self.done.set()


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event) -> object:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


def _join_all(threads: Iterable[_Worker], halt: threading.Event,
              errors: list[BaseException]) -> None:
    """Wait for every worker to finish. An exception while waiting (Ctrl-C during the
    final drain) halts the stages, is recorded in ``errors`` and the wait goes on:
    nothing may still be writing when the caller cleans up. (It waits on an Event, not
    ``Thread.join``: a KeyboardInterrupt inside ``join`` can mark a running thread as
    finished, bpo-45274.)"""
    for t in threads:
        while not t.done.is_set():
            try:
                t.done.wait(0.1)
            except BaseException as e:  # noqa: BLE001 - raised by run_stream afterwards
                errors.append(e)
                halt.set()


def run_stream(frames: Iterable[Frame], engine: CamEngine,
               consume: Callable[[FrameResult], None], *, batch_size: int,
               live: bool = False, stop: threading.Event | None = None,
               halt: threading.Event | None = None, queue_batches: int = 2) -> int:
    """Drive ``frames`` through ``engine`` into ``consume`` with overlapping stages.

    Args:
        frames: source frames, in order (iterated in a reader thread).
        engine: the device stage (:meth:`CamEngine.infer` here, :meth:`CamEngine.finish`
            in a render thread).
        consume: called in the writer thread for every rendered frame, in order.
        batch_size: frames per device batch (≥ 1).
        live: never wait for a batch to fill: take whatever frames are there. A live
            source may block until ``stop`` is set, so a stage's failure sets ``stop``
            too (otherwise ``stop`` is only read: one event may serve many streams).
        stop: set it to stop early (what was read so far is still rendered and consumed).
        halt: set it to stop every stage at once (what is in flight is dropped; the
            forward pass in progress finishes): the stages' own failure path, also
            the caller's (:class:`camvideo.runtime.stream.Stream` when its consumer
            leaves). Set by a stage's failure too.
        queue_batches: depth of each queue, in batches.

    Returns:
        Number of frames consumed.

    Raises:
        Whatever a stage raised (the first error), after all threads have stopped; also a
        KeyboardInterrupt that arrived while waiting for them.
    """
    if batch_size < 1:
        raise OptionError(f"batch size must be ≥ 1, got {batch_size}")
    stop = stop or threading.Event()
    halt = halt if halt is not None else threading.Event()  # a stage failed, or the caller
    errors: list[BaseException] = []
    depth = max(2, batch_size * queue_batches)
    q_in: queue.Queue = queue.Queue(maxsize=depth)
    q_mid: queue.Queue = queue.Queue(maxsize=max(1, queue_batches))
    q_out: queue.Queue = queue.Queue(maxsize=depth)
    consumed = 0

    def read() -> None:
        it: Iterator[Frame] = iter(frames)
        try:
            for f in it:
                if stop.is_set() or not _put(q_in, f, halt):
                    break
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()
            _put(q_in, _END, halt)

    def render() -> None:
        while True:
            item = _get(q_mid, halt)
            if item is _END:
                break
            if isinstance(item, Future):
                item = item.result()
            for r in engine.finish(item):  # type: ignore[arg-type]
                if not _put(q_out, r, halt):
                    return
        _put(q_out, _END, halt)

    def write() -> None:
        nonlocal consumed
        while True:
            item = _get(q_out, halt)
            if item is _END:
                return
            consume(item)  # type: ignore[arg-type]
            consumed += 1

    workers = [_Worker("camvideo-read", read, halt, errors),
               _Worker("camvideo-render", render, halt, errors),
               _Worker("camvideo-write", write, halt, errors)]
    # concurrent forward passes (CPU, stride 1; not live, where latency comes first):
    # futures go into q_mid in stream order and the render thread waits on each in turn
    workers_n = engine.infer_workers
    pool = ThreadPoolExecutor(workers_n, thread_name_prefix="camvideo-infer") \
        if workers_n > 1 and not live else None
    for w in workers:
        w.start()
    try:
        ended = False
        while not ended and not halt.is_set():
            item = _get(q_in, halt)
            if item is _END:
                break
            batch = [item]
            while len(batch) < batch_size:
                try:
                    nxt = q_in.get_nowait() if live else _get(q_in, halt)
                except queue.Empty:
                    break
                if nxt is _END:
                    ended = True
                    break
                batch.append(nxt)
            if halt.is_set():
                break
            job = pool.submit(engine.infer, batch) if pool is not None \
                else engine.infer(batch)  # type: ignore[arg-type]
            if not _put(q_mid, job, halt):
                break
        if not halt.is_set():
            _put(q_mid, engine.infer_flush(), halt)
    except BaseException as e:
        errors.append(e)
        halt.set()
    finally:
        try:
            if not halt.is_set():
                _put(q_mid, _END, halt)
        except BaseException as e:  # noqa: BLE001 - Ctrl-C: raised below
            errors.append(e)
            halt.set()
        _join_all(workers[1:], halt, errors)
        while pool is not None:
            try:
                pool.shutdown(wait=True, cancel_futures=True)
                pool = None
            except BaseException as e:  # noqa: BLE001 - Ctrl-C: wait again, raise below
                errors.append(e)
                halt.set()
        if halt.is_set() and live:
            stop.set()
        _join_all(workers[:1], halt, errors)
    if errors:
        raise errors[0]
    return consumed
