"""Temporal smoothing of CAM videos: steady heatmaps and labels that still follow motion.

Per-frame CAM flickers: the top class hops between near-synonyms and each map is
rescaled by its own min/max. :class:`Smoother` is the pipeline's only stateful stage:

- **Features, by a time constant.** The state is an exponential average of the last
  features ``(C, h, w)`` with ``alpha = 1 - exp(-dt / tau)`` from the frames' timestamps,
  so the response is the same in seconds at any (or a variable) frame rate. CAM is linear
  in the features, so this smooths every class's map at once. Right after a reset the
  state is the plain mean of the frames so far (``alpha >= dt / time since the reset``),
  so the first frame of a shot does not dominate the next ``tau`` seconds.
- **Motion compensation.** Before blending, the previous state is moved with the image
  motion between the two frames (DIS optical flow on small grayscale frames, averaged per
  feature cell, applied by bilinear interpolation), so the heatmap stays on a moving
  object instead of trailing it. Cells whose content just entered the frame take the new
  features.
- **Class hysteresis.** Probabilities are averaged the same way. The shown class changes
  only when another one beats it by ``switch_margin``, or is ``switch_ratio`` times as
  probable (real footage's top-1 is often 2-5 %, where an absolute lead of 0.1 is never
  reached), or when the shown class has not been the most probable for ``switch_hold``
  seconds; during a shot's first ``tau`` seconds (the average is still warming up) it
  simply follows the most probable class.
- **Anti-flicker range.** The drawn map is ``(M - lo) / (hi - lo)`` with ``(lo, hi)``
  averaged over time from the map's min and max (``hi`` follows an increase at once, so
  the peak never saturates into a plateau); it restarts when the class changes.
- **Scene cuts** reset everything, so the first frame of a shot is exactly the unsmoothed
  result. The cut score is the mean of the small frames' colour-histogram distance and the
  pooled features' cosine distance to the previous frame (both in ``[0, 1]``).
- **Modes.** ``"causal"`` (live) returns every frame at once. ``"centered"`` (files)
  averages the causal state with an anti-causal one over ``lag`` frames of look-ahead (a
  symmetric two-sided exponential, motion-compensated both ways), returning results
  ``lag`` frames late; :meth:`flush`
  returns the rest at the end of the stream.

``tau=0`` turns all of it off: the result is plain per-frame CAM (argmax class, softmax
probabilities, each map min-max normalised). Defaults are measured in
``benchmarks/quality.py`` (see ``benchmarks/README.md``).
"""
from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from . import motion as mo
from .cam import cam_maps, minmax_normalize
from .errors import OptionError
from .options import DEFAULT_MARGIN, DEFAULT_RATIO, DEFAULT_TAU, SMOOTH_MODES
from .transfer import to_host

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_CUT_THRESHOLD", "DEFAULT_HOLD", "DEFAULT_MARGIN", "DEFAULT_RATIO",
           "DEFAULT_TAU", "MODES", "FrameMaps", "Smoothed", "Smoother"]

DEFAULT_HOLD = 1.0           #: seconds a shown class may trail before it gives way
DEFAULT_CUT_THRESHOLD = 0.3  #: cut score (0..1) above which a frame starts a new shot
MODES = SMOOTH_MODES


