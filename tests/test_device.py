"""Tests of camvideo.device (precision choice, thread split) and camvideo.rewrite
(batch-norm folding and the oneDNN conv+activation fusion, checked against the original
network)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from camvideo.device import (cpu_has_native_bf16, default_infer_workers, pipeline_threads,
                             resolve_precision)
from camvideo.errors import OptionError
from camvideo.models import from_modules, load_model
from camvideo.rewrite import fold_batchnorm, optimize_model


@pytest.fixture(scope="module")
def lite0():
    return load_model()


def test_auto_precision_on_cpu_follows_native_bf16():
    got = resolve_precision("auto", torch.device("cpu"))
    assert got == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert resolve_precision("fp32", torch.device("cpu")) is None
    with pytest.raises(OptionError):
        resolve_precision("fp16", torch.device("cpu"))




def test_pipeline_threads_leave_cores_for_decode_and_encode():
    assert pipeline_threads(1) == 1 and pipeline_threads(2) == 1
    assert pipeline_threads(4) == 3 and pipeline_threads(8) == 6
    assert pipeline_threads(16) == 12
    assert default_infer_workers(torch.device("cpu")) == 2
    assert default_infer_workers(torch.device("cpu"), stride=3) == 1
    assert default_infer_workers(torch.device("cuda")) == 1


# ---------------------------------------------------------------------------------------
# batch-norm folding


def _conv_bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 6, 1, bias=False), nn.BatchNorm2d(6))
    for m in net:
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def test_fold_batchnorm_keeps_the_function_and_removes_the_norms():
    net = _conv_bn_net()
    x = torch.randn(2, 3, 16, 20)
    folded, n = fold_batchnorm(net, x)
    assert n == 2
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # original untouched
    with torch.inference_mode():
        assert torch.allclose(folded(x), net(x), atol=1e-5)


class _SkipNet(nn.Module):
    """A conv output that feeds a batch norm *and* a skip connection: folding would change
    the skip's input, so the check must refuse it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.bn = nn.BatchNorm2d(4)
        self.bn.running_mean.fill_(3.0)
        self.bn.eval()

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


def test_optimize_model_refuses_a_fold_that_changes_the_features():
    fc = nn.Linear(4, 3)
    model = from_modules(_SkipNet().eval(), fc, stride=1)
    before = model.backbone
    optimize_model(model)
    assert model.backbone is before  # kept: folding was checked and refused


def test_optimize_model_folds_the_default_model_once(lite0):
    x = torch.randn(1, 3, 64, 96).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = lite0.backbone(x)
    optimize_model(lite0)
    first = lite0.backbone
    optimize_model(lite0)
    assert lite0.backbone is first
    assert not any(isinstance(m, nn.BatchNorm2d) for m in lite0.backbone.modules())
    with torch.inference_mode():
        got = lite0.backbone(x)
    assert (got - ref).abs().max() <= 1e-3 * max(1.0, float(ref.abs().max()))


# ---------------------------------------------------------------------------------------
# conv + activation fusion


def test_conv_act_fusion_keeps_the_function_in_fp32_and_bf16():
    from camvideo.rewrite import ConvAct, _has_fused_conv

    if not _has_fused_conv():
        pytest.skip("torch built without oneDNN")
    net = _conv_bn_net()
    net[4] = nn.BatchNorm2d(6).eval()
    net.append(nn.ReLU6())
    x = torch.randn(2, 3, 16, 20).contiguous(memory_format=torch.channels_last)
    fused, n = fold_batchnorm(net, x, fuse=True)
    assert n == 2 and sum(isinstance(m, ConvAct) for m in fused.modules()) == 2
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in fused.modules())
    with torch.inference_mode():
        assert torch.allclose(fused(x), net(x), atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a, b = fused(x).float(), net(x).float()
    assert (a - b).abs().max() <= 0.05 * max(1.0, float(b.abs().max()))


def test_default_model_is_fused_on_the_cpu(lite0):
    from camvideo.rewrite import ConvAct, _has_fused_conv

    optimize_model(lite0)
    if _has_fused_conv():
        assert sum(isinstance(m, ConvAct) for m in lite0.backbone.modules()) >= 20
        # every convolution, "SAME"-padded ones included, is one oneDNN call
        assert not [m for m in lite0.backbone.modules() if isinstance(m, nn.Conv2d)]


def test_conv_act_weights_are_packed_once_per_input_shape():
    """oneDNN-layout weights are made per input shape and reused: shapes met in turn
    each get their own, and the output stays the plain convolution's."""
    from camvideo.rewrite import ConvAct, _has_fused_conv, _has_weight_reorder

    if not (_has_fused_conv() and _has_weight_reorder()):
        pytest.skip("torch built without oneDNN")
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1).eval()
    fused = ConvAct(conv, "relu")
    xs = [torch.randn(n, 8, h, w).contiguous(memory_format=torch.channels_last)
          for n, h, w in [(2, 20, 24), (1, 9, 13), (2, 20, 24), (1, 9, 13)]]
    with torch.inference_mode():
        for x in xs:
            assert torch.allclose(fused(x), conv(x).relu(), atol=1e-5)
        assert len(fused._pack) == 2 and all(p.is_mkldnn for _, p in fused._pack.values())
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a = fused(xs[0]).float()
        assert len(fused._pack) == 3  # bf16 weights: packed on their own
    assert (a - conv(xs[0]).relu()).abs().max() <= 0.05 * max(1.0, float(a.abs().max()))


@pytest.mark.parametrize("hw", [(32, 48), (33, 47), (31, 30)])
def test_conv_act_fusion_keeps_tensorflow_same_padding(hw):
    from timm.layers import Conv2dSame

    from camvideo.rewrite import ConvAct, _has_fused_conv

    if not _has_fused_conv():
        pytest.skip("torch built without oneDNN")
    torch.manual_seed(0)
    net = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU6(),
                        Conv2dSame(8, 8, 5, stride=2, groups=8), nn.BatchNorm2d(8),
                        nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)).eval()
    for m in net:
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, *hw).contiguous(memory_format=torch.channels_last)
    fused, n = fold_batchnorm(net, x, fuse=True)
    assert n == 3 and sum(isinstance(m, ConvAct) for m in fused.modules()) == 3
    assert not any(isinstance(m, (nn.Conv2d, nn.ReLU, nn.ReLU6)) for m in fused.modules())
    with torch.inference_mode():
        ref = net(x)
        got = fused(x)
        assert got.shape == ref.shape
        assert torch.allclose(got, ref, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a = fused(x).float()
    assert (a - ref).abs().max() <= 0.05 * max(1.0, float(ref.abs().max()))
