"""The streaming pipeline: source → batches → model+CAM → smoother → renderer → sink.

Four threads joined by small bounded queues:

- **read** iterates the source (PyAV decodes in its own threads, releasing the GIL);
- the **caller's thread** groups frames into batches and runs the network
  (:meth:`CamEngine.infer`: resize/normalise, forward pass, fp32 features and scores);
- **render** smooths and draws each batch in order (:meth:`CamEngine.finish`: the
  smoother, then colour, blend and labels; on CUDA on the device with one uint8 copy
  back per batch, on the CPU with OpenCV uint8 calls);
- **write** hands every frame, in order, to ``consume`` (encoding, sidecar).

torch, OpenCV and PyAV release the GIL, so the stages overlap and the slowest sets the
pace; the queues hold at most a few batches, so memory stays flat however long the video.
On a 2-core CPU the network thread has one core to itself and everything else (decode,
smoothing, rendering, x264) shares the other.

Speed (measurements in benchmarks/README.md, "Speed"):

- On the CPU the network gets ``cores - max(1, cores // 4)`` intra-op threads (1 of 2
  cores), leaving the rest to the other stages: OpenMP threads that have to share their
  cores with decoding and encoding spin and stall, which made a 2-thread forward pass
  2-4x *slower* inside the pipeline than a 1-thread one. ``OMP_NUM_THREADS`` wins.
- Once per model, batch norms that directly follow a convolution are folded into it and,
  on the CPU, a ReLU/ReLU6 after it becomes a oneDNN post-op (:class:`ConvAct`); the
  result is checked against the original network on a probe and dropped if it differs.
  The network runs channels_last under ``inference_mode``, with bf16 autocast on CPUs
  with native bf16 (AVX512-BF16 / AMX; about 2.5x fp32 there) unless ``--precision
  fp32``. The linear head and the maps are always computed in fp32.
- CPU frames are converted once: each decoded RGB array is resized as uint8 (antialiased
  bilinear on a channels_last view, no copy, no full-resolution float tensor) and rendered
  from the same array. CUDA frames go through reused pinned host buffers, uploaded
  ``non_blocking``; everything after that stays on the device.
- ``stride`` > 1 runs the network on every ``stride``-th frame only (and on scene cuts);
  frames in between carry the last features and class scores, moved with the image
  motion (:class:`camvideo.motion.MotionEstimator`, the smoother's optical flow).
"""
from __future__ import annotations

import collections
import copy
import logging
import os
import queue
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import motion as mo
from .cam import logits_from_features
from .errors import OptionError
from .media import Frame
from .models import CamModel
from .render import Annotation, Renderer
from .smoothing import DEFAULT_CUT_THRESHOLD, Smoother

log = logging.getLogger(__name__)

_END = object()  # end-of-stream marker inside the queues (never exposed)
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_OPTIMIZE_LOCK = threading.Lock()


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


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX) and oneDNN is there;
    elsewhere bf16 is emulated and slower than fp32."""
    try:
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:  # older torch / non-x86 builds
        return False
    return bool(native) and torch.backends.mkldnn.is_available()


def resolve_precision(spec: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``spec`` on ``device`` (None: plain fp32).

    ``auto`` is fp16 on CUDA, bf16 on CPUs with native bf16 (:func:`cpu_has_native_bf16`;
    about twice as fast there, maps within ~0.1 of fp32's, see benchmarks/README.md) and
    fp32 on other CPUs.
    """
    if spec not in PRECISIONS:
        raise OptionError(f"precision must be one of {', '.join(PRECISIONS)}, got {spec!r}")
    if spec == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else None
    if spec == "fp32":
        return None
    if spec == "fp16" and device.type == "cpu":
        raise OptionError("fp16 is for CUDA; on the CPU use bf16 or fp32")
    if spec == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        log.warning("this CPU has no native bf16 (AVX512-BF16/AMX): bf16 is emulated and "
                    "likely slower than fp32")
    return torch.float16 if spec == "fp16" else torch.bfloat16


def default_batch_size(device: torch.device) -> int:
    """Frames per device batch when not given: 32 on CUDA, 4 on the CPU (one thread of
    EfficientNet-Lite0 at 224x384: 62 img/s at 1, 80 at 4, 77 at 8, 64 at 16; larger
    batches fall out of the caches and only add latency and memory)."""
    return 32 if device.type == "cuda" else 4