class FrameMaps:
    """Raw CAM maps of any classes for one output frame, from the same smoothed features
    its drawn map comes from: the causal feature state, and in centered mode the
    anti-causal average of the look-ahead frames too (maps are linear in the features and
    so is warping, so averaging maps equals averaging features, at ``n / C`` of the cost).

    Call it with ``(n,)`` int64 classes; returns ``(n, h, w)`` float32 maps (unnormalised,
    on the features' device). It keeps references to the features it needs.
    """

    __slots__ = ("_weight", "_feat", "_window", "_alpha")

    def __init__(self, weight: Tensor, feat: Tensor,
                 window: list[tuple[Tensor, float, tuple[Tensor, Tensor] | None]] | None = None,
                 alpha: Callable[[float], float] | None = None) -> None:
        self._weight, self._feat = weight, feat      # (K, C), (1, C, h, w)
        self._window, self._alpha = window, alpha    # [(feat, time, bwd warp)], alpha(dt)

    @staticmethod
    def raw_of(frame_maps: Sequence["FrameMaps"], classes: Tensor) -> Tensor:
        """``(M, h, w)``: each frame's map of its own class (``classes`` ``(M,)``), in one
        product when no frame has a look-ahead window (causal smoothing)."""
        if frame_maps and all(fm._window is None for fm in frame_maps):
            weight = frame_maps[0]._weight
            w = weight.index_select(0, classes.to(weight.device)).float()       # (M, C)
            feats = torch.cat([fm._feat for fm in frame_maps]).float()          # (M, C, h, w)
            return torch.einsum("nc,nchw->nhw", w, feats)
        return torch.cat([fm(classes[i:i + 1]) for i, fm in enumerate(frame_maps)])

    def __call__(self, classes: Tensor) -> Tensor:
        w = self._weight.index_select(0, classes.to(self._weight.device)).float()  # (n, C)
        raw = torch.einsum("nc,chw->nhw", w, self._feat[0].float())
        if self._window is None:
            return raw
        win = self._window
        maps = torch.einsum("nc,lchw->lnhw", w,
                            torch.cat([f for f, _, _ in win]).float())   # (L+1, n, h, w)
        acc = maps[-1:]
        for i in range(len(win) - 2, -1, -1):
            acc = Smoother._blend(acc, maps[i:i + 1],
                                  self._alpha(win[i + 1][1] - win[i][1]),  # type: ignore[misc]
                                  win[i + 1][2])
        return 0.5 * (raw + acc[0])


@dataclass
class Smoothed:
    """Results for ``M`` consecutive frames (on the features' device).

    Attributes:
        maps: ``(M, h, w)`` float32 in ``[0, 1]``, the maps to draw.
        classes: ``(M,)`` int64 class shown for each frame.
        probs: ``(M, K)`` float32 smoothed class probabilities.
        cut: ``M`` flags: the frame started a new shot (or the stream) and the state was
            reset there.
        frame_maps: ``M`` :class:`FrameMaps`: any class's raw map of each frame.
    """

    maps: Tensor
    classes: Tensor
    probs: Tensor
    cut: list[bool] = field(default_factory=list)
    frame_maps: list[FrameMaps] = field(default_factory=list)


@dataclass
class _Frame:
    """A frame inside the smoother: its inputs, motion and (smoothed) state."""

    time: float
    cut: bool
    feat: Tensor                      # (1, C, h, w) input features
    prob: Tensor                      # (K,) softmax of its logits
    fwd: tuple[Tensor, Tensor] | None = None   # warp (matrix, valid): previous → this
    bwd: tuple[Tensor, Tensor] | None = None   # warp: this frame → previous one
    s_feat: Tensor | None = None      # causal feature state after this frame
    s_prob: Tensor | None = None      # smoothed probabilities (causal, then centered)
    window: list[_Frame] | None = None         # centered: this frame and its look-ahead


