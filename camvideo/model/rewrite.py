"""Inference-time rewrites of the network, once per model, each checked against the
original on a probe: batch norms folded into the convolutions before them and, on the
CPU, every folded convolution made one oneDNN call with its ReLU/ReLU6 as a post-op
(:class:`ConvAct`; weights cast to the autocast dtype and reordered to oneDNN's layout
once, TensorFlow-"SAME" padding without copying the input where it can).
"""
from __future__ import annotations

import collections
import contextlib
import copy
import functools
import logging
import threading
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from . import device
from .cammodel import CamModel

log = logging.getLogger(__name__)

_OPTIMIZE_LOCK = threading.Lock()


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
            activations, and ``Conv2d, BatchNorm2d, ReLU`` runs inside ``nn.Sequential``;
            the other folded convolutions become :class:`ConvAct` without activation
            (one call each, weights prepared once).

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
                        done.discard(conv)
            # the other folded convolutions: one call, weights cast once
            for conv in done:
                if ConvAct.fusable(conv) and len(parents[conv]) == 1:
                    cparent, cname = parents[conv][0]
                    setattr(cparent, cname, ConvAct(conv, None))  # type: ignore[arg-type]
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


@functools.cache
def _has_weight_reorder() -> bool:
    return hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")


def _is_same_conv(conv: nn.Module) -> bool:
    """timm's ``Conv2dSame``: TensorFlow "SAME" padding (computed from the input size,
    the odd pixel on the bottom/right), then a convolution without padding."""
    return type(conv).__name__ == "Conv2dSame" and isinstance(conv, nn.Conv2d) and \
        tuple(conv.padding) == (0, 0)  # type: ignore[arg-type]


