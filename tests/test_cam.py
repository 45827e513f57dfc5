"""CAM math: equality with torchcam's CAM on real models and photos, the paper's box."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torchcam.methods import CAM

from camvideo.testing import synth
from camvideo.cam import (cam_maps, logits_from_features, minmax_normalize, paper_bbox,
                          peak_xy)
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
