"""Tests of camvideo.smoothing: time constant, cuts, hysteresis, motion, centered mode.

Tiny tensors: C=8 feature channels, K=5 classes, a 6x16 feature grid and 48x128 frames
(8 px per cell, the motion estimator's working size). The CAM weight is the identity on
the first 5 channels, so class k's map is feature channel k.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from camvideo import motion as mo
from camvideo.cam import cam_maps, minmax_normalize, peak_xy
from camvideo.errors import OptionError
from camvideo.options import DEFAULT_MARGIN, DEFAULT_RATIO, DEFAULT_TAU
from camvideo.smoothing import Smoother

C, K, GH, GW = 8, 5, 6, 16
FH, FW = GH * 8, GW * 8


def eye_weight() -> torch.Tensor:
    w = torch.zeros(K, C)
    w[torch.arange(K), torch.arange(K)] = 1.0
    return w


def texture(h: int, w: int, seed: int, tint=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """``(3, h, w)`` smooth random RGB texture in [0, 1] (blobs about 6 px wide)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 6 + 2, w // 6 + 2, generator=g)
    img = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)[0]
    return (img.clamp(0, 1) * torch.tensor(tint)[:, None, None]).clamp(0, 1)


def blob(cx: float, cy: float, sigma: float = 1.2) -> torch.Tensor:
    """``(GH, GW)`` Gaussian bump centred at cell ``(cx, cy)``."""
    ys, xs = torch.meshgrid(torch.arange(GH, dtype=torch.float32),
                            torch.arange(GW, dtype=torch.float32), indexing="ij")
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))


def features_of(maps0: torch.Tensor, base: float = 0.1) -> torch.Tensor:
    """``(N, C, GH, GW)`` features whose channel 0 is ``maps0`` (N, GH, GW), other
    channels a fixed pattern."""
    n = maps0.shape[0]
    g = torch.Generator().manual_seed(1)
    rest = torch.rand(1, C, GH, GW, generator=g).expand(n, -1, -1, -1).clone()
    rest[:, 0] = maps0 + base
    return rest


def logits_for(p: list[float]) -> torch.Tensor:
    """``(K,)`` logits whose softmax is ``p`` (padded with equal mass)."""
    p = list(p) + [max(1e-3, (1 - sum(p))) / (K - len(p))] * (K - len(p))
    return torch.log(torch.tensor(p, dtype=torch.float32))


def run(sm: Smoother, feats, logits, times, frames, batch: int = 4):
    """Push in batches, flush, and concatenate the results."""
    outs = [sm.push(feats[i:i + batch], logits[i:i + batch], times[i:i + batch],
                    frames[i:i + batch]) for i in range(0, len(times), batch)]
    outs.append(sm.flush())
    for o in outs:
        m = len(o.cut)
        assert o.maps.shape[0] == o.classes.shape[0] == o.probs.shape[0] == m
        assert o.maps.dtype == o.probs.dtype == torch.float32 and o.classes.dtype == torch.long
    return (torch.cat([o.maps for o in outs]), torch.cat([o.classes for o in outs]),
            torch.cat([o.probs for o in outs]), [c for o in outs for c in o.cut],
            [len(o.cut) for o in outs])


def static_clip(n: int, fps: float = 30.0):
    frames = texture(FH, FW, 0)[None].expand(n, -1, -1, -1)
    times = [i / fps for i in range(n)]
    return frames, times


def plain_cam(feats, logits, weight, fixed=None):
    classes = (torch.full((len(logits),), fixed) if fixed is not None
               else logits.argmax(dim=1))
    return minmax_normalize(cam_maps(feats, weight, classes)), classes


# ---------------------------------------------------------------------------- basics
def test_constant_input_stays_constant():
    n = 40
    frames, times = static_clip(n)
    feats = features_of(blob(5.0, 2.5)[None].expand(n, -1, -1))
    logits = logits_for([0.6, 0.2, 0.1])[None].expand(n, -1)
    maps, classes, probs, cuts, _ = run(Smoother(eye_weight()), feats, logits, times, frames)
    ref_maps, _ = plain_cam(feats[:1], logits[:1], eye_weight())
    assert torch.allclose(maps, ref_maps.expand(n, -1, -1), atol=1e-5)
    assert classes.tolist() == [0] * n
    assert torch.allclose(probs, torch.softmax(logits, dim=1), atol=1e-6)
    assert cuts == [True] + [False] * (n - 1)
    assert maps.min() >= 0 and maps.max() <= 1 and maps.dtype == torch.float32


