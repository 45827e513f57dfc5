"""Video networks in the pipeline: frames gather into clips, clips give each frame its
features (:class:`ClipStage`, used by :class:`camvideo.runtime.engine.CamEngine` for a
:class:`~camvideo.model.video.VideoCamModel`).

Which clips run, and which frames each one gives maps to (:class:`ClipSchedule`):

- Clips of ``T`` frames (the network's own length) start every ``hop`` frames: clip ``k``
  holds frames ``[k·hop, k·hop + T)``.
- Every frame gets its features from exactly one clip, the one it sits most centrally in:
  clip ``k`` gives maps to frames ``[o_k, o_{k+1})`` with ``o_0 = 0`` and
  ``o_k = k·hop + (T − hop) // 2`` (the middle ``hop`` frames of the clip; the first clip
  also the frames before). With ``hop = T / 2`` each frame but the first and last few has
  at least ``T / 4`` frames of context on either side.
- The end of the stream: the frames not yet given maps get them from one last clip, the
  stream's last ``T`` frames (so it is never partial). A stream shorter than ``T`` is one
  clip, padded to ``T`` with copies of its last frame.
- A frame marked ``cut`` by its source (the first after a live source was lost and
  reopened, :attr:`Frame.cut <camvideo.media.frames.Frame.cut>`) ends the stream so far
  as the end of the stream does, and starts the schedule afresh: no clip spans the gap.
- A frame's features are the clip's features at that frame's time
  (:meth:`VideoCamModel.frame_features`: the network's time axis mapped onto the clip's
  frames, interpolated where the network downsamples time); its class scores are the
  clip's.

A frame waits at most ``T − 1`` frames for its clip (the first frame of the stream does;
later ones ``T − 1 − (T − hop) // 2``): the latency of one clip. Every frame comes out
once, in order, with its own timestamp, whatever the stream's length.
"""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from ..errors import OptionError
from ..media.frames import Frame
from ..model.video import VideoCamModel

log = logging.getLogger(__name__)

__all__ = ["ClipPlan", "ClipSchedule", "ClipStage", "FramesOut"]


@dataclass(frozen=True)
class ClipPlan:
    """One clip to run, in stream frame indices (0 = the stream's first frame).

    Attributes:
        start: its first frame.
        length: real frames in it (``T``, or fewer for a stream shorter than ``T``: then
            padded to ``T`` with its last frame).
        first, stop: the frames it gives maps to, ``[first, stop)``.
    """

    start: int
    length: int
    first: int
    stop: int


class ClipSchedule:
    """Which clips run as frames arrive, and which frames each gives maps to (indices
    only; see the module's notes).

    Args:
        clip_len: ``T``, frames per clip (≥ 1).
        hop: frames from one clip's start to the next's, ``1..T``.

    Raises:
        ValueError: ``hop`` outside ``1..T``.
    """

    def __init__(self, clip_len: int, hop: int) -> None:
        if clip_len < 1 or not 1 <= hop <= clip_len:
            raise ValueError(f"need 1 <= hop <= clip length, got hop {hop}, clip {clip_len}")
        self.clip_len, self.hop = int(clip_len), int(hop)
        self._next = 0   # the next regular clip k
        self._own = 0    # the first frame not yet given maps

    def ready(self, received: int) -> list[ClipPlan]:
        """The regular clips complete once ``received`` frames have arrived (and not yet
        returned), in order."""
        t, h = self.clip_len, self.hop
        out = []
        while self._next * h + t <= received:
            stop = (self._next + 1) * h + (t - h) // 2
            out.append(ClipPlan(self._next * h, t, self._own, stop))
            self._own = stop
            self._next += 1
        return out

    def end(self, received: int) -> ClipPlan | None:
        """The last clip, for the frames no clip gave maps to, once the stream ended after
        ``received`` frames (None: there are none)."""
        if self._own >= received:
            return None
        start = max(0, received - self.clip_len)
        plan = ClipPlan(start, received - start, self._own, received)
        self._own = received
        return plan

    @staticmethod
    def keep_from(received: int, clip_len: int) -> int:
        """The first frame a later clip can still need: every future clip, the last one
        included, starts at or after ``received − T``."""
        return max(0, received - clip_len)


class FramesOut(NamedTuple):
    """Frames that got their features, in stream order."""

    frames: list[Frame]
    images: list[Any]        #: the frames' pixels for the renderer, as the engine gave them
    features: Tensor         #: ``(n, C, h, w)`` float32
    logits: Tensor           #: ``(n, K)`` float32, each frame's clip's
    frames01: Tensor         #: ``(n, 3, H', W')`` float RGB in ``[0, 1]``


class _Held:
    """A frame waiting in the clip window: its model input, and until it gets its maps,
    the frame and its pixels."""

    __slots__ = ("frame", "image", "x", "frame01")

    def __init__(self, frame: Frame | None, image: Any, x: Tensor, frame01: Tensor) -> None:
        self.frame, self.image, self.x, self.frame01 = frame, image, x, frame01


