"""Tests of camvideo.model.device (CPU capabilities, precision choice, thread split) and
camvideo.model.rewrite (batch-norm folding and the oneDNN conv+activation fusion, checked
against the original network).

CPUs differ: every CPU-dependent decision is tested for each CPU class by simulating
:func:`camvideo.model.device.cpu_caps` (so an AVX2 regression fails on an AVX-512 machine too);
what needs the real feature (oneDNN's bf16 kernels) is skipped, with the reason, where
the CPU lacks it. ``test_device_and_trace_tests_pass_as_an_avx2_cpu`` reruns this module
and test_trace.py with oneDNN capped at AVX2.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from camvideo.options import Options
from camvideo.runtime.engine import build_engine
from camvideo.model import device
from camvideo.model.device import (CpuCaps, cpu_caps, cpu_has_native_bf16,
                                   default_batch_size, default_infer_workers,
                                   pipeline_threads, resolve_precision)
from camvideo.model.device import INT8
from camvideo.model.quantize import Int8Backbone
from camvideo.errors import OptionError
from camvideo.model.registry import from_modules, load_model
from camvideo.model.rewrite import (ConvAct, _has_fused_conv, _has_weight_reorder,
                                    fold_batchnorm, optimize_model)

#: The CPU classes camvideo's choices distinguish, as cpu_caps() describes them.
CPU_CLASSES = {
    "avx2": CpuCaps("AVX2", bf16_kernels=False, native_bf16=False),         # Zen 2/3, Haswell..
    "avx512": CpuCaps("AVX-512", bf16_kernels=True, native_bf16=False),     # Skylake-SP, Ice Lake
    "avx512_bf16": CpuCaps("AVX512-BF16", bf16_kernels=True, native_bf16=True),  # Zen 4/5
    "amx": CpuCaps("AMX", bf16_kernels=True, native_bf16=True),             # Sapphire Rapids
}

needs_bf16_kernels = pytest.mark.skipif(
    not cpu_caps().bf16_kernels,
    reason=f"oneDNN runs no bf16 convolutions on this CPU ({cpu_caps().name})")
needs_fused_conv = pytest.mark.skipif(not _has_fused_conv(),
                                      reason="torch built without oneDNN")
needs_weight_reorder = pytest.mark.skipif(
    not (_has_fused_conv() and _has_weight_reorder()), reason="torch built without oneDNN")


@pytest.fixture(scope="module")
def fresh_lite0():
    """A default model of its own, not yet folded (the session's is, once used)."""
    return load_model()


@pytest.fixture(params=sorted(CPU_CLASSES))
def cpu_class(request, monkeypatch) -> CpuCaps:
    """Run the test as if on each CPU class (cpu_caps() replaced)."""
    caps = CPU_CLASSES[request.param]
    monkeypatch.setattr(device, "cpu_caps", lambda: caps)
    return caps


# ---------------------------------------------------------------------------------------
# CPU capabilities and the choices made from them


def test_cpu_caps_describe_this_machine():
    caps = cpu_caps()
    assert caps is cpu_caps()  # read once
    assert caps.native_bf16 <= caps.bf16_kernels  # native bf16 is a kind of bf16 kernel
    assert caps.native_bf16 == cpu_has_native_bf16()
    if caps.bf16_kernels:  # and then oneDNN really runs one
        w = torch.randn(4, 2, 3, 3, dtype=torch.bfloat16)
        x = torch.randn(1, 2, 5, 5, dtype=torch.bfloat16)
        torch.ops.mkldnn._reorder_convolution_weight(w, [1, 1], [1, 1], [1, 1], 1,
                                                     list(x.shape))


@pytest.mark.parametrize("cap", ["AVX2", "avx2", "AVX512_CORE"])
def test_cpu_caps_honour_onednn_s_isa_cap(cap):
    """``ONEDNN_MAX_CPU_ISA`` below AVX512_CORE_BF16 leaves no native bf16 (and below
    AVX-512 no bf16 kernels at all), whatever the CPU: a capped AVX512-BF16 machine
    behaves as the lesser class, so bf16 is neither chosen by auto nor run half-way."""
    code = ("from camvideo.model.device import cpu_caps; c = cpu_caps(); "
            "print(c.bf16_kernels, c.native_bf16, c.name)")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": cap}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout.split(maxsplit=2)
    assert out[1] == "False"
    if cap.upper() == "AVX2":
        assert out[0] == "False"
    assert f"oneDNN capped at {cap.upper()}" in out[2]


@pytest.mark.parametrize("runtime", [True, False], ids=["onnxruntime", "no-onnxruntime"])
def test_auto_precision_on_cpu_follows_the_cpu_class(cpu_class, runtime, monkeypatch):
    """auto: bf16 where it is native, else fp32, whether or not ONNX Runtime is there:
    int8 within tolerance ran no faster than fp32 on AVX2 (benchmarks/README.md), so
    auto never picks it. fp32 is always plain fp32."""
    monkeypatch.setattr(device, "int8_runtime_available", lambda: runtime)
    got = resolve_precision("auto", torch.device("cpu"))
    assert got == (torch.bfloat16 if cpu_class.native_bf16 else None)
    assert resolve_precision("fp32", torch.device("cpu")) is None
    assert resolve_precision("auto", torch.device("cuda")) == torch.float16
    with pytest.raises(OptionError):
        resolve_precision("fp16", torch.device("cpu"))


def test_int8_asked_for_runs_or_is_refused_with_the_reason(cpu_class, monkeypatch):
    """``--precision int8``: on any CPU class where ONNX Runtime is installed; refused
    (one line) on CUDA and without ONNX Runtime."""
    monkeypatch.setattr(device, "int8_runtime_available", lambda: True)
    assert resolve_precision("int8", torch.device("cpu")) == INT8
    with pytest.raises(OptionError, match="int8 is for the CPU"):
        resolve_precision("int8", torch.device("cuda"))
    monkeypatch.setattr(device, "int8_runtime_available", lambda: False)
    with pytest.raises(OptionError, match="int8 needs ONNX Runtime: pip install"):
        resolve_precision("int8", torch.device("cpu"))


def test_bf16_asked_for_is_run_warned_about_or_refused(cpu_class, caplog):
    """``--precision bf16``: native CPUs run it; CPUs that only convert to bf16 run it
    with a warning; where oneDNN has no bf16 convolutions (AVX2) it is refused with one
    line naming the CPU (torch's reference kernels were ~35x slower than fp32 there)."""
    with caplog.at_level(logging.WARNING, logger="camvideo.model.device"):
        if not cpu_class.bf16_kernels:
            with pytest.raises(OptionError, match=r"bf16 needs a CPU .*this one is AVX2.*"
                                                  r"use fp32"):
                resolve_precision("bf16", torch.device("cpu"))
            return
        assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16
    warned = [r.getMessage() for r in caplog.records]
    assert bool(warned) == (not cpu_class.native_bf16), warned


def test_threads_and_batches_are_the_same_on_every_cpu_class(cpu_class):
    """The thread split and batch size depend on cores and device, not on the ISA
    (batch 4 measured on both classes: benchmarks/README.md, "CPU classes")."""
    assert pipeline_threads(1) == 1 and pipeline_threads(2) == 1
    assert pipeline_threads(4) == 3 and pipeline_threads(8) == 6
    assert pipeline_threads(16) == 12
    assert default_infer_workers(torch.device("cpu")) == 2
    assert default_infer_workers(torch.device("cpu"), stride=3) == 1
    assert default_infer_workers(torch.device("cuda")) == 1
    assert default_batch_size(torch.device("cpu")) == 4
    assert default_batch_size(torch.device("cuda")) == 32


def test_the_engine_s_precision_follows_the_cpu_class(cpu_class):
    model = from_modules(nn.Sequential(nn.Conv2d(3, 4, 8, stride=8)), nn.Linear(4, 3),
                         stride=8)
    engine = build_engine(Options(device="cpu"), model)
    assert engine.precision == (torch.bfloat16 if cpu_class.native_bf16 else None)
    assert not isinstance(engine._traced, Int8Backbone)  # int8 only when asked for
    if not cpu_class.bf16_kernels:
        with pytest.raises(OptionError, match="bf16 needs"):
            build_engine(Options(device="cpu", precision="bf16"), model)


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


def test_optimize_model_folds_the_default_model_once(fresh_lite0):
    lite0 = fresh_lite0
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


def _fusable_net() -> nn.Sequential:
    net = _conv_bn_net()
    net[4] = nn.BatchNorm2d(6).eval()
    net.append(nn.ReLU6())
    return net


@needs_fused_conv
def test_conv_act_fusion_keeps_the_function_in_fp32():
    net = _fusable_net()
    x = torch.randn(2, 3, 16, 20).contiguous(memory_format=torch.channels_last)
    fused, n = fold_batchnorm(net, x, fuse=True)
    assert n == 2 and sum(isinstance(m, ConvAct) for m in fused.modules()) == 2
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in fused.modules())
    with torch.inference_mode():
        assert torch.allclose(fused(x), net(x), atol=1e-5)