def test_tau_zero_is_plain_per_frame_cam():
    g = torch.Generator().manual_seed(3)
    n = 12
    feats = torch.randn(n, C, GH, GW, generator=g)
    logits = torch.randn(n, K, generator=g) * 3
    frames, times = static_clip(n)
    w = torch.randn(K, C, generator=g)
    for mode in ("causal", "centered"):
        sm = Smoother(w, tau=0, mode=mode)
        assert sm.lag == 0
        maps, classes, probs, cuts, sizes = run(sm, feats, logits, times, frames)
        ref, ref_cls = plain_cam(feats, logits, w)
        assert torch.equal(classes, ref_cls)
        assert torch.allclose(maps, ref, atol=1e-6)
        assert torch.allclose(probs, torch.softmax(logits, dim=1))
        assert sizes == [4, 4, 4, 0]
    maps, classes, *_ = run(Smoother(w, tau=0, fixed_class=2), feats, logits, times, frames)
    ref, _ = plain_cam(feats, logits, w, fixed=2)
    assert classes.tolist() == [2] * n and torch.allclose(maps, ref, atol=1e-6)


# ---------------------------------------------------------------------- time constant
def _step_times(kind: str) -> list[float]:
    if kind == "irregular":
        rng = np.random.default_rng(7)
        gaps = rng.choice([1 / 60, 1 / 30, 1 / 24, 1 / 15, 1 / 10], size=200)
        return [0.0] + np.cumsum(gaps).tolist()
    fps = float(kind)
    return [i / fps for i in range(int(4 * fps))]


@pytest.mark.parametrize("kind", ["15", "30", "60", "irregular"])
def test_step_follows_time_constant_at_any_frame_rate(kind):
    tau = 0.4
    times = _step_times(kind)
    n = len(times)
    s = next(i for i, t in enumerate(times) if t >= 2.0)     # the step: well after warm-up
    p0, p1 = logits_for([0.7, 0.1]), logits_for([0.1, 0.7])
    logits = torch.stack([p0 if i < s else p1 for i in range(n)])
    feats = features_of(torch.stack([blob(4, 2.5) if i < s else blob(11, 2.5)
                                     for i in range(n)]))
    frames = texture(FH, FW, 0)[None].expand(n, -1, -1, -1)
    sm = Smoother(eye_weight(), tau=tau)
    states = []
    probs = []
    for i in range(n):      # one frame at a time to read the feature state
        out = sm.push(feats[i:i + 1], logits[i:i + 1], times[i:i + 1], frames[i:i + 1])
        states.append(sm.state[0, 0].clone())
        probs.append(out.probs[0])
    q0, q1 = torch.softmax(p0, 0)[0], torch.softmax(p1, 0)[0]
    f0, f1 = feats[0, 0], feats[-1, 0]
    onset = times[s - 1]    # the new value is taken to hold since the previous frame
    checked_tau = False
    for i in range(s, n):
        expect = 1 - math.exp(-(times[i] - onset) / tau)
        resp_p = float((probs[i][0] - q0) / (q1 - q0))
        resp_f = float(((states[i] - f0) * (f1 - f0)).sum() / ((f1 - f0) ** 2).sum())
        assert resp_p == pytest.approx(expect, abs=1e-4), (kind, i)
        assert resp_f == pytest.approx(expect, abs=1e-4), (kind, i)
        if abs(times[i] - onset - tau) < 1e-9:
            assert resp_p == pytest.approx(1 - 1 / math.e, abs=1e-4)
            checked_tau = True
    assert checked_tau or kind == "irregular"


