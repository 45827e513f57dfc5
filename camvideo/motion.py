"""Cheap image motion and shot-change cues for the temporal smoother.

Everything works on small frames: the model-input RGB frames ``(N, 3, H, W)`` are
area-downsampled on their device to 8 pixels per feature cell (``(8h, 8w)``, e.g. 56x96
for a 7x12 feature grid). From those:

- :func:`color_histograms` / :func:`histogram_distance`: a 4x4x4 joint RGB histogram per
  frame and the total-variation distance between consecutive ones (0 = same colours,
  1 = disjoint), the scene-cut cue. Computed on the device; only the distances come back.
- :class:`MotionEstimator`: per-cell displacement from the current frame back to the
  previous one, in feature cells, from dense optical flow (OpenCV DIS or Farneback) or a
  global translation (phase correlation) on small grayscale frames copied to the CPU.
- :class:`Cues`: a batch's small frames and displacements, computed once (by
  :meth:`camvideo.smoothing.Smoother.cues`) and shared by the smoother and the engine's
  ``stride`` carry.
- :func:`sampling` / :func:`warp`: move a ``(B, C, h, w)`` feature state along such a
  displacement by bilinear interpolation (sub-cell shifts; an ``(hw, hw)`` matrix, since
  the grid is tiny), and tell which cells had a source inside the previous grid.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import OptionError
from .transfer import to_host

log = logging.getLogger(__name__)

__all__ = ["CELL_PX", "METHODS", "Cues", "MotionEstimator", "MotionTracker",
           "color_histograms", "downsample", "gray_u8", "histogram_distance", "sampling",
           "warp"]

CELL_PX = 8            #: small-frame pixels per feature cell
METHODS = ("dis", "farneback", "phase")
_BINS = 4              #: histogram bins per RGB channel
_MIN_FLOW_PX = 16      #: smaller frames get a global translation (phase correlation)


def downsample(frames01: Tensor, grid: tuple[int, int]) -> Tensor:
    """Area-downsample frames to :data:`CELL_PX` pixels per feature cell.

    Args:
        frames01: ``(N, 3, H, W)`` float RGB in ``[0, 1]``.
        grid: feature grid ``(h, w)``.

    Returns:
        ``(N, 3, 8h, 8w)`` float32 on ``frames01``' device.
    """
    size = (grid[0] * CELL_PX, grid[1] * CELL_PX)
    x = frames01.float()
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    if h % size[0] == 0 and w % size[1] == 0:  # the same, ~2x faster (3 channels)
        return F.avg_pool2d(x.contiguous(), (h // size[0], w // size[1]))
    return F.interpolate(x, size=size, mode="area")


def gray_u8(small: Tensor) -> np.ndarray:
    """``(N, 3, h, w)`` RGB in ``[0, 1]`` → ``(N, h, w)`` uint8 luma on the CPU (one copy)."""
    y = 0.299 * small[:, 0] + 0.587 * small[:, 1] + 0.114 * small[:, 2]
    return to_host([(y * 255.0).round_().clamp_(0, 255).to(torch.uint8)])[0]


def color_histograms(small: Tensor) -> Tensor:
    """Normalised ``4x4x4`` joint RGB histograms.

    Args:
        small: ``(N, 3, h, w)`` RGB in ``[0, 1]``.

    Returns:
        ``(N, 64)`` float32, each row summing to 1, on ``small``'s device.
    """
    n = small.shape[0]
    q = (small * _BINS).long().clamp_(0, _BINS - 1)                 # (N, 3, h, w)
    idx = (q[:, 0] * _BINS + q[:, 1]) * _BINS + q[:, 2]
    nb = _BINS ** 3
    idx = idx.reshape(n, -1) + torch.arange(n, device=small.device)[:, None] * nb
    # scatter_add, not bincount: bincount reads its input's maximum back (a GPU sync)
    counts = torch.zeros(n * nb, device=small.device).scatter_add_(
        0, idx.reshape(-1), torch.ones(idx.numel(), device=small.device)).reshape(n, nb)
    return counts / counts.sum(dim=1, keepdim=True)


def histogram_distance(a: Tensor, b: Tensor) -> Tensor:
    """Total-variation distance ``0.5 * sum |a - b|`` of histograms, in ``[0, 1]``.

    Args:
        a, b: ``(N, B)`` normalised histograms.

    Returns:
        ``(N,)`` float32 distances.
    """
    return 0.5 * (a - b).abs().sum(dim=1)


class MotionEstimator:
    """Displacement from each frame back to the previous one, per feature cell.

    Args:
        method: ``"dis"`` (OpenCV DIS optical flow, ultrafast preset), ``"farneback"``
            (dense Farneback flow) or ``"phase"`` (one global translation by phase
            correlation; cannot follow zoom or several objects; also what frames
            under 16 px get, where the dense flows cannot run).
    """

    def __init__(self, method: str = "dis") -> None:
        if method not in METHODS:
            raise OptionError(f"motion method must be one of {', '.join(METHODS)}, "
                              f"got {method!r}")
        self.method = method
        self._dis = None
        self._window: np.ndarray | None = None

    def _flow(self, cur: np.ndarray, prev: np.ndarray) -> np.ndarray:
        """Dense ``(hs, ws, 2)`` flow with ``cur(y, x) ~ prev(y + fy, x + fx)``."""
        if self.method == "dis":
            if self._dis is None:
                self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
            return self._dis.calc(cur, prev, None)
        return cv2.calcOpticalFlowFarneback(cur, prev, None, 0.5, 3, 13, 3, 5, 1.1, 0)

    def estimate(self, prev: np.ndarray, cur: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        """Displacement of the content from ``cur`` back to ``prev``.

        Args:
            prev, cur: ``(hs, ws)`` uint8 small grayscale frames (``hs = 8h``, ``ws = 8w``).
            grid: feature grid ``(h, w)``.

        Returns:
            ``(h, w, 2)`` float32 ``(dx, dy)`` in feature cells: the content of cell ``p``
            of ``cur`` was at ``p + d[p]`` in ``prev``.
        """
        h, w = grid
        hs, ws = cur.shape
        # OpenCV's dense flows need 12 px or more (a 1-cell grid gives 8x8 frames); so
        # few cells move together anyway: one global translation
        if self.method == "phase" or min(hs, ws) < _MIN_FLOW_PX:
            if self._window is None or self._window.shape != cur.shape:
                self._window = cv2.createHanningWindow((ws, hs), cv2.CV_32F)
            (dx, dy), _ = cv2.phaseCorrelate(prev.astype(np.float32),
                                             cur.astype(np.float32), self._window)
            out = np.empty((h, w, 2), np.float32)
            out[..., 0], out[..., 1] = -dx * w / ws, -dy * h / hs
            return out
        flow = self._flow(cur, prev)
        cells = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA)
        cells[..., 0] *= w / ws
        cells[..., 1] *= h / hs
        return cells


@dataclass
class Cues:
    """What a batch of model-input frames tells about motion, computed once per batch.

    Attributes:
        small: ``(N, 3, 8h, 8w)`` float32, the frames from :func:`downsample`.
        disps: per frame, the ``(h, w, 2)`` displacement back to the previous frame of
            the stream (:meth:`MotionEstimator.estimate`), on ``small``'s device; None for
            a stream's first frame or without motion compensation.
    """

    small: Tensor
    disps: list[Tensor | None]
    _samplings: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)

    def sampling(self, i: int) -> tuple[Tensor, Tensor] | None:
        """:func:`sampling` of frame ``i``'s displacement, None without one. The first
        call builds every frame's at once (:func:`samplings`: a few kernel launches per
        batch on a GPU, not per frame)."""
        if self.disps[i] is None:
            return None
        if not self._samplings:
            have = [j for j, d in enumerate(self.disps) if d is not None]
            mats, valid = samplings(torch.stack([self.disps[j] for j in have]))
            self._samplings.update({j: (mats[k], valid[k]) for k, j in enumerate(have)})
        return self._samplings[i]


class MotionTracker:
    """A stream's :class:`Cues`, batch after batch: keeps the last frame's small
    grayscale image, so each batch's first displacement goes back across the batch
    boundary (:meth:`reset`: the next frame starts a stream)."""

    def __init__(self, method: str = "dis") -> None:
        self._estimator = MotionEstimator(method)
        self._prev: np.ndarray | None = None  # (hs, ws) uint8, CPU

    def reset(self) -> None:
        self._prev = None

    def cues(self, frames01: Tensor, grid: tuple[int, int], motion: bool = True) -> Cues:
        """``frames01`` ``(N, 3, H, W)`` RGB in ``[0, 1]`` (the frames after the last ones
        given) → their :class:`Cues` for the feature ``grid``; displacements only with
        ``motion``."""
        small = downsample(frames01, grid)
        if not motion:
            return Cues(small, [None] * small.shape[0])
        disps: list[Tensor | None] = []
        for g in gray_u8(small):
            disps.append(None if self._prev is None else torch.from_numpy(
                self._estimator.estimate(self._prev, g, grid)).to(small.device,
                                                                  non_blocking=True))
            self._prev = g
        return Cues(small, disps)


def sampling(disp: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear backward warp along a displacement field, as a matrix.

    The grid is tiny (``h * w`` is about 100 cells), so the warp is an ``(hw, hw)``
    matrix: applying it to ``C`` channels is one matrix product, far cheaper than
    ``grid_sample`` over ``C`` channels, and it is built once per frame. It equals
    ``grid_sample(state, grid, "bilinear", padding_mode="border", align_corners=False)``.

    Args:
        disp: ``(h, w, 2)`` float ``(dx, dy)`` in cells: output cell ``p`` takes the
            state at ``p + disp[p]``.

    Returns:
        ``(mat, valid)``: ``mat`` ``(hw, hw)`` (rows: output cells, row-major) and
        ``valid`` ``(1, 1, h, w)`` in ``[0, 1]``, the share of each output cell's
        bilinear source inside the grid (what warping a field of ones with zero padding
        gives; 0 where new content entered the frame).
    """
    mats, valid = samplings(disp[None])
    return mats[0], valid[0]