@needs_bf16_kernels
@needs_fused_conv
def test_conv_act_fusion_keeps_the_function_in_bf16():
    net = _fusable_net()
    x = torch.randn(2, 3, 16, 20).contiguous(memory_format=torch.channels_last)
    fused, _ = fold_batchnorm(net, x, fuse=True)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = fused(x).float(), net(x).float()
    assert (a - b).abs().max() <= 0.05 * max(1.0, float(b.abs().max()))
    assert any(m._pack for m in fused.modules() if isinstance(m, ConvAct))  # oneDNN ran


def test_conv_act_in_bf16_without_onednn_bf16_runs_the_plain_convolution(monkeypatch):
    """Under bf16 autocast on a CPU whose oneDNN has no bf16 (AVX2), the fused module
    computes the plain convolution (torch's own bf16 kernels) instead of failing in
    oneDNN's weight reorder, as it did."""
    monkeypatch.setattr(device, "cpu_caps", lambda: CPU_CLASSES["avx2"])
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, 3, padding=1).eval()
    fused = ConvAct(conv, "relu6")
    x = torch.randn(1, 4, 9, 11).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        got = fused(x).float()
        ref = conv(x).float().clamp(0, 6)
    assert not fused._pack  # no oneDNN weights made
    assert (got - ref).abs().max() <= 0.05 * max(1.0, float(ref.abs().max()))


