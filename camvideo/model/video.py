"""Video networks for CAM: a clip of frames in, the class maps of every frame out.

A video classifier (torchvision's R3D, MC3, R(2+1)D, S3D) takes a clip ``(N, 3, T, H, W)``
and ends, like an image classifier, in global average pooling — over time × height ×
width — and one linear layer, so its CAM is exact in space *and* time:
``logits = W · mean_thw(f) + b`` with ``f`` ``(N, C, t, h, w)``, and the map of class
``c`` at feature time ``j`` is ``W_c · f[:, j]``. :class:`VideoCamModel` is that split
(made by :func:`camvideo.model.registry.load_model`; how each head gets there is
:mod:`camvideo.model.heads`) plus where the features' time axis lies in the clip:

- :class:`TimeAxis`: feature time ``j`` is centred on input frame ``scale · j + offset``
  of the clip. :func:`time_axis_of` reads it off the network's own layers (each 3-D
  convolution or pooling with temporal kernel ``k``, stride ``s``, padding ``p`` and
  dilation ``d`` maps ``j`` to ``s · j − p + d (k − 1) / 2``; R3D and R(2+1)D: ``8 j``,
  MC3: ``j``, S3D: ``8 j + 2``). When the layers cannot be read (an operation that moves
  or resamples time in a way the walk does not know), the ``t`` feature times are assumed
  to cover the clip evenly (segment centres), with a log line.
- :meth:`VideoCamModel.frame_features`: each output frame's ``(C, h, w)`` features, the
  clip's features at that frame's time, linearly interpolated between the two nearest
  feature times (held at the first and last). The rest of camvideo (smoothing,
  rendering, sidecar) sees per-frame features and logits, as for an image network.

Which frames form clips, and which clip gives each frame its map, is
:mod:`camvideo.runtime.clips`.
"""
from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.fx
from torch import Tensor, nn

from .cammodel import CamModel

log = logging.getLogger(__name__)

__all__ = ["TimeAxis", "VideoCamModel", "time_axis_of"]


