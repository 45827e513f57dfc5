"""The device stage: :class:`CamEngine` turns batches of frames into rendered frames.

:meth:`CamEngine.infer` is the network's part (resize/normalise, forward pass, fp32
features and class scores, ``stride`` carrying); :meth:`CamEngine.finish` the rest
(smoothing, colour, blend, labels), run on the pipeline's render thread.

- CPU frames are converted once: each decoded RGB array is resized as uint8 (antialiased
  bilinear on a channels_last view, no copy, no full-resolution float tensor) and rendered
  from the same array; I420 frames (the file pipeline's) are resized plane by plane, only
  the model's small input is made RGB, and they are rendered as I420. CUDA frames go
  through reused pinned host buffers, uploaded ``non_blocking``; everything after that
  stays on the device.
- On the CPU the backbone runs as fused TorchScript graphs (:mod:`camvideo.model.trace`).
- ``stride`` > 1 runs the network on every ``stride``-th frame only (and on scene cuts);
  frames in between carry the last features and class scores, moved with the image
  motion. That motion is the smoother's own (:meth:`Smoother.cues
  <camvideo.smoothing.Smoother.cues>`): computed once per batch, used by both.
"""
from __future__ import annotations

import collections
import logging
import os
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .. import motion as mo
from .. import pixels
from ..cam import logits_from_features
from ..model.device import default_infer_workers, is_int8, pipeline_threads
from ..model.quantize import cpu_backbone
from ..model.rewrite import optimize_model
from ..errors import OptionError
from ..media.frames import Frame
from ..model.cammodel import CamModel
from ..pixels import resize_u8
from ..render import Annotation, Renderer
from ..smoothing import DEFAULT_CUT_THRESHOLD, Smoother

log = logging.getLogger(__name__)


@dataclass
class Rendered:
    """One output frame: the source frame's timing, the image, what was drawn.

    ``image`` is ``(H, W', 3)`` uint8 RGB, or I420 (a 2-D array, :mod:`camvideo.pixels`)
    when the source frame was I420."""

    frame: Frame
    image: np.ndarray
    note: Annotation


@dataclass
class Inferred:
    """The network's results for a batch (from :meth:`CamEngine.infer`), to be smoothed
    and rendered by :meth:`CamEngine.finish`.

    Attributes:
        frames: the frames, in order.
        images: their pixels for the renderer, one per frame: ``(H, W, 3)`` uint8 device
            tensors on CUDA, the frames' own arrays (RGB or I420) on the CPU.
        features: ``(N, C, h, w)`` float32 features (carried ones on ``stride`` frames).
        logits: ``(N, K)`` float32 class scores.
        frames01: ``(N, 3, H', W')`` float RGB in ``[0, 1]``, the model-input frames (the
            smoother's motion and cut cues).
        cues: the smoother's :class:`~camvideo.motion.Cues` of the batch when ``stride``
            already needed them (None: the smoother computes them).
        end: the end-of-stream marker (:meth:`CamEngine.infer_flush`): the smoother
            releases what it holds back.
    """

    frames: list[Frame]
    images: Sequence[Tensor] | Sequence[np.ndarray]
    features: Tensor | None = None
    logits: Tensor | None = None
    frames01: Tensor | None = None
    cues: mo.Cues | None = None
    end: bool = False

    def __len__(self) -> int:
        return len(self.frames)


