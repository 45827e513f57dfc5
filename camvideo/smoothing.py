"""Temporal smoothing of CAM videos: steady heatmaps and labels that still follow motion.

Per-frame CAM flickers: the top class hops between near-synonyms and each map is
rescaled by its own min/max. :class:`Smoother` is the pipeline's only stateful stage:

- **Features, by a time constant.** The state is an exponential average of the last
  features ``(C, h, w)`` with ``alpha = 1 - exp(-dt / tau)`` from the frames' timestamps,
  so the response is the same in seconds at any (or a variable) frame rate. CAM is
  linear in the features, so this smooths every class's map at once.
- **Motion compensation.** Before blending, the previous state is moved with the image
  motion between the two frames (optical flow on small grayscale frames, averaged per
  feature cell, applied with bilinear ``grid_sample``), so the heatmap stays on a moving
  object instead of trailing it. Cells whose content just entered the frame take the
  new features.
- **Class hysteresis.** Probabilities are averaged with the same time constant; the
  shown class changes only when another one beats it by ``switch_margin``.
- **Anti-flicker range.** The drawn map is ``(M - lo) / (hi - lo)`` with ``(lo, hi)`` an
  average over time of the map's min and max (the max follows an increase at once, so the
  peak never saturates into a plateau); it restarts when the class changes.
- **Scene cuts** (a jump of the small frames' colour histogram) reset everything, so the
  first frame of a shot is exactly the unsmoothed result.
- **Modes.** ``"causal"`` (live) returns every frame at once. ``"centered"`` (files)
  averages the causal state with an anti-causal one over ``lag`` frames of look-ahead (a
  symmetric two-sided exponential), returning results ``lag`` frames late; :meth:`flush`
  returns the rest at the end of the stream.

``tau=0`` turns all of it off: the result is plain per-frame CAM (argmax class, softmax
probabilities, each map min-max normalised).
"""
from __future__ import annotations

import collections
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import motion as mo
from .cam import cam_maps, minmax_normalize
from .errors import OptionError

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CUT_THRESHOLD", "DEFAULT_MARGIN", "DEFAULT_TAU", "MODES", "Smoothed",
           "Smoother"]

DEFAULT_TAU = 0.3            #: seconds; see benchmarks/README.md "Quality"
DEFAULT_MARGIN = 0.1         #: probability lead another class needs to take over
DEFAULT_CUT_THRESHOLD = 0.5  #: colour-histogram distance (0..1) that starts a new shot
MODES = ("causal", "centered")


@dataclass
class Smoothed:
    """Results for ``M`` consecutive frames (on the features' device).

    Attributes:
        maps: ``(M, h, w)`` float32 in ``[0, 1]``, the maps to draw.
        classes: ``(M,)`` int64 class shown for each frame.
        probs: ``(M, K)`` float32 smoothed class probabilities.
        cut: ``M`` flags: the frame started a new shot (or the stream) and the state was
            reset there.
    """

    maps: Tensor
    classes: Tensor
    probs: Tensor
    cut: list[bool] = field(default_factory=list)


@dataclass
class _Frame:
    """A frame inside the smoother: inputs, causal state, motion to its predecessor."""

    time: float
    cut: bool
    feat: Tensor              # (1, C, h, w) input features
    prob: Tensor              # (K,) softmax of its logits
    disp: Tensor | None       # (h, w, 2) cells back to the previous frame, or None
    c_feat: Tensor | None = None  # causal state after this frame
    c_prob: Tensor | None = None