# ----------------------------------------------------------------------------- cuts
def _two_shots(n1: int = 12, n2: int = 8):
    n = n1 + n2
    shot1 = texture(FH, FW, 1, tint=(1.0, 0.55, 0.3))      # warm, orange-ish
    shot2 = texture(FH, FW, 2, tint=(0.25, 0.6, 1.0))      # cold, blue-ish
    frames = torch.stack([shot1 if i < n1 else shot2 for i in range(n)])
    feats = features_of(torch.stack([blob(3, 2) if i < n1 else blob(12, 4) for i in range(n)]))
    feats[n1:, 1:] = feats[n1:, 1:].flip(1)               # different content, too
    logits = torch.stack([logits_for([0.6, 0.2]) if i < n1 else logits_for([0.1, 0.2, 0.6])
                          for i in range(n)])
    return feats, logits, [i / 30 for i in range(n)], frames


def test_first_frame_after_cut_is_unsmoothed():
    feats, logits, times, frames = _two_shots()
    maps, classes, probs, cuts, _ = run(Smoother(eye_weight()), feats, logits, times, frames)
    assert cuts == [True] + [False] * 11 + [True] + [False] * 7
    ref, ref_cls = plain_cam(feats, logits, eye_weight())
    assert torch.allclose(maps[12], ref[12], atol=1e-6)
    assert classes[12] == ref_cls[12] == 2
    assert torch.allclose(probs[12], torch.softmax(logits[12], 0), atol=1e-6)


def test_cut_reset_false_keeps_state():
    feats, logits, times, frames = _two_shots()
    maps, classes, probs, cuts, _ = run(Smoother(eye_weight(), cut_reset=False),
                                        feats, logits, times, frames)
    assert cuts == [True] + [False] * 19
    assert probs[12, 0] > 0.4                    # still mostly the first shot's class
    assert classes[12] == 0
    ref, _ = plain_cam(feats, logits, eye_weight())
    assert not torch.allclose(maps[12], ref[12], atol=1e-2)


@pytest.mark.parametrize("cut_reset", [True, False])
def test_a_frame_marked_as_a_start_resets_as_at_a_cut(cut_reset):
    """A live source back after a gap marks its first frame (``Frame.cut``): the
    smoother starts afresh there though the picture is the same (one shot throughout,
    and not one detected cut), also with ``cut_reset`` off."""
    n = 16
    frames, times = static_clip(n)
    feats = features_of(torch.stack([blob(3, 2) if i < 8 else blob(12, 4) for i in range(n)]))
    logits = torch.stack([logits_for([0.6, 0.2]) if i < 8 else logits_for([0.1, 0.2, 0.6])
                          for i in range(n)])
    starts = [i == 8 for i in range(n)]
    sm = Smoother(eye_weight(), cut_reset=cut_reset)
    outs = [sm.push(feats[i:i + 4], logits[i:i + 4], times[i:i + 4], frames[i:i + 4],
                    starts=starts[i:i + 4]) for i in range(0, n, 4)]
    cuts = [c for o in outs for c in o.cut]
    maps = torch.cat([o.maps for o in outs])
    assert cuts == [True] + [False] * 7 + [True] + [False] * 7
    ref, ref_cls = plain_cam(feats, logits, eye_weight())
    assert torch.allclose(maps[8], ref[8], atol=1e-6)            # unsmoothed
    assert torch.cat([o.classes for o in outs])[8] == ref_cls[8] == 2
    unmarked = Smoother(eye_weight(), cut_reset=cut_reset)        # control: no start
    maps_u = torch.cat([unmarked.push(feats[i:i + 4], logits[i:i + 4], times[i:i + 4],
                                      frames[i:i + 4]).maps for i in range(0, n, 4)])
    assert not torch.allclose(maps_u[8], ref[8], atol=1e-2)


def test_reset_starts_a_new_stream():
    feats, logits, times, frames = _two_shots(12, 4)
    sm = Smoother(eye_weight())
    sm.push(feats[:8], logits[:8], times[:8], frames[:8])
    sm.reset()
    out = sm.push(feats[8:10], logits[8:10], times[8:10], frames[8:10])
    ref, _ = plain_cam(feats[8:9], logits[8:9], eye_weight())
    assert out.cut == [True, False] and torch.allclose(out.maps[0], ref[0], atol=1e-6)