@dataclass(frozen=True)
class TimeAxis:
    """Where a video backbone's feature times lie in its input clip.

    Attributes:
        scale, offset: feature time ``j`` is centred on input frame ``scale · j + offset``
            (frames counted from 0 in the clip); None: not known, the ``t`` feature times
            are taken to cover the clip evenly (``scale = T / t``, the segments' centres).
        layers: the temporal ``(kernel, stride, padding, dilation, ceil_mode)`` of each 3-D
            convolution or pooling on the way, input first (for :meth:`length`).
    """

    scale: float | None = None
    offset: float | None = None
    layers: tuple[tuple[int, int, int, int, bool], ...] = field(default=(), repr=False)

    @property
    def known(self) -> bool:
        return self.scale is not None

    def length(self, frames: int) -> int:
        """Feature times ``t`` the layers give for a clip of ``frames`` frames."""
        n = frames
        for k, s, p, d, ceil in self.layers:
            span = n + 2 * p - d * (k - 1) - 1
            n = (-(-span // s) if ceil else span // s) + 1
        return n

    def coords(self, frames: Tensor, clip_len: int, t: int) -> Tensor:
        """Feature-time coordinates of clip frames.

        Args:
            frames: ``(n,)`` float positions of frames in the clip (0 = its first).
            clip_len: ``T``, frames in the clip.
            t: feature times the backbone gave for it.

        Returns:
            ``(n,)`` float in ``[0, t - 1]``: ``(frame − offset) / scale``, held at the ends.
        """
        if self.known and self.length(clip_len) == t:
            scale, offset = float(self.scale), float(self.offset)  # type: ignore[arg-type]
        else:
            scale = clip_len / t
            offset = (scale - 1.0) / 2.0
        return ((frames - offset) / scale).clamp(0.0, float(t - 1))


# ---------------------------------------------------------------------------------------
# Reading the time axis off the layers

_TIME_LAYERS = (nn.Conv3d, nn.MaxPool3d, nn.AvgPool3d)
#: modules that keep each time step where it is (pointwise, or normalisations)
_POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid,
                      nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Identity, nn.Dropout,
                      nn.Dropout3d, nn.modules.batchnorm._NormBase, nn.GroupNorm)
_POINTWISE_FUNCTIONS = {operator.add, operator.iadd, operator.mul, operator.imul,
                        operator.sub, operator.truediv, torch.add, torch.mul, torch.relu,
                        torch.sigmoid, torch.tanh, nn.functional.relu, nn.functional.relu6,
                        nn.functional.gelu, nn.functional.silu, nn.functional.hardswish}
_POINTWISE_METHODS = {"relu", "relu_", "add", "add_", "mul", "mul_", "sigmoid", "tanh",
                      "clamp", "clamp_", "contiguous", "float", "to"}
_CONST = "const"  # a node without a time axis (a parameter), broadcast over time


class _Tracer(torch.fx.Tracer):
    """Keeps 3-D convolutions and poolings (subclasses too: torchvision's
    ``Conv3DSimple``...) and pointwise modules as single nodes."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, _TIME_LAYERS + _POINTWISE_MODULES) or \
            super().is_leaf_module(m, qualname)


def _triple(v: object, i: int = 0) -> int:
    return int(v[i]) if isinstance(v, (tuple, list)) else int(v)  # type: ignore[arg-type]


def _temporal(m: nn.Module) -> tuple[int, int, int, int, bool]:
    """``(kernel, stride, padding, dilation, ceil_mode)`` of a 3-D layer along time."""
    k = _triple(m.kernel_size)
    stride = m.stride if m.stride is not None else m.kernel_size
    s = _triple(stride)
    d = _triple(getattr(m, "dilation", 1))
    pad = m.padding
    if isinstance(pad, str):   # "same" (stride 1: the odd pixel after) or "valid"
        p = d * (k - 1) // 2 if pad == "same" else 0
    else:
        p = _triple(pad)
    return k, s, p, d, bool(getattr(m, "ceil_mode", False))


def time_axis_of(net: nn.Module) -> TimeAxis:
    """The :class:`TimeAxis` of ``net`` (input ``(N, 3, T, H, W)`` → output with the
    features' time axis), read off its graph (``torch.fx``): 3-D convolutions and
    poolings compose ``j → s j − p + d (k − 1) / 2``; pointwise layers, sums, products and
    concatenation over channels keep it, when all their inputs share it. Anything else
    (or a graph that cannot be traced) gives the unknown axis."""
    try:
        graph = _Tracer().trace(net)
    except Exception as e:  # noqa: BLE001 - dynamic control flow and the like
        log.info("time axis of %s: not traceable (%s); feature times assumed even",
                 type(net).__name__, str(e).splitlines()[0][:120] if str(e) else "")
        return TimeAxis()
    maps: dict[torch.fx.Node, object] = {}
    modules = dict(net.named_modules())
    result: object = None
    for node in graph.nodes:
        if node.op == "placeholder":
            maps[node] = (1.0, 0.0, ()) if not maps else None
        elif node.op == "get_attr":
            maps[node] = _CONST
        elif node.op == "output":
            result = maps.get(node.args[0])  # type: ignore[arg-type]
        elif node.op == "call_module" and isinstance(modules.get(node.target), _TIME_LAYERS):
            src = maps.get(node.args[0])  # type: ignore[arg-type]
            if isinstance(src, tuple):
                a, b, layers = src
                k, s, p, d, ceil = lay = _temporal(modules[node.target])  # type: ignore
                maps[node] = (a * s, a * (d * (k - 1) / 2 - p) + b, (*layers, lay))
            else:
                maps[node] = None
        elif _keeps_time(node, modules):
            ins = [maps.get(n) for n in node.all_input_nodes]
            ins = [m for m in ins if m is not _CONST]
            same = bool(ins) and all(isinstance(m, tuple) and m[:2] == ins[0][:2]  # type: ignore
                                     for m in ins)
            maps[node] = ins[0] if same else None
        else:
            maps[node] = None
    if not isinstance(result, tuple):
        log.info("time axis of %s: not read off its layers; feature times assumed even",
                 type(net).__name__)
        return TimeAxis()
    return TimeAxis(float(result[0]), float(result[1]), tuple(result[2]))


def _keeps_time(node: torch.fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), _POINTWISE_MODULES)  # type: ignore
    if node.op == "call_function":
        if node.target in (torch.cat, torch.concat):
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            return dim == 1     # channels
        return node.target in _POINTWISE_FUNCTIONS
    if node.op == "call_method":
        return node.target in _POINTWISE_METHODS
    return False


# ---------------------------------------------------------------------------------------
# The model


class VideoCamModel(CamModel):
    """A video classifier split for CAM: ``backbone`` maps a normalised clip
    ``(N, 3, T, H, W)`` to features ``(N, C, t, h, w)``, ``fc`` is the linear layer of the
    global (time × height × width) average pooling head: ``logits = fc(mean_thw(f))``.

    Frames are resized and normalised one by one as for an image network
    (:meth:`CamModel.preprocess`, with the weights' mean/std), then stacked into clips
    (:meth:`clip`); :meth:`frame_features` reads each frame's features back.

    Args (besides :class:`CamModel`'s):
        clip_len: ``T``, frames per clip.
        time_axis: where feature times lie in the clip (:func:`time_axis_of`).

    Attributes:
        kind: ``"video"``.
        default_side: the input short side used when none is given: the side the
            weights were trained at (112 for R3D, MC3, R(2+1)D; 224 for S3D).
    """

    kind = "video"

    def __init__(self, name: str, backbone: nn.Module, fc: nn.Linear, labels: list[str],
                 mean: tuple[float, float, float], std: tuple[float, float, float],
                 stride: int = 16, *, clip_len: int, time_axis: TimeAxis | None = None,
                 min_side: int = 1, native_side: int = 112, head: str = "pool + linear"
                 ) -> None:
        super().__init__(name, backbone, fc, labels, mean, std, stride, min_side=min_side,
                         native_side=native_side, head=head)
        if clip_len < 1:
            raise ValueError(f"clip length must be >= 1, got {clip_len}")
        self.clip_len = int(clip_len)
        self.time_axis = time_axis if time_axis is not None else time_axis_of(backbone)
        self._warned = False

    @property
    def default_side(self) -> int:
        return self.native_side

    @staticmethod
    def clip(frames: Sequence[Tensor]) -> Tensor:
        """``T`` normalised frames ``(3, H, W)`` → one clip ``(3, T, H, W)`` (contiguous)."""
        return torch.stack(list(frames), dim=1).contiguous()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` ``(N, 3, T, H, W)`` normalised clips → ``(features (N, C, t, h, w),
        logits (N, K))``."""
        return super().forward(x)

    def frame_features(self, features: Tensor, frames: Tensor) -> Tensor:
        """The features of frames of one clip.

        Args:
            features: ``(C, t, h, w)``, the clip's features.
            frames: ``(n,)`` positions of frames in the clip (0 = its first frame; the
                clip has :attr:`clip_len` frames).

        Returns:
            ``(n, C, h, w)`` (features' dtype): at each frame's feature time
            (:meth:`TimeAxis.coords`), linearly interpolated between the two nearest
            feature times, held at the first and last.
        """
        t = int(features.shape[1])
        if self.time_axis.known and self.time_axis.length(self.clip_len) != t \
                and not self._warned:
            self._warned = True
            log.info("%s: %d feature times where its layers give %d; taken as even",
                     self.name, t, self.time_axis.length(self.clip_len))
        u = self.time_axis.coords(frames.to(features.device, torch.float32), self.clip_len, t)
        lo = u.floor().long()
        hi = (lo + 1).clamp_(max=t - 1)
        w = (u - lo.to(u.dtype)).to(features.dtype).view(-1, 1, 1, 1)
        per_time = features.transpose(0, 1)                    # (t, C, h, w) view
        return torch.lerp(per_time[lo], per_time[hi], w)