class CamEngine:
    """Device work on batches of frames: preprocess, forward, CAM, smoothing, rendering.

    Args:
        model: a :class:`CamModel` already on ``device``.
        renderer: the :class:`Renderer`.
        smoother: the :class:`Smoother` (``tau=0`` for none).
        short_side: model input short side.
        precision: autocast dtype or None (fp32).
        stride: run the network on every ``stride``-th frame (and on scene cuts); the
            frames between carry the last features and scores moved with the image motion.
        optimize: fold batch norms into convolutions (see :func:`optimize_model`).
        threads: CPU intra-op threads for torch (None: :func:`pipeline_threads` shared
            among the ``infer_workers``, unless ``OMP_NUM_THREADS`` is set; 0: leave
            torch's setting alone). Process-wide.
        infer_workers: how many :meth:`infer` calls may run at once (the pipeline runs
            that many batches concurrently). None: :func:`default_infer_workers` (2 on
            the CPU with ``stride`` 1, else 1). Values above 1 need ``stride`` 1 on the
            CPU: ``stride`` carries state from batch to batch, and the CUDA path reuses
            its pinned upload buffers in turn.
        trace: on the CPU, run the backbone as fused TorchScript graphs
            (:mod:`camvideo.model.trace`): a graph of the whole batch with ``stride`` 1 and
            ``equal_batches``, else frame by frame through the batch-1 graph.
        equal_batches: all batches but the last have the same size (files; not live
            streams, whose batches take what has arrived).
    """

    def __init__(self, model: CamModel, renderer: Renderer, smoother: Smoother, *,
                 short_side: int = 224, precision: torch.dtype | None = None,
                 stride: int = 1, optimize: bool = True, threads: int | None = None,
                 infer_workers: int | None = None, trace: bool = False,
                 equal_batches: bool = True) -> None:
        if not 32 <= short_side <= 2048:
            raise OptionError(f"size must be in 32..2048, got {short_side}")
        if not 1 <= int(stride) <= 1000:
            raise OptionError(f"stride must be in 1..1000, got {stride}")
        self.model = optimize_model(model) if optimize else model
        self.renderer = renderer
        self.smoother = smoother
        self.short_side = short_side
        self.precision = precision
        self.stride = int(stride)
        self.device = model.device
        if infer_workers is None:
            infer_workers = default_infer_workers(self.device, self.stride)
        if infer_workers > 1 and (self.device.type != "cpu" or self.stride != 1):
            raise OptionError("concurrent inference needs the CPU and stride 1")
        self.infer_workers = max(1, int(infer_workers))
        if self.device.type == "cpu":
            if threads is None and not os.environ.get("OMP_NUM_THREADS"):
                threads = max(1, pipeline_threads() // self.infer_workers)
            if threads:
                torch.set_num_threads(threads)
        self._traced = cpu_backbone(self.model, precision, trace) \
            if self.device.type == "cpu" else None  # traced graphs or the int8 network
        self._per_frame = self.stride > 1 or not equal_batches
        self._count_lock = threading.Lock()
        self._pending: collections.deque[tuple[Frame, Tensor | np.ndarray]] = \
            collections.deque()
        self._size: tuple[int, int] | None = None
        # stride: carried state
        self._carry: tuple[Tensor, Tensor] | None = None   # (1, C, h, w), (1, K)
        self._since_key = 0
        self._prev_hist: Tensor | None = None
        self.network_frames = 0   #: frames the network actually ran on
        # CUDA: pinned host buffers, used in turn
        self._pinned: list[Tensor] = []
        self._pin_events: list[Any] = []
        self._pin_next = 0

    # ------------------------------------------------------------------ public API
    def process(self, frames: list[Frame]) -> list[Rendered]:
        """Run one batch; returns the frames that are ready (a centered smoother holds a
        few back until :meth:`flush`)."""
        return self.finish(self.infer(frames))

    def flush(self) -> list[Rendered]:
        """Frames still held by the smoother at the end of the stream."""
        return self.finish(self.infer_flush())

    @torch.inference_mode()
    def infer(self, frames: Sequence[Frame]) -> Inferred:
        """The network's part of one batch (frames in stream order): resize, normalise,
        forward pass (only on key frames with ``stride``), fp32 features and scores."""
        frames = list(frames)
        if not frames:
            return Inferred([], [])
        h, w = frames[0].size
        if self._size is None:
            self._size = self.model.input_size(h, w, self.short_side)
        if self.device.type == "cuda":
            dev_frames = self._upload(frames)
            x, frames01 = self.model.preprocess(dev_frames, self._size)
            images: Sequence[Tensor] | Sequence[np.ndarray] = dev_frames.unbind(0)
        else:
            x, frames01 = self._preprocess_cpu(frames)
            images = [f.image for f in frames]
        cues = None
        if self.stride == 1:
            features, logits = self._forward(x)
        else:
            keys = self._keys(frames01)
            features, logits = self._forward(x[torch.tensor(keys)] if not all(keys) else x)
            features, logits, cues = self._carry_between(features, logits, keys, frames01)
        return Inferred(frames, images, features, logits, frames01, cues)

    def infer_flush(self) -> Inferred:
        """The end-of-stream marker for :meth:`finish`."""
        return Inferred([], [], end=True)

    @torch.inference_mode()
    def finish(self, batch: Inferred) -> list[Rendered]:
        """Smooth and render a batch from :meth:`infer` (one thread, batches in order:
        the smoother is stateful). Returns the frames that are ready."""
        if batch.end:
            smoothed = self.smoother.flush()
        elif len(batch) == 0:
            return []
        else:
            smoothed = self.smoother.push(batch.features, batch.logits,
                                          [f.time for f in batch.frames], batch.frames01,
                                          batch.cues)
            self._pending.extend(zip(batch.frames, batch.images))
        m = int(smoothed.maps.shape[0])
        if m == 0:
            return []
        ready = [self._pending.popleft() for _ in range(m)]
        if self.device.type == "cuda":
            images: Any = torch.stack([t for _, t in ready])  # type: ignore[misc]
        else:
            images = [img for _, img in ready]
        out, notes = self.renderer.render(images, smoothed.maps, smoothed.probs,
                                          smoothed.classes)
        return [Rendered(f, img, note) for (f, _), img, note in zip(ready, out, notes)]

    # ------------------------------------------------------------------ internals
    def _preprocess_cpu(self, frames: list[Frame]) -> tuple[Tensor, Tensor]:
        """Each frame's array, viewed as a channels_last ``(1, 3, H, W)`` uint8 tensor
        (no copy), resized as uint8 one frame at a time (so the result does not depend
        on the batch size), then the small uint8 batch normalised at once (see
        :meth:`CamModel.preprocess`). I420 frames are resized plane by plane and only
        the small picture is made RGB (:func:`camvideo.pixels.resize_rgb`)."""
        assert self._size is not None
        small = []
        for f in frames:
            if f.fmt == pixels.I420:
                small.append(torch.from_numpy(pixels.resize_rgb(f.image, self._size))[None]
                             .permute(0, 3, 1, 2))
                continue
            x = torch.from_numpy(f.image)[None].permute(0, 3, 1, 2)
            small.append(x if tuple(x.shape[-2:]) == self._size
                         else resize_u8(x, self._size))
        batch = torch.cat(small).permute(0, 2, 3, 1)  # (N, H', W', 3) uint8
        return self.model.preprocess(batch, self._size)

    def _upload(self, frames: list[Frame]) -> Tensor:
        """Copy the frames once into a reused pinned buffer and upload it asynchronously;
        returns ``(N, H, W, 3)`` uint8 on the device."""
        n = len(frames)
        shape = (*frames[0].size, 3)
        slot = self._pin_next
        self._pin_next = (slot + 1) % 2
        if len(self._pinned) < 2 or self._pinned[slot].shape[0] < n or \
                tuple(self._pinned[slot].shape[1:]) != tuple(shape):
            if self._pin_events:
                for ev in self._pin_events:
                    ev.synchronize()
            self._pinned = [torch.empty((n, *shape), dtype=torch.uint8).pin_memory()
                            for _ in range(2)]
            self._pin_events = [torch.cuda.Event(), torch.cuda.Event()]
            self._pin_next, slot = 1, 0
        else:
            self._pin_events[slot].synchronize()  # its last upload has finished
        host = self._pinned[slot][:n]
        arr = host.numpy()
        for i, f in enumerate(frames):
            np.copyto(arr[i], f.rgb())
        dev = host.to(self.device, non_blocking=True)
        self._pin_events[slot].record()
        return dev

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone under autocast (when asked) → fp32 features; head in fp32."""
        if x.shape[0] == 0:
            c, k = self.model.weight.shape[1], self.model.weight.shape[0]
            return x.new_zeros((0, c, 1, 1)), x.new_zeros((0, k))
        ctx = (torch.autocast(self.device.type, dtype=self.precision)
               if self.precision is not None and not is_int8(self.precision)
               else nullcontext())  # int8: the quantised network, no autocast
        with ctx:
            if self._traced is None:
                features = self.model.backbone(x)
            elif self._per_frame:
                features = self._traced.per_frame(x)
            else:
                features = self._traced(x)
        features = features.float()
        logits = logits_from_features(features, self.model.weight.float(),
                                      None if self.model.bias is None
                                      else self.model.bias.float())
        with self._count_lock:
            self.network_frames += x.shape[0]
        return features, logits

    def _keys(self, frames01: Tensor) -> list[bool]:
        """Which frames of the batch the network runs on (all when ``stride == 1``): every
        ``stride``-th frame since the last one, and any frame that starts a new shot."""
        n = frames01.shape[0]
        cut = [False] * n
        if self.smoother.cut_reset:
            small = mo.downsample(frames01, (8, 8))
            hist = mo.color_histograms(small)
            prev = hist[:1] if self._prev_hist is None else self._prev_hist
            dist = mo.histogram_distance(hist, torch.cat((prev, hist[:-1])))
            self._prev_hist = hist[-1:]
            threshold = getattr(self.smoother, "cut_threshold", DEFAULT_CUT_THRESHOLD)
            cut = (dist > threshold).tolist()
        keys = []
        for i in range(n):
            first = self._carry is None and i == 0  # the stream's first frame
            key = first or cut[i] or self._since_key + 1 >= self.stride
            self._since_key = 0 if key else self._since_key + 1
            keys.append(bool(key))
        return keys

    def _carry_between(self, features: Tensor, logits: Tensor, keys: list[bool],
                       frames01: Tensor) -> tuple[Tensor, Tensor, mo.Cues]:
        """Features and scores of every frame: the network's on key frames, the last
        ones moved with the image motion (and the last scores) in between; and the
        batch's motion cues, which the smoother then reuses."""
        grid = (features.shape[2], features.shape[3]) if features.shape[0] else \
            (self._carry[0].shape[2], self._carry[0].shape[3])  # type: ignore[index]
        cues = self.smoother.cues(frames01, grid)
        out_f, out_l = [], []
        k = 0
        for i, key in enumerate(keys):
            if key:
                f, lg = features[k:k + 1], logits[k:k + 1]
                k += 1
            else:
                f, lg = self._carry  # type: ignore[misc]
                moved = cues.sampling(i)
                if moved is not None:
                    f = mo.warp(f, moved[0])
            self._carry = (f, lg)
            out_f.append(f)
            out_l.append(lg)
        return torch.cat(out_f), torch.cat(out_l), cues