# ----------------------------------------------------------------------- hysteresis
def test_hysteresis_keeps_class_through_a_dip_then_switches():
    n = 60
    frames, times = static_clip(n)
    feats = features_of(blob(5, 2.5)[None].expand(n, -1, -1))
    close, dip, other = logits_for([0.40, 0.35]), logits_for([0.05, 0.9]), \
        logits_for([0.1, 0.8])
    seq = [close] * 20 + [dip] + [close] * 14 + [other] * 25
    logits = torch.stack(seq)

    def switches(classes):
        return sum(int(a != b) for a, b in zip(classes[:-1], classes[1:]))

    _, greedy, *_ = run(Smoother(eye_weight(), switch_margin=0.0), feats, logits, times,
                        frames)
    _, held, probs, *_ = run(Smoother(eye_weight()), feats, logits, times, frames)
    greedy, held = greedy.tolist(), held.tolist()
    assert probs[20, 1] > probs[20, 0]            # the dip does overtake class 0 ...
    assert probs[20, 1] - probs[20, 0] < DEFAULT_MARGIN
    assert greedy[20] == 1 and switches(greedy[:35]) == 2   # ... and flips a greedy pick
    assert held[:35] == [0] * 35                  # but not the default's
    assert held[-1] == 1 and switches(held) == 1  # a lasting lead wins, once
    first = held.index(1)
    assert 35 < first <= 35 + round(30 * DEFAULT_TAU)   # within about one time constant


def test_trailing_class_gives_way_after_hold():
    n = 90
    frames, times = static_clip(n)
    feats = features_of(blob(5, 2.5)[None].expand(n, -1, -1))
    logits = torch.stack([logits_for([0.40, 0.36])] * 30 + [logits_for([0.36, 0.40])] * 60)
    _, classes, probs, *_ = run(Smoother(eye_weight(), switch_hold=1.0), feats, logits,
                                times, frames)
    classes = classes.tolist()
    assert float((probs[:, 1] - probs[:, 0]).max()) < DEFAULT_MARGIN   # never by the margin
    behind = next(i for i in range(30, n) if probs[i, 1] > probs[i, 0])
    assert classes[behind:behind + 29] == [0] * 29        # kept for the hold ...
    assert classes[behind + 31:] == [1] * (n - behind - 31)   # ... then gives way


def test_a_class_twice_as_probable_takes_over_without_the_margin():
    """Real footage's top-1 is often a few per cent: the absolute margin is never reached,
    and without the ratio the shown class would trail for the whole hold."""
    n, k = 90, 40                                     # ImageNet-like: many small classes
    frames, times = static_clip(n)
    feats = features_of(blob(5, 2.5)[None].expand(n, -1, -1))
    weight = torch.zeros(k, C)
    weight[torch.arange(K), torch.arange(K)] = 1.0

    def low(p0: float, p1: float) -> torch.Tensor:
        rest = (1 - p0 - p1) / (k - 2)                # ~0.024 each: below the leader
        return torch.log(torch.tensor([p0, p1] + [rest] * (k - 2)))

    logits = torch.stack([low(0.06, 0.03)] * 30 + [low(0.015, 0.07)] * 60)
    _, fast, probs, *_ = run(Smoother(weight), feats, logits, times, frames)
    _, slow, *_ = run(Smoother(weight, switch_ratio=0), feats, logits, times, frames)
    fast, slow = fast.tolist(), slow.tolist()
    assert float((probs[:, 1] - probs[:, 0]).max()) < DEFAULT_MARGIN   # never by the margin
    assert set(probs.argmax(dim=1).tolist()) == {0, 1}
    twice = next(i for i in range(30, n) if probs[i, 1] > DEFAULT_RATIO * probs[i, 0])
    assert fast[:twice] == [0] * twice and fast[twice:] == [1] * (n - twice)
    behind = next(i for i in range(30, n) if probs[i, 1] > probs[i, 0])
    assert twice < behind + 10                        # a third of the hold
    assert slow[:behind + 29] == [0] * (behind + 29)  # ratio off: the whole hold
    assert slow[-1] == 1


def test_fixed_class_overrides_selection():
    feats, logits, times, frames = _two_shots()
    feats[:, 4] = blob(13, 1)                 # class 4's map: its own peak, far from 0's
    maps, classes, *_ = run(Smoother(eye_weight(), fixed_class=4), feats, logits, times,
                            frames)
    assert classes.tolist() == [4] * len(times)
    peaks = peak_xy(maps).tolist()
    assert peaks == [[13, 1]] * len(times)    # the map drawn is class 4's too


# ------------------------------------------------------------------ drawn range
def test_drawn_range_is_averaged_over_time_not_per_frame():
    """The drawn map is ``(M - lo) / (hi - lo)`` with the range averaged over time: when
    the map's peak drops, the drawn peak dims and then recovers (per-frame min-max
    would keep it at 1); when it rises, ``hi`` follows at once (no plateau above 1)."""
    n, drop, rise = 90, 30, 60
    frames, times = static_clip(n)
    amp = [3.0 if i < drop else 1.0 if i < rise else 3.0 for i in range(n)]
    feats = features_of(torch.stack([blob(5, 2.5) * a for a in amp]))
    logits = logits_for([0.8])[None].expand(n, -1)
    maps, classes, *_ = run(Smoother(eye_weight()), feats, logits, times, frames)
    peak = maps.amax(dim=(1, 2))
    assert classes.tolist() == [0] * n and float(maps.max()) <= 1.0
    assert torch.allclose(peak[:drop], torch.ones(drop))
    dims = peak[drop:drop + 10]
    assert (dims[1:] < dims[:-1]).all() and dims[-1] < 0.75      # dims with the drop ...
    assert peak[rise - 1] > dims[-1] + 0.1                        # ... then recovers
    assert torch.allclose(peak[rise + 1:], torch.ones(n - rise - 1))


# ------------------------------------------------------------------------ motion
def _moving_clip(n: int = 24, speed: float = 0.5):
    """A camera pan: the texture and the feature blob move right by ``speed`` cells per
    frame (``8 * speed`` px), the blob from x=2 to x=2 + speed * (n - 1)."""
    big = texture(FH, FW + 8 * GW, 5)
    px = [round(8 * speed * i) for i in range(n)]
    frames = torch.stack([big[:, :, FW + 8 * GW - FW - p: FW + 8 * GW - p] for p in px])
    xs = [2 + p / 8 for p in px]
    feats = features_of(torch.stack([blob(x, 2.5, sigma=2.0) * 3 for x in xs]))
    logits = logits_for([0.8])[None].expand(n, -1)
    return feats, logits, [i / 30 for i in range(n)], frames, xs


def test_motion_compensation_keeps_the_peak_on_a_moving_blob():
    feats, logits, times, frames, xs = _moving_clip()
    maps_m, _, _, cuts, _ = run(Smoother(eye_weight(), motion=True), feats, logits, times,
                                frames)
    maps_p, *_ = run(Smoother(eye_weight(), motion=False), feats, logits, times, frames)
    assert cuts == [True] + [False] * (len(times) - 1)    # a pan is not a cut
    peak_m, peak_p = peak_xy(maps_m)[:, 0].float(), peak_xy(maps_p)[:, 0].float()
    truth = torch.tensor(xs)
    late = slice(12, None)
    assert (peak_m[late] - truth[late]).abs().max() <= 0.5 + 1e-6   # on the blob
    assert (truth[late] - peak_p[late]).min() >= 1.5                # plain average lags
    # at the blob's current position the compensated map is near its top, the plain one not
    x = round(xs[-1])
    assert float(maps_m[-1, 2:4, x].min()) > 0.9
    assert float(maps_p[-1, 2:4, x].max()) < 0.8


def test_centered_mode_is_motion_compensated_both_ways():
    feats, logits, times, frames, xs = _moving_clip()
    sm = Smoother(eye_weight(), mode="centered")
    maps_c, *_ = run(sm, feats, logits, times, frames)
    maps_p, *_ = run(Smoother(eye_weight(), mode="centered", motion=False), feats, logits,
                     times, frames)
    peak_c, peak_p = peak_xy(maps_c)[:, 0].float(), peak_xy(maps_p)[:, 0].float()
    truth = torch.tensor(xs)
    assert (peak_c[4:] - truth[4:]).abs().max() <= 0.5 + 1e-6
    assert (peak_p[4:] - truth[4:]).abs().max() >= 1     # the look-ahead alone blurs it


# ---------------------------------------------------------------------- centered
def test_centered_mode_lag_order_and_flush():
    feats, logits, times, frames = _two_shots(14, 11)
    sm = Smoother(eye_weight(), mode="centered", lookahead=6)
    assert sm.lag == 6
    maps, classes, probs, cuts, sizes = run(sm, feats, logits, times, frames, batch=4)
    assert len(cuts) == len(times) == 25
    assert sizes == [0, 2, 4, 4, 4, 4, 1, 6]                  # 6 frames held until flush
    assert cuts == [True] + [False] * 13 + [True] + [False] * 10
    assert maps.shape == (25, GH, GW) and probs.shape == (25, K)


def test_centered_step_is_symmetric():
    n, s, tau = 70, 35, DEFAULT_TAU
    frames, times = static_clip(n)
    feats = features_of(blob(5, 2.5)[None].expand(n, -1, -1))
    p0, p1 = logits_for([0.7, 0.1]), logits_for([0.1, 0.7])
    logits = torch.stack([p0 if i < s else p1 for i in range(n)])
    sm = Smoother(eye_weight(), mode="centered")
    _, _, probs, *_ = run(sm, feats, logits, times, frames)
    q0, q1 = torch.softmax(p0, 0)[0], torch.softmax(p1, 0)[0]
    r = ((probs[:, 0] - q0) / (q1 - q0)).tolist()
    a = 1 - math.exp(-1 / 30 / tau)
    for k in range(sm.lag):
        assert r[s + k] == pytest.approx(1 - 0.5 * (1 - a) ** (k + 1), abs=1e-4)
        assert r[s + k] + r[s - 1 - k] == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------------- options
@pytest.mark.parametrize("kwargs", [
    dict(tau=-0.1), dict(tau=float("nan")), dict(tau=float("inf")),
    dict(switch_margin=1.0), dict(switch_margin=-0.01), dict(mode="bidirectional"),
    dict(fixed_class=K), dict(fixed_class=-1), dict(switch_hold=0), dict(lookahead=0),
    dict(cut_threshold=0.0), dict(motion_method="magic"), dict(switch_ratio=1.0),
    dict(switch_ratio=-2.0),
])
def test_bad_options_raise_option_error(kwargs):
    with pytest.raises(OptionError) as e:
        Smoother(eye_weight(), **kwargs)
    assert "\n" not in str(e.value) and str(e.value)


def test_defaults_are_on():
    sm = Smoother(eye_weight())
    assert sm.tau == DEFAULT_TAU == 0.3 and sm.motion and sm.cut_reset and sm.lag == 0


@pytest.mark.cuda
def test_cuda_matches_cpu_and_stays_on_the_device():
    feats, logits, times, frames, _ = _moving_clip()
    cpu = run(Smoother(eye_weight()), feats, logits, times, frames)
    dev = torch.device("cuda")
    gpu = run(Smoother(eye_weight().to(dev)), feats.to(dev), logits.to(dev), times,
              frames.to(dev))
    assert gpu[0].device.type == gpu[1].device.type == gpu[2].device.type == "cuda"
    assert torch.equal(gpu[1].cpu(), cpu[1]) and gpu[3] == cpu[3]
    assert torch.allclose(gpu[0].cpu(), cpu[0], atol=2e-2)
    assert torch.allclose(gpu[2].cpu(), cpu[2], atol=1e-5)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed view"])
@pytest.mark.parametrize("hw", [(224, 384), (230, 390)])
def test_downsample_is_an_area_average(hw, layout):
    x = torch.rand(3, 3, *hw)
    if layout == "channels_last":  # what the pipeline passes
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed view":
        x = torch.rand(3, 3, hw[1], hw[0]).transpose(2, 3)
    assert x.is_contiguous() == (layout == "contiguous")
    got = mo.downsample(x, (7, 12))
    assert got.shape == (3, 3, 56, 96)
    assert torch.allclose(got, F.interpolate(x.contiguous(), size=(56, 96), mode="area"),
                          atol=1e-6)
    if hw == (224, 384):  # 4x4 blocks: the mean of each
        assert torch.allclose(got[0, 0, 0, 0], x[0, 0, :4, :4].mean(), atol=1e-6)


# ---------------------------------------------------------------------------- GPU-ready
class _HostSyncs(torch.overrides.TorchFunctionMode):
    """Counts the tensor calls that make a GPU wait for the host (a value read back:
    ``item``, ``tolist``, ``bool``/``int``/``float`` of a tensor, ``cpu``, ``numpy``)."""

    SYNCS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "cpu",
             "numpy", "nonzero"}

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.SYNCS:
            self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("mode", ["causal", "centered"])
def test_the_smoother_reads_nothing_back_per_frame(mode):
    """In the steady state a batch costs the same few host reads whatever its length
    (the cut flags, the motion's small frames for the CPU optical flow): none per frame,
    so on a GPU the smoother never waits frame by frame. The same check as
    ``torch.cuda.set_sync_debug_mode`` (tests/test_cuda.py), here on the CPU."""
    frames, times = static_clip(40)
    n0 = torch.linspace(0, 1, 40)[:, None, None] * blob(4, 3)
    feats, logits = features_of(n0), torch.stack([logits_for([0.5, 0.3])] * 40)
    counts = {}
    for batch in (2, 8):
        sm = Smoother(eye_weight(), mode=mode)
        sm.push(feats[:8], logits[:8], times[:8], frames[:8])  # past the warm-up
        with _HostSyncs() as spy:
            sm.push(feats[8:8 + batch], logits[8:8 + batch], times[8:8 + batch],
                    frames[8:8 + batch])
        counts[batch] = spy.count
    assert counts[2] == counts[8] <= 4, counts


def test_batched_samplings_equal_per_frame_ones_and_grid_sample():
    g = torch.Generator().manual_seed(0)
    d = torch.randn(3, GH, GW, 2, generator=g) * 2
    mats, valid = mo.samplings(d)
    state = torch.randn(1, 5, GH, GW, generator=g)
    for i in range(3):
        m, v = mo.sampling(d[i])
        assert torch.equal(m, mats[i]) and torch.equal(v, valid[i])
        xs = (torch.arange(GW)[None, :] + d[i, ..., 0] + 0.5) / GW * 2 - 1
        ys = (torch.arange(GH)[:, None] + d[i, ..., 1] + 0.5) / GH * 2 - 1
        ref = F.grid_sample(state, torch.stack((xs, ys), -1)[None], mode="bilinear",
                            padding_mode="border", align_corners=False)
        assert (mo.warp(state, mats[i]) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("zoom", [1.05, 1 / 1.05])
def test_motion_follows_zoom_as_the_flow_divergence(zoom):
    """A zoom about a point off centre (a real photo, 5 % per frame, in and out): the
    per-cell displacement is the zoom's field ``d(p) = (p - c) (1/s - 1)``, not one
    translation (what phase correlation gives)."""
    import cv2
    from camvideo.testing import synth
    grid = (7, 12)
    img = cv2.resize(synth.load_photo("china"), (384, 256))[:224]
    cx, cy = 230.0, 100.0                                      # fixed point, pixels
    m = np.float32([[zoom, 0, (1 - zoom) * cx], [0, zoom, (1 - zoom) * cy]])
    cur = cv2.warpAffine(img, m, (384, 224), borderMode=cv2.BORDER_REFLECT)

    def small(a):
        t = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
        return mo.gray_u8(mo.downsample(t, grid))[0]

    px, py = 384 / 12, 224 / 7                                 # pixels per cell
    gx, gy = np.meshgrid((np.arange(12) + 0.5) * px, (np.arange(7) + 0.5) * py)
    want = np.stack(((gx - cx) * (1 / zoom - 1) / px, (gy - cy) * (1 / zoom - 1) / py), -1)
    inner = (slice(1, -1), slice(1, -1))                       # border cells see the edge
    errs = {}
    for method in ("dis", "phase"):
        got = mo.MotionEstimator(method).estimate(small(img), small(cur), grid)
        errs[method] = float(np.abs(got[inner] - want[inner]).mean())
        if method == "dis":
            # the field diverges (zoom in) or converges (out): dx grows with x at 1/s - 1
            slope = np.polyfit(gx[inner].ravel(), got[inner][..., 0].ravel(), 1)[0] * px
            assert abs(slope - (1 / zoom - 1)) < 0.02, slope
    assert errs["dis"] < 0.06, errs
    assert errs["phase"] > 1.5 * errs["dis"], errs  # one translation cannot follow a zoom
