"""Tracked boxes (camvideo.tracks, ``--tracks``): stable IDs, cuts, motion-aided
association; the MOT file scored with motmetrics against the pair clip's ground truth."""
from __future__ import annotations

import json

import numpy as np
import pytest

from camvideo.options import ClassResult, FrameResult
from camvideo.runtime.sinks import TracksSink
from camvideo.tracks import BoxTracker, iou


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_stable_ids_class_changes_and_cuts():
    tr = BoxTracker(max_age=0.5)
    ids = []
    for k in range(30):        # two boxes drifting towards each other, 2 px a frame
        a, b = (10 + 2 * k, 10, 90 + 2 * k, 90), (200 - 2 * k, 20, 280 - 2 * k, 100)
        cls = [1, 2] if k < 15 else [3, 2]          # the left box's class changes
        ids.append(tr.update([a, b], cls, k / 30))
    assert ids == [[1, 2]] * 30                      # same objects: same IDs throughout
    # a scene cut ends every track: the same boxes get new IDs
    assert tr.update([(68, 10, 148, 90), (142, 20, 222, 100)], [3, 2], 1.0,
                     cut=True) == [3, 4]
    # a box missing for less than max_age keeps its ID, for longer it gets a new one
    assert tr.update([(68, 10, 148, 90), None], [3, 2], 1.2) == [3, None]
    assert tr.update([(68, 10, 148, 90), (142, 20, 222, 100)], [3, 2], 1.4) == [3, 4]
    assert tr.update([(68, 10, 148, 90)], [3], 1.8) == [3]     # 4: gone since 1.4 s
    assert tr.update([(68, 10, 148, 90), (142, 20, 222, 100)], [3, 2], 2.0) == [3, 5]
    assert tr.active == 2


def test_the_image_motion_carries_a_box_that_jumped():
    """A box that moved 100 px between two frames (a fast pan) overlaps nothing of its
    last position; the smoother's displacement field, which says the content moved by
    100 px, carries the track to it."""
    size = (320, 160)                                  # 10x5 cells of 32 px
    a0, a1 = (20, 40, 100, 120), (120, 40, 200, 120)
    assert iou(a0, a1) == 0.0
    disp = np.zeros((5, 10, 2), np.float32)
    disp[..., 0] = -100 / 32                           # content came from 100 px left
    plain, moved = BoxTracker(), BoxTracker()
    assert plain.update([a0], [7], 0.0) == moved.update([a0], [7], 0.0) == [1]
    assert plain.update([a1], [7], 1 / 30, motion=None) == [2]
    assert moved.update([a1], [7], 1 / 30, motion=disp, size=size) == [1]


def result(index: int, classes: list[ClassResult]) -> FrameResult:
    return FrameResult(index=index, time=index / 30, pts=index, cls=classes[0].cls,
                       label=classes[0].label, score=classes[0].score, topk=[], probs=None,
                       map=None, peak=(0, 0), bbox=None, classes=classes)


def test_tracks_sink_mot_rows_and_json(tmp_path):
    frames = [result(i, [ClassResult(281, "tabby", 0.5, None, (5, 5), (i, 10, i + 20, 40), 1, 0),
                         ClassResult(968, "cup", 0.25, None, (50, 5), (60, 0, 90, 30), 2, 1)])
              for i in range(3)]
    frames.append(result(3, [ClassResult(281, "tabby", 0.5, None, (5, 5), None, None, 0)]))
    for name in ("t.txt", "t.json"):
        sink = TracksSink(tmp_path / name)
        for r in frames:
            sink.write(r)
        assert not (tmp_path / name).exists()         # placed only when closed
        sink.close()
    rows = (tmp_path / "t.txt").read_text().splitlines()
    assert rows[:2] == ["1,1,1,11,20,30,0.500000,-1,-1,-1", "1,2,61,1,30,30,0.250000,-1,-1,-1"]
    assert len(rows) == 6                              # the box-less frame has no row
    doc = json.loads((tmp_path / "t.json").read_text())
    assert [(t["id"], t["label"], t["start"], t["end"]) for t in doc["tracks"]] == \
        [(1, "tabby", 0, 2), (2, "cup", 0, 2)]
    assert doc["tracks"][0]["boxes"][1] == [1, pytest.approx(1 / 30, abs=1e-6), 1, 10, 20,
                                            30, 0.5]
    sink = TracksSink(tmp_path / "gone.txt")
    sink.write(frames[0])
    sink.abort()
    assert list(tmp_path.glob("*gone*")) == []


def _iou_distances(gt: np.ndarray, hyp: np.ndarray, max_iou: float = 0.5) -> np.ndarray:
    """motmetrics' ``iou_matrix`` (1 - IoU, NaN where IoU < ``max_iou``) for ``(x, y, w,
    h)`` rows; motmetrics 1.4's own calls ``np.asfarray``, gone in NumPy 2."""
    g, h = gt[:, None, :], hyp[None, :, :]
    ix = np.clip(np.minimum(g[..., 0] + g[..., 2], h[..., 0] + h[..., 2])
                 - np.maximum(g[..., 0], h[..., 0]), 0, None)
    iy = np.clip(np.minimum(g[..., 1] + g[..., 3], h[..., 1] + h[..., 3])
                 - np.maximum(g[..., 1], h[..., 1]), 0, None)
    inter = ix * iy
    d = 1.0 - inter / (g[..., 2] * g[..., 3] + h[..., 2] * h[..., 3] - inter)
    return np.where(d > max_iou, np.nan, d)


def test_mot_file_scores_with_motmetrics(pair_clip, pair_run):
    mm = pytest.importorskip("motmetrics")
    hyp = mm.io.loadtxt(str(pair_run["mot"]), fmt="mot15-2D")   # as MOTChallenge files
    frames = set(hyp.index.get_level_values("FrameId"))
    assert frames == set(range(1, pair_clip.frames + 1))
    acc = mm.MOTAccumulator(auto_id=True)
    for f, gts in enumerate(pair_clip.objects):
        gt = np.array([[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in gts], float)
        rows = hyp.loc[f + 1]
        acc.update([1, 2], rows.index.tolist(),
                   _iou_distances(gt, rows[["X", "Y", "Width", "Height"]].to_numpy(float)))
    m = mm.metrics.create().compute(acc, metrics=["mota", "num_switches", "idf1"],
                                    name="pair")
    mota, switches = float(m["mota"].iloc[0]), int(m["num_switches"].iloc[0])
    assert mota >= 0.8, m
    assert switches <= 2, m                                # ≤ 1 per object
