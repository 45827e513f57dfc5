"""Head decompositions: a classifier split into CAM's *backbone* (features ``(N, C, h, w)``)
and *one linear layer* ``(K, C)``, so that ``logits = W · mean_xy(features) + b`` exactly.

The rest of camvideo relies on that form alone: the class map is ``M_c = W_c · f``
(:func:`camvideo.cam.cam_maps`), the logits are recomputed from the features
(:func:`camvideo.cam.logits_from_features`), and smoothing averages the features over time
(which averages every class's map, CAM being linear in the features). Each head below is
brought to that form without approximation, and :func:`verify_split` checks it on a probe:
the split must reproduce the network's own logits, or the model is refused with the reason.

- **pool + linear** (ResNet, DenseNet, EfficientNet, ..., GoogLeNet, Inception v3): the
  features are the last convolutional maps and the linear layer is the network's own.
- **input transform** (GoogLeNet, Inception v3 with ``transform_input``): a per-channel
  affine map of the normalised input, folded into the preprocessing's mean/std
  (:func:`fold_input_transform`); the backbone starts at the first convolution.
- **pool + LayerNorm + linear** (ConvNeXt, timm's ``NormMlpClassifierHead`` without hidden
  layer): a LayerNorm of the pooled vector ``p`` is a per-sample affine map,
  ``γ ⊙ (p − μ) / σ + β`` with ``μ``, ``σ`` the mean and standard deviation of ``p`` over
  its ``C`` channels. :class:`NormalizedFeatures` returns ``γ ⊙ (f − μ) / σ`` (``μ``, ``σ``
  from that frame's pooled vector), whose spatial mean is the normalised pooled vector; the
  linear layer keeps ``W`` and takes ``W β + b`` as its bias. So
  ``M_c = Σ_k W_ck γ_k (f_k − μ) / σ`` and ``logit_c = mean_xy(M_c) + (W β + b)_c``.
- **class maps before the pooling** (SqueezeNet: dropout → 1×1 conv → ReLU → average
  pooling): the logit is ``mean_xy(ReLU(W f + b))``, not linear in ``f``. The backbone
  ends with the 1×1 conv and its ReLU, so the "features" are the ``K`` class maps
  themselves, and the linear layer is the identity ``(K, K)`` without bias
  (:func:`class_map_head`): ``M_c`` is exactly the map the network pools into ``logit_c``
  (bias and ReLU included), and averaging features over time averages each class's map.
- **video networks** (:mod:`camvideo.model.video`): the same forms with a time axis, the
  features ``(N, C, t, h, w)`` and the pooling over time × height × width. R3D, MC3 and
  R(2+1)D end in 3-D pool + linear. S3D ends in average pooling with a ``2×7×7`` kernel
  and stride 1, a 1×1×1 convolution (no activation) and the mean of its outputs:
  ``logit = mean_windows(W · avgpool(f) + b)``. The convolution is linear, so it commutes
  with the pooling: the features are the ``K`` class maps ``W f + b`` before the pooling
  (as SqueezeNet's), each cell weighted by how much the pooling counts it
  (:class:`PooledClassMaps`: at the weights' own 16×224×224 input a ``2×7×7`` map and one
  window, so every weight is 1; at a wider input the border columns count less, as they
  do for the network), and the linear layer is the identity.
- Anything else (a hidden layer after the pooling as in MobileNetV3, attention pooling,
  transformers) is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from ..cam import logits_from_features
from ..errors import ModelError, first_line

__all__ = ["NormalizedFeatures", "PooledClassMaps", "Split", "class_map_head",
           "fold_input_transform", "norm_linear_head", "pooled_class_map_head", "split_timm",
           "split_torchvision", "verify_split"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)   #: torchvision's Kinetics-400 weights
KINETICS_STD = (0.22803, 0.22145, 0.216989)

#: torchvision's ``transform_input`` (GoogLeNet, Inception v3): channel ``i`` of the
#: ImageNet-normalised input becomes ``x * SCALE[i] + SHIFT[i]`` (their ``_transform_input``).
TRANSFORM_SCALE = (0.229 / 0.5, 0.224 / 0.5, 0.225 / 0.5)
TRANSFORM_SHIFT = ((0.485 - 0.5) / 0.5, (0.456 - 0.5) / 0.5, (0.406 - 0.5) / 0.5)

Triple = tuple[float, float, float]


@dataclass
class Split:
    """A network split for CAM.

    Attributes:
        full: the original network (eval mode), the probe check's reference.
        backbone: ``(N, 3, H, W)`` input normalised with ``mean``/``std`` →
            ``(N, C, h, w)`` features (video: ``(N, 3, T, H, W)`` → ``(N, C, t, h, w)``).
        fc: ``nn.Linear(C, K)``: ``logits = fc(mean_xy(features))``.
        mean, std: RGB normalisation (of inputs in ``[0, 1]``) the backbone expects.
        full_mean, full_std: the normalisation ``full`` expects (differs from ``mean``/
            ``std`` when an input transform was folded).
        head: how the head was decomposed (for logs and ``camvideo models``).
        trunk: video networks: the part of the backbone whose output has the features'
            time axis (what :func:`camvideo.model.video.time_axis_of` reads; the layers
            after it are pointwise in time). None: the backbone.
    """

    full: nn.Module
    backbone: nn.Module
    fc: nn.Linear
    mean: Triple
    std: Triple
    full_mean: Triple
    full_std: Triple
    head: str = "pool + linear"
    trunk: nn.Module | None = None


class NormalizedFeatures(nn.Module):
    """Features normalised the way a LayerNorm after the pooling normalises the pooled vector.

    ``body(x)`` gives ``f`` ``(N, C, h, w)``; with ``p = mean_xy(f)`` ``(N, C)``, ``μ`` its mean
    over channels and ``σ = sqrt(var(p) + eps)`` (biased variance, as LayerNorm), the output
    is ``γ ⊙ (f − μ) / σ`` ``(N, C, h, w)`` float32, each sample with its own ``μ``, ``σ``.
    Its spatial mean is ``LayerNorm(p) − β``.

    Args:
        body: the network up to the last feature map.
        norm: the head's ``nn.LayerNorm`` (or a subclass such as torchvision's / timm's
            ``LayerNorm2d``) over the ``C`` channels; its ``γ`` and ``eps`` are copied.
    """

    def __init__(self, body: nn.Module, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.body = body
        self.eps = float(norm.eps)
        c = norm.normalized_shape[0]
        gamma = norm.weight.detach().clone() if norm.weight is not None else torch.ones(c)
        self.register_buffer("gamma", gamma.float().view(1, c, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        f = self.body(x).float()
        p = f.mean(dim=(2, 3), keepdim=True)                      # (N, C, 1, 1)
        mu = p.mean(dim=1, keepdim=True)                          # (N, 1, 1, 1)
        var = (p - mu).square().mean(dim=1, keepdim=True)
        return (f - mu) * (self.gamma * torch.rsqrt(var + self.eps))


def _linear_like(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    k, c = weight.shape
    fc = nn.Linear(c, k, bias=bias is not None)
    with torch.no_grad():
        fc.weight.copy_(weight)
        if bias is not None:
            fc.bias.copy_(bias)
    return fc.to(weight.dtype)


def _identity_head(conv: nn.Module) -> nn.Linear:
    """The linear layer after features that already are the classes' maps (a 1x1
    classifier convolution before the pooling): the identity, in the convolution's dtype."""
    return _linear_like(torch.eye(conv.out_channels, dtype=conv.weight.dtype), None)