class ConvAct(nn.Module):
    """A ``Conv2d`` (or timm's ``Conv2dSame``) followed by ReLU, ReLU6 or nothing, as one
    oneDNN call on the CPU: the activation is a post-op (the output is written once
    instead of twice) and the weights are cast to the autocast dtype and reordered to
    oneDNN's blocked layout once per input shape, then kept (plain autocast casts them
    again on every call, and oneDNN reorders plain weights on every call). "SAME"
    padding is symmetric padding in the call; where its total is odd, a depthwise kernel
    grows by a zero row/column instead (:meth:`_same_grown`), a dense one's input gets
    one zero row/column beside a single copy (``F.pad`` fills the whole padded tensor,
    then copies). Traced (:mod:`camvideo.model.trace`), on GPUs, and in bf16 where oneDNN has
    no bf16 convolutions (:class:`~camvideo.model.device.CpuCaps`) it is ``conv2d`` and the
    activation.

    Args:
        conv: the convolution (``padding_mode="zeros"``, numeric padding).
        act: ``"relu"``, ``"relu6"`` or None.
    """

    def __init__(self, conv: nn.Conv2d, act: str | None) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        self.bias = (nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
                     if conv.bias is not None else None)
        self.padding = list(conv.padding)  # type: ignore[arg-type]
        self.stride, self.dilation = list(conv.stride), list(conv.dilation)
        self.groups, self.act = conv.groups, act
        self.same = _is_same_conv(conv)
        self._attr, self._scalars = {"relu": ("relu", []), "relu6": ("hardtanh", [0.0, 6.0]),
                                     None: ("none", [])}[act]
        self._cast: dict[tuple[torch.dtype, tuple[int, int]],
                         tuple[Tensor, Tensor | None]] = {}
        self._pack: dict[tuple[int, tuple[int, ...]], tuple[Tensor, Tensor]] = {}

    @staticmethod
    def fusable(conv: nn.Module) -> bool:
        return ((type(conv) is nn.Conv2d or _is_same_conv(conv))
                and conv.padding_mode == "zeros"  # type: ignore[union-attr]
                and not isinstance(conv.padding, str) and _has_fused_conv())

    def _same_pads(self, x: Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
        """TensorFlow "SAME" padding ``((top, bottom), (left, right))`` for ``x``, as timm's
        ``pad_same`` computes it (the odd pixel after)."""
        from timm.layers.padding import get_same_padding  # loaded: only timm has these

        pads = []
        for i in range(2):
            total = get_same_padding(int(x.shape[-2 + i]), int(self.weight.shape[-2 + i]),
                                     self.stride[i], self.dilation[i])
            pads.append((total // 2, total - total // 2))
        return pads[0], pads[1]

    def _pad_same(self, x: Tensor) -> tuple[Tensor, list[int]]:
        """``x`` (with one zero row/column added where "SAME" is odd) and the symmetric
        padding for the call."""
        (t, b), (l, r) = self._same_pads(x)
        if b == t and r == l:
            return x, [t, l]
        n, c, h, w = x.shape
        out = torch.empty((n, c, h + b - t, w + r - l), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last
                          if x.is_contiguous(memory_format=torch.channels_last)
                          else torch.contiguous_format)
        out[:, :, :h, :w].copy_(x)
        out[:, :, h:].zero_()
        out[:, :, :h, w:].zero_()
        return out, [t, l]

    def _weights(self, dtype: torch.dtype, grow: tuple[int, int] = (0, 0)
                 ) -> tuple[Tensor, Tensor | None]:
        """The weights in ``dtype``, cast once; ``grow``: one zero row / column put in
        front of the kernel (see :meth:`_same_grown`)."""
        if self.weight.dtype == dtype and grow == (0, 0):
            return self.weight, self.bias
        key = (dtype, grow)
        if key not in self._cast:
            with torch.inference_mode(False), torch.no_grad():
                w = nn.functional.pad(self.weight, (grow[1], 0, grow[0], 0))
                self._cast[key] = (w.to(dtype), None if self.bias is None
                                   else self.bias.to(dtype))
        return self._cast[key]

    def _same_grown(self, x: Tensor) -> tuple[tuple[int, int], list[int]] | None:
        """For a grouped (depthwise) "SAME" convolution: TensorFlow puts the odd padding
        pixel after the input; a kernel grown by one zero row/column in front, with one
        more pixel of symmetric padding, computes exactly the same without copying the
        input (depthwise convolutions are memory-bound: the larger kernel is ~free, the
        copy is not; dense ones, the stem, are the other way round). Returns (growth,
        padding), or None where the copy is cheaper."""
        if self.groups == 1 or self.dilation != [1, 1]:
            return None
        (t, b), (l, r) = self._same_pads(x)
        grow = (int(b != t), int(r != l))
        return grow, [t + grow[0], l + grow[1]]

    def forward(self, x: Tensor) -> Tensor:
        tracing = torch.jit.is_tracing()
        if tracing or x.device.type != "cpu":
            return self._forward_plain(x, traced=tracing)
        padding = self.padding
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") \
            else x.dtype
        if dtype == torch.bfloat16 and not device.cpu_caps().bf16_kernels:
            return self._forward_plain(x, traced=False)  # oneDNN has no bf16 here
        x = x.to(dtype)
        grown = self._same_grown(x) if self.same else None
        if grown is not None:
            w, b = self._weights(dtype, grown[0])
            padding = grown[1]
        else:
            w, b = self._weights(dtype)
            if self.same:
                x, padding = self._pad_same(x)
        w = self._packed(w, x, padding)
        return torch.ops.mkldnn._convolution_pointwise(
            x, w, b, padding, self.stride, self.dilation, self.groups,
            self._attr, self._scalars, "")

    def _forward_plain(self, x: Tensor, traced: bool) -> Tensor:
        """``conv2d`` then the activation: on GPUs (activation in place), and when traced
        (oneDNN Graph fuses them itself, :mod:`camvideo.model.trace`; depthwise "SAME" padding
        by a grown kernel, as on the CPU)."""
        grown = self._same_grown(x) if self.same and traced else None
        if grown is not None:
            (w, b), padding = self._weights(self.weight.dtype, grown[0]), grown[1]
        else:
            w, b, padding = self.weight, self.bias, self.padding
            if self.same:
                x, padding = self._pad_same(x)
        y = nn.functional.conv2d(x, w, b, self.stride, padding, self.dilation, self.groups)
        if self.act is None:
            return y
        if not traced:
            return y.relu_() if self.act == "relu" else y.clamp_(0.0, 6.0)
        return nn.functional.relu(y) if self.act == "relu" else \
            nn.functional.hardtanh(y, 0.0, 6.0)

    def _packed(self, w: Tensor, x: Tensor, padding: list[int]) -> Tensor:
        """``w`` reordered once into oneDNN's own layout for inputs of ``x``'s shape (plain
        weights are reordered on every call)."""
        if not _has_weight_reorder():
            return w
        key = (id(w), tuple(x.shape))
        hit = self._pack.get(key)
        if hit is None or hit[0] is not w:
            packed = torch.ops.mkldnn._reorder_convolution_weight(
                w, padding, self.stride, self.dilation, self.groups, list(x.shape))
            hit = self._pack[key] = (w, packed)
        return hit[1]

    def _apply(self, fn, recurse=True):  # .to()/.half(): forget the cast copies
        self._cast, self._pack = {}, {}
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


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """float32 matrix products and convolutions in full precision inside (no TF32): on
    Ampere and Hopper GPUs TF32 differs from float32 by ~1e-3 relative, more than a check
    against the original network allows; the process's settings come back after."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def optimize_model(model: CamModel) -> CamModel:
    """Fold batch norms into convolutions and make the backbone channels_last, once per
    model (in place; later calls do nothing). The folded network is kept only if its
    features match the original's on a probe (within 1e-3 relative, both computed in full
    float32: :func:`exact_float32`)."""
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
            with torch.inference_mode(), exact_float32():
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
