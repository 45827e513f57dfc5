"""Fine maps: the network's last downsampling undone, as DeepLab does (Chen et al.,
"DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution,
and Fully Connected CRFs", TPAMI 2018: the "atrous algorithm").

The convolution that halves the resolution into the last stage runs with stride 1, and
every later convolution with a spatial extent is dilated by 2, its padding doubled, so
that it sees the same inputs as before, now spread over a grid twice as fine. The result: features at output stride 16 instead of 32 (a 14x24 map instead of
7x12 for a 16:9 frame at 224 px) computed with the same weights, whose every other
sample *is* the original network's feature (exactly, up to float rounding): the in-between
samples are new, the old ones unchanged. The last stage costs about four times as much.

The rewrite is checked on a probe when it is made: the fine features, subsampled, must
equal the original's. Networks where that does not hold, or that pool the whole image
inside (squeeze-and-excitation: its mean over the fine grid is not the original's), or
pad in a way the doubled padding does not reproduce, are refused with
:class:`~camvideo.errors.ModelError`.
"""
from __future__ import annotations

import logging

import torch
from torch import Tensor, nn

from ..errors import ModelError
from .cammodel import CamModel

log = logging.getLogger(__name__)

def _spatial(mod: nn.Module) -> bool:
    k = getattr(mod, "kernel_size", 1)
    return any(int(v) > 1 for v in (k if isinstance(k, tuple) else (k,)))


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _shapes(net: nn.Module, x: Tensor) -> tuple[Tensor, dict[str, tuple[int, int]]]:
    """``net(x)`` and each leaf module's (input height, output height)."""
    seen: dict[str, tuple[int, int]] = {}
    hooks = []
    for name, mod in net.named_modules():
        if next(mod.children(), None) is None:
            def hook(m, args, out, name=name):
                if args and isinstance(args[0], Tensor) and args[0].dim() == 4 \
                        and isinstance(out, Tensor) and out.dim() == 4:
                    seen.setdefault(name, (args[0].shape[-2], out.shape[-2]))
            hooks.append(mod.register_forward_hook(hook))
    try:
        y = net(x)
    finally:
        for h in hooks:
            h.remove()
    return y, seen


def _dilate(name: str, mod: nn.Module) -> None:
    """Dilate one convolution that works at the last stage's resolution by 2 (its
    padding doubled: the same taps on the finer grid)."""
    if isinstance(mod, nn.Conv2d):
        d = _pair(mod.dilation)
        if isinstance(mod.padding, str):  # "same" pads for the dilation itself
            if mod.padding != "same":
                raise ModelError(f"{name}: a 'valid' convolution after the last "
                                 "downsampling cannot keep its grid")
        else:
            k, p = _pair(mod.kernel_size), _pair(mod.padding)
            if type(mod) is nn.Conv2d and p != tuple(di * (ki - 1) // 2
                                                     for di, ki in zip(d, k)):
                raise ModelError(f"{name}: its padding {p} is not 'same' for kernel {k}")
            mod.padding = tuple(2 * v for v in p)
        mod.dilation = tuple(2 * v for v in d)
    else:  # pooling too (torch's max pooling pads at most half its window)
        raise ModelError(f"{name}: a {type(mod).__name__} after the last downsampling "
                         "cannot be dilated")


def make_fine(net: nn.Module, stride: int) -> nn.Module:
    """Rewrite ``net`` (a backbone of total stride ``stride``) in place to output stride
    ``stride // 2`` (see the module notes) and check it on a probe.

    Returns:
        ``net``.

    Raises:
        ModelError: the last downsampling is not a convolution, a later layer cannot be
            dilated, or the rewritten network does not reproduce the original's features.
    """
    p = next(iter(net.parameters()), None)
    dev = p.device if p is not None else torch.device("cpu")
    side = 4 * stride
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, side, side + stride, generator=gen).to(dev)
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(False), torch.no_grad():
        coarse, seen = _shapes(net, x)
        final = coarse.shape[-2]
        mods = dict(net.named_modules())
        strided = [n for n in seen if max(_pair(getattr(mods[n], "stride", 1))) > 1]
        if not strided:
            raise ModelError("no layer downsamples")
        entry = min(seen[n][1] for n in strided)
        halving = [n for n in strided if seen[n][1] == entry]
        if entry != final:
            raise ModelError("the resolution changes after the last downsampling (a layer "
                             "without 'same' padding)")
        after = [n for n, (a, b) in seen.items()
                 if a == final and n not in halving and _spatial(mods[n])]
        pooled = [n for n, (a, b) in seen.items() if a == 1]
        if pooled and final > 1:  # its sample set would change: not the same features
            raise ModelError(f"{pooled[0]} sees the whole image pooled inside the network "
                             "(squeeze-and-excitation)")
        for n in halving:
            mod = mods[n]
            if not isinstance(mod, nn.Conv2d):
                raise ModelError(f"{n}: the last downsampling is {type(mod).__name__}, "
                                 "not a convolution")
            mod.stride = (1, 1)
        for n in after:
            _dilate(n, mods[n])
        try:
            fine = net(x)
        except RuntimeError as e:  # a downsampling the hooks cannot see (functional)
            raise ModelError(f"the rewritten network does not run ({e})".splitlines()[0]
                             ) from None
    if tuple(fine.shape[-2:]) != (2 * coarse.shape[-2], 2 * coarse.shape[-1]):
        raise ModelError("the rewritten network gives {}x{} features, not twice {}x{} (a "
                         "downsampling window of even size, as ConvNeXt's)".format(
                             *fine.shape[-2:], *coarse.shape[-2:]))
    tol = 1e-4 * float(coarse.abs().max())
    for phase in (0, 1):
        if torch.allclose(fine[..., phase::2, phase::2], coarse, rtol=1e-4, atol=tol):
            log.info("fine maps: %d layer(s) made stride 1, %d dilated; every other "
                     "sample (phase %d) equals the original's", len(halving), len(after),
                     phase)
            return net
    raise ModelError("the dilated network does not reproduce the original's features "
                     "(it mixes positions globally inside, e.g. squeeze-and-excitation)")


def fine_maps(model: CamModel) -> CamModel:
    """Make ``model``'s maps twice as fine (output stride 16), in place; a deferred
    backbone is rewritten when it is built. Its cache fingerprint changes with it (the
    traced and int8 networks of the original are not reused).

    Raises:
        ModelError: a video network, or one :func:`make_fine` refuses (for a deferred
            backbone, when it is built).
    """
    if model.kind != "image":
        raise ModelError(f"fine maps are for image networks; {model.name} is a "
                         f"{model.kind} network")
    if model.fine_maps:
        return model
    stride, name = model.stride, model.name

    def rewrite(net: nn.Module) -> nn.Module:
        try:
            return make_fine(net, stride)
        except ModelError as e:
            raise ModelError(f"no fine maps for {name}: {e}") from None

    if not model.defer(rewrite):
        rewrite(model.backbone)
    fp = model.__dict__.get("_camvideo_fingerprint")
    if fp is not None:
        model.__dict__["_camvideo_fingerprint"] = f"{fp}+os{stride // 2}"
    model.map_stride = stride // 2
    return model


__all__ = ["fine_maps", "make_fine"]
