"""Class Activation Mapping math (Zhou et al., CVPR 2016).

For a network whose head is global average pooling followed by one linear layer,
``logits = W @ mean_xy(f) + b`` and the map of class ``c`` is
``M_c(x, y) = sum_k W[c, k] * f_k(x, y)``. Everything here is batched tensor math that
stays on the features' device; only :func:`paper_bbox` works on a small CPU array.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

__all__ = [
    "cam_maps",
    "logits_from_features",
    "minmax_normalize",
    "paper_bbox",
    "peak_xy",
]


def logits_from_features(features: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """Class scores of a GAP + linear head.

    Args:
        features: ``(N, C, h, w)`` last convolutional features (``(N, C, t, h, w)`` for a
            video network: the mean is then over time too).
        weight: ``(K, C)`` linear layer weight.
        bias: ``(K,)`` linear layer bias, or None.

    Returns:
        ``(N, K)`` logits in ``weight``'s dtype (the pooled features are cast to it).
    """
    pooled = features.mean(dim=tuple(range(2, features.dim())))
    return torch.nn.functional.linear(pooled.to(weight.dtype), weight, bias)


def cam_maps(features: Tensor, weight: Tensor, classes: Tensor) -> Tensor:
    """Raw class activation maps, one class per sample.

    Args:
        features: ``(N, C, h, w)`` features.
        weight: ``(K, C)`` linear layer weight.
        classes: ``(N,)`` int64 class index for each sample.

    Returns:
        ``(N, h, w)`` float maps ``sum_k W[classes[n], k] * features[n, k]`` (unnormalised,
        bias left out as in the paper and torchcam).
    """
    w = weight.index_select(0, classes.to(weight.device)).to(features.dtype)  # (N, C)
    return torch.einsum("nc,nchw->nhw", w, features)


def minmax_normalize(maps: Tensor, lo: Tensor | None = None, hi: Tensor | None = None,
                     eps: float = 1e-8) -> Tensor:
    """Rescale maps to ``[0, 1]``.

    Args:
        maps: ``(N, h, w)`` maps.
        lo, hi: ``(N,)`` range to rescale against; each defaults to the map's own min / max
            (what torchcam does). Passing a range smoothed over time avoids flicker.
        eps: added to the range's width so a flat map gives zeros, not NaN.

    Returns:
        ``(N, h, w)`` float in ``[0, 1]`` (clamped when an external range is given).
    """
    if lo is None:
        lo = maps.amin(dim=(1, 2))
    if hi is None:
        hi = maps.amax(dim=(1, 2))
    out = (maps - lo[:, None, None]) / (hi - lo + eps)[:, None, None]
    return out.clamp_(0.0, 1.0)


def paper_bbox(cam: np.ndarray, threshold: float = 0.2) -> tuple[int, int, int, int] | None:
    """The paper's localisation box.

    Keeps the pixels at or above ``threshold`` times the map's maximum, takes the largest
    8-connected component, and returns its bounding box.

    Args:
        cam: ``(H, W)`` float map (any range; usually upsampled to the frame).
        threshold: fraction of the maximum, in ``(0, 1]``.

    Returns:
        ``(x0, y0, x1, y1)`` in pixels, ``x1``/``y1`` exclusive, or None when the map is
        not positive anywhere (a flat positive map gives the whole frame).
    """
    cam = np.asarray(cam, dtype=np.float32)
    peak = float(cam.max()) if cam.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0:
        return None
    mask = (cam >= threshold * peak).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, w, h = (int(v) for v in stats[best, :4])
    return x, y, x + w, y + h


def peak_xy(maps: Tensor) -> Tensor:
    """Location of each map's maximum.

    Args:
        maps: ``(N, h, w)`` maps.

    Returns:
        ``(N, 2)`` int64 ``(x, y)`` cell indices of the argmax.
    """
    n, h, w = maps.shape
    idx = maps.reshape(n, h * w).argmax(dim=1)
    return torch.stack((idx % w, idx // w), dim=1)
