"""The device stage: :class:`CamEngine` turns batches of frames into rendered frames.

:meth:`CamEngine.infer` is the network's part (resize/normalise, forward pass, fp32
features and class scores, ``stride`` carrying); :meth:`CamEngine.finish` the rest
(smoothing, colour, blend, labels), run on the pipeline's render thread.

- CPU frames are converted once: each decoded RGB array is resized as uint8 (antialiased
  bilinear on a channels_last view, no copy, no full-resolution float tensor) and rendered
  from the same array; I420 frames (the file pipeline's) are resized plane by plane, only
  the model's small input is made RGB, and they are rendered as I420.
- On CUDA, frames go up as they were decoded (I420: half the bytes of RGB) through two
  reused pinned buffers, ``non_blocking``, on the model's device; they are converted for
  the model (:func:`camvideo.pixels.model_input_from_i420`) and blended as I420 there,
  and come back once per batch into pinned memory (:mod:`camvideo.transfer`). Smoothing
  and rendering (:meth:`CamEngine.finish`) run on a CUDA stream of their own, after an
  event of the batch's forward pass, so the next forward pass does not hold them up;
  nothing reads a value back frame by frame (tests/test_cuda.py checks it with
  ``torch.cuda.set_sync_debug_mode("error")``, tests/test_smoothing.py on the CPU).
- On the CPU the backbone runs as fused TorchScript graphs (:mod:`camvideo.model.trace`).
- ``stride`` > 1 runs the network on every ``stride``-th frame only (and on scene cuts);
  frames in between carry the last features and class scores, moved with the image
  motion. That motion is the smoother's own (:meth:`Smoother.cues
  <camvideo.smoothing.Smoother.cues>`): computed once per batch, used by both.
- A video network (:class:`~camvideo.model.video.VideoCamModel`) gathers the
  preprocessed frames into clips (:class:`~camvideo.runtime.clips.ClipStage`, after the
  same preprocessing): each batch's results are the frames whose clip has run, with
  per-frame features and the clip's class scores, so that smoothing and rendering are
  the image networks'. Its frames come out up to one clip late; :meth:`CamEngine.infer_flush`
  runs the stream's last clip.
"""
from __future__ import annotations

import collections
import dataclasses
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
from ..cam import bbox_threshold, logits_from_features, minmax_normalize
from ..model.device import (default_infer_workers, is_int8, parse_device, pipeline_threads,
                            resolve_precision)
from ..model.quantize import cpu_backbone
from ..model.rewrite import optimize_model
from ..errors import OptionError
from ..media.frames import Frame
from ..model.cammodel import CamModel
from ..model.video import VideoCamModel
from ..pixels import resize_u8
from ..options import ClassResult, FrameResult, Options
from ..render import Renderer
from ..smoothing import DEFAULT_CUT_THRESHOLD, FrameMaps, Smoother
from ..transfer import to_host
from .classes import ClassStage, class_stage
from .clips import ClipStage, FramesOut

log = logging.getLogger(__name__)