def test_default_model_is_fused_on_the_cpu(lite0):
    optimize_model(lite0)
    if _has_fused_conv():
        assert sum(isinstance(m, ConvAct) for m in lite0.backbone.modules()) >= 20
        # every convolution, "SAME"-padded ones included, is one oneDNN call
        assert not [m for m in lite0.backbone.modules() if isinstance(m, nn.Conv2d)]


@needs_weight_reorder
def test_conv_act_weights_are_packed_once_per_input_shape():
    """oneDNN-layout weights are made per input shape and reused: shapes met in turn
    each get their own, and the output stays the plain convolution's."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1).eval()
    fused = ConvAct(conv, "relu")
    xs = [torch.randn(n, 8, h, w).contiguous(memory_format=torch.channels_last)
          for n, h, w in [(2, 20, 24), (1, 9, 13), (2, 20, 24), (1, 9, 13)]]
    with torch.inference_mode():
        for x in xs:
            assert torch.allclose(fused(x), conv(x).relu(), atol=1e-5)
        assert len(fused._pack) == 2 and all(p.is_mkldnn for _, p in fused._pack.values())
        if not cpu_caps().bf16_kernels:
            return  # no bf16 kernels: bf16 runs the plain convolution (tested above)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a = fused(xs[0]).float()
        assert len(fused._pack) == 3  # bf16 weights: packed on their own
    assert (a - conv(xs[0]).relu()).abs().max() <= 0.05 * max(1.0, float(a.abs().max()))


@needs_fused_conv
@pytest.mark.parametrize("hw", [(32, 48), (33, 47), (31, 30)])
def test_conv_act_fusion_keeps_tensorflow_same_padding(hw):
    from timm.layers import Conv2dSame

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
        if not cpu_caps().bf16_kernels:  # bf16 is the plain convolution there (above)
            return
        with torch.autocast("cpu", dtype=torch.bfloat16):
            a = fused(x).float()
    assert (a - ref).abs().max() <= 0.05 * max(1.0, float(ref.abs().max()))


# ---------------------------------------------------------------------------------------
# the AVX2 class for real


@pytest.mark.skipif(os.environ.get("ONEDNN_MAX_CPU_ISA") is not None,
                    reason="already running with oneDNN capped")
def test_device_and_trace_tests_pass_as_an_avx2_cpu():
    """This module and test_trace.py, run again with oneDNN capped at AVX2
    (``ONEDNN_MAX_CPU_ISA=AVX2``) and ATen's kernels at AVX2 (``ATEN_CPU_CAPABILITY``):
    on an AVX-512 machine that is what an AVX2-only CPU's oneDNN does (no bf16
    convolutions), the failure that once broke the suite there. Not emulated: the
    machine's speed and caches, and the SIMD of FFmpeg, OpenCV and numpy."""
    here = Path(__file__).parent
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
         str(here / "test_device.py"), str(here / "test_trace.py")],
        env=env, cwd=here.parent, capture_output=True, text=True, timeout=900)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail, tail


