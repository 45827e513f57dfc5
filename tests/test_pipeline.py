"""Tests of camvideo.runtime.pipeline.run_stream: the threads and bounded queues between the
stages, with a stand-in engine whose stages sleep (as torch and PyAV release the GIL):
overlap, bounded memory, live batches that never wait, concurrent forward passes in
stream order, errors, ``stop`` and Ctrl-C."""
from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

from camvideo.runtime.engine import Inferred
from camvideo.media.frames import Frame
from camvideo.runtime.pipeline import run_stream


class SleepyEngine:
    """A stand-in engine whose stages sleep (releasing the GIL, like torch and PyAV)."""

    def __init__(self, infer_s: float = 0.0, finish_s: float = 0.0,
                 fail_at: int | None = None, infer_workers: int = 1) -> None:
        self.infer_s, self.finish_s, self.fail_at = infer_s, finish_s, fail_at
        self.infer_workers = infer_workers
        self.batches: list[int] = []
        self.alive = 0  # frames inside the pipeline right now
        self.peak_alive = 0
        self.running = self.peak_running = 0  # infer calls at once
        self._lock = threading.Lock()

    def infer(self, frames):
        with self._lock:
            self.batches.append(len(frames))
            k = len(self.batches)
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            if self.fail_at is not None and k > self.fail_at:
                raise RuntimeError("engine failed")
            # uneven batch times: a later batch often finishes before an earlier one
            time.sleep(self.infer_s * (1.5 if k % 2 else 0.5))
            return Inferred(list(frames), [], None)
        finally:
            with self._lock:
                self.running -= 1

    def infer_flush(self):
        return Inferred([], [], None)

    def finish(self, batch):
        time.sleep(self.finish_s)
        return list(batch.frames)


def frames_of(n: int, sleep: float = 0.0, engine: SleepyEngine | None = None):
    img = np.zeros((8, 8, 3), np.uint8)
    for i in range(n):
        if sleep:
            time.sleep(sleep)
        if engine is not None:
            with engine._lock:
                engine.alive += 1
                engine.peak_alive = max(engine.peak_alive, engine.alive)
        yield Frame(i, img, i, i / 30)


def test_stages_overlap():
    n, bs, step = 40, 4, 0.02
    engine = SleepyEngine(infer_s=bs * step, finish_s=bs * step)
    got = []

    def consume(f):
        time.sleep(step)
        got.append(f.index)

    t = time.monotonic()
    assert run_stream(frames_of(n, sleep=step), engine, consume, batch_size=bs) == n
    elapsed = time.monotonic() - t
    serial = 4 * n * step  # read + infer + finish + write, one after the other
    assert got == list(range(n))
    assert elapsed < 0.6 * serial, (elapsed, serial)


def test_memory_stays_bounded_however_long_the_stream():
    bs = 4
    engine = SleepyEngine()

    def consume(f):
        with engine._lock:
            engine.alive -= 1
        time.sleep(0.0005)  # the slowest stage: everything before it backs up

    n = run_stream(frames_of(2000, engine=engine), engine, consume, batch_size=bs)
    assert n == 2000
    # queues: 2 batches in, 2 batches between device and render, 2 batches out, plus the
    # batch each thread holds
    assert engine.peak_alive <= 10 * bs, engine.peak_alive


def test_live_never_waits_for_a_batch_to_fill():
    first_out = threading.Event()
    engine = SleepyEngine()

    def source():
        img = np.zeros((8, 8, 3), np.uint8)
        yield Frame(0, img, 0, 0.0)
        # a camera that sends the next frame only once the first has been shown
        assert first_out.wait(5), "the first frame waited for a full batch"
        for i in range(1, 5):
            yield Frame(i, img, i, i / 30)

    t = time.monotonic()
    n = run_stream(source(), engine, lambda f: first_out.set(), batch_size=8, live=True)
    assert n == 5 and time.monotonic() - t < 4
    assert engine.batches[0] == 1


def test_concurrent_inference_overlaps_and_keeps_stream_order():
    n, bs = 64, 4
    engine = SleepyEngine(infer_s=0.02, infer_workers=2)
    got = []
    t = time.monotonic()
    assert run_stream(frames_of(n), engine, lambda f: got.append(f.index),
                      batch_size=bs) == n
    elapsed = time.monotonic() - t
    assert got == list(range(n))
    assert engine.peak_running == 2
    assert elapsed < 0.75 * (n // bs) * 0.02, elapsed  # serial: 16 batches x 20 ms
    # live: one batch at a time (latency first)
    live = SleepyEngine(infer_workers=2)
    assert run_stream(frames_of(20), live, lambda f: None, batch_size=4, live=True) == 20
    assert live.peak_running == 1


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("where", ["source", "engine", "consume"])
def test_first_error_is_raised_and_threads_stop(where, workers):
    engine = SleepyEngine(fail_at=2 if where == "engine" else None, infer_workers=workers)

    def source():
        for f in frames_of(100):
            if where == "source" and f.index == 10:
                raise ValueError("source failed")
            yield f

    def consume(f):
        if where == "consume" and f.index == 5:
            raise KeyError("consume failed")

    before = threading.active_count()
    stop = threading.Event()  # shared by many streams (a batch job's files)
    with pytest.raises((ValueError, RuntimeError, KeyError)) as e:
        run_stream(source(), engine, consume, batch_size=4, stop=stop)
    assert where in str(e.value)
    time.sleep(0.3)
    assert threading.active_count() <= before
    # one stream's failure does not stop the others
    assert not stop.is_set()
    assert run_stream(frames_of(30), SleepyEngine(infer_workers=workers), lambda f: None,
                      batch_size=4, stop=stop) == 30


def test_a_failure_sets_stop_for_a_live_source():
    """A live source blocks until ``stop`` is set: a failing stage must set it."""
    stop = threading.Event()

    def camera():
        yield from frames_of(3)
        assert stop.wait(5), "the source was left waiting"

    def consume(f):
        raise KeyError("consume failed")

    with pytest.raises(KeyError):
        run_stream(camera(), SleepyEngine(), consume, batch_size=1, live=True, stop=stop)
    assert stop.is_set()


def test_ctrl_c_while_draining_returns_once_no_stage_runs():
    """A KeyboardInterrupt landing while ``run_stream`` waits for the last frames to be
    written is raised only once no stage runs any more: the caller then deletes the
    half-written output, and nothing may still be writing into it."""
    consumed = []

    def consume(f):
        time.sleep(0.1)
        consumed.append(f.index)

    # a real SIGINT to the main thread (Ctrl-C), which interrupts a blocking wait; all
    # 12 frames are read and handed on by then: the main thread is waiting for the drain
    timer = threading.Timer(0.5, signal.pthread_kill,
                            (threading.main_thread().ident, signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        run_stream(frames_of(12), SleepyEngine(), consume, batch_size=4)
    timer.cancel()
    n = len(consumed)
    running = [t.name for t in threading.enumerate() if t.name.startswith("camvideo-")]
    time.sleep(0.5)
    assert n < 12 and len(consumed) == n and running == []


def test_stop_event_ends_early_and_consumes_what_was_read():
    stop = threading.Event()
    got = []

    def consume(f):
        got.append(f.index)
        if f.index == 10:
            stop.set()

    n = run_stream(frames_of(1000, sleep=0.002), SleepyEngine(), consume, batch_size=4,
                   stop=stop)
    assert n == len(got) and 11 <= n < 1000
    assert got == list(range(n))
