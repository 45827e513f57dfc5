"""Fine maps (``--fine-maps``, camvideo.model.finemaps): the last downsampling undone and
later layers dilated; every other fine sample is the original network's feature."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import camvideo
from camvideo.cam import BBOX_THRESHOLDS, bbox_threshold
from camvideo.commands.main import main
from camvideo.errors import ExitCode, ModelError, OptionError
from camvideo.model import cache
from camvideo.model.finemaps import make_fine
from camvideo.model.registry import from_modules, load_model


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),          # into the last stage
        nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
        nn.Conv2d(6, 6, 5, padding=2), nn.Conv2d(6, 8, 1)).eval()


def test_the_last_stage_is_dilated_and_every_other_sample_is_the_original():
    net = _net()
    coarse = copy.deepcopy(net)
    assert make_fine(net, 4) is net
    assert net[2].stride == (1, 1) and net[0].stride == (2, 2)     # only the last one
    assert (net[4].dilation, net[4].padding) == ((2, 2), (2, 2))
    assert (net[6].dilation, net[6].padding) == ((2, 2), (4, 4))
    assert net[7].dilation == (1, 1)                                 # 1x1: nothing to do
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        f, c = net(x), coarse(x)
    assert f.shape == (2, 8, 20, 28) and c.shape == (2, 8, 10, 14)
    assert torch.allclose(f[..., ::2, ::2], c, atol=1e-6)
    # ... and the in-between samples are new: not a copy of their neighbours
    assert not torch.allclose(f[..., 1::2, ::2], c, atol=1e-3)


def test_the_default_model_with_fine_maps():
    """EfficientNet-Lite0 (ImageNet weights, TensorFlow-"SAME" padding): 14x24 features
    at 224x384 whose odd samples equal the 7x12 ones; its own calibrated threshold."""
    fine, coarse = load_model(fine=True), load_model()
    assert (fine.map_stride, fine.stride, coarse.map_stride) == (16, 32, 32)
    assert fine.calibration_name == "efficientnet_lite0@os16"
    assert bbox_threshold("auto", fine.calibration_name) == \
        BBOX_THRESHOLDS["efficientnet_lite0@os16"]
    x = torch.randn(1, 3, 224, 384, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        (f, lf), (c, lc) = fine(x), coarse(x)
    assert f.shape[-2:] == (14, 24) and c.shape[-2:] == (7, 12)
    assert torch.allclose(f[..., 1::2, 1::2], c, atol=1e-4)
    # the classifier pools the fine map, whose samples are mostly new: close, not equal
    assert (lf.softmax(1) - lc.softmax(1)).abs().max() < 0.05


def test_a_torchvision_resnet_with_fine_maps(tmp_path):
    net = torchvision.models.resnet18(num_classes=7)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    fine = load_model("resnet18", weights=tmp_path / "w.pth", fine=True)
    coarse = load_model("resnet18", weights=tmp_path / "w.pth")
    x = torch.randn(1, 3, 224, 288)
    with torch.inference_mode():
        f, c = fine.backbone(x), coarse.backbone(x)
    assert f.shape[-2:] == (14, 18)
    assert torch.allclose(f[..., ::2, ::2], c, atol=1e-4)
    # layer4 (the backbone's part 7): its first block's strided 3x3 and shortcut 1x1
    # run with stride 1, every 3x3 after them is dilated
    bb = dict(fine.backbone.named_modules())
    assert bb["7.0.conv1"].stride == bb["7.0.downsample.0"].stride == (1, 1)
    assert bb["7.0.conv1"].dilation == (1, 1)
    assert all(bb[n].dilation == (2, 2) and bb[n].padding == (2, 2)
               for n in ("7.0.conv2", "7.1.conv1", "7.1.conv2"))
    assert bb["6.0.conv1"].stride == (2, 2)                 # layer3 keeps its stride


class _SE(nn.Module):
    """Squeeze-and-excitation: each channel scaled by its mean over the whole image."""

    def forward(self, x):
        return x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))


@pytest.mark.parametrize("net, why", [
    (nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.AvgPool2d(2)),
     "the last downsampling is AvgPool2d, not a convolution"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1),
                   nn.Conv2d(4, 4, 3, stride=2, padding=1), _SE()),
     "does not reproduce the original's features"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1),
                   nn.Conv2d(4, 4, 3, stride=2, padding=1),
                   torchvision.ops.SqueezeExcitation(4, 2)),
     "sees the whole image pooled inside the network"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1),
                   nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3)),
     "without 'same' padding"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1),
                   nn.Conv2d(4, 4, 3, stride=2, padding=1), nn.MaxPool2d(3, 1, 1)),
     "a MaxPool2d after the last downsampling cannot be dilated"),
])
def test_networks_fine_maps_cannot_be_made_for_are_refused(net, why):
    with pytest.raises(ModelError, match=why):
        make_fine(net.eval(), 4)


def test_a_video_network_is_refused_and_a_coarse_model_with_the_option_is_an_error(
        pan_clip):
    from camvideo.model.finemaps import fine_maps
    from camvideo.model.video import VideoCamModel

    vm = VideoCamModel("v", nn.Sequential(nn.Conv3d(3, 4, 4, stride=4)), nn.Linear(4, 3),
                       ["a", "b", "c"], (0.5,) * 3, (0.5,) * 3, 4, clip_len=4, time_axis=2)
    with pytest.raises(ModelError, match="image networks"):
        fine_maps(vm)
    coarse = from_modules(nn.Sequential(nn.Conv2d(3, 8, 32, stride=32)), nn.Linear(8, 5))
    with pytest.raises(OptionError, match="fine_maps") as e:
        camvideo.stream(pan_clip.path, coarse, fine_maps=True)
    assert e.value.option == "fine_maps"


def test_fine_maps_in_a_stream_and_a_refused_network_on_the_command_line(pan_clip,
                                                                         tmp_path, capsys):
    """``fine_maps=True`` end to end on the default model: the stream's maps are the
    fine grid; on the command line a network they cannot be made for is one line on
    stderr and the model's exit code, with no output file."""
    with camvideo.stream(pan_clip.path, fine_maps=True, duration=0.2) as s:
        shapes = {tuple(r.map.shape) for r in s}
    h, w = camvideo.load_model().input_size(*pan_clip.size[::-1])
    assert shapes == {(h // 16, w // 16)}
    out = tmp_path / "o.mp4"
    rc = main([str(pan_clip.path), str(out), "--fine-maps", "-m", "squeezenet1_1",
               "--weights", str(_squeezenet(tmp_path)), "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == ExitCode.MODEL and not out.exists()
    assert len(err) == 1 and "no fine maps for squeezenet1_1" in err[0] \
        and "MaxPool2d, not a convolution" in err[0], err


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    """The model cache on, in a temporary folder."""
    monkeypatch.delenv("CAMVIDEO_CACHE", raising=False)
    monkeypatch.setenv("CAMVIDEO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(cache, "_HASHES", None)


def test_a_refused_network_read_from_the_cache_is_refused_when_built(pan_clip, tmp_path,
                                                                     cache_on, capsys):
    """A model read from the cache is rewritten only when its backbone is built (in the
    engine, after the output is checked): the refusal is still one line, the model's
    exit code, and no output file."""
    weights = str(_squeezenet(tmp_path))
    args = [str(pan_clip.path), "-m", "squeezenet1_1", "--weights", weights, "-q"]
    assert main([args[0], str(tmp_path / "a.mp4"), *args[1:]]) == ExitCode.OK
    capsys.readouterr()
    assert not load_model("squeezenet1_1", weights=weights, fine=True).backbone_built
    out = tmp_path / "b.mp4"
    rc = main([args[0], str(out), *args[1:], "--fine-maps"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == ExitCode.MODEL and not out.exists()
    assert len(err) == 1 and "no fine maps for squeezenet1_1" in err[0], err


def _squeezenet(tmp_path):
    path = tmp_path / "sq.pth"
    torch.save(torchvision.models.squeezenet1_1(num_classes=5).state_dict(), path)
    return path


def test_the_cache_keeps_fine_and_coarse_networks_apart(pan_clip, cache_on):
    """With the cache on, a model read from it gets its fine rewrite when its backbone is
    built, and its traced network is filed apart from the coarse one's: the coarse maps
    stay at stride 32, the fine ones at 16, from the cache a second time (nothing
    built)."""

    def maps(model):
        with camvideo.stream(pan_clip.path, model, duration=0.1) as s:
            return [r.map for r in s]

    h, w = load_model().input_size(*pan_clip.size[::-1])
    coarse = maps(load_model())                     # fills the cache
    fine = load_model(fine=True)
    assert not fine.backbone_built and cache.fingerprint(fine).endswith("+os16")
    first = maps(fine)
    again = load_model(fine=True)
    second = maps(again)
    assert {m.shape for m in coarse} == {(h // 32, w // 32)}
    assert {m.shape for m in first} == {(h // 16, w // 16)}
    assert not again.backbone_built                 # its graph came from the cache
    assert all(abs(a - b).max() < 1e-4 for a, b in zip(first, second))
