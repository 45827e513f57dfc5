"""Several classes at once: which classes to show (distinct objects, not synonyms), and
each shown class's hysteresis and normalisation range over time.

CAM is linear in the features, so every class's map of a frame comes from the same
smoothed features for the cost of a small matrix product
(:class:`camvideo.smoothing.FrameMaps`): the smoother runs once, and this module only
decides, frame after frame, which ``n`` classes are shown and how each map is scaled.

- **Distinct objects** (:func:`distinct`). ImageNet's most probable classes are often
  synonyms of one object (on a cat beside a cup: Egyptian cat, tiger cat, tabby, then
  cup). Going down the :data:`CANDIDATES` most probable classes, a class is skipped when
  its map's region (cells at or above :data:`REGION` of the map's own range) overlaps the
  region of a class already chosen by more than :data:`OVERLAP_MAX` (intersection over
  union): a non-maximum suppression across classes by map overlap. Measured against
  plain top-``n`` and against grouping by the WordNet hierarchy in
  ``benchmarks/distinct.py`` (``benchmarks/README.md``, "Several classes"): the
  hierarchy cannot tell that ``espresso`` and ``cup`` are one object, nor that
  ``screen`` on a cat is the cat.
- **Hysteresis, per shown class** (:class:`MultiClass`). Each shown class holds a
  *slot* (its colour). A slot's class gives way to a class newly among the distinct
  ``n`` only when the newcomer beats it by ``margin``, or is ``ratio`` times as
  probable, or when it has been out of the distinct set for ``hold`` seconds, as the
  one-class smoother does; during a shot's first ``tau`` seconds the slots simply follow
  the distinct set. A scene cut (or a stream's start) empties every slot.
- **Normalisation range, per shown class**: each map is drawn as
  ``(M - lo) / (hi - lo)`` with its own ``(lo, hi)`` averaged over time (``hi`` follows
  an increase at once), restarted when its slot changes class.
- **Boxes and peaks** (:func:`class_box`, :func:`class_peak`): from each map at
  feature resolution; the box is the paper's rule (largest region at or above a fraction
  of the maximum) on the map at frame resolution, with the calibrated threshold.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import Tensor

from .cam import map_bbox, minmax_normalize
from .errors import OptionError
from .options import DEFAULT_MARGIN, DEFAULT_RATIO, DEFAULT_TAU

__all__ = ["CANDIDATES", "OVERLAP_MAX", "REGION", "MultiClass", "Shown", "class_box",
           "class_peak", "distinct", "region_iou", "regions"]

REGION = 0.5        #: a map's region: cells at or above this share of its range
OVERLAP_MAX = 0.2   #: region IoU above which a class shows an object already chosen
CANDIDATES = 20     #: the most probable classes :func:`distinct` goes through

#: raw maps of the given ``(n,)`` int64 classes, ``(n, h, w)`` float32
MapsOf = Callable[[Tensor], Tensor]


def regions(maps: Tensor) -> Tensor:
    """``(n, h, w)`` maps → ``(n, h, w)`` bool: the cells at or above :data:`REGION` of
    each map's own min..max range."""
    return minmax_normalize(maps.float()) >= REGION


def region_iou(a: Tensor, b: Tensor) -> Tensor:
    """Intersection over union of every pair of regions.

    Args:
        a: ``(n, h, w)`` bool; b: ``(m, h, w)`` bool.

    Returns:
        ``(n, m)`` float32 in ``[0, 1]`` (0 for two empty regions).
    """
    fa, fb = a.flatten(1).float(), b.flatten(1).float()
    inter = fa @ fb.t()
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    return inter / union.clamp(min=1.0)


def distinct(probs: Tensor, maps_of: MapsOf, n: int, *, candidates: int = CANDIDATES,
             overlap: float = OVERLAP_MAX) -> list[int]:
    """The ``n`` most probable classes that show distinct objects.

    Args:
        probs: ``(K,)`` class probabilities.
        maps_of: raw maps of given classes (a :class:`~camvideo.smoothing.FrameMaps`).
        n: how many classes (at most; fewer when the candidates run out).
        candidates: how many of the most probable classes are considered.
        overlap: region IoU above which a candidate is skipped as showing a chosen
            class's object.

    Returns:
        Up to ``n`` class indexes, most probable first.
    """
    k = int(probs.shape[0])
    top = probs.float().topk(min(k, max(candidates, n))).indices
    iou = region_iou(*(2 * (regions(maps_of(top)),))).cpu().numpy()
    order = top.cpu().tolist()
    chosen: list[int] = []
    for i in range(len(order)):
        if len(chosen) == n:
            break
        if all(iou[i, j] <= overlap for j in chosen):
            chosen.append(i)
    return [order[i] for i in chosen]