def norm_linear_head(body: nn.Module, norm: nn.Module, fc: nn.Module,
                     name: str) -> tuple[nn.Module, nn.Linear]:
    """``(backbone, linear)`` for a pool → LayerNorm → linear head (see the module notes).

    Raises:
        ModelError: the norm is not a LayerNorm over the channels, or ``fc`` is not a
            linear layer over them.
    """
    if not isinstance(fc, nn.Linear):
        raise ModelError(f"model {name} is not supported for CAM: the layer after its "
                         f"normalisation is a {type(fc).__name__}, not one linear layer")
    if isinstance(norm, nn.Identity):
        return body, fc
    if not isinstance(norm, nn.LayerNorm) or tuple(norm.normalized_shape) != (fc.in_features,):
        raise ModelError(f"model {name} is not supported for CAM: it normalises the pooled "
                         f"vector with a {type(norm).__name__}, which camvideo does not "
                         "decompose (a LayerNorm over the channels it does)")
    beta = norm.bias.detach() if norm.bias is not None else None
    bias = fc.bias.detach() if fc.bias is not None else None
    if beta is not None:
        shift = fc.weight.detach() @ beta.to(fc.weight.dtype)
        bias = shift if bias is None else bias + shift
    return NormalizedFeatures(body, norm), _linear_like(fc.weight.detach(), bias)