def cpu_count() -> int:
    """CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pipeline_threads(cores: int | None = None) -> int:
    """Intra-op threads for the network on the CPU: all cores but ``max(1, cores // 4)``,
    which are left to decoding, rendering and encoding (2 cores → 1, 8 → 6, 16 → 12)."""
    n = cores if cores is not None else cpu_count()
    return max(1, n - max(1, n // 4))


# ---------------------------------------------------------------------------------------
# One-time model optimisation


def fold_batchnorm(net: nn.Module, probe: Tensor,
                   fuse: bool = False) -> tuple[nn.Module, int]:
    """A copy of ``net`` with every batch norm that directly follows a convolution folded
    into that convolution (eval mode only).

    Pairs are found by running ``probe`` with hooks: a ``BatchNorm2d`` (or timm's
    ``BatchNormAct2d``, whose activation is kept) whose input is exactly a ``Conv2d``'s
    output, each called once. The caller must check the copy against ``net`` (a conv
    output also used elsewhere would be changed there too).

    Args:
        net: the network (not modified).
        probe: an input it accepts.
        fuse: also fuse a ReLU/ReLU6 that follows a folded convolution into it
            (:class:`ConvAct`: one oneDNN call on the CPU): timm's ``BatchNormAct2d``
            activations, and ``Conv2d, BatchNorm2d, ReLU`` runs inside ``nn.Sequential``.

    Returns:
        ``(copy, number of folded pairs)``.
    """
    net = copy.deepcopy(net)
    outputs: dict[int, tuple[nn.Module, Tensor]] = {}
    calls: collections.Counter = collections.Counter()
    pairs: list[tuple[nn.Conv2d, nn.Module]] = []
    hooks = []

    def conv_hook(mod: nn.Module, inp: Any, out: Tensor) -> None:
        calls[mod] += 1
        outputs[id(out)] = (mod, out)

    def bn_hook(mod: nn.Module, inp: Any) -> None:
        calls[mod] += 1
        hit = outputs.get(id(inp[0]))
        if hit is not None and hit[1] is inp[0]:
            pairs.append((hit[0], mod))  # type: ignore[arg-type]

    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif _foldable_bn(m):
            hooks.append(m.register_forward_pre_hook(bn_hook))
    try:
        with torch.inference_mode():
            net(probe)
    finally:
        for h in hooks:
            h.remove()
        outputs.clear()
    parents: dict[nn.Module, list[tuple[nn.Module, str]]] = collections.defaultdict(list)
    for p in net.modules():
        for name, child in p.named_children():
            parents[child].append((p, name))
    folded = 0
    done: set[nn.Module] = set()  # folded and not yet fused
    with torch.no_grad():
        for conv, bn in pairs:
            if calls[conv] != 1 or calls[bn] != 1 or len(parents[bn]) != 1:
                continue
            var, mean = bn.running_var.float(), bn.running_mean.float()
            scale = torch.rsqrt(var + bn.eps)
            if bn.weight is not None:
                scale = scale * bn.weight.float()
            shift = -mean * scale
            if bn.bias is not None:
                shift = shift + bn.bias.float()
            w = conv.weight.float() * scale.view(-1, 1, 1, 1)
            b = shift if conv.bias is None else conv.bias.float() * scale + shift
            dt = conv.weight.dtype
            conv.weight = nn.Parameter(w.to(dt), requires_grad=False)
            conv.bias = nn.Parameter(b.to(dt), requires_grad=False)
            parent, name = parents[bn][0]
            if type(bn) is nn.BatchNorm2d:
                setattr(parent, name, nn.Identity())
            elif fuse and isinstance(bn.drop, nn.Identity) and _act_kind(bn.act) and \
                    ConvAct.fusable(conv) and len(parents[conv]) == 1:
                cparent, cname = parents[conv][0]
                setattr(cparent, cname, ConvAct(conv, _act_kind(bn.act)))  # type: ignore
                setattr(parent, name, nn.Identity())
                folded += 1
                continue
            else:
                setattr(parent, name, nn.Sequential(bn.drop, bn.act))
            done.add(conv)
            folded += 1
        if fuse:  # Sequential(..., Conv2d, [Identity (a folded BN)], ReLU/ReLU6, ...)
            for seq in [m for m in net.modules() if type(m) is nn.Sequential]:
                names = list(seq._modules)
                for i, name in enumerate(names):
                    conv = seq._modules[name]
                    if conv not in done or not ConvAct.fusable(conv) or \
                            len(parents[conv]) != 1:
                        continue
                    j = i + 1
                    while j < len(names) and isinstance(seq._modules[names[j]], nn.Identity):
                        j += 1
                    if j < len(names) and _act_kind(seq._modules[names[j]]) and \
                            len(parents[seq._modules[names[j]]]) == 1:
                        kind = _act_kind(seq._modules[names[j]])
                        seq._modules[name] = ConvAct(conv, kind)  # type: ignore[arg-type]
                        seq._modules[names[j]] = nn.Identity()
    return net, folded


def _act_kind(m: nn.Module | None) -> str | None:
    if type(m) is nn.ReLU:
        return "relu"
    if type(m) is nn.ReLU6:
        return "relu6"
    return None


def _has_fused_conv() -> bool:
    try:
        torch.ops.mkldnn._convolution_pointwise.default  # noqa: B018
    except (AttributeError, RuntimeError):
        return False
    return torch.backends.mkldnn.is_available()


class ConvAct(nn.Module):
    """A ``Conv2d`` followed by ReLU or ReLU6 as one oneDNN call on the CPU (the
    activation is a post-op: the output is written once instead of twice). Under CPU
    autocast it runs in the autocast dtype, with the weights cast once and kept.

    Args:
        conv: the convolution (``padding_mode="zeros"``, numeric padding).
        act: ``"relu"`` or ``"relu6"``.
    """

    def __init__(self, conv: nn.Conv2d, act: str) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = (nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
                     if conv.bias is not None else None)
        self.padding = list(conv.padding)  # type: ignore[arg-type]
        self.stride, self.dilation = list(conv.stride), list(conv.dilation)
        self.groups, self.act = conv.groups, act
        self._attr, self._scalars = (("relu", []) if act == "relu"
                                     else ("hardtanh", [0.0, 6.0]))
        self._cast: dict[torch.dtype, tuple[Tensor, Tensor | None]] = {}

    @staticmethod
    def fusable(conv: nn.Module) -> bool:
        return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros"
                and not isinstance(conv.padding, str) and _has_fused_conv())

    def _weights(self, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        if self.weight.dtype == dtype:
            return self.weight, self.bias
        if dtype not in self._cast:
            with torch.inference_mode(False), torch.no_grad():
                self._cast[dtype] = (self.weight.to(dtype), None if self.bias is None
                                     else self.bias.to(dtype))
        return self._cast[dtype]

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu":
            y = nn.functional.conv2d(x, self.weight, self.bias, self.stride, self.padding,
                                     self.dilation, self.groups)
            return y.relu_() if self.act == "relu" else y.clamp_(0.0, 6.0)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") \
            else x.dtype
        w, b = self._weights(dtype)
        return torch.ops.mkldnn._convolution_pointwise(
            x.to(dtype), w, b, self.padding, self.stride, self.dilation, self.groups,
            self._attr, self._scalars, "")

    def _apply(self, fn, recurse=True):  # .to()/.half(): forget the cast copies
        self._cast = {}
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[1] * self.groups}, {self.weight.shape[0]}, "
                f"kernel_size={tuple(self.weight.shape[2:])}, stride={tuple(self.stride)}, "
                f"groups={self.groups}, act={self.act}")


def _foldable_bn(m: nn.Module) -> bool:
    if not isinstance(m, nn.BatchNorm2d) or m.running_mean is None or m.training:
        return False
    if type(m) is nn.BatchNorm2d:
        return True
    # timm's BatchNormAct2d: batch_norm → drop → act (kept as a Sequential)
    return type(m).__name__ == "BatchNormAct2d" and hasattr(m, "act") and hasattr(m, "drop")


def optimize_model(model: CamModel) -> CamModel:
    """Fold batch norms into convolutions and make the backbone channels_last, once per
    model (in place; later calls do nothing). The folded network is kept only if its
    features match the original's on a probe (within 1e-3 relative)."""
    with _OPTIMIZE_LOCK:
        if getattr(model, "_camvideo_optimized", False):
            return model
        model._camvideo_optimized = True  # type: ignore[attr-defined]
        if model.training:
            return model
        dev = model.device
        g = torch.Generator().manual_seed(0)
        probe = torch.randn(2, 3, 4 * model.stride, 5 * model.stride, generator=g).to(dev)
        probe = probe.contiguous(memory_format=torch.channels_last)
        try:
            folded, n = fold_batchnorm(model.backbone, probe, fuse=dev.type == "cpu")
            if n == 0:
                return model
            folded.to(memory_format=torch.channels_last)
            with torch.inference_mode():
                ref = model.backbone(probe).float()
                got = folded(probe).float()
            err = (got - ref).abs().max().item()
            if got.shape != ref.shape or not err <= 1e-3 * max(1.0, ref.abs().max().item()):
                log.info("batch-norm folding changed %s's features (%.3g); not used",
                         model.name, err)
                return model
        except Exception as e:  # noqa: BLE001 - an optimisation: never fatal
            log.info("batch-norm folding skipped for %s: %s", model.name, e)
            return model
        model.backbone = folded
        log.info("%s: %d batch norms folded into their convolutions", model.name, n)
        return model


# ---------------------------------------------------------------------------------------
# The device stage


@dataclass
class Rendered:
    """One output frame: the source frame's timing, the image, what was drawn."""

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
            tensors on CUDA, the frames' own arrays on the CPU.
        features: ``(N, C, h, w)`` float32 features (carried ones on ``stride`` frames).
        logits: ``(N, K)`` float32 class scores.
        frames01: ``(N, 3, H', W')`` float RGB in ``[0, 1]``, the model-input frames (the
            smoother's motion and cut cues).
        end: the end-of-stream marker (:meth:`CamEngine.infer_flush`): the smoother
            releases what it holds back.
    """

    frames: list[Frame]
    images: Sequence[Tensor] | Sequence[np.ndarray]
    features: Tensor | None = None
    logits: Tensor | None = None
    frames01: Tensor | None = None
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
        threads: CPU intra-op threads for torch (None: :func:`pipeline_threads`, unless
            ``OMP_NUM_THREADS`` is set; 0: leave torch's setting alone). Process-wide.
    """

    def __init__(self, model: CamModel, renderer: Renderer, smoother: Smoother, *,
                 short_side: int = 224, precision: torch.dtype | None = None,
                 stride: int = 1, optimize: bool = True, threads: int | None = None) -> None:
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
        if self.device.type == "cpu":
            if threads is None and not os.environ.get("OMP_NUM_THREADS"):
                threads = pipeline_threads()
            if threads:
                torch.set_num_threads(threads)
        self._pending: collections.deque[tuple[Frame, Tensor | np.ndarray]] = \
            collections.deque()
        self._size: tuple[int, int] | None = None
        # stride: carried state
        self._estimator = mo.MotionEstimator("dis")
        self._carry: tuple[Tensor, Tensor] | None = None   # (1, C, h, w), (1, K)
        self._since_key = 0
        self._prev_gray: np.ndarray | None = None
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
        h, w = frames[0].image.shape[:2]
        if self._size is None:
            self._size = self.model.input_size(h, w, self.short_side)
        if self.device.type == "cuda":
            dev_frames = self._upload(frames)
            x, frames01 = self.model.preprocess(dev_frames, self._size)
            images: Sequence[Tensor] | Sequence[np.ndarray] = dev_frames.unbind(0)
        else:
            x, frames01 = self._preprocess_cpu(frames)
            images = [f.image for f in frames]
        if self.stride == 1:
            features, logits = self._forward(x)
        else:
            keys = self._keys(frames01)
            features, logits = self._forward(x[torch.tensor(keys)] if not all(keys) else x)
            features, logits = self._carry_between(features, logits, keys, frames01)
        return Inferred(frames, images, features, logits, frames01)

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
                                          [f.time for f in batch.frames], batch.frames01)
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
        (no copy), resized as uint8 and normalised (see :meth:`CamModel.preprocess`).
        One frame at a time, so the result does not depend on the batch size."""
        xs, f01s = [], []
        for f in frames:
            x, f01 = self.model.preprocess(torch.from_numpy(f.image)[None], self._size)
            xs.append(x)
            f01s.append(f01)
        x = torch.cat(xs).contiguous(memory_format=torch.channels_last)
        return x, torch.cat(f01s)

    def _upload(self, frames: list[Frame]) -> Tensor:
        """Copy the frames once into a reused pinned buffer and upload it asynchronously;
        returns ``(N, H, W, 3)`` uint8 on the device."""
        n = len(frames)
        shape = frames[0].image.shape
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
            np.copyto(arr[i], f.image)
        dev = host.to(self.device, non_blocking=True)
        self._pin_events[slot].record()
        return dev

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Backbone under autocast (when asked) → fp32 features; head in fp32."""
        if x.shape[0] == 0:
            c, k = self.model.weight.shape[1], self.model.weight.shape[0]
            return x.new_zeros((0, c, 1, 1)), x.new_zeros((0, k))
        ctx = (torch.autocast(self.device.type, dtype=self.precision)
               if self.precision is not None else nullcontext())
        with ctx:
            features = self.model.backbone(x)
        features = features.float()
        logits = logits_from_features(features, self.model.weight.float(),
                                      None if self.model.bias is None
                                      else self.model.bias.float())
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
                       frames01: Tensor) -> tuple[Tensor, Tensor]:
        """Features and scores of every frame: the network's on key frames, the last
        ones moved with the image motion (and the last scores) in between."""
        grid = (features.shape[2], features.shape[3]) if features.shape[0] else \
            (self._carry[0].shape[2], self._carry[0].shape[3])  # type: ignore[index]
        gray = mo.gray_u8(mo.downsample(frames01, grid))
        out_f, out_l = [], []
        k = 0
        for i, key in enumerate(keys):
            if key:
                f, lg = features[k:k + 1], logits[k:k + 1]
                k += 1
            else:
                f, lg = self._carry  # type: ignore[misc]
                if self._prev_gray is not None and self.smoother.motion:
                    disp = torch.from_numpy(self._estimator.estimate(self._prev_gray,
                                                                     gray[i], grid))
                    mat, _ = mo.sampling(disp.to(f.device))
                    f = mo.warp(f, mat)
            self._carry = (f, lg)
            self._prev_gray = gray[i]
            out_f.append(f)
            out_l.append(lg)
        return torch.cat(out_f), torch.cat(out_l)


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

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            self._errors.append(e)  # list.append is atomic: the first error stays first
            self._stop_event.set()


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