class Smoother:
    """Stateful temporal smoother between the model and the renderer.

    Args:
        weight: ``(K, C)`` linear-layer weight of the model (the CAM weights), on the
            features' device.
        tau: time constant in seconds; 0 turns smoothing off.
        switch_margin: in ``[0, 1)``: another class whose smoothed probability exceeds the
            shown one's by more than this takes over at once.
        switch_ratio: 0 (off) or ``> 1``: another class whose smoothed probability is more
            than this many times the shown one's takes over at once.
        motion: motion-compensate the state before blending.
        cut_reset: reset the state on detected scene cuts.
        mode: ``"causal"`` or ``"centered"`` (look-ahead of :attr:`lag` frames).
        fixed_class: always show this class's map (``--class``).
        lookahead: look-ahead frames in centered mode; default ``ceil(tau * 30)`` clipped
            to 1..15 (one time constant at 30 fps).
        switch_hold: a shown class that has not been the most probable one for this many
            seconds gives way to the most probable one even without the margin (so a
            low-confidence video, where no class ever leads by the margin, cannot stay
            stuck on a stale class); ``inf`` disables it.
        cut_threshold: cut score in ``(0, 1]`` above which a frame starts a new shot.
        motion_method: ``"dis"``, ``"farneback"`` or ``"phase"``
            (:class:`camvideo.motion.MotionEstimator`).

    Attributes:
        lag: frames of look-ahead: :meth:`push` returns results that many frames late
            (0 when causal or ``tau == 0``).

    Raises:
        OptionError: an option is out of range.
    """

    def __init__(self, weight: Tensor, tau: float = DEFAULT_TAU,
                 switch_margin: float = DEFAULT_MARGIN, motion: bool = True,
                 cut_reset: bool = True, mode: str = "causal",
                 fixed_class: int | None = None, *, lookahead: int | None = None,
                 switch_hold: float = DEFAULT_HOLD,
                 cut_threshold: float = DEFAULT_CUT_THRESHOLD,
                 motion_method: str = "dis", switch_ratio: float = DEFAULT_RATIO) -> None:
        tau, switch_margin, switch_hold = float(tau), float(switch_margin), float(switch_hold)
        switch_ratio = float(switch_ratio)
        if not (math.isfinite(tau) and tau >= 0):
            raise OptionError(f"smoothing time constant must be ≥ 0 seconds, got {tau}")
        if not 0.0 <= switch_margin < 1.0:
            raise OptionError(f"switch margin must be in [0, 1), got {switch_margin}")
        if not (switch_ratio == 0 or switch_ratio > 1.0):
            raise OptionError(f"switch ratio must be 0 (off) or > 1, got {switch_ratio}")
        if not switch_hold > 0:
            raise OptionError(f"switch hold must be > 0 seconds, got {switch_hold}")
        if mode not in MODES:
            raise OptionError(f"smoothing mode must be causal or centered, got {mode!r}")
        if not 0.0 < cut_threshold <= 1.0:
            raise OptionError(f"cut threshold must be in (0, 1], got {cut_threshold}")
        if lookahead is not None and not 1 <= int(lookahead) <= 300:
            raise OptionError(f"lookahead must be 1..300 frames, got {lookahead}")
        if weight.dim() != 2:
            raise OptionError(f"CAM weight must be (K, C), got shape {tuple(weight.shape)}")
        if fixed_class is not None and not 0 <= int(fixed_class) < weight.shape[0]:
            raise OptionError(f"class {fixed_class} out of range 0..{weight.shape[0] - 1}")
        self.weight = weight
        self.tau, self.margin, self.switch_hold = tau, switch_margin, switch_hold
        self.ratio = switch_ratio
        self.motion, self.cut_reset, self.mode = bool(motion), bool(cut_reset), mode
        self.fixed_class = None if fixed_class is None else int(fixed_class)
        self.cut_threshold = float(cut_threshold)
        self.lag = 0
        if mode == "centered" and tau > 0:
            self.lag = (int(lookahead) if lookahead is not None
                        else min(15, max(1, math.ceil(tau * 30 - 1e-9))))
        self._tracker = mo.MotionTracker(motion_method)
        self._grid = (0, 0)
        self.reset()

    def reset(self) -> None:
        """Forget all state (and any held-back frames): the next frame starts a stream."""
        self._started = False
        self._prev_hist: Tensor | None = None     # (1, 64) colour histogram
        self._prev_pooled: Tensor | None = None   # (1, C) unit pooled features
        self._tracker.reset()                     # the last frame's motion image
        self._prev_time = 0.0
        self._shot_start = self._first_dt = None  # for the warm-up mean
        self._feat: Tensor | None = None          # causal (1, C, h, w) state
        self._prob: Tensor | None = None          # causal (K,) state
        self._pending: collections.deque[_Frame] = collections.deque()
        self._out_time = self._out_start = 0.0    # output stage: hysteresis and range
        self._cls: Tensor | None = None           # () int64 shown class
        self._stale: Tensor | None = None         # () seconds it has not been the top one
        self._lo: Tensor | None = None            # (1,) range of the drawn map
        self._hi: Tensor | None = None
        self._fixed_cache: tuple | None = None    # (fixed_class, device), its tensor

    @property
    def state(self) -> Tensor | None:
        """``(1, C, h, w)`` causal feature state after the last pushed frame (None before
        the first frame or when ``tau == 0``)."""
        return self._feat

    def _alpha(self, dt: float) -> float:
        return 1.0 - math.exp(-max(dt, 0.0) / self.tau)

    def push(self, features: Tensor, logits: Tensor, times: Sequence[float],
             frames01: Tensor, cues: mo.Cues | None = None,
             starts: Sequence[bool] | None = None) -> Smoothed:
        """Add ``N`` frames; return the results that are ready.

        Args:
            features: ``(N, C, h, w)`` float32 features, in frame order.
            logits: ``(N, K)`` float32 class scores.
            times: ``N`` presentation times in seconds, increasing.
            frames01: ``(N, 3, H, W)`` float RGB in ``[0, 1]``, the model-input frames
                (downsampled here for motion and cut detection).
            cues: this batch's :meth:`cues`, when the caller computed them already
                (the engine's ``stride`` carry does); computed here otherwise.
            starts: ``N`` flags: the frame starts afresh whatever its picture (the first
                after a gap in a live source, :attr:`camvideo.media.frames.Frame.cut`):
                reset as at a detected cut, also without ``cut_reset``.

        Returns:
            :class:`Smoothed` for the next ``M`` frames in order: ``M == N`` when causal;
            in centered mode each frame comes out once :attr:`lag` later ones arrived.
        """
        n = features.shape[0]
        if (features.dim() != 4 or tuple(logits.shape) != (n, self.weight.shape[0])
                or len(times) != n or tuple(frames01.shape[:2]) != (n, 3)
                or (cues is not None and len(cues.disps) != n)):
            raise ValueError(f"push: inconsistent shapes: features {tuple(features.shape)},"
                             f" logits {tuple(logits.shape)}, {len(times)} times, frames01 "
                             f"{tuple(frames01.shape)}"
                             + ("" if cues is None else f", {len(cues.disps)} cues"))
        grid = (int(features.shape[2]), int(features.shape[3]))
        if self._started and grid != self._grid:
            raise ValueError(f"push: feature grid changed from {self._grid} to {grid}; "
                             "flush() and reset() first")
        self._grid = grid
        probs = torch.softmax(logits.float(), dim=1)
        if self.tau == 0:
            return self._plain(features, probs)
        if n == 0:
            return self._empty()
        features = features.float()
        if cues is None:
            cues = self.cues(frames01, grid)
        cuts = self._detect_cuts(cues.small, features)
        if starts is not None:
            cuts = [bool(c or g) for c, g in zip(cuts, starts)]
        ready: list[_Frame] = []
        for i in range(n):
            fr = _Frame(float(times[i]), cuts[i], features[i:i + 1], probs[i])
            disp = cues.disps[i]
            if disp is not None and not cuts[i]:
                fr.fwd = cues.sampling(i)
                if self.lag:
                    fr.bwd = mo.sampling(-disp)
            self._causal_step(fr)
            if self.lag == 0:
                ready.append(fr)
            else:
                self._pending.append(fr)
                if len(self._pending) > self.lag:
                    ready.append(self._centered(self._pending.popleft()))
        return self._emit(ready)

    def cues(self, frames01: Tensor, grid: tuple[int, int]) -> mo.Cues:
        """The small frames and per-frame motion of the next batch for :meth:`push`.

        Args:
            frames01: ``(N, 3, H, W)`` float RGB in ``[0, 1]``, the model-input frames
                following the last ones given here (this advances the motion state, so
                each batch must be given once, in stream order).
            grid: the feature grid ``(h, w)``.

        Returns:
            :class:`camvideo.motion.Cues`; displacements only with ``motion`` on. They
            are computed across shot cuts too (:meth:`push` ignores them there), as the
            cuts are only known with the features.
        """
        return self._tracker.cues(frames01, grid, motion=self.motion)

    def flush(self) -> Smoothed:
        """Results of the frames still held back (centered mode) at the end of a stream."""
        ready = []
        while self._pending:
            ready.append(self._centered(self._pending.popleft()))
        return self._emit(ready)

    def _plain(self, features: Tensor, probs: Tensor) -> Smoothed:
        n = probs.shape[0]
        classes = (torch.full((n,), self.fixed_class, dtype=torch.long, device=probs.device)
                   if self.fixed_class is not None else probs.argmax(dim=1))
        maps = minmax_normalize(cam_maps(features.float(), self.weight, classes).float())
        cut = [i == 0 and not self._started for i in range(n)]
        self._started = self._started or n > 0
        return Smoothed(maps, classes, probs, cut,
                        [FrameMaps(self.weight, features[i:i + 1]) for i in range(n)])

    def _empty(self) -> Smoothed:
        dev, k = self.weight.device, self.weight.shape[0]
        return Smoothed(torch.empty(0, *self._grid, device=dev),
                        torch.empty(0, dtype=torch.long, device=dev),
                        torch.empty(0, k, device=dev), [])

    def _detect_cuts(self, small: Tensor, features: Tensor) -> list[bool]:
        """Per frame: does it start a new shot (always true for the stream's first)?"""
        hist = mo.color_histograms(small)
        pooled = F.normalize(features.mean(dim=(2, 3)), dim=1)
        prev_h = hist[:1] if self._prev_hist is None else self._prev_hist
        prev_p = pooled[:1] if self._prev_pooled is None else self._prev_pooled
        hist_d = mo.histogram_distance(hist, torch.cat((prev_h, hist[:-1])))
        feat_d = (1.0 - (pooled * torch.cat((prev_p, pooled[:-1]))).sum(dim=1)).clamp(0, 1)
        self._prev_hist, self._prev_pooled = hist[-1:], pooled[-1:]
        score = 0.5 * (hist_d + feat_d)
        if self.cut_reset:
            host_score = to_host([score])[0]  # one read back per batch
            flags = (host_score > self.cut_threshold).tolist()
        else:
            host_score, flags = None, [False] * len(hist)
        if not self._started:
            flags[0], self._started = True, True
        if host_score is not None and any(flags[1:] if len(flags) else ()):
            log.debug("cut score %s", [f"{s:.2f}" for s in host_score.tolist()])
        return flags

    @staticmethod
    def _blend(state: Tensor, new: Tensor, a: float,
               sampling: tuple[Tensor, Tensor] | None) -> Tensor:
        """``(1 - a) * warp(state) + a * new``; cells without a source take ``new``."""
        if sampling is None:
            return torch.lerp(state, new, a)
        mat, valid = sampling
        return new + (valid * (1.0 - a)) * (mo.warp(state, mat) - new)

    def _causal_step(self, fr: _Frame) -> None:
        if fr.cut or self._feat is None:
            self._feat, self._prob = fr.feat, fr.prob
            self._shot_start, self._first_dt = fr.time, None
        else:
            dt = fr.time - self._prev_time
            if dt <= 0:
                log.debug("non-increasing time %.6f after %.6f", fr.time, self._prev_time)
            if self._first_dt is None:
                self._first_dt = max(dt, 1e-6)
            span = fr.time - self._shot_start + self._first_dt   # warm-up: mean so far
            a = max(self._alpha(dt), max(dt, 0.0) / span)
            self._feat = self._blend(self._feat, fr.feat, a, fr.fwd)
            self._prob = torch.lerp(self._prob, fr.prob, a)
        self._prev_time = fr.time
        fr.s_feat, fr.s_prob = self._feat, self._prob

    def _centered(self, fr: _Frame) -> _Frame:
        """Average ``fr``'s causal probabilities with anti-causal ones over its look-ahead
        (the frames still pending, up to the next cut); the map follows in :meth:`_frame_maps`."""
        fr.window = [fr]
        for nxt in self._pending:
            if nxt.cut:
                break
            fr.window.append(nxt)
        a_prob = fr.window[-1].prob
        for cur, nxt in zip(reversed(fr.window[:-1]), reversed(fr.window[1:])):
            a_prob = torch.lerp(a_prob, cur.prob, self._alpha(nxt.time - cur.time))
        fr.s_prob = 0.5 * (fr.s_prob + a_prob)
        return fr

    def _frame_maps(self, fr: _Frame) -> FrameMaps:
        """The :class:`FrameMaps` of an output frame: its causal state's maps, and in
        centered mode their mean with the anti-causal average of the look-ahead frames'
        maps (the window is handed over and dropped from the frame)."""
        window = None
        if fr.window is not None:
            window = [(f.feat, f.time, f.bwd) for f in fr.window]
            fr.window = None
        return FrameMaps(self.weight, fr.s_feat, window, self._alpha)  # type: ignore[arg-type]

    def _emit(self, ready: list[_Frame]) -> Smoothed:
        """Class hysteresis and the smoothed normalisation range, in output order, all on
        the device with no synchronisation with the host: the classes frame by frame
        (each depends on the last), the maps of the whole batch at once, then their
        ranges frame by frame."""
        if not ready:
            return self._empty()
        probs = torch.stack([fr.s_prob for fr in ready])               # (M, K)
        best_all = probs.argmax(dim=1)                                  # (M,)
        classes, prev_cls, restarts, dts = [], [], [], []
        for i, fr in enumerate(ready):
            best = best_all[i]
            restart = fr.cut or self._cls is None
            if restart:
                self._out_start = fr.time
            if self.fixed_class is not None:
                cls = self._fixed_tensor(probs.device)
            elif restart or fr.time - self._out_start < self.tau:   # still warming up
                cls, self._stale = best, probs.new_zeros(())
            else:
                p = probs[i]
                self._stale = torch.where(best == self._cls, 0.0,
                                          self._stale + (fr.time - self._out_time))
                p_best = p.gather(0, best.view(1))[0]
                p_cls = p.gather(0, self._cls.view(1))[0]
                take = (p_best - p_cls > self.margin) | (self._stale >= self.switch_hold - 1e-6)
                if self.ratio:
                    take = take | (p_best > self.ratio * p_cls)
                cls = torch.where(take, best, self._cls)
                self._stale = torch.where(take, 0.0, self._stale)
            classes.append(cls)
            prev_cls.append(self._cls)
            restarts.append(restart)
            dts.append(fr.time - self._out_time)
            self._cls, self._out_time = cls, fr.time
        cls_t = torch.stack(classes).long()
        frame_maps = [self._frame_maps(fr) for fr in ready]
        raw = FrameMaps.raw_of(frame_maps, cls_t).float()               # (M, h, w)
        lo_all, hi_all = raw.amin(dim=(1, 2)), raw.amax(dim=(1, 2))
        los, his = [], []
        for i in range(len(ready)):
            lo, hi = lo_all[i:i + 1], hi_all[i:i + 1]
            if not restarts[i]:
                a = self._alpha(dts[i])
                same = classes[i] == prev_cls[i]
                lo = torch.where(same, torch.lerp(self._lo, lo, a), lo)
                hi = torch.where(same, torch.maximum(torch.lerp(self._hi, hi, a), hi), hi)
            self._lo, self._hi = lo, hi
            los.append(lo)
            his.append(hi)
        maps = minmax_normalize(raw, torch.cat(los), torch.cat(his))
        return Smoothed(maps, cls_t, probs, [fr.cut for fr in ready], frame_maps)

    def _fixed_tensor(self, device: torch.device) -> Tensor:
        """``fixed_class`` as a device scalar, made once (it can change: live's c key)."""
        key = (self.fixed_class, device)
        if self._fixed_cache is None or self._fixed_cache[0] != key:
            self._fixed_cache = (key, torch.tensor(self.fixed_class, device=device))
        return self._fixed_cache[1]