class ClipStage:
    """Frames in, per-frame features and class scores out, through clips of the video
    network (the module's notes say which).

    Args:
        model: the video network.
        forward: runs a batch of normalised clips ``(N, 3, T, H, W)`` → ``(features
            (N, C, t, h, w) float32, logits (N, K) float32)`` (the engine's forward pass,
            under its precision).
        hop: frames from one clip's start to the next's, ``1..T``; None: ``T // 2``.

    Raises:
        OptionError: ``hop`` outside ``1..T`` (``option="clip_hop"``).
    """

    def __init__(self, model: VideoCamModel,
                 forward: Callable[[Tensor], tuple[Tensor, Tensor]],
                 hop: int | None = None) -> None:
        t = model.clip_len
        hop = max(1, t // 2) if hop is None else int(hop)
        if not 1 <= hop <= t:
            raise OptionError(f"clip_hop must be in 1..{t} for {model.name} (clips of {t} "
                              f"frames), got {hop}", option="clip_hop")
        self.model, self.hop = model, hop
        self._forward = forward
        self.schedule = ClipSchedule(t, hop)
        self._held: collections.deque[_Held] = collections.deque()
        self._base = 0        # stream index of _held[0]
        self._received = 0
        self._segment = 0     # stream index where the schedule started (0, or a cut)
        self.clips = 0        #: clips run so far

    @property
    def latency(self) -> int:
        """Frames a frame can wait for its clip, at most (``T - 1``)."""
        return self.model.clip_len - 1

    def push(self, frames: Sequence[Frame], images: Sequence[Any], x: Tensor,
             frames01: Tensor) -> FramesOut | None:
        """Add frames (in stream order) with their model inputs; returns the frames whose
        clips are complete now, or None.

        Args:
            frames: the frames.
            images: their pixels for the renderer (one per frame).
            x: ``(n, 3, H', W')`` normalised model inputs.
            frames01: ``(n, 3, H', W')`` float RGB in ``[0, 1]``.
        """
        outs = []
        for i, f in enumerate(frames):
            if f.cut and self._received > self._segment:   # no clip across the gap
                outs += [self._run(self.schedule.ready(self._received - self._segment)),
                         self.flush()]
            self._held.append(_Held(f, images[i], x[i], frames01[i]))
            self._received += 1
        outs.append(self._run(self.schedule.ready(self._received - self._segment)))
        keep = self._segment + ClipSchedule.keep_from(self._received - self._segment,
                                                      self.model.clip_len)
        while self._base < keep and self._held and self._held[0].frame is None:
            self._held.popleft()
            self._base += 1
        return _joined(outs)

    def flush(self) -> FramesOut | None:
        """At the end of the stream (or before a cut): the frames no clip has given maps
        to yet (from the stream's last clip), or None; the schedule starts afresh."""
        plan = self.schedule.end(self._received - self._segment)
        out = self._run([plan]) if plan is not None else None
        self._held.clear()
        self._base = self._segment = self._received
        self.schedule = ClipSchedule(self.model.clip_len, self.hop)
        return out

    def _run(self, plans: list[ClipPlan]) -> FramesOut | None:
        """Run ``plans`` (indices from the segment's start) as one batch of clips."""
        if not plans:
            return None
        at = self._segment - self._base    # the segment's start in _held
        t = self.model.clip_len
        clips = []
        for p in plans:
            xs = [self._held[at + i].x for i in range(p.start, p.start + p.length)]
            xs += [xs[-1]] * (t - len(xs))     # a stream shorter than a clip
            clips.append(self.model.clip(xs))
        features, logits = self._forward(torch.stack(clips))
        self.clips += len(plans)
        frames, images, feats, scores, smalls = [], [], [], [], []
        for c, p in enumerate(plans):
            pos = torch.arange(p.first - p.start, p.stop - p.start, dtype=torch.float32)
            feats.append(self.model.frame_features(features[c], pos))
            scores.append(logits[c:c + 1].expand(p.stop - p.first, -1))
            for i in range(p.first, p.stop):
                held = self._held[at + i]
                frames.append(held.frame)
                images.append(held.image)
                smalls.append(held.frame01)
                held.frame = held.image = None   # given out: only its input stays
        return FramesOut(frames, images, torch.cat(feats), torch.cat(scores),
                         torch.stack(smalls))


def _joined(outs: list[FramesOut | None]) -> FramesOut | None:
    """Consecutive outputs as one (None when there are none)."""
    parts = [o for o in outs if o is not None]
    if len(parts) <= 1:
        return parts[0] if parts else None
    return FramesOut([f for o in parts for f in o.frames], [m for o in parts for m in o.images],
                     torch.cat([o.features for o in parts]),
                     torch.cat([o.logits for o in parts]),
                     torch.cat([o.frames01 for o in parts]))