def samplings(disps: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`sampling` of ``N`` displacement fields at once: ``disps`` ``(N, h, w, 2)``
    → ``mats`` ``(N, hw, hw)`` and ``valid`` ``(N, 1, 1, h, w)``."""
    n, h, w, _ = disps.shape
    dev, dt = disps.device, disps.dtype
    x = torch.arange(w, device=dev, dtype=dt)[None, None, :] + disps[..., 0]  # (N, h, w)
    y = torch.arange(h, device=dev, dtype=dt)[None, :, None] + disps[..., 1]
    valid = (torch.minimum(x + 1.0, w - x).clamp(0.0, 1.0)
             * torch.minimum(y + 1.0, h - y).clamp(0.0, 1.0))
    xc, yc = x.clamp(0, w - 1).reshape(n, -1), y.clamp(0, h - 1).reshape(n, -1)
    x0, y0 = xc.floor(), yc.floor()
    wx, wy = xc - x0, yc - y0
    x0, y0 = x0.long(), y0.long()
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    hw = h * w
    rows = torch.arange(hw, device=dev).repeat(4)                          # (4hw,)
    cols = torch.cat((y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1), dim=1)
    vals = torch.cat(((1 - wx) * (1 - wy), wx * (1 - wy), (1 - wx) * wy, wx * wy), dim=1)
    flat = (torch.arange(n, device=dev)[:, None] * (hw * hw) + rows[None] * hw + cols)
    mats = torch.zeros(n * hw * hw, device=dev, dtype=dt)
    mats.index_add_(0, flat.reshape(-1), vals.reshape(-1))
    return mats.reshape(n, hw, hw), valid[:, None, None]


def warp(state: Tensor, mat: Tensor) -> Tensor:
    """Apply a :func:`sampling` matrix to a ``(B, C, h, w)`` state (sources outside the
    grid replicate the edge cells; weigh the result with ``valid``)."""
    b, c, h, w = state.shape
    return torch.matmul(state.reshape(b, c, h * w), mat.t().to(state.dtype)).reshape(b, c, h, w)