def class_map_head(body: nn.Module, conv: nn.Module, act: nn.Module,
                   name: str) -> tuple[nn.Module, nn.Linear]:
    """``(backbone, identity)`` for a 1×1 conv → activation → pooling head: the backbone
    returns the ``K`` class maps ``act(conv(body(x)))``, the linear layer is the
    ``(K, K)`` identity without bias (see the module notes).

    Raises:
        ModelError: ``conv`` is not a 1×1 convolution.
    """
    if not isinstance(conv, nn.Conv2d) or tuple(conv.kernel_size) != (1, 1) \
            or tuple(conv.stride) != (1, 1) or conv.groups != 1:
        raise ModelError(f"model {name} is not supported for CAM: its classifier is not a "
                         "1x1 convolution before the pooling")
    return nn.Sequential(body, conv, act), _identity_head(conv)


class PooledClassMaps(nn.Module):
    """The class maps of a 1×1×1-convolution classifier after a stride-1 3-D average
    pooling (S3D's head), weighted so that their plain mean is the logit.

    With ``M = conv(body(x))`` ``(N, K, t, h, w)`` (bias included) and the pooling's
    kernel ``k`` (no padding, stride 1; ``P = t − k_t + 1`` windows along time, likewise
    in space), the network's logit is the mean over windows of the window means of ``M``,
    i.e. ``Σ_cell ω(cell) M(cell)`` with ``ω = (windows covering the cell) /
    (windows · kernel volume)``, ``Σ ω = 1``. The output is ``M · ω · (t h w)``, whose mean
    over time × height × width is the logit. ``ω`` is separable and made once per
    feature shape.

    Args:
        body: the network up to the last feature map ``(N, C, t, h, w)``.
        pool: the ``nn.AvgPool3d`` (stride 1, no padding).
        conv: the 1×1×1 ``nn.Conv3d`` classifier ``C → K``.
    """

    def __init__(self, body: nn.Module, pool: nn.AvgPool3d, conv: nn.Conv3d) -> None:
        super().__init__()
        self.body, self.conv = body, conv
        k = pool.kernel_size
        self.kernel = tuple(int(v) for v in (k if isinstance(k, (tuple, list)) else (k,) * 3))
        self._omega: dict[tuple, Tensor] = {}

    def weights(self, shape: tuple[int, int, int], device: torch.device,
                dtype: torch.dtype) -> Tensor:
        """``ω · (t h w)`` for a ``(t, h, w)`` map: ``(1, 1, t, h, w)``.

        Raises:
            ValueError: the map is smaller than the pooling kernel (the network fails
                there too).
        """
        key = (tuple(shape), device, dtype)
        if key not in self._omega:
            factors = []
            for n, k in zip(shape, self.kernel):
                windows = n - k + 1
                if windows < 1:
                    raise ValueError(f"a {tuple(shape)} feature map is smaller than the "
                                     f"{self.kernel} pooling")
                i = torch.arange(n, dtype=torch.float64)
                covering = (torch.minimum(i, torch.tensor(windows - 1.0))
                            - torch.clamp(i - k + 1, min=0) + 1)
                factors.append(covering * n / (windows * k))
            w = factors[0][:, None, None] * factors[1][None, :, None] * factors[2][None, None]
            self._omega[key] = w.to(device, dtype)[None, None]
        return self._omega[key]

    def forward(self, x: Tensor) -> Tensor:
        m = self.conv(self.body(x))
        return m * self.weights(tuple(m.shape[2:]), m.device, m.dtype)  # type: ignore

    def _apply(self, fn, recurse=True):  # .to(): forget the cached weights
        self._omega = {}
        return super()._apply(fn, recurse)


def pooled_class_map_head(body: nn.Module, pool: nn.Module, conv: nn.Module,
                          name: str) -> tuple[nn.Module, nn.Linear]:
    """``(PooledClassMaps, identity)`` for a stride-1 3-D average pooling → 1×1×1 conv →
    mean head (S3D; see the module notes).

    Raises:
        ModelError: the pooling is not a stride-1 ``AvgPool3d`` without padding, or the
            classifier not a 1×1×1 convolution.
    """
    def _t(v: object) -> tuple:
        return tuple(v) if isinstance(v, (tuple, list)) else (v,) * 3

    if not isinstance(pool, nn.AvgPool3d) or _t(pool.stride) != (1, 1, 1) \
            or _t(pool.padding) != (0, 0, 0) or pool.divisor_override is not None:
        raise ModelError(f"model {name} is not supported for CAM: its pooling before the "
                         "classifier is not a stride-1 average pooling")
    if not isinstance(conv, nn.Conv3d) or tuple(conv.kernel_size) != (1, 1, 1) \
            or tuple(conv.stride) != (1, 1, 1) or conv.groups != 1:
        raise ModelError(f"model {name} is not supported for CAM: its classifier is not a "
                         "1x1x1 convolution")
    return PooledClassMaps(body, pool, conv), _identity_head(conv)