class _MapReader:
    """A :class:`FrameResult`'s ``map_for``: any classes' maps from its frame's smoothed
    features (:class:`~camvideo.smoothing.FrameMaps`), numpy or device tensors."""

    __slots__ = ("_maps", "_tensors")

    def __init__(self, maps: FrameMaps, tensors: bool) -> None:
        self._maps, self._tensors = maps, tensors

    def __call__(self, classes: Sequence[int], normalize: bool, one: bool) -> Any:
        with torch.inference_mode():
            raw = self._maps(torch.tensor(classes, dtype=torch.long)).float()
            if normalize:
                raw = minmax_normalize(raw)
            out: Any = raw if self._tensors else raw.cpu().numpy()
        return out[0] if one else out


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
        device_frames, event: CUDA only (see below).
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
    device_frames: Tensor | None = None   #: CUDA: the uploaded batch (``images``' base)
    event: Any = None                     #: CUDA: recorded when the batch was ready

    def __len__(self) -> int:
        return len(self.frames)

    def device_tensors(self) -> list[Tensor]:
        """The batch's tensors made on the inference stream (CUDA), to mark as used by
        the rendering stream."""
        out = [t for t in (self.features, self.logits, self.frames01, self.device_frames)
               if t is not None]
        # a video network's frames can come from earlier batches' uploads
        out += [t for t in self.images if isinstance(t, Tensor)]
        if self.cues is not None:
            out.append(self.cues.small)
            out += [d for d in self.cues.disps if d is not None]
            for mat, valid in self.cues._samplings.values():
                out += [mat, valid]
        return [t for t in out if t.is_cuda]


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
        draw: render the annotated frames (else only describe them: peaks, boxes,
            labels).
        keep_rgb: give each result its source frame as RGB.
        tensors: results' probabilities and maps stay torch tensors on the device.
        classes: the shown classes' stage (several classes, boxes, tracks, timeline), or
            None: one class, drawn by ``renderer``.
        clip_hop: video networks: frames from one clip's start to the next's (None: half
            the clip; see :mod:`camvideo.runtime.clips`). Video networks run one
            :meth:`infer` at a time, with ``stride`` 1, eagerly (no tracing or folding).
    """

    def __init__(self, model: CamModel, renderer: Renderer, smoother: Smoother, *,
                 short_side: int = 224, precision: torch.dtype | None = None,
                 stride: int = 1, optimize: bool = True, threads: int | None = None,
                 infer_workers: int | None = None, trace: bool = False,
                 equal_batches: bool = True, draw: bool = True, keep_rgb: bool = False,
                 tensors: bool = False, classes: ClassStage | None = None,
                 clip_hop: int | None = None) -> None:
        if not 32 <= short_side <= 2048:
            raise OptionError(f"size must be in 32..2048, got {short_side}")
        if not 1 <= int(stride) <= 1000:
            raise OptionError(f"stride must be in 1..1000, got {stride}")
        video = model.kind == "video"
        if video and int(stride) != 1:
            raise OptionError(f"stride is for image networks; {model.name} runs on clips "
                              "(use clip_hop)", option="stride")
        if clip_hop is not None and not video:
            raise OptionError(f"clip_hop is for video networks; {model.name} is an image "
                              "network", option="clip_hop")
        self.model = optimize_model(model) if optimize and not video else model
        self.renderer = renderer
        self.smoother = smoother
        self.classes = classes
        self.short_side = short_side
        self.precision = precision
        self.stride = int(stride)
        self.device = model.device
        self.draw, self.keep_rgb, self.tensors = bool(draw), bool(keep_rgb), bool(tensors)
        if infer_workers is None:
            infer_workers = 1 if video else default_infer_workers(self.device, self.stride)
        if infer_workers > 1 and (self.device.type != "cpu" or self.stride != 1 or video):
            raise OptionError("concurrent inference needs the CPU, stride 1 and an image "
                              "network")
        self.infer_workers = max(1, int(infer_workers))
        if self.device.type == "cpu":
            if threads is None and not os.environ.get("OMP_NUM_THREADS"):
                threads = max(1, pipeline_threads() // self.infer_workers)
            if threads:
                torch.set_num_threads(threads)
        self._traced = cpu_backbone(self.model, precision, trace) \
            if self.device.type == "cpu" and not video else None  # traced or int8
        self._clips = ClipStage(model, self._forward, clip_hop) \
            if isinstance(model, VideoCamModel) else None
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
        self._render_stream: Any = None  # CUDA: where finish() runs

    @property
    def held_frames(self) -> int:
        """Frames :meth:`infer` may hold back before their results (a video network's
        clip; 0 for image networks)."""
        return self._clips.latency if self._clips is not None else 0

    # ------------------------------------------------------------------ public API
    def process(self, frames: list[Frame]) -> list[FrameResult]:
        """Run one batch; returns the frames that are ready (a centered smoother holds a
        few back until :meth:`flush`)."""
        return self.finish(self.infer(frames))

    def flush(self) -> list[FrameResult]:
        """Frames still held by the smoother at the end of the stream."""
        return self.finish(self.infer_flush())

    @torch.inference_mode()
    def infer(self, frames: Sequence[Frame]) -> Inferred:
        """The network's part of one batch (frames in stream order): resize, normalise,
        forward pass (only on key frames with ``stride``), fp32 features and scores.
        On CUDA it runs on the calling thread's current stream of the model's device and
        records an event there that :meth:`finish` waits for."""
        frames = list(frames)
        if not frames:
            return Inferred([], [])
        h, w = frames[0].size
        if self._size is None:
            self._size = self.model.input_size(h, w, self.short_side)
        if self.device.type != "cuda":
            x, frames01 = self._preprocess_cpu(frames)
            return self._infer(frames, [f.image for f in frames], x, frames01)
        with torch.cuda.device(self.device):
            dev_frames = self._upload(frames)
            if dev_frames.dim() == 3:  # I420: converted for the model on the device
                frames01 = pixels.model_input_from_i420(dev_frames, self._size)
                x = self.model.normalize(frames01)
            else:
                x, frames01 = self.model.preprocess(dev_frames, self._size)
            out = self._infer(frames, dev_frames.unbind(0), x, frames01)
            out.device_frames = dev_frames
            out.event = torch.cuda.Event()
            out.event.record(torch.cuda.current_stream(self.device))
            return out

    def _infer(self, frames: list[Frame], images: Sequence[Any], x: Tensor,
               frames01: Tensor) -> Inferred:
        if self._clips is not None:   # a video network: the frames whose clip has run
            return self._inferred(self._clips.push(frames, images, x, frames01))
        cues = None
        if self.stride == 1:
            features, logits = self._forward(x)
        else:
            keys = [k or f.cut for k, f in zip(self._keys(frames01), frames)]
            if not all(keys):
                idx = torch.tensor([i for i, k in enumerate(keys) if k], dtype=torch.long,
                                   device=x.device)
                x = x.index_select(0, idx)
            features, logits = self._forward(x)
            features, logits, cues = self._carry_between(features, logits, keys, frames01)
        return Inferred(frames, images, features, logits, frames01, cues)

    def infer_flush(self) -> Inferred:
        """The end-of-stream marker for :meth:`finish` (a video network's: with the
        frames of the stream's last clip)."""
        if self._clips is None:
            return Inferred([], [], end=True)
        cuda = self.device.type == "cuda"
        with torch.inference_mode(), (torch.cuda.device(self.device) if cuda
                                      else nullcontext()):
            out = self._inferred(self._clips.flush())
            if cuda and len(out):
                out.event = torch.cuda.Event()
                out.event.record(torch.cuda.current_stream(self.device))
        out.end = True
        return out

    @torch.inference_mode()
    def finish(self, batch: Inferred) -> list[FrameResult]:
        """Smooth and render (or only describe) a batch from :meth:`infer` (one thread,
        batches in order: the smoother is stateful). Returns the results of the frames
        that are ready. On CUDA it runs on a stream of its own (the next batch's forward
        pass does not hold up this one's smoothing, drawing and copies back), after
        waiting on the batch's event."""
        if self.device.type != "cuda":
            return self._finish(batch)
        with torch.cuda.device(self.device):
            if self._render_stream is None:
                self._render_stream = torch.cuda.Stream(self.device)
            stream = self._render_stream
            if batch.event is not None:
                stream.wait_event(batch.event)
            for t in batch.device_tensors():  # the allocator must not reuse them meanwhile
                t.record_stream(stream)
            with torch.cuda.stream(stream):
                return self._finish(batch)

    def _finish(self, batch: Inferred) -> list[FrameResult]:
        if batch.end and len(batch):   # a video network's last clip, then the end
            return self._finish(dataclasses.replace(batch, end=False)) + \
                self._finish(Inferred([], [], end=True))
        if batch.end:
            smoothed = self.smoother.flush()
        elif len(batch) == 0:
            return []
        else:
            cues = batch.cues
            if cues is None and self.classes is not None and self.classes.needs_motion:
                assert batch.features is not None and batch.frames01 is not None
                cues = self.smoother.cues(batch.frames01, (int(batch.features.shape[2]),
                                                           int(batch.features.shape[3])))
            if cues is not None and self.classes is not None:
                self.classes.record_motion(batch.frames, cues.disps)
            smoothed = self.smoother.push(batch.features, batch.logits,
                                          [f.time for f in batch.frames], batch.frames01,
                                          cues, [f.cut for f in batch.frames])
            self._pending.extend(zip(batch.frames, batch.images))
        m = int(smoothed.maps.shape[0])
        if m == 0:
            return []
        ready = [self._pending.popleft() for _ in range(m)]
        frames = [f for f, _ in ready]
        results: list[list[ClassResult]] | None = None
        shown = None
        if self.classes is not None:
            smoothed, results, shown = self.classes.step(smoothed, frames)
        out: list[np.ndarray] | list[None]
        if self.draw:
            if self.device.type == "cuda":
                images: Any = torch.stack([t for _, t in ready])  # type: ignore[misc]
            else:
                images = [img for _, img in ready]
            if shown is not None:
                out = self.classes.paint(images, shown)  # type: ignore[union-attr]
            else:
                out, notes = self.renderer.render(images, smoothed.maps, smoothed.probs,
                                                  smoothed.classes)
            if self.classes is not None:
                self.classes.draw(out, frames, results,  # type: ignore[arg-type]
                                  smoothed.probs)
        else:
            if shown is None:
                notes = self.renderer.describe(smoothed.maps, smoothed.probs,
                                               smoothed.classes, ready[0][0].size)
            out = [None] * m
        if shown is not None:
            notes = self.classes.notes(smoothed, results)  # type: ignore[union-attr,arg-type]
        elif results is not None:  # one class: its box is the stage's (the tracked one)
            keep = self.classes.boxes  # type: ignore[union-attr]
            for n, rs in zip(notes, results):
                n.bbox = rs[0].bbox if keep else n.bbox
        if self.tensors:
            maps, probs = smoothed.maps, smoothed.probs
        else:  # one copy per batch (pinned, one wait, on a GPU)
            maps, probs = to_host([smoothed.maps.float(), smoothed.probs.float()])
        cuts = smoothed.cut or [False] * m
        fms = smoothed.frame_maps or [None] * m
        return [FrameResult(
            index=f.index, time=f.time, pts=f.pts, cls=n.cls, label=n.label, score=n.score,
            topk=n.topk, probs=probs[i], map=maps[i], peak=n.peak, bbox=n.bbox,
            cut=bool(cuts[i]), image=img,
            fmt=pixels.I420 if img is not None and img.ndim == 2 else pixels.RGB,
            rgb=f.rgb() if self.keep_rgb else None,
            classes=results[i] if results is not None else [],
            _raw_maps=_MapReader(fms[i], self.tensors) if fms[i] is not None else None)
            for i, ((f, _), img, n) in enumerate(zip(ready, out, notes))]

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _inferred(out: FramesOut | None) -> Inferred:
        if out is None:
            return Inferred([], [])
        return Inferred(out.frames, out.images, out.features, out.logits, out.frames01)

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
        """Copy the frames once into a reused pinned buffer and upload it asynchronously
        on the current stream of the engine's device: I420 frames as they were decoded
        (1.5 bytes a pixel), others as RGB. Returns ``(N, H * 3 // 2, W)`` (I420) or
        ``(N, H, W, 3)`` (RGB) uint8 on the device. Two buffers are used in turn; before
        one is refilled, the host waits for its last upload (an event on this stream)."""
        n = len(frames)
        i420 = all(f.fmt == pixels.I420 for f in frames)
        shape = tuple(frames[0].image.shape) if i420 else (*frames[0].size, 3)
        stream = torch.cuda.current_stream(self.device)
        slot = self._pin_next
        self._pin_next = (slot + 1) % 2
        if len(self._pinned) < 2 or self._pinned[slot].shape[0] < n or \
                tuple(self._pinned[slot].shape[1:]) != shape:
            for ev in self._pin_events:
                ev.synchronize()
            self._pinned = [torch.empty((n, *shape), dtype=torch.uint8, pin_memory=True)
                            for _ in range(2)]
            self._pin_events = [torch.cuda.Event(), torch.cuda.Event()]
            self._pin_next, slot = 1, 0
        else:
            self._pin_events[slot].synchronize()  # its last upload has finished
        host = self._pinned[slot][:n]
        arr = host.numpy()
        for i, f in enumerate(frames):
            np.copyto(arr[i], f.image if i420 else f.rgb())
        dev = host.to(self.device, non_blocking=True)
        self._pin_events[slot].record(stream)
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
        with self._count_lock:   # a video network's clips: their frames
            self.network_frames += x.shape[0] * (x.shape[2] if x.dim() == 5 else 1)
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
            cut = to_host([dist > threshold])[0].tolist()
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


def build_engine(opts: Options, model: CamModel, *, infer_workers: int | None = None,
                 trace: bool = True, equal_batches: bool = True, draw: bool = True,
                 keep_rgb: bool = False, tensors: bool = False) -> CamEngine:
    """The :class:`CamEngine` for ``opts`` around a loaded ``model``: renderer, smoother,
    precision; ``infer_workers``, ``trace``, ``equal_batches``, ``draw``, ``keep_rgb`` and
    ``tensors`` as :class:`CamEngine`'s (workers None: its default, 2 on the CPU; live
    streams want 1 worker and batches of any size).

    The model runs on its own device: ``opts.device`` ``auto`` follows it, another device
    is an :class:`OptionError` (load the model there). ``opts.size`` None is the model's
    :attr:`~camvideo.model.cammodel.CamModel.default_side`.
    """
    device, wanted = model.device, parse_device(opts.device)
    if wanted is not None and (wanted.type != device.type or (
            wanted.index is not None and wanted.index != (device.index or 0))):
        raise OptionError(f"device {opts.device!r} asked for, but the model given is on "
                          f"{device}; load it there (load_model(..., device=...))",
                          option="device")
    precision = resolve_precision(opts.precision, device)
    fixed = model.class_index(opts.cls) if opts.cls is not None else None
    renderer = Renderer(model.labels, colormap=opts.colormap, alpha=opts.alpha,
                        topk=opts.topk, bbox=opts.bbox,
                        bbox_threshold=bbox_threshold(opts.bbox_threshold, model.calibration_name),
                        layout=opts.layout)
    smoother = Smoother(model.weight.detach().float(), tau=opts.smooth,
                        switch_margin=opts.switch_margin, switch_ratio=opts.switch_ratio,
                        motion=opts.motion,
                        cut_reset=opts.cut_reset, mode=opts.smooth_mode, fixed_class=fixed)
    stage = class_stage(opts, model, renderer, tensors=tensors)
    return CamEngine(model, renderer, smoother,
                     short_side=opts.size if opts.size is not None else model.default_side,
                     precision=precision, stride=opts.stride, infer_workers=infer_workers,
                     trace=trace, equal_batches=equal_batches, draw=draw,
                     keep_rgb=keep_rgb, tensors=tensors, classes=stage,
                     clip_hop=opts.clip_hop)
