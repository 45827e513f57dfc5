"""CAM math: equality with torchcam's CAM on real models and photos, the paper's box."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torchcam.methods import CAM

from camvideo.testing import synth
from camvideo.cam import (BBOX_THRESHOLDS, PAPER_THRESHOLD, bbox_threshold, cam_maps,
                          logits_from_features, map_bbox, minmax_normalize, paper_bbox,
                          peak_xy)
from camvideo.errors import OptionError
from camvideo.model.registry import from_modules, load_model


def _frames(names=("chelsea", "coffee"), size=(288, 224)) -> torch.Tensor:
    import cv2
    return torch.from_numpy(np.stack([cv2.resize(synth.load_photo(n), size) for n in names]))


def _torchcam_maps(full: torch.nn.Module, target: str, fc: str, x: torch.Tensor,
                   classes: list[int]) -> torch.Tensor:
    with CAM(full, target_layer=target, fc_layer=fc) as extractor:
        scores = full(x)
        maps = extractor(classes, scores)[0]
    return maps


def test_default_model_maps_equal_torchcam(lite0):
    x, _ = lite0.preprocess(_frames(), (224, 288))
    feats, logits = lite0(x)
    classes = logits.argmax(1)
    ours = minmax_normalize(cam_maps(feats, lite0.weight, classes))
    full = lite0.backbone.m  # timm's tf_efficientnet_lite0, whole
    ref = _torchcam_maps(full, "bn2", "classifier", x, classes.tolist())
    assert ours.shape == ref.shape == (2, 7, 9)
    assert (ours - ref).abs().max().item() <= 1e-4


def test_resnet_maps_equal_torchcam(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    model = load_model("resnet18", weights=tmp_path / "r18.pth")
    x, _ = model.preprocess(_frames(), (224, 288))
    feats, logits = model(x)
    classes = torch.tensor([3, 7])
    ours = minmax_normalize(cam_maps(feats, model.weight, classes))
    ref = _torchcam_maps(net, "layer4", "fc", x, classes.tolist())
    assert (ours - ref).abs().max().item() <= 1e-4
    assert torch.allclose(logits, net(x), atol=1e-4)


def test_logits_from_features_is_the_gap_linear_head():
    torch.manual_seed(1)
    fc = torch.nn.Linear(8, 5)
    feats = torch.randn(3, 8, 4, 6)
    expected = fc(feats.mean(dim=(2, 3)))
    assert torch.allclose(logits_from_features(feats, fc.weight, fc.bias), expected, atol=1e-6)


def test_cam_is_linear_in_features_and_pools_to_the_logit():
    torch.manual_seed(2)
    w = torch.randn(5, 8)
    feats = torch.randn(2, 8, 3, 4)
    classes = torch.tensor([1, 4])
    maps = cam_maps(feats, w, classes)
    # mean of M_c over space = the class logit without bias (the paper's identity)
    logits = logits_from_features(feats, w, None)
    assert torch.allclose(maps.mean(dim=(1, 2)), logits[[0, 1], classes], atol=1e-5)
    assert torch.allclose(cam_maps(2 * feats, w, classes), 2 * maps, atol=1e-5)


def test_minmax_normalize_range_and_external_range():
    m = torch.tensor([[[1.0, 3.0], [5.0, 9.0]]])
    out = minmax_normalize(m)
    assert out.min().item() == 0.0 and abs(out.max().item() - 1.0) < 1e-6
    assert torch.allclose(out, (m - 1) / 8, atol=1e-6)
    clamped = minmax_normalize(m, lo=torch.tensor([3.0]), hi=torch.tensor([5.0]))
    assert clamped.tolist() == [[[0.0, 0.0], [1.0, 1.0]]]
    assert minmax_normalize(torch.zeros(1, 2, 2)).abs().max().item() == 0.0


def test_peak_xy():
    m = torch.zeros(2, 3, 4)
    m[0, 2, 1] = 1.0
    m[1, 0, 3] = 1.0
    assert peak_xy(m).tolist() == [[1, 2], [3, 0]]


def test_paper_bbox_hand_worked_case():
    # max 10 -> threshold 2.0: two blobs >= 2; the larger (5 px) wins; the 1.9 is out.
    cam = np.array([
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 3, 10, 0, 0, 0, 0, 0],
        [0, 2, 5, 0, 0, 0, 4, 0],
        [0, 0, 2, 0, 0, 0, 9, 0],
        [0, 0, 0, 1.9, 0, 0, 0, 0],
    ], dtype=np.float32)
    # left blob: (1,1) (2,1) (1,2) (2,2) (2,3) -> x 1..2, y 1..3 ; right blob: 2 px
    assert paper_bbox(cam, 0.2) == (1, 1, 3, 4)
    # at 0.5 (>= 5): left blob is (2,1),(2,2) = 2 px, right blob (6,3) = 1 px
    assert paper_bbox(cam, 0.5) == (2, 1, 3, 3)
    # the largest component, not the first in scan order nor the one holding the peak,
    # and 8-connected: the 4 px at the bottom right touch only diagonally
    cam = np.zeros((6, 8), np.float32)
    cam[0, 0] = 10                                   # the peak, first in scan order: 1 px
    cam[[2, 3, 4, 5], [4, 5, 6, 7]] = 3              # a diagonal line: 4 px, 8-connected
    cam[5, 0:3] = 3                                  # a row: 3 px
    assert paper_bbox(cam, 0.2) == (4, 2, 8, 6)
    # a flat or non-positive map has no box
    assert paper_bbox(np.zeros((4, 4)), 0.2) is None
    assert paper_bbox(-np.ones((4, 4)), 0.2) is None


def _blobs(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A CAM-like map: one to three Gaussian blobs over a little noise."""
    yy, xx = np.mgrid[0:h, 0:w]
    cam = 0.05 * rng.random((h, w))
    for _ in range(rng.integers(1, 4)):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        sd, a = rng.uniform(0.7, 3), rng.uniform(0.3, 1)
        cam += a * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sd * sd))
    return cam.astype(np.float32)