@dataclass
class Shown:
    """The classes shown on one frame, in slot order.

    Attributes:
        classes: class indexes.
        slots: each one's slot (its colour), increasing.
        maps: ``(n, h, w)`` float32 in ``[0, 1]``, each normalised against its own range
            smoothed over time.
        primary: position (in ``classes``) of the most probable one.
    """

    classes: list[int]
    slots: list[int]
    maps: Tensor
    primary: int = 0


@dataclass
class _Slot:
    cls: int | None = None
    lo: Tensor | None = None     # () range of its map
    hi: Tensor | None = None
    stale: float = 0.0           # seconds out of the distinct set
    fresh: bool = True           # the class came this frame: the range restarts


class MultiClass:
    """Which classes are shown, frame after frame, with per-class hysteresis and ranges
    (see the module's notes).

    Args:
        count: show this many distinct objects' classes; or
        fixed: always show these classes (``--classes NAME,NAME``), one slot each.
        tau: the smoother's time constant, seconds (0: no hysteresis, per-frame ranges).
        margin: probability lead a newcomer needs to take a slot at once.
        ratio: 0 (off) or ``> 1``: a newcomer this many times as probable as a slot's
            class takes the slot at once.
        hold: seconds a shown class may be out of the distinct set before it gives way.
        candidates, overlap: as for :func:`distinct`.

    Raises:
        OptionError: neither or both of ``count`` and ``fixed``, or a value out of range.
    """

    def __init__(self, count: int | None = None, fixed: Sequence[int] | None = None, *,
                 tau: float = DEFAULT_TAU, margin: float = DEFAULT_MARGIN, hold: float = 1.0,
                 ratio: float = DEFAULT_RATIO, candidates: int = CANDIDATES,
                 overlap: float = OVERLAP_MAX) -> None:
        if (count is None) == (fixed is None):
            raise OptionError("give either a count of classes or the classes themselves",
                              option="classes")
        n = int(count) if count is not None else len(fixed)  # type: ignore[arg-type]
        if n < 1:
            raise OptionError(f"classes must be ≥ 1, got {n}", option="classes")
        if (not (math.isfinite(tau) and tau >= 0) or not 0 <= margin < 1 or not hold > 0
                or not (ratio == 0 or ratio > 1)):
            raise OptionError(f"bad hysteresis settings: tau {tau}, margin {margin}, "
                              f"hold {hold}, ratio {ratio}")
        self.n = n
        self.fixed = None if fixed is None else [int(c) for c in fixed]
        self.tau, self.margin, self.hold = float(tau), float(margin), float(hold)
        self.ratio = float(ratio)
        self.candidates, self.overlap = int(candidates), float(overlap)
        self.reset()

    def reset(self) -> None:
        """Forget every slot: the next frame starts a stream."""
        self._slots = [_Slot() for _ in range(self.n)]
        self._started = False
        self._out_time = self._out_start = 0.0

    def step(self, probs: Tensor, maps_of: MapsOf, time: float, cut: bool) -> Shown:
        """The classes shown on the next output frame.

        Args:
            probs: ``(K,)`` smoothed class probabilities of the frame.
            maps_of: its raw maps (:class:`~camvideo.smoothing.FrameMaps`).
            time: its time, seconds.
            cut: it starts a shot (the smoothing restarted there).
        """
        restart = cut or not self._started
        self._started = True
        dt = max(time - self._out_time, 0.0)
        if restart:
            self._out_start = time
            for s in self._slots:
                s.cls, s.stale = None, 0.0
        p = probs.float().cpu().numpy()
        if self.fixed is not None:
            for s, c in zip(self._slots, self.fixed):
                s.fresh = s.cls != c
                s.cls = c
        else:
            want = distinct(probs, maps_of, self.n, candidates=self.candidates,
                            overlap=self.overlap)
            warm = restart or self.tau == 0 or time - self._out_start < self.tau
            self._choose(want, p, maps_of, warm, dt)
        self._out_time = time
        filled = [(i, s) for i, s in enumerate(self._slots) if s.cls is not None]
        classes = [s.cls for _, s in filled]
        raw = maps_of(torch.tensor(classes, dtype=torch.long)).float()    # (n, h, w)
        lo, hi = raw.amin(dim=(1, 2)), raw.amax(dim=(1, 2))
        a = 1.0 if self.tau == 0 else 1.0 - math.exp(-dt / self.tau)
        for j, (_, s) in enumerate(filled):
            if not (restart or s.fresh or s.lo is None):
                lo[j] = torch.lerp(s.lo, lo[j], a)
                hi[j] = torch.maximum(torch.lerp(s.hi, hi[j], a), hi[j])  # type: ignore
            s.lo, s.hi, s.fresh = lo[j].clone(), hi[j].clone(), False
        maps = minmax_normalize(raw, lo, hi)
        primary = int(np.argmax([p[c] for c in classes])) if classes else 0
        return Shown(classes, [i for i, _ in filled], maps, primary)  # type: ignore[arg-type]

    def _choose(self, want: list[int], p: np.ndarray, maps_of: MapsOf, warm: bool,
                dt: float) -> None:
        """Update the slots towards the distinct set ``want`` (most probable first)."""
        slots = self._slots
        if warm:  # follow the distinct set; classes still wanted keep their slot
            keep = {s.cls for s in slots if s.cls in want}
            rest = [c for c in want if c not in keep]
            for s in slots:
                if s.cls not in keep:
                    s.cls, s.fresh = (rest.pop(0), True) if rest else (None, True)
                s.stale = 0.0
            return
        for s in slots:
            if s.cls is not None:
                s.stale = 0.0 if s.cls in want else s.stale + dt
        shown = [s.cls for s in slots]
        for c in want:
            if c in shown:
                continue
            empty = [s for s in slots if s.cls is None]
            if empty:
                empty[0].cls, empty[0].fresh, empty[0].stale = c, True, 0.0
                shown = [s.cls for s in slots]
                continue
            out = [s for s in slots if s.cls not in want]
            if not out:
                break
            # the slot showing the newcomer's object, if one does; else the weakest
            target = min(out, key=lambda s: p[s.cls])
            if len(out) > 1:
                cls = torch.tensor([c] + [s.cls for s in out], dtype=torch.long)
                reg = regions(maps_of(cls))
                iou = region_iou(reg[:1], reg[1:])[0].cpu().numpy()
                if iou.max() > self.overlap:
                    target = out[int(iou.argmax())]
            if (p[c] - p[target.cls] > self.margin
                    or (self.ratio and p[c] > self.ratio * p[target.cls])
                    or target.stale >= self.hold - 1e-6):
                target.cls, target.fresh, target.stale = c, True, 0.0
                shown = [s.cls for s in slots]