def fold_input_transform(mean: Triple, std: Triple, scale: Triple,
                         shift: Triple) -> tuple[Triple, Triple]:
    """``(mean', std')`` such that normalising with them equals normalising with
    ``(mean, std)`` and then applying ``x * scale + shift`` per channel:
    ``((x − m) / s) · a + b = (x − (m − b s / a)) / (s / a)``."""
    new_std = tuple(s / a for s, a in zip(std, scale))
    new_mean = tuple(m - b * s2 for m, b, s2 in zip(mean, shift, new_std))
    return new_mean, new_std  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# torchvision


def _seq(m: nn.Module, names: list[str]) -> nn.Sequential:
    return nn.Sequential(*(getattr(m, n) for n in names))


_GOOGLENET = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a",
              "inception3b", "maxpool3", "inception4a", "inception4b", "inception4c",
              "inception4d", "inception4e", "maxpool4", "inception5a", "inception5b"]
_INCEPTION = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1",
              "Conv2d_4a_3x3", "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
              "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b",
              "Mixed_7c"]

#: torchvision families (:attr:`camvideo.model.families.Family.name`) → ``(backbone, fc)``.
_TV_SPLITS: dict[str, Callable[[nn.Module, str], tuple[nn.Module, nn.Linear]]] = {
    "resnet": lambda m, n: (_seq(m, ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                     "layer3", "layer4"]), m.fc),
    "regnet": lambda m, n: (_seq(m, ["stem", "trunk_output"]), m.fc),
    "mobilenet_v2": lambda m, n: (m.features, m.classifier[-1]),
    "efficientnet": lambda m, n: (m.features, m.classifier[-1]),
    "mnasnet": lambda m, n: (m.layers, m.classifier[-1]),
    "densenet": lambda m, n: (nn.Sequential(m.features, nn.ReLU()), m.classifier),
    "shufflenet_v2": lambda m, n: (_seq(m, ["conv1", "maxpool", "stage2", "stage3", "stage4",
                                            "conv5"]), m.fc),
    "googlenet": lambda m, n: (_seq(m, _GOOGLENET), m.fc),
    "inception_v3": lambda m, n: (_seq(m, _INCEPTION), m.fc),
    "squeezenet": lambda m, n: class_map_head(m.features, m.classifier[1], m.classifier[2], n),
    "convnext": lambda m, n: norm_linear_head(m.features, m.classifier[0], m.classifier[-1],
                                              n),
    # video (Kinetics-400): (N, 3, T, H, W) clips
    "video_resnet": lambda m, n: (_seq(m, ["stem", "layer1", "layer2", "layer3", "layer4"]),
                                  m.fc),
    "s3d": lambda m, n: pooled_class_map_head(m.features, m.avgpool, m.classifier[1], n),
}
#: video families: Kinetics normalisation; the trunk whose output has the time axis
_TV_TRUNKS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "video_resnet": lambda backbone: backbone,
    "s3d": lambda backbone: backbone.body,
}



def split_torchvision(model: nn.Module, family: str, name: str,
                      head: str = "pool + linear") -> Split:
    """Split a torchvision classifier of a supported ``family`` (eval mode); ``head``
    describes the decomposition. A ``transform_input`` is folded into the mean/std; video
    families are normalised as torchvision's Kinetics-400 weights expect."""
    backbone, fc = _TV_SPLITS[family](model, name)
    if family in _TV_TRUNKS:
        return Split(model, backbone, fc, KINETICS_MEAN, KINETICS_STD, KINETICS_MEAN,
                     KINETICS_STD, head, trunk=_TV_TRUNKS[family](backbone))
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if getattr(model, "transform_input", False):
        mean, std = fold_input_transform(mean, std, TRANSFORM_SCALE, TRANSFORM_SHIFT)
    return Split(model, backbone, fc, mean, std, IMAGENET_MEAN, IMAGENET_STD, head)


# ---------------------------------------------------------------------------------------
# timm


class _TimmFeatures(nn.Module):
    """A timm model's ``forward_features`` (everything before its head)."""

    def __init__(self, m: nn.Module) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: Tensor) -> Tensor:
        return self.m.forward_features(x)


