"""Class Activation Mapping math (Zhou et al., CVPR 2016).

For a network whose head is global average pooling followed by one linear layer,
``logits = W @ mean_xy(f) + b`` and the map of class ``c`` is
``M_c(x, y) = sum_k W[c, k] * f_k(x, y)``. Everything here is batched tensor math that
stays on the features' device; only the boxes (:func:`paper_bbox`, :func:`map_bbox`) work
on small CPU arrays.

Boxes. The paper keeps the pixels at or above 20 % of the map's maximum and boxes the
largest connected region. That 20 % was tuned for GoogLeNet-CAM's 14x14 maps; a coarser
map (7x12 for the default model at 224 px) upsampled bilinearly spreads much wider, so
the threshold must be calibrated per model (Choe et al., "Evaluating Weakly Supervised
Object Localization Methods Right", CVPR 2020: MaxBoxAcc). :data:`BBOX_THRESHOLDS` holds
the calibrated values, written by ``benchmarks/localization.py --calibrate`` from
hand-annotated real photos; :func:`bbox_threshold` resolves ``"auto"`` with it, and
:func:`map_bbox` computes the box at frame resolution from the map at feature resolution.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch
from torch import Tensor

from .errors import OptionError

PAPER_THRESHOLD = 0.2  #: the paper's box threshold, a fraction of the map's maximum

#: Calibrated box thresholds (fraction of the map's maximum) per model (its
#: ``calibration_name``: ``@os16`` appended for fine maps), and ``"*"``
#: for any other model. Written by ``python benchmarks/localization.py --calibrate
#: --write`` (the sweep and the method are in benchmarks/README.md, "Localization").
#: calibrated: begin
BBOX_THRESHOLDS: dict[str, float] = {
    "efficientnet_lite0": 0.3,
    "efficientnet_lite0@os16": 0.3,
    "*": PAPER_THRESHOLD,
}
#: calibrated: end

_GRID_PX = 8  #: working-grid pixels per feature cell in :func:`map_bbox`

__all__ = [
    "BBOX_THRESHOLDS",
    "PAPER_THRESHOLD",
    "bbox_threshold",
    "cam_maps",
    "logits_from_features",
    "map_bbox",
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


def bbox_threshold(value: float | str, model: str) -> float:
    """The box threshold to use: ``value`` itself, or for ``"auto"`` the calibrated one of
    ``model`` (:data:`BBOX_THRESHOLDS`; models not calibrated get its ``"*"`` entry).

    Args:
        value: a fraction of the map's maximum in ``(0, 1]``, or ``"auto"``.
        model: the model's name (as :func:`camvideo.model.registry.load_model` names it).

    Returns:
        The threshold, in ``(0, 1]``.

    Raises:
        OptionError: neither ``"auto"`` nor a number in ``(0, 1]``.
    """
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return BBOX_THRESHOLDS.get(model, BBOX_THRESHOLDS["*"])
        try:
            value = float(value)
        except ValueError:
            raise OptionError(f"bbox threshold must be 'auto' or a number in (0, 1], "
                              f"got {value!r}") from None
    value = float(value)
    if not 0.0 < value <= 1.0:
        raise OptionError(f"bbox threshold must be in (0, 1], got {value}")
    return value


def map_bbox(cam: np.ndarray | Tensor, size: tuple[int, int], threshold: float, *,
             component: str = "largest") -> tuple[int, int, int, int] | None:
    """The paper's box (largest 8-connected region at or above ``threshold`` times the
    map's maximum) of a map upsampled to the frame, at frame resolution.

    The frame-sized map is what the renderer draws: the bilinear upsampling of ``cam``
    (``cv2.resize`` ``INTER_LINEAR``, i.e. ``align_corners=False``). The regions are found
    on a working grid of 8 pixels per feature cell (no finer than the frame), then each
    edge of the chosen region's box is read off the frame-resolution map in a band one
    grid pixel either side, so the box is at frame resolution without upsampling,
    thresholding and labelling the whole frame (on a 2-core AMD EPYC, AVX2, shared:
    labelling a 720p frame alone took ~8 ms, this 0.5-1 ms for a whole-frame region).

    Args:
        cam: ``(h, w)`` map at feature resolution (any range; CPU numpy or tensor).
        size: the frame's ``(W, H)``.
        threshold: fraction of the map's maximum, in ``(0, 1]``.
        component: ``"largest"`` (the paper's) or ``"peak"``: the region holding the
            map's maximum.

    Returns:
        ``(x0, y0, x1, y1)`` in frame pixels, ``x1``/``y1`` exclusive, or None when the
        map is not positive anywhere.
    """
    if isinstance(cam, Tensor):
        cam = cam.detach().float().cpu().numpy()
    cam = np.ascontiguousarray(cam, dtype=np.float32)
    (h, w), (fw, fh) = cam.shape, size
    peak = float(cam.max()) if cam.size else 0.0
    if not np.isfinite(peak) or peak <= 0.0 or fw < 1 or fh < 1:
        return None
    level = threshold * peak
    gw, gh = min(fw, w * _GRID_PX), min(fh, h * _GRID_PX)
    grid = cv2.resize(cam, (gw, gh), interpolation=cv2.INTER_LINEAR)
    mask = (grid >= level).astype(np.uint8)
    if not mask.any():  # a threshold near 1 that no grid sample reaches: the peak alone
        mask.flat[int(grid.argmax())] = 1
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if component == "peak":
        best = int(labels.flat[int(np.where(mask, grid, -np.inf).argmax())])
    else:
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    x, y, bw, bh = (int(v) for v in stats[best, :4])
    sx, sy = fw / gw, fh / gh
    if sx == 1.0 and sy == 1.0:  # the grid is the frame
        return x, y, x + bw, y + bh
    # Each edge lies within a grid pixel of the grid box's edge: read it off the
    # frame-resolution map in a band there, keeping the region (grown by a grid pixel,
    # so no other region above the level counts).
    region = cv2.dilate((labels == best).astype(np.uint8), np.ones((3, 3), np.uint8))
    (y_i0, y_i1, y_f), (x_i0, x_i1, x_f) = _bilinear_taps(fh, h), _bilinear_taps(fw, w)
    gy, gx = _nearest_index(fh, gh), _nearest_index(fw, gw)
    y0, y1 = max(0, int((y - 1) * sy)), min(fh, int(np.ceil((y + bh + 1) * sy)))
    x0, x1 = max(0, int((x - 1) * sx)), min(fw, int(np.ceil((x + bw + 1) * sx)))

    def above(rows: slice, cols: slice) -> np.ndarray:
        """The band's frame pixels at or above the level and in the region (elementwise:
        no BLAS call, whose threads cost more than the arithmetic here)."""
        fy = y_f[rows, None]
        r = cam[y_i0[rows]] * (1.0 - fy) + cam[y_i1[rows]] * fy             # (rows, w)
        fx = x_f[cols]
        vals = r[:, x_i0[cols]] * (1.0 - fx) + r[:, x_i1[cols]] * fx        # (rows, cols)
        return (vals >= level) & (region[gy[rows]][:, gx[cols]] > 0)

    edges = []
    for lo, hi, axis, first in ((x0, min(x1, int(np.ceil((x + 1) * sx)) + 1), 0, True),
                                (max(x0, int((x + bw - 1) * sx)), x1, 0, False),
                                (y0, min(y1, int(np.ceil((y + 1) * sy)) + 1), 1, True),
                                (max(y0, int((y + bh - 1) * sy)), y1, 1, False)):
        hit = (above(slice(y0, y1), slice(lo, hi)).any(axis=0) if axis == 0
               else above(slice(lo, hi), slice(x0, x1)).any(axis=1))
        idx = np.flatnonzero(hit)
        if idx.size == 0:  # only grid samples reached the level (threshold near 1)
            return (int(x * sx), int(y * sy), min(fw, int(np.ceil((x + bw) * sx))),
                    min(fh, int(np.ceil((y + bh) * sy))))
        edges.append(lo + int(idx[0]) if first else lo + int(idx[-1]) + 1)
    return edges[0], edges[2], edges[1], edges[3]


@functools.lru_cache(maxsize=64)
def _bilinear_taps(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1-D bilinear resize from ``n_in`` to ``n_out`` samples as ``cv2.resize`` does it
    (``align_corners=False``, edges replicated): output ``i`` samples the input at
    ``(i + 0.5) * n_in / n_out - 0.5``. Returns ``(i0, i1, f)``, each ``(n_out,)``: output
    ``i`` is ``in[i0] * (1 - f) + in[i1] * f`` (``f`` float32 in ``[0, 1]``)."""
    pos = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = (pos - i0).astype(np.float32)
    for arr in (i0, i1, f):
        arr.setflags(write=False)
    return i0, i1, f


@functools.lru_cache(maxsize=64)
def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out,)`` index of the nearest of ``n_in`` samples to each of ``n_out``."""
    idx = np.clip(np.round((np.arange(n_out) + 0.5) * n_in / n_out - 0.5), 0, n_in - 1)
    idx = idx.astype(np.intp)
    idx.setflags(write=False)
    return idx
