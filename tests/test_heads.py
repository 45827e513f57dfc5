"""Head decompositions (camvideo.model.heads), per family, with random-initialised weights
saved the way torchvision and timm save them: the split reproduces the network's logits,
the CAM maps equal maps computed by hand from the network's own modules, the inference
rewrites (batch-norm folding, tracing) keep them, and a run end to end keeps frame count
and timing. Refusals keep their reasons."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn

import camvideo
from camvideo.cam import cam_maps, logits_from_features
from camvideo.errors import ModelError
from camvideo.model import heads
from camvideo.model.registry import load_model
from camvideo.model.rewrite import optimize_model
from camvideo.model.trace import traced_backbone
from camvideo.testing import synth
from camvideo.testing.clip import decoded_times
from net_tools import as_if_trained

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
K = 10          # classes of the random networks
RTOL = 1e-4     # relative error allowed (to the largest value compared)

FAMILIES = ["googlenet", "inception_v3", "squeezenet1_0", "squeezenet1_1", "convnext_tiny",
            "timm:convnext_atto"]


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def make_net(name: str) -> nn.Module:
    """A random-initialised network as its library builds it by default (GoogLeNet and
    Inception v3 with their auxiliary heads), ``K`` classes."""
    torch.manual_seed(0)
    if name.startswith("timm:"):
        return timm.create_model(name[5:], pretrained=False, num_classes=K)
    kw = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
    return as_if_trained(torchvision.models.get_model(name, num_classes=K, **kw))


@pytest.fixture(scope="module", params=FAMILIES)
def family(request, tmp_path_factory) -> tuple[str, nn.Module, Path]:
    """``(name, network in eval mode, weights file)``: ``torch.save(net.state_dict())``."""
    name = request.param
    net = make_net(name)
    path = tmp_path_factory.mktemp("weights") / "w.pth"
    torch.save(net.state_dict(), path)
    return name, net.eval(), path


def reference(name: str, net: nn.Module, x01: torch.Tensor) -> tuple[torch.Tensor,
                                                                     torch.Tensor]:
    """``(maps (N, K, h, w), logits (N, K))`` computed by hand from the network's own
    modules, for inputs ``x01`` in ``[0, 1]`` normalised as its weights expect; the logits
    are the network's own forward pass."""
    if name.startswith("timm:"):
        cfg = net.pretrained_cfg
        x = (x01 - torch.tensor(cfg["mean"]).view(1, 3, 1, 1)) / \
            torch.tensor(cfg["std"]).view(1, 3, 1, 1)
    else:
        x = (x01 - IMAGENET_MEAN) / IMAGENET_STD
    if name in ("googlenet", "inception_v3"):
        net.transform_input = True   # as torchvision builds them for its ImageNet weights
        f = net._transform_input(x)
        for child, mod in net.named_children():   # forward order, aux heads skipped
            if child in ("aux1", "aux2", "AuxLogits"):
                continue
            if child == "avgpool":
                break
            f = mod(f)
        maps = torch.einsum("kc,nchw->nkhw", net.fc.weight, f)
        bias = net.fc.bias
    elif name.startswith("squeezenet"):
        f = net.features(x)
        maps = torch.relu(net.classifier[1](f))        # the per-class conv outputs
        bias = torch.zeros(K)
    else:  # pool -> LayerNorm -> linear: M_c = sum_k W_ck g_k (f_k - mu) / sigma
        if name.startswith("timm:"):
            f, ln, fc = net.forward_features(x), net.head.norm, net.head.fc
        else:
            f, ln, fc = net.features(x), net.classifier[0], net.classifier[2]
        p = f.mean(dim=(2, 3))
        mu = p.mean(dim=1)[:, None, None, None]
        sigma = torch.sqrt(p.var(dim=1, unbiased=False) + ln.eps)[:, None, None, None]
        maps = torch.einsum("kc,nchw->nkhw", fc.weight * ln.weight, (f - mu) / sigma)
        bias = fc.weight @ ln.bias + fc.bias
    logits = net(x)
    # the hand-made maps are the decomposition: pooled (+ bias) they are the logits
    assert rel_err(maps.mean(dim=(2, 3)) + bias, logits) <= RTOL
    return maps, logits


