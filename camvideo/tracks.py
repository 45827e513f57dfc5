"""Tracked boxes: each shown class's box followed over time with a stable ID.

CAM gives at most one box per shown class per frame, a handful of boxes in all, from maps
that are already smoothed over time and moved with the image motion. So the tracker is
small and hand-written rather than a multi-object tracking library (SORT/ByteTrack-style
trackers bring a Kalman filter and a detector-confidence cascade, made for dozens of
noisy detections per frame; here the prediction comes from the measured image motion,
which beats a constant-velocity guess, and there is nothing to cascade):

- **Prediction.** A track's last box is moved by the image motion the smoother already
  estimates (:class:`camvideo.motion.Cues`: a displacement per feature cell back to the
  previous frame), averaged over the cells the box covers.
- **Association.** Greedy, best pair first, on the intersection over union of the
  predicted boxes and this frame's boxes, with a bonus for the same class; a pair needs
  an IoU of at least ``min_iou``. So a box whose class changes on the same object (tabby
  → Egyptian cat) keeps its ID, and two classes that swap objects do not swap IDs.
- **Life.** A box no track takes starts a new one (IDs from 1, never reused within a
  stream); a track that has no box for ``max_age`` seconds ends; a scene cut ends every
  track.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import OptionError

__all__ = ["Box", "BoxTracker", "iou"]

Box = tuple[int, int, int, int]   #: ``(x0, y0, x1, y1)`` in frame pixels, x1/y1 exclusive

_CLASS_BONUS = 0.25   #: added to the IoU of a pair of the same class when matching


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes, in ``[0, 1]``."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class _Track:
    id: int
    box: Box
    cls: int
    seen: float       # time of its last box, seconds


class BoxTracker:
    """Stable IDs for a stream of per-frame box sets (see the module's notes).

    Args:
        max_age: seconds a track lives on without a box.
        min_iou: the least IoU (predicted box vs. new box) that continues a track.

    Raises:
        OptionError: a value out of range.
    """

    def __init__(self, max_age: float = 0.5, min_iou: float = 0.1) -> None:
        if not max_age >= 0 or not 0.0 < min_iou <= 1.0:
            raise OptionError(f"bad tracker settings: max_age {max_age}, min_iou {min_iou}")
        self.max_age, self.min_iou = float(max_age), float(min_iou)
        self.reset()

    def reset(self) -> None:
        """End every track (IDs keep counting up)."""
        self._tracks: list[_Track] = []
        if not hasattr(self, "_next"):
            self._next = 1

    @property
    def active(self) -> int:
        """Tracks alive now."""
        return len(self._tracks)

    def update(self, boxes: list[Box | None], classes: list[int], time: float, *,
               cut: bool = False, motion: np.ndarray | None = None,
               size: tuple[int, int] | None = None) -> list[int | None]:
        """Take one frame's boxes; return each one's track ID (None for a missing box).

        Args:
            boxes: the frame's boxes (None where a class has none).
            classes: each box's class.
            time: the frame's time, seconds.
            cut: the frame starts a shot: every track ends first.
            motion: ``(h, w, 2)`` float displacement ``(dx, dy)`` in feature cells back
                to the previous frame (:meth:`camvideo.motion.MotionEstimator.estimate`),
                or None.
            size: the frame's ``(W, H)`` (needed with ``motion``).
        """
        if cut:
            self._tracks = []
        self._tracks = [t for t in self._tracks if time - t.seen <= self.max_age + 1e-6]
        preds = [self._predict(t.box, motion, size) for t in self._tracks]
        pairs = []
        for ti, (t, pb) in enumerate(zip(self._tracks, preds)):
            for bi, (b, c) in enumerate(zip(boxes, classes)):
                if b is None:
                    continue
                v = iou(pb, b)
                if v >= self.min_iou:
                    pairs.append((v + (_CLASS_BONUS if c == t.cls else 0.0), ti, bi))
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for _, ti, bi in sorted(pairs, reverse=True):
            if ti in used or ids[bi] is not None:
                continue
            used.add(ti)
            t = self._tracks[ti]
            t.box, t.cls, t.seen = boxes[bi], classes[bi], time  # type: ignore[assignment]
            ids[bi] = t.id
        for bi, (b, c) in enumerate(zip(boxes, classes)):
            if b is not None and ids[bi] is None:
                self._tracks.append(_Track(self._next, b, c, time))
                ids[bi] = self._next
                self._next += 1
        return ids

    @staticmethod
    def _predict(box: Box, motion: np.ndarray | None, size: tuple[int, int] | None) -> Box:
        """``box`` moved by the mean image motion over the feature cells it covers."""
        if motion is None or size is None:
            return box
        h, w = motion.shape[:2]
        fw, fh = size
        cx0, cx1 = int(box[0] * w / fw), max(int(box[0] * w / fw) + 1, -(-box[2] * w // fw))
        cy0, cy1 = int(box[1] * h / fh), max(int(box[1] * h / fh) + 1, -(-box[3] * h // fh))
        d = motion[cy0:cy1, cx0:cx1].reshape(-1, 2).mean(axis=0)
        # the content of cell p was at p + d in the previous frame: it moved by -d
        dx, dy = -float(d[0]) * fw / w, -float(d[1]) * fh / h
        return (int(round(box[0] + dx)), int(round(box[1] + dy)),
                int(round(box[2] + dx)), int(round(box[3] + dy)))