def split_timm(model: nn.Module, name: str, mean: Triple, std: Triple) -> Split:
    """Split a timm classifier: global average pooling + linear (``global_pool`` and the
    classifier on the model, e.g. ResNet, EfficientNet; or a ``head`` module with
    ``global_pool`` and ``fc``, timm's ``ClassifierHead``, e.g. RegNet), or a pool → norm →
    linear head (``head.global_pool``, ``head.norm``, ``head.fc``, e.g. ConvNeXt's
    ``NormMlpClassifierHead``) without a hidden layer.

    Raises:
        ModelError: another head (max or attention pooling, a hidden layer after the
            pooling, a classifier that is not one linear layer).
    """
    unsupported = f"model {name} is not supported for CAM: its head is not global " \
                  "average pooling + one linear layer"
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    head = getattr(model, "head", None)
    body = _TimmFeatures(model)
    if isinstance(head, nn.Module) and hasattr(head, "global_pool") and hasattr(head, "fc"):
        # timm's ClassifierHead (no norm) or NormMlpClassifierHead
        pool_type = getattr(head.global_pool, "pool_type", None)
        if pool_type not in ("avg", "fast"):
            raise ModelError(f"{unsupported} (its pooling is {pool_type or 'none'!r})")
        pre = getattr(head, "pre_logits", None)
        if pre is not None and not isinstance(pre, nn.Identity):
            raise ModelError(f"{unsupported}: it has a hidden layer after the pooling")
        backbone, linear = norm_linear_head(body, getattr(head, "norm", nn.Identity()),
                                            head.fc, name)
        return Split(model, backbone, linear, mean, std, mean, std,
                     "pool + LayerNorm + linear; per-frame normalised features"
                     if backbone is not body else "pool + linear")
    pool_type = getattr(getattr(model, "global_pool", None), "pool_type", None)
    if not isinstance(fc, nn.Linear) or pool_type not in ("avg", "fast"):
        raise ModelError(unsupported)
    return Split(model, body, fc, mean, std, mean, std)


# ---------------------------------------------------------------------------------------
# The probe check


def verify_split(name: str, split: Split, tolerance: float = 1e-3,
                 probe_shape: tuple[int, ...] = (2, 3, 128, 160)) -> None:
    """Refuse a split that does not reproduce the network's own logits on a probe.

    The probe is random inputs of ``probe_shape`` (two ``128×160`` frames; a video
    network's is ``(N, 3, T, H, W)`` clips), given to ``split.full`` normalised its way
    and to the backbone normalised the split's way (they differ when an input transform
    was folded). Passes when ``|fc(mean(backbone(x'))) − full(x)|`` (the mean over every
    axis after the channels) is at most ``tolerance`` times the largest logit (or
    ``tolerance`` when that is below 1).

    Raises:
        ModelError: the forward pass fails, the features are not ``(N, C, h, w)`` (video:
            ``(N, C, t, h, w)``), their channels are not the linear layer's inputs, or the
            logits differ.
    """
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(*probe_shape, generator=g)
    nd = len(probe_shape)
    if (split.mean, split.std) != (split.full_mean, split.full_std):
        x01 = probe * _col(split.full_std, nd) + _col(split.full_mean, nd)
        ours_in = (x01 - _col(split.mean, nd)) / _col(split.std, nd)
    else:
        ours_in = probe
    unsupported = f"model {name} is not supported for CAM: its head is not global " \
                  "average pooling + one linear layer"
    fc = split.fc
    with torch.inference_mode():
        try:
            ref = split.full(probe)
            feats = split.backbone(ours_in)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"model {name} failed on a probe input: "
                             f"{first_line(e)[:200]}") from None
        if isinstance(ref, (tuple, list)):
            ref = ref[0]
        if not isinstance(feats, Tensor) or feats.ndim != nd:
            raise ModelError(f"model {name} is not supported for CAM: its features are not "
                             "a " + ("(N, C, h, w)" if nd == 4 else "(N, C, t, h, w)")
                             + " convolutional map")
        if feats.shape[1] != fc.in_features:  # e.g. timm's conv_head after the pooling
            raise ModelError(f"{unsupported}: it has layers between the last feature map "
                             f"({feats.shape[1]} channels) and the linear layer "
                             f"({fc.in_features} inputs)")
        ours = logits_from_features(feats, fc.weight, fc.bias)
    if not isinstance(ref, Tensor) or ours.shape != ref.shape:
        raise ModelError(f"{unsupported} (its output is not the linear layer's "
                         f"{tuple(ours.shape)} logits)")
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item() + 1e-6
    if not err <= tolerance * max(1.0, scale):
        raise ModelError(f"{unsupported} (probe error {err:.3g}; "
                         f"{split.head} does not reproduce its logits)")


def _col(v: Triple, ndim: int = 4) -> Tensor:
    return torch.tensor(v).view(1, 3, *([1] * (ndim - 2)))