def run_stream(frames: Iterable[Frame], engine: CamEngine,
               consume: Callable[[Rendered], None], *, batch_size: int,
               live: bool = False, stop: threading.Event | None = None,
               queue_batches: int = 2) -> int:
    """Drive ``frames`` through ``engine`` into ``consume`` with overlapping stages.

    Args:
        frames: source frames, in order (iterated in a reader thread).
        engine: the device stage (:meth:`CamEngine.infer` here, :meth:`CamEngine.finish`
            in a render thread).
        consume: called in the writer thread for every rendered frame, in order.
        batch_size: frames per device batch (≥ 1).
        live: never wait for a batch to fill: take whatever frames are there.
        stop: set it to stop early (what was read so far is still rendered and consumed).
        queue_batches: depth of each queue, in batches.

    Returns:
        Number of frames consumed.

    Raises:
        Whatever a stage raised (the first error), after all threads have stopped.
    """
    if batch_size < 1:
        raise OptionError(f"batch size must be ≥ 1, got {batch_size}")
    stop = stop or threading.Event()
    halt = threading.Event()  # internal: a stage failed
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
            if not _put(q_mid, engine.infer(batch), halt):  # type: ignore[arg-type]
                break
        if not halt.is_set():
            _put(q_mid, engine.infer_flush(), halt)
    except BaseException as e:
        errors.append(e)
        halt.set()
    finally:
        if not halt.is_set():
            _put(q_mid, _END, halt)
        for w in workers[1:]:
            w.join()
        if halt.is_set():
            stop.set()
        workers[0].join()
    if errors:
        raise errors[0]
    return consumed
