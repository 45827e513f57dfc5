"""The streaming pipeline: source → batches → model+CAM → smoother → renderer → sink.

Three threads joined by small bounded queues: the reader decodes, the caller's thread does
the device work (batching, forward pass, smoothing, colouring), the writer encodes and
writes the JSON sidecar. PyAV and torch release the GIL, so the stages overlap, the
slowest sets the pace, and memory stays flat however long the video.
"""
from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from .errors import OptionError
from .media import Frame
from .models import CamModel
from .render import Annotation, Renderer
from .smoothing import Smoother

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker inside the queues (never exposed)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises:
        OptionError: unknown spec, or CUDA asked for but not available.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise OptionError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError("--device cuda asked for, but no CUDA GPU is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise OptionError(f"no GPU {dev.index}: {torch.cuda.device_count()} present")
    elif dev.type != "cpu":
        raise OptionError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:N")
    return dev


def resolve_precision(spec: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``spec`` on ``device`` (None: plain fp32)."""
    if spec not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {spec!r}")
    if spec == "auto":
        return torch.float16 if device.type == "cuda" else None
    if spec == "fp32":
        return None
    if spec == "fp16" and device.type == "cpu":
        raise OptionError("fp16 is for CUDA; on the CPU use bf16 or fp32")
    return torch.float16 if spec == "fp16" else torch.bfloat16


def default_batch_size(device: torch.device) -> int:
    return 32 if device.type == "cuda" else 8


@dataclass
class Rendered:
    """One output frame: the source frame's timing, the image, what was drawn."""

    frame: Frame
    image: np.ndarray
    note: Annotation


class CamEngine:
    """Device work on batches of frames: preprocess, forward, CAM, smoothing, rendering.

    Args:
        model: a :class:`CamModel` already on ``device``.
        renderer: the :class:`Renderer`.
        smoother: the :class:`Smoother` (``tau=0`` for none).
        short_side: model input short side.
        precision: autocast dtype or None.
    """

    def __init__(self, model: CamModel, renderer: Renderer, smoother: Smoother, *,
                 short_side: int = 224, precision: torch.dtype | None = None) -> None:
        if not 32 <= short_side <= 2048:
            raise OptionError(f"size must be in 32..2048, got {short_side}")
        self.model = model
        self.renderer = renderer
        self.smoother = smoother
        self.short_side = short_side
        self.precision = precision
        self.device = model.device
        self._pending: collections.deque[tuple[Frame, torch.Tensor]] = collections.deque()
        self._size: tuple[int, int] | None = None

    def _upload(self, frames: list[Frame]) -> torch.Tensor:
        host = torch.from_numpy(np.stack([f.image for f in frames]))
        if self.device.type == "cuda":
            return host.pin_memory().to(self.device, non_blocking=True)
        return host

    @torch.inference_mode()
    def process(self, frames: list[Frame]) -> list[Rendered]:
        """Run one batch; returns the frames that are ready (a centered smoother holds a
        few back until :meth:`flush`)."""
        batch = self._upload(frames)
        if self._size is None:
            self._size = self.model.input_size(batch.shape[1], batch.shape[2],
                                               self.short_side)
        x, frames01 = self.model.preprocess(batch, self._size)
        ctx = (torch.autocast(self.device.type, dtype=self.precision)
               if self.precision is not None else nullcontext())
        with ctx:
            features, logits = self.model(x)
        smoothed = self.smoother.push(features.float(), logits.float(),
                                      [f.time for f in frames], frames01)
        self._pending.extend(zip(frames, batch.unbind(0)))
        return self._render(smoothed)

    @torch.inference_mode()
    def flush(self) -> list[Rendered]:
        """Frames still held by the smoother at the end of the stream."""
        return self._render(self.smoother.flush())

    def _render(self, smoothed: Any) -> list[Rendered]:
        m = int(smoothed.maps.shape[0])
        if m == 0:
            return []
        ready = [self._pending.popleft() for _ in range(m)]
        images, notes = self.renderer.render(torch.stack([t for _, t in ready]),
                                             smoothed.maps, smoothed.probs,
                                             smoothed.classes)
        return [Rendered(f, img, note) for (f, _), img, note in zip(ready, images, notes)]


class _Worker(threading.Thread):
    """A pipeline thread that records its exception and stops the others on failure."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self._stop_event = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self.error = e
            self._stop_event.set()


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event, timeout: float | None = None) -> object:
    deadline = None if timeout is None else time.monotonic() + timeout
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            if deadline is not None and time.monotonic() >= deadline:
                raise
    return _END


def run_stream(frames: Iterable[Frame], engine: CamEngine,
               consume: Callable[[Rendered], None], *, batch_size: int,
               live: bool = False, stop: threading.Event | None = None,
               queue_batches: int = 2) -> int:
    """Drive ``frames`` through ``engine`` into ``consume`` with overlapping stages.

    Args:
        frames: source frames, in order (iterated in a reader thread).
        engine: the device stage.
        consume: called in the writer thread for every rendered frame, in order.
        batch_size: frames per device batch (≥ 1).
        live: never wait for a batch to fill: take whatever frames are there.
        stop: set it to stop early (what was rendered so far is still consumed).
        queue_batches: queue depth, in batches.

    Returns:
        Number of frames consumed.

    Raises:
        Whatever a stage raised (the first error), after all threads have stopped.
    """
    if batch_size < 1:
        raise OptionError(f"batch size must be ≥ 1, got {batch_size}")
    stop = stop or threading.Event()
    halt = threading.Event()  # internal: a stage failed
    q_in: queue.Queue = queue.Queue(maxsize=max(2, batch_size * queue_batches))
    q_out: queue.Queue = queue.Queue(maxsize=max(2, batch_size * queue_batches))
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

    def write() -> None:
        nonlocal consumed
        while True:
            item = _get(q_out, halt)
            if item is _END:
                return
            consume(item)  # type: ignore[arg-type]
            consumed += 1

    reader = _Worker("camvideo-read", read, halt)
    writer = _Worker("camvideo-write", write, halt)
    reader.start()
    writer.start()
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
                batch.append(nxt)  # type: ignore[arg-type]
            for r in engine.process(batch):  # type: ignore[arg-type]
                if not _put(q_out, r, halt):
                    break
        if not halt.is_set():
            for r in engine.flush():
                _put(q_out, r, halt)
    except BaseException:
        halt.set()
        raise
    finally:
        if not halt.is_set():
            _put(q_out, _END, halt)
        else:
            stop.set()
        writer.join()
        if halt.is_set():
            stop.set()
        reader.join()
    for w in (reader, writer):
        if w.error is not None:
            raise w.error
    return consumed