def _box_at_frame_size(cam: np.ndarray, size: tuple[int, int], t: float):
    """The reference: upsample to the frame, threshold at ``t`` x the map's maximum and
    label every pixel."""
    import cv2
    up = cv2.resize(cam, size, interpolation=cv2.INTER_LINEAR)
    mask = (up >= t * cam.max()).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    x, y, w, h = (int(v) for v in stats[1 + int(np.argmax(stats[1:, 4])), :4])
    return x, y, x + w, y + h


def _close(a, b) -> bool:
    """Same box up to a pixel (float rounding where the map crosses the level)."""
    return a is not None and b is not None and max(abs(p - q) for p, q in zip(a, b)) <= 1


@pytest.mark.parametrize("size", [(640, 360), (1280, 720), (161, 95), (50, 30)])
def test_map_bbox_equals_labelling_the_whole_frame(size):
    rng = np.random.default_rng(sum(size))
    for _ in range(40):
        h, w = (int(v) for v in rng.integers(3, 15, 2))
        cam, t = _blobs(rng, h, w), float(rng.uniform(0.1, 0.9))
        assert _close(map_bbox(cam, size, t), _box_at_frame_size(cam, size, t)), (h, w, t)
    # a tensor map gives the same box; a flat or non-positive map none
    cam = _blobs(rng, 7, 12)
    assert map_bbox(torch.from_numpy(cam), size, 0.3) == map_bbox(cam, size, 0.3)
    assert map_bbox(np.zeros((7, 12), np.float32), size, 0.3) is None
    assert map_bbox(-np.ones((7, 12), np.float32), size, 0.3) is None


def test_map_bbox_hand_worked_case():
    # a 2x4 map upsampled to 8x16 (4 px per cell): the single hot cell at (x=1, y=0)
    # spreads bilinearly over the pixels whose sample point lies within a cell of it
    cam = np.array([[0, 1, 0, 0], [0, 0, 0, 0]], np.float32)
    # pixel X samples x = (X + 0.5) / 4 - 0.5: X = 3..8 give weights 0.375, 0.625, 0.875,
    # 0.875, 0.625, 0.375 on the hot column; rows Y = 0..4 give 1, 1, 0.875, 0.625, 0.375
    # (the top rows clamp to row 0). Level 0.5: X 4..7 with Y 0..2, and (5..6, 3) at
    # 0.875 x 0.625 = 0.55; (4, 3) is 0.39.
    assert map_bbox(cam, (16, 8), 0.5) == (4, 0, 8, 4)
    assert map_bbox(cam, (16, 8), 0.2) == _box_at_frame_size(cam, (16, 8), 0.2)
    # the largest region wins, as the paper's
    cam = np.zeros((4, 8), np.float32)
    cam[0, 0] = 1.0                       # the peak, alone
    cam[2:4, 4:8] = 0.6                   # a wider, weaker region
    assert _close(map_bbox(cam, (80, 40), 0.5), _box_at_frame_size(cam, (80, 40), 0.5))
    assert map_bbox(cam, (80, 40), 0.5)[0] >= 35          # the right-hand region
    assert map_bbox(cam, (80, 40), 0.5, component="peak")[2] <= 20  # the peak's


def test_bbox_threshold_auto_is_the_calibrated_one():
    assert bbox_threshold("auto", "efficientnet_lite0") == BBOX_THRESHOLDS["efficientnet_lite0"]
    assert BBOX_THRESHOLDS["efficientnet_lite0"] != PAPER_THRESHOLD  # it was calibrated
    assert bbox_threshold("AUTO", "resnet50") == BBOX_THRESHOLDS["*"]
    assert bbox_threshold(0.2, "efficientnet_lite0") == 0.2
    assert bbox_threshold("0.45", "efficientnet_lite0") == 0.45
    for bad in (0.0, 1.5, -0.1, "half", "nan"):
        with pytest.raises(OptionError):
            bbox_threshold(bad, "efficientnet_lite0")


def test_from_modules_tiny_network_end_to_end():
    torch.manual_seed(3)
    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, stride=4, padding=1),
                                   torch.nn.ReLU())
    model = from_modules(backbone, torch.nn.Linear(6, 4), stride=4)
    frames = torch.randint(0, 255, (2, 40, 64, 3), dtype=torch.uint8)
    size = model.input_size(40, 64, 32)
    assert size == (32, 52)
    x, frames01 = model.preprocess(frames, size)
    assert x.shape == frames01.shape == (2, 3, 32, 52)
    assert 0.0 <= frames01.min().item() and frames01.max().item() <= 1.0
    feats, logits = model(x)
    assert feats.shape == (2, 6, 8, 13) and logits.shape == (2, 4)