class Smoother:
    """Stateful temporal smoother between the model and the renderer.

    Args:
        weight: ``(K, C)`` linear-layer weight of the model (the CAM weights), on the
            features' device.
        tau: time constant in seconds; 0 turns smoothing off.
        switch_margin: in ``[0, 1)``: the shown class changes only when another class's
            smoothed probability exceeds it by more than this.
        motion: motion-compensate the state before blending.
        cut_reset: reset the state on detected scene cuts.
        mode: ``"causal"`` or ``"centered"`` (look-ahead of ``lag`` frames).
        fixed_class: always show this class's map (``--class``).
        lookahead: look-ahead frames in centered mode; default ``ceil(tau * 30)`` clipped
            to 1..15 (about one time constant at 30 fps).
        cut_threshold: colour-histogram distance in ``(0, 1]`` that counts as a cut.
        motion_method: ``"dis"``, ``"farneback"`` or ``"phase"`` (see
            :class:`camvideo.motion.MotionEstimator`).

    Raises:
        OptionError: an option is out of range.
    """

    def __init__(self, weight: Tensor, tau: float = DEFAULT_TAU,
                 switch_margin: float = DEFAULT_MARGIN, motion: bool = True,
                 cut_reset: bool = True, mode: str = "causal",
                 fixed_class: int | None = None, *, lookahead: int | None = None,
                 cut_threshold: float = DEFAULT_CUT_THRESHOLD,
                 motion_method: str = "dis") -> None:
        tau, switch_margin = float(tau), float(switch_margin)
        if not (math.isfinite(tau) and tau >= 0):
            raise OptionError(f"smoothing time constant must be ≥ 0 seconds, got {tau}")
        if not 0.0 <= switch_margin < 1.0:
            raise OptionError(f"switch margin must be in [0, 1), got {switch_margin}")
        if mode not in MODES:
            raise OptionError(f"smoothing mode must be causal or centered, got {mode!r}")
        if not 0.0 < cut_threshold <= 1.0:
            raise OptionError(f"cut threshold must be in (0, 1], got {cut_threshold}")
        if weight.dim() != 2:
            raise OptionError(f"weight must be (K, C), got shape {tuple(weight.shape)}")
        k = weight.shape[0]
        if fixed_class is not None and not 0 <= int(fixed_class) < k:
            raise OptionError(f"class {fixed_class} out of range 0..{k - 1}")
        if lookahead is not None and not 0 <= int(lookahead) <= 300:
            raise OptionError(f"lookahead must be in 0..300 frames, got {lookahead}")
        self.weight = weight
        self.tau, self.margin = tau, switch_margin
        self.motion, self.cut_reset, self.mode = bool(motion), bool(cut_reset), mode
        self.fixed_class = None if fixed_class is None else int(fixed_class)
        self.cut_threshold = float(cut_threshold)
        self._grid = (0, 0)
        if mode == "centered" and tau > 0:
            self.lag = int(lookahead) if lookahead is not None else min(15, max(
                1, math.ceil(tau * 30 - 1e-9)))
        else:
            self.lag = 0
        self._estimator = mo.MotionEstimator(motion_method)
        self.reset()

    def reset(self) -> None:
        """Forget all state: the next frame is treated as the start of a stream."""
        self._prev_hist: Tensor | None = None
        self._prev_gray = None
        self._prev_time: float | None = None
        self._feat: Tensor | None = None      # causal (1, C, h, w) state
        self._prob: Tensor | None = None      # causal (K,) state
        self._pending: collections.deque[_Frame] = collections.deque()
        # output stage
        self._out_time: float | None = None
        self._cls: Tensor | None = None       # 0-dim int64 shown class
        self._lo: Tensor | None = None        # (1,) range of the drawn map
        self._hi: Tensor | None = None

    def _alpha(self, dt: float) -> float:
        return 1.0 - math.exp(-max(dt, 0.0) / self.tau)

    # ------------------------------------------------------------------ public API
    def push(self, features: Tensor, logits: Tensor, times: Sequence[float],
             frames01: Tensor) -> Smoothed:
        """Add ``N`` frames; return the results that are ready.

        Args:
            features: ``(N, C, h, w)`` float32 features, in frame order.
            logits: ``(N, K)`` float32 class scores.
            times: ``N`` presentation times in seconds, increasing.
            frames01: ``(N, 3, H, W)`` float RGB in ``[0, 1]``, the model-input frames
                (used, downsampled, for motion and cut detection).

        Returns:
            :class:`Smoothed` for the next ``M`` frames in order: ``M == N`` when causal;
            in centered mode the frames are held back until ``lag`` later ones arrived.
        """
        n = features.shape[0]
        if (features.dim() != 4 or logits.shape != (n, self.weight.shape[0])
                or len(times) != n or frames01.shape[:2] != (n, 3)):
            raise ValueError(f"push: inconsistent shapes features {tuple(features.shape)}, "
                             f"logits {tuple(logits.shape)}, {len(times)} times, frames01 "
                             f"{tuple(frames01.shape)}")
        probs = torch.softmax(logits.float(), dim=1)
        self._grid = (features.shape[2], features.shape[3])
        if self.tau == 0:
            return self._plain(features, probs, len(times))
        if n == 0:
            return self._empty()
        if self._feat is not None and self._feat.shape[1:] != features.shape[1:]:
            raise ValueError(f"push: features changed shape from {tuple(self._feat.shape[1:])}"
                             f" to {tuple(features.shape[1:])}; flush() and reset() first")
        grid = (features.shape[2], features.shape[3])
        small = mo.downsample(frames01, grid)
        cuts = self._detect_cuts(small)
        disps = self._estimate_motion(small, grid, cuts)
        ready: list[_Frame] = []
        for i in range(n):
            fr = _Frame(float(times[i]), cuts[i], features[i:i + 1].float(), probs[i],
                        disps[i] if disps is not None else None)
            self._causal_step(fr)
            if self.lag == 0:
                ready.append(fr)
            else:
                self._pending.append(fr)
                if len(self._pending) > self.lag:
                    ready.append(self._centered(self._pending.popleft()))
        return self._emit(ready)

    def flush(self) -> Smoothed:
        """Results of the frames still held back (centered mode) at the end of a stream."""
        ready = []
        while self._pending:
            ready.append(self._centered(self._pending.popleft()))
        return self._emit(ready)

    # ------------------------------------------------------------------ internals
    def _plain(self, features: Tensor, probs: Tensor, n: int) -> Smoothed:
        classes = (torch.full((n,), self.fixed_class, dtype=torch.long, device=probs.device)
                   if self.fixed_class is not None else probs.argmax(dim=1))
        maps = minmax_normalize(cam_maps(features.float(), self.weight, classes).float())
        cut = [self._prev_time is None] + [False] * (n - 1) if n else []
        if n:
            self._prev_time = 0.0
        return Smoothed(maps, classes, probs, cut)

    def _empty(self) -> Smoothed:
        dev, k = self.weight.device, self.weight.shape[0]
        h, w = self._grid
        return Smoothed(torch.empty(0, h, w, device=dev), torch.empty(0, dtype=torch.long,
                        device=dev), torch.empty(0, k, device=dev), [])

    def _detect_cuts(self, small: Tensor) -> list[bool]:
        """Per frame: does it start a new shot (always true for the stream's first)?"""
        hist = mo.color_histograms(small)
        prev = hist[:1] if self._prev_hist is None else self._prev_hist
        dist = mo.histogram_distance(hist, torch.cat((prev, hist[:-1])))
        self._prev_hist = hist[-1:]
        flags = (dist > self.cut_threshold).tolist() if self.cut_reset else [False] * len(hist)
        if self._prev_time is None:
            flags[0] = True
        if log.isEnabledFor(logging.DEBUG) and any(flags):
            log.debug("cuts at batch frames %s (distances %s)",
                      [i for i, f in enumerate(flags) if f], [f"{d:.2f}" for d in dist.tolist()])
        return flags

    def _estimate_motion(self, small: Tensor, grid: tuple[int, int],
                         cuts: list[bool]) -> list[Tensor | None] | None:
        if not self.motion:
            return None
        gray = mo.gray_u8(small)
        out: list[Tensor | None] = []
        prev = self._prev_gray
        for i, g in enumerate(gray):
            if cuts[i] or prev is None:
                out.append(None)
            else:
                out.append(torch.from_numpy(self._estimator.estimate(prev, g, grid)))
            prev = g
        self._prev_gray = prev
        dev = small.device
        return [d.to(dev, non_blocking=True) if d is not None else None for d in out]

    def _blend(self, state: Tensor, new: Tensor, a: float, disp: Tensor | None) -> Tensor:
        """``(1 - a) * warp(state) + a * new``; cells without a source take ``new``."""
        if disp is None:
            return torch.lerp(state, new, a)
        warped, valid = mo.warp(state, disp)
        keep = valid.mul_(1.0 - a)
        return new + keep * (warped - new)

    def _causal_step(self, fr: _Frame) -> None:
        if fr.cut or self._feat is None:
            self._feat, self._prob = fr.feat, fr.prob
        else:
            a = self._alpha(fr.time - self._prev_time)
            self._feat = self._blend(self._feat, fr.feat, a, fr.disp)
            self._prob = torch.lerp(self._prob, fr.prob, a)
        self._prev_time = fr.time
        fr.c_feat, fr.c_prob = self._feat, self._prob

    def _centered(self, fr: _Frame) -> _Frame:
        """Average ``fr``'s causal state with the anti-causal one over its look-ahead."""
        window = [fr]
        for nxt in self._pending:
            if nxt.cut:
                break
            window.append(nxt)
        a_feat, a_prob = window[-1].feat, window[-1].prob
        for cur, nxt in zip(reversed(window[:-1]), reversed(window[1:])):
            a = self._alpha(nxt.time - cur.time)
            back = -nxt.disp if nxt.disp is not None else None
            a_feat = self._blend(a_feat, cur.feat, a, back)
            a_prob = torch.lerp(a_prob, cur.prob, a)
        return _Frame(fr.time, fr.cut, fr.feat, fr.prob, None,
                      0.5 * (fr.c_feat + a_feat), 0.5 * (fr.c_prob + a_prob))

    def _emit(self, ready: list[_Frame]) -> Smoothed:
        """Class hysteresis and the smoothed normalisation range, in output order."""
        if not ready:
            return self._empty()
        maps, classes, probs = [], [], []
        for fr in ready:
            p = fr.c_prob
            best = p.argmax()
            restart = fr.cut or self._cls is None
            if self.fixed_class is not None:
                cls = torch.tensor(self.fixed_class, device=p.device)
            elif restart:
                cls = best
            else:
                cls = torch.where(p[best] - p[self._cls] > self.margin, best, self._cls)
            raw = cam_maps(fr.c_feat, self.weight, cls.view(1)).float()    # (1, h, w)
            lo, hi = raw.amin(dim=(1, 2)), raw.amax(dim=(1, 2))
            if not restart:
                a = self._alpha(fr.time - self._out_time)
                same = cls == self._cls
                lo = torch.where(same, torch.lerp(self._lo, lo, a), lo)
                hi = torch.where(same, torch.maximum(torch.lerp(self._hi, hi, a), hi), hi)
            self._cls, self._lo, self._hi, self._out_time = cls, lo, hi, fr.time
            maps.append(minmax_normalize(raw, lo, hi))
            classes.append(cls)
            probs.append(p)
        return Smoothed(torch.cat(maps), torch.stack(classes).long(), torch.stack(probs),
                        [fr.cut for fr in ready])