def class_peak(cam: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    """``(x, y)`` in frame pixels of the maximum of a map upsampled bilinearly to the
    frame (``align_corners=False``, as drawn): a bilinear interpolant peaks at a sample,
    so this is the centre of the map's largest cell, mapped to the frame.

    Args:
        cam: ``(h, w)`` map.
        size: the frame's ``(W, H)``.
    """
    h, w = cam.shape
    y, x = divmod(int(np.argmax(cam)), w)
    fw, fh = size
    return (min(fw - 1, max(0, int((x + 0.5) * fw / w))),
            min(fh - 1, max(0, int((y + 0.5) * fh / h))))


def class_box(cam: np.ndarray, size: tuple[int, int],
              threshold: float) -> tuple[int, int, int, int] | None:
    """The box of one class's map in frame pixels: the paper's rule (largest 8-connected
    region at or above ``threshold`` times the maximum) on the map as drawn, at frame
    resolution (:func:`camvideo.cam.map_bbox`, what the renderer's ``--bbox`` draws).

    Args:
        cam: ``(h, w)`` float32 map at feature resolution, in ``[0, 1]``.
        size: the frame's ``(W, H)``.
        threshold: fraction of the maximum, in ``(0, 1]`` (``"auto"`` resolved first:
            :func:`camvideo.cam.bbox_threshold`).

    Returns:
        ``(x0, y0, x1, y1)``, ``x1``/``y1`` exclusive, or None (a map nowhere positive).
    """
    return map_bbox(np.ascontiguousarray(cam, dtype=np.float32), size, threshold)