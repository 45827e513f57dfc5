"""Several classes at once (camvideo.multiclass, ``--classes``): the distinct-object choice,
per-class hysteresis and ranges, and on a clip of two real photos side by side, one
class's peak on each object."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import camvideo
from camvideo.errors import OptionError
from camvideo.multiclass import (OVERLAP_MAX, MultiClass, class_box, class_peak, distinct,
                                 region_iou, regions)
from camvideo.options import Options
from camvideo.testing.synth import one_peak_on_each


def blob(cx: float, cy: float, h: int = 4, w: int = 8, sigma: float = 0.8) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                          torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma ** 2))


#: six classes' raw maps on a 4x8 grid: 0, 1, 2 on the left object (synonyms), 3 and 4 on
#: the right one, 5 in between
MAPS = torch.stack([blob(1.5, 1.5), blob(1.7, 1.4), blob(1.4, 1.8), blob(6.0, 2.0),
                    blob(6.2, 1.8), blob(4.0, 3.0)])


def maps_of(classes: torch.Tensor) -> torch.Tensor:
    return MAPS[classes]


def probs(*p: float) -> torch.Tensor:
    return torch.tensor(p, dtype=torch.float32)


def test_regions_and_their_overlap():
    reg = regions(MAPS)
    iou = region_iou(reg, reg)
    assert iou.shape == (6, 6) and torch.allclose(iou.diagonal(), torch.ones(6))
    assert iou[0, 1] > OVERLAP_MAX and iou[3, 4] > OVERLAP_MAX   # synonyms: one object
    assert iou[0, 3] == 0 and iou[1, 4] == 0           # the two objects: disjoint
    assert region_iou(torch.zeros(1, 2, 2, dtype=torch.bool),
                      torch.zeros(1, 2, 2, dtype=torch.bool)).item() == 0.0


def test_distinct_skips_synonyms_that_plain_top_n_takes():
    p = probs(0.30, 0.25, 0.20, 0.10, 0.08, 0.07)
    assert distinct(p, maps_of, 2) == [0, 3]
    assert distinct(p, maps_of, 3) == [0, 3, 5]
    assert distinct(p, maps_of, 2, overlap=1.0) == [0, 1]     # plain top-2
    assert distinct(p, maps_of, 6) == [0, 3, 5]               # only 3 distinct objects
    assert distinct(probs(0.1, 0.1, 0.1, 0.5, 0.1, 0.1), maps_of, 1) == [3]


def step(mc: MultiClass, p: torch.Tensor, t: float, cut: bool = False) -> list[int]:
    return mc.step(p, maps_of, t, cut).classes


def test_hysteresis_per_shown_class():
    mc = MultiClass(2, tau=0.3, margin=0.1, hold=1.0)
    base = probs(0.30, 0.05, 0.05, 0.20, 0.15, 0.05)
    assert step(mc, base, 0.0, cut=True) == [0, 3]
    for k in range(1, 10):                                    # warm-up, then steady
        assert step(mc, base, k / 30) == [0, 3]
    # class 4 (same object as 3) becomes the more probable by less than the margin: the
    # slot keeps 3 until 3 has been out of the distinct set for the hold (1 s)
    near = probs(0.30, 0.05, 0.05, 0.15, 0.20, 0.05)
    t0 = 10 / 30
    got = [(k, step(mc, near, t0 + k / 30)) for k in range(0, 40)]
    first = next(k for k, c in got if c != [0, 3])
    assert got[first][1] == [0, 4]                            # same slot: same colour
    assert 29 <= first <= 31, first                           # after 1 s
    # a newcomer leading by more than the margin takes the slot of the class that left
    # the distinct set at once (4: now the least probable); 0 stays in its slot
    far = probs(0.30, 0.05, 0.05, 0.01, 0.01, 0.40)
    assert step(mc, far, 2.0) == [0, 5]
    # a cut starts over: the slots follow the distinct set at once
    assert step(mc, base, 3.0, cut=True) == [0, 3]


def test_a_newcomer_twice_as_probable_takes_a_slot_without_the_margin():
    low = probs(0.05, 0.01, 0.01, 0.04, 0.01, 0.01)
    new = probs(0.05, 0.01, 0.01, 0.012, 0.01, 0.03)   # 5 leads 3 by 0.018: 2.5x
    for ratio, want in ((2.0, [0, 5]), (0.0, [0, 3])):
        mc = MultiClass(2, tau=0.3, margin=0.1, hold=1.0, ratio=ratio)
        for k in range(12):
            assert step(mc, low, k / 30, cut=k == 0) == [0, 3]
        assert step(mc, new, 12 / 30) == want          # at once, or not before the hold
    with pytest.raises(OptionError):
        MultiClass(2, ratio=1.0)


def test_slots_keep_their_colour_and_fixed_classes():
    mc = MultiClass(2, tau=0.0)
    shown = mc.step(probs(0.3, 0.0, 0.0, 0.2, 0.0, 0.1), maps_of, 0.0, True)
    assert (shown.classes, shown.slots, shown.primary) == ([0, 3], [0, 1], 0)
    # 3 becomes the more probable: it stays in slot 1 (colour), primary moves to it
    shown = mc.step(probs(0.2, 0.0, 0.0, 0.3, 0.0, 0.1), maps_of, 1 / 30, False)
    assert (shown.classes, shown.slots, shown.primary) == ([0, 3], [0, 1], 1)
    fixed = MultiClass(fixed=[4, 1], tau=0.3)
    for t in range(5):
        s = fixed.step(probs(0.3, 0.1, 0.1, 0.2, 0.1, 0.2), maps_of, t / 30, t == 0)
        assert (s.classes, s.slots) == ([4, 1], [0, 1])
    with pytest.raises(OptionError):
        MultiClass()
    with pytest.raises(OptionError):
        MultiClass(2, fixed=[1, 2])


def test_each_map_is_normalised_against_its_own_smoothed_range():
    maps = MAPS.clone()
    mc = MultiClass(fixed=[0, 3], tau=0.3)
    p = probs(0.3, 0.1, 0.1, 0.2, 0.1, 0.2)
    first = mc.step(p, lambda c: maps[c], 0.0, True)
    # the first frame: each map min-max normalised on its own
    for j, c in enumerate([0, 3]):
        m = maps[c]
        assert torch.allclose(first.maps[j], (m - m.min()) / (m.max() - m.min()), atol=1e-6)
    # class 3's map halves (its maximum drops): its smoothed range keeps the old
    # maximum for a while, so its drawn map dims instead of jumping back to 1; class 0's
    # range (unchanged) keeps its map as it was
    maps[3] = maps[3] * 0.5
    nxt = mc.step(p, lambda c: maps[c], 1 / 30, False)
    assert torch.allclose(nxt.maps[0], first.maps[0], atol=1e-6)
    assert 0.5 < float(nxt.maps[1].max()) < 0.6   # 0.5 / lerp(1, 0.5, 1 - exp(-1/9))
    # without smoothing (tau 0) it is plain min-max normalisation, frame by frame
    plain = MultiClass(fixed=[0, 3], tau=0.0)
    plain.step(p, lambda c: MAPS[c], 0.0, True)
    again = plain.step(p, lambda c: maps[c], 1 / 30, False)
    assert torch.allclose(again.maps[1].max(), torch.tensor(1.0))


def test_peak_and_box_in_frame_pixels():
    cam = np.zeros((4, 8), np.float32)
    cam[1, 6] = 1.0
    assert class_peak(cam, (320, 160)) == (260, 60)   # the cell's centre, scaled
    cam = blob(6.0, 2.0).numpy()
    x0, y0, x1, y1 = class_box(cam, (320, 160), 0.5)
    assert 200 < x0 < 240 < 260 < x1 <= 320 and 40 < y0 < 80 < y1 <= 160
    assert class_box(np.full((4, 8), -1.0, np.float32), (320, 160), 0.5) is None


def test_options_and_flags_for_classes():
    assert Options(classes="3").classes == 3
    assert Options(classes="tabby, cup").classes == ("tabby", "cup")
    for bad, msg in [({"classes": "0"}, "1..7"), ({"classes": "a,,b"}, "commas"),
                     ({"classes": 2, "cls": "tabby"}, "exclude"),
                     ({"classes": 8}, "1..7"), ({"timeline": -1.0}, "timeline")]:
        with pytest.raises(OptionError, match=msg) as e:
            Options(**bad)
        assert e.value.option in ("classes", "timeline")


def test_unknown_or_repeated_class_names_are_refused(pan_clip, lite0):
    with pytest.raises(OptionError, match="twice"):
        camvideo.stream(pan_clip.path, lite0, classes=("tabby", "TABBY"))
    from camvideo.errors import ClassNameError

    with pytest.raises(ClassNameError, match="unknown class"):
        camvideo.stream(pan_clip.path, lite0, classes=("tabby", "no such thing"))


# ---------------------------------------------------------------------------------------
# two real photos side by side


def test_classes_2_puts_one_peak_on_each_object(pair_clip, pair_run):
    recs = [json.loads(line) for line in pair_run["json"].read_text().splitlines()]
    assert len(recs) == pair_clip.frames == len(pair_clip.objects)
    hits = 0
    for rec, boxes in zip(recs, pair_clip.objects):
        cls = rec["classes"]
        assert [set(c) for c in cls] == [{"class", "label", "score", "peak", "bbox",
                                          "track"}] * 2
        # the frame's own fields are the most probable shown class's
        best = max(cls, key=lambda c: c["score"])
        assert (rec["class"], rec["peak"], rec["bbox"]) == \
            (best["class"], best["peak"], best["bbox"])
        hits += one_peak_on_each([c["peak"] for c in cls], boxes)
    assert hits / len(recs) >= 0.9, hits


def test_the_distinct_choice_beats_plain_top_2(pair_clip, lite0):
    """The same smoothed results, two choices of two classes: by map overlap (the
    default) and plain top-2 (overlap allowed, ``overlap=1``). On the cat beside the cup
    the top-2 are often cat synonyms (Egyptian cat, tiger cat): both peaks on the cat."""
    distinct_hits = top2_hits = 0
    with camvideo.stream(pair_clip.path, lite0, precision="fp32") as results:
        for r, boxes in zip(results, pair_clip.objects):
            def maps(classes: torch.Tensor, r=r) -> torch.Tensor:
                return torch.from_numpy(r.map_for(classes.tolist(), normalize=False))

            p = torch.from_numpy(r.probs)
            for overlap, counter in ((0.2, "d"), (1.0, "t")):
                chosen = distinct(p, maps, 2, overlap=overlap)
                peaks = [class_peak(m, pair_clip.size) for m in r.map_for(chosen)]
                if counter == "d":
                    distinct_hits += one_peak_on_each(peaks, boxes)
                else:
                    top2_hits += one_peak_on_each(peaks, boxes)
    n = pair_clip.frames
    # measured here: 90 of 90 frames against 42 (the cup is second only now and then)
    assert distinct_hits / n >= 0.9 and top2_hits / n <= 0.6, (distinct_hits, top2_hits)


def test_stream_gives_the_shown_classes(pair_clip, lite0):
    with camvideo.stream(pair_clip.path, lite0, classes=2, duration=0.5,
                         tensors=False) as results:
        got = list(results)
    for r in got:
        assert len(r.classes) == 2 and [c.slot for c in r.classes] == [0, 1]
        for c in r.classes:
            assert c.map.shape == r.map.shape and 0 <= c.map.min() and c.map.max() <= 1
            assert c.score == pytest.approx(float(r.probs[c.cls]), abs=1e-6)
            assert c.track is not None and c.bbox is not None
        best = max(r.classes, key=lambda c: c.score)
        assert r.cls == best.cls and np.array_equal(r.map, best.map)
    assert {c.track for r in got for c in r.classes} == {1, 2}   # stable IDs


@pytest.mark.parametrize("flags, msg", [
    (["--classes", "0"], "1..7 classes"),
    (["--classes", "tabby,,cup"], "separated by commas"),
    (["--classes", "2", "--class", "tabby"], "--classes and --class exclude"),
    (["--timeline", "0.5"], "outside 1.0..600.0"),
])
def test_bad_classes_flags_are_one_line_exit_2(pan_clip, tmp_path, capsys, flags, msg):
    from camvideo.commands.main import main

    assert main([str(pan_clip.path), str(tmp_path / "o.mp4"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0], err


def test_live_records_several_classes_and_the_strip(pair_clip, lite0, tmp_path, monkeypatch):
    """``camvideo live --classes 2 --timeline -o FILE``: the live path draws the classes'
    colours, the legend and the strip too (the same engine)."""
    import av

    from camvideo.live.session import run_live
    from camvideo.render import PALETTE

    monkeypatch.setattr("camvideo.api.load_model", lambda *a, **k: lite0)
    out = tmp_path / "live.mp4"
    run_live(str(pair_clip.path), window="off", output=str(out), duration=1.0,
             classes=2, timeline=5.0, precision="fp32")
    with av.open(str(out)) as c:
        img = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][-1]
    h = img.shape[0]
    for slot in (0, 1):
        swatch = (np.abs(img[: h // 3].astype(int) - PALETTE[slot]) <= 40).all(axis=-1)
        assert swatch.sum() >= 20
    assert img[h - max(36, round(h / 7)):].mean() < img[: h // 2].mean()