def ours(model, x01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(maps (N, K, h, w), logits)`` through the CamModel, the way the pipeline computes
    them: features, then CAM = weights · features per class."""
    x = (x01 - model.mean) / model.std
    feats, logits = model(x)
    n, k = feats.shape[0], model.weight.shape[0]
    maps = torch.stack([cam_maps(feats, model.weight, torch.full((n,), c)) for c in range(k)],
                       dim=1)
    return maps, logits


@torch.inference_mode()
def test_decomposition_reproduces_logits_and_maps(family):
    name, net, path = family
    model = load_model(name, weights=path)              # the probe check runs inside
    assert len(model.labels) == K
    x01 = torch.rand(2, 3, 160, 224, generator=torch.Generator().manual_seed(2))
    ref_maps, ref_logits = reference(name, net, x01)
    maps, logits = ours(model, x01)
    assert rel_err(logits, ref_logits) <= RTOL
    assert rel_err(maps, ref_maps) <= RTOL


@torch.inference_mode()
def test_inference_rewrites_keep_the_logits(family):
    """Batch norms folded into convolutions and the backbone traced (what the pipeline
    runs on the CPU) still reproduce the network's logits."""
    name, net, path = family
    model = optimize_model(load_model(name, weights=path))
    x01 = torch.rand(2, 3, 128, 192, generator=torch.Generator().manual_seed(3))
    _, ref_logits = reference(name, net, x01)
    x = ((x01 - model.mean) / model.std).contiguous(memory_format=torch.channels_last)
    feats = traced_backbone(model, None)(x)
    logits = logits_from_features(feats, model.weight, model.bias)
    assert rel_err(logits, ref_logits) <= 1e-3     # folding and fusion reorder the sums


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    """A tiny variable-frame-rate pan: 7 frames, 96x64."""
    times = [0.0, 0.04, 0.1, 0.13, 0.2, 0.25, 0.33]
    return synth.make_clip("pan", tmp_path_factory.mktemp("clip") / "in.mp4", size=(96, 64),
                           n=len(times), fps=30, times=times)


def test_end_to_end_keeps_frame_count_and_timing(family, vfr_clip, tmp_path):
    name, _, path = family
    out, side = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    summary = camvideo.annotate(vfr_clip.path, out, model=name, weights=str(path), size=32,
                                json=str(side))
    assert summary.frames == vfr_clip.frames
    assert decoded_times(out) == pytest.approx(vfr_clip.times, abs=1e-3)
    recs = [json.loads(line) for line in side.read_text().splitlines()]
    assert [r["time"] for r in recs] == pytest.approx(vfr_clip.times, abs=1e-3)
    assert all(0 <= r["class"] < K and 0.0 <= r["score"] <= 1.0 for r in recs)


# ---------------------------------------------------------------------------------------
# The pieces, and what stays refused


def test_input_transform_folds_into_mean_and_std():
    """torchvision's transform_input after ImageNet normalisation is normalisation with
    mean = std = 0.5."""
    mean, std = heads.fold_input_transform(heads.IMAGENET_MEAN, heads.IMAGENET_STD,
                                           heads.TRANSFORM_SCALE, heads.TRANSFORM_SHIFT)
    assert mean == pytest.approx((0.5, 0.5, 0.5)) and std == pytest.approx((0.5, 0.5, 0.5))
    net = torchvision.models.googlenet(init_weights=False, aux_logits=False,
                                       transform_input=True)
    x01 = torch.rand(1, 3, 8, 8)
    torchvision_way = net._transform_input((x01 - IMAGENET_MEAN) / IMAGENET_STD)
    assert torch.allclose(torchvision_way, (x01 - 0.5) / 0.5, atol=1e-6)


def test_googlenet_checkpoints_with_and_without_aux_heads(tmp_path):
    """A state_dict saved from torchvision's pretrained-style GoogLeNet (aux heads dropped)
    loads as well as one with them; wrong keys elsewhere are still refused."""
    net = make_net("googlenet")
    sd = net.state_dict()
    assert any(k.startswith("aux1.") for k in sd)
    torch.save({k: v for k, v in sd.items() if not k.startswith(("aux1.", "aux2."))},
               tmp_path / "noaux.pth")
    model = load_model("googlenet", weights=tmp_path / "noaux.pth")
    assert model.weight.shape == (K, 1024)
    torch.save({k: v for k, v in sd.items() if not k.startswith("inception5b.")},
               tmp_path / "broken.pth")
    with pytest.raises(ModelError, match="do not fit"):
        load_model("googlenet", weights=tmp_path / "broken.pth")


def test_inception_input_size_respects_its_minimum(tmp_path):
    net = make_net("inception_v3")
    torch.save(net.state_dict(), tmp_path / "w.pth")
    model = load_model("inception_v3", weights=tmp_path / "w.pth")
    assert model.min_side == 75 and model.native_side == 299
    assert model.input_size(64, 96, 32) == (96, 128)     # 75 px rounded up to 96
    with torch.inference_mode():
        feats, _ = model(torch.zeros(1, 3, 96, 128))
    assert feats.shape[-2:] == (1, 2)


def test_squeezenet_features_are_the_class_maps(tmp_path):
    """SqueezeNet's features are its K ReLU'd class maps and its linear layer the identity:
    the maps are non-negative, and pooling one of them is that class's logit."""
    net = make_net("squeezenet1_1").eval()
    torch.save(net.state_dict(), tmp_path / "w.pth")
    model = load_model("squeezenet1_1", weights=tmp_path / "w.pth")
    assert torch.equal(model.weight, torch.eye(K)) and model.bias is None
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        feats, logits = model(x)
        assert feats.shape[1] == K and feats.min() >= 0
        # not what a linear head on the pre-classifier features would give
        f = net.features(x).mean(dim=(2, 3))
        linear = f @ net.classifier[1].weight.flatten(1).T + net.classifier[1].bias
        assert rel_err(linear, logits) > 1e-2


def test_normalized_features_are_per_frame(tmp_path):
    """The LayerNorm decomposition normalises each frame with its own pooled statistics:
    a frame's features do not depend on the other frames of the batch."""
    net = make_net("convnext_tiny")
    torch.save(net.state_dict(), tmp_path / "w.pth")
    model = load_model("convnext_tiny", weights=tmp_path / "w.pth")
    assert isinstance(model.backbone, heads.NormalizedFeatures)
    x = torch.randn(3, 3, 64, 96)
    with torch.inference_mode():
        both, _ = model(x)
        alone, _ = model(x[1:2])
    assert rel_err(both[1:2], alone) <= 1e-5


def test_timm_head_with_a_hidden_layer_is_refused():
    net = timm.create_model("convnext_atto", pretrained=False, num_classes=K,
                            head_hidden_size=32).eval()
    with pytest.raises(ModelError, match="hidden layer after the pooling"):
        heads.split_timm(net, "timm:convnext_atto", heads.IMAGENET_MEAN, heads.IMAGENET_STD)


def test_norm_other_than_layernorm_is_refused():
    body = nn.Conv2d(3, 8, 3)
    with pytest.raises(ModelError, match="with a BatchNorm1d, which camvideo does not"):
        heads.norm_linear_head(body, nn.BatchNorm1d(8), nn.Linear(8, K), "m")


def test_probe_check_refuses_a_decomposition_that_does_not_reproduce_the_logits():
    """A split whose features are not what the network pools (here SqueezeNet's class maps
    without their ReLU) is refused, with the probe error and the head named."""
    net = make_net("squeezenet1_0").eval()
    split = heads.split_torchvision(net, "squeezenet", "squeezenet1_0", "class maps")
    assert heads.verify_split("squeezenet1_0", split) is None
    split.backbone = split.backbone[:2]                      # features -> conv, no ReLU
    with pytest.raises(ModelError, match=r"probe error .*class maps does not reproduce"):
        heads.verify_split("squeezenet1_0", split)