# ---------------------------------------------------------------------------------------
# GPU machines, without a GPU here


def test_auto_says_when_it_falls_back_to_the_cpu_on_a_gpu_machine(monkeypatch, tmp_path,
                                                                  caplog):
    """A machine with an NVIDIA driver whose GPU torch cannot use (driver too old for the
    build, say): ``auto`` runs on the CPU and says why, at warning level (a benchmark
    must not report CPU figures as GPU ones unseen); without a GPU it is an info line."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="camvideo.model.device"):
        monkeypatch.setattr(device, "NVIDIA_DRIVER_FILES", (str(tmp_path / "none"),))
        assert device.resolve_device("auto") == torch.device("cpu")
        assert [r.levelname for r in caplog.records] == ["INFO"]
        caplog.clear()
        (tmp_path / "version").write_text("NVRM version: 470.00\n")
        monkeypatch.setattr(device, "NVIDIA_DRIVER_FILES", (str(tmp_path / "version"),))
        monkeypatch.setattr(torch.version, "cuda", "13.0")

        def old_driver():
            raise RuntimeError("The NVIDIA driver on your system is too old (found "
                               "version 11040).\nPlease update your GPU driver.")

        monkeypatch.setattr(torch.cuda, "init", old_driver)
        assert device.resolve_device("auto") == torch.device("cpu")
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "driver on your system is too old" in warned[0].getMessage()
    assert "running on the CPU" in warned[0].getMessage()


def test_the_folding_check_runs_in_full_float32():
    """TF32 (Ampere/Hopper) differs from float32 by ~1e-3 relative, as much as the check
    against the original network allows: the check turns TF32 off, then restores it."""
    from camvideo.model.rewrite import exact_float32

    seen = []

    class Spy(nn.Module):
        def forward(self, x):
            seen.append((torch.backends.cuda.matmul.allow_tf32,
                         torch.backends.cudnn.allow_tf32,
                         torch.get_float32_matmul_precision()))
            return x

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.set_float32_matmul_precision("high")
    try:
        net = _conv_bn_net()
        net.append(Spy())
        model = from_modules(net, nn.Linear(6, 3), stride=1)
        optimize_model(model)
        assert model.backbone is not net  # folded: the check passed
        # the probe runs (hooks) with the process's settings, the check in float32
        assert (False, False, "highest") in seen
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                torch.get_float32_matmul_precision()) == (True, True, "high")
        with exact_float32():
            assert not torch.backends.cudnn.allow_tf32
        assert torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])
