"""Tests of camvideo.model.trace: the backbone as fused TorchScript graphs on the CPU.

The traced network must compute what the eager one does (fp32 within float rounding,
bf16 within its rounding), pad short batches instead of tracing again, be shared by the
engines of one model, and fall back to the eager network, with a log line, whenever
tracing fails or changes the result.
"""
from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from camvideo.options import Options
from camvideo.runtime.engine import build_engine
from camvideo import api
from camvideo.model.device import cpu_caps
from camvideo.model.cammodel import CamModel
from camvideo.model.registry import load_model
from camvideo.model.rewrite import optimize_model
from camvideo.model.trace import TracedBackbone, traced_backbone


@pytest.fixture(scope="module")
def lite0(lite0: CamModel) -> CamModel:
    """The session's default model, folded and fused (as every engine makes it)."""
    return optimize_model(lite0)


def probe(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 64, 96, generator=g).contiguous(memory_format=torch.channels_last)


def wrap(backbone: nn.Module) -> CamModel:
    return CamModel("toy", backbone, nn.Linear(4, 3), ["a", "b", "c"], (0.5,) * 3, (0.5,) * 3,
                    stride=2)


@pytest.mark.parametrize("precision", [None, pytest.param(
    torch.bfloat16, marks=pytest.mark.skipif(
        not cpu_caps().bf16_kernels,
        reason=f"oneDNN runs no bf16 convolutions on this CPU ({cpu_caps().name})"))])
def test_traced_backbone_computes_what_the_eager_one_does(lite0, precision):
    tb = TracedBackbone(lite0, precision)
    x = probe(3)
    ctx = torch.autocast("cpu", dtype=precision) if precision else torch.autocast(
        "cpu", enabled=False)
    with torch.inference_mode(), ctx:
        got = tb(x).float()
        ref = lite0.backbone(x).float()
    assert tb._graphs[tuple(x.shape)] is not None  # traced, not the fallback
    assert torch._C._jit_llga_enabled()
    tol = 1e-4 if precision is None else 0.05
    assert got.shape == ref.shape == (3, 1280, 2, 3)
    assert (got - ref).abs().max().item() <= tol * ref.abs().max().item()


def test_a_short_batch_is_padded_not_traced_again(lite0):
    tb = TracedBackbone(lite0, None)
    x = probe(4, seed=1)
    with torch.inference_mode():
        full = tb(x)
        short = tb(x[:1].contiguous(memory_format=torch.channels_last))
        ref = lite0.backbone(x[:1])
    assert list(tb._graphs) == [tuple(x.shape)]  # no graph for the batch of one
    assert short.shape == ref.shape == (1, 1280, 2, 3)
    assert torch.allclose(short, full[:1], atol=1e-5, rtol=0)
    assert torch.allclose(short, ref, atol=1e-4 * ref.abs().max().item(), rtol=0)


def test_per_frame_runs_batches_of_any_size_through_one_graph(lite0):
    """``--stride`` key frames and live batches come in any size: each frame goes
    through the batch-1 graph, which is traced once."""
    tb = TracedBackbone(lite0, None)
    x = probe(3, seed=2)
    with torch.inference_mode():
        ref = lite0.backbone(x)
        outs = [tb.per_frame(x[:n]) for n in (3, 1, 2)]
    assert list(tb._graphs) == [(1, *x.shape[1:])]
    for n, out in zip((3, 1, 2), outs):
        assert out.shape == (n, 1280, 2, 3)
        assert torch.allclose(out, ref[:n], atol=1e-4 * ref.abs().max().item(), rtol=0)


class _Untraceable(nn.Module):
    def forward(self, x):
        if torch.jit.is_tracing():
            raise RuntimeError("no tracing here")
        return x[:, :1].repeat(1, 4, 1, 1) * 2


class _TracesDifferently(nn.Module):
    def forward(self, x):
        y = x[:, :1].repeat(1, 4, 1, 1)
        return y * 3 if torch.jit.is_tracing() else y * 2


@pytest.mark.parametrize("net, says", [(_Untraceable(), "tracing failed"),
                                       (_TracesDifferently(), "traced network differs")])
def test_falls_back_to_the_eager_network(net, says, caplog):
    tb = TracedBackbone(wrap(net), None)
    x = probe(2)
    with caplog.at_level(logging.INFO, logger="camvideo.model.trace"), torch.inference_mode():
        out = tb(x)
        again = tb(x)
    assert torch.equal(out, x[:, :1].repeat(1, 4, 1, 1) * 2) and torch.equal(again, out)
    assert tb._graphs[tuple(x.shape)] is None
    assert sum(says in r.getMessage() for r in caplog.records) == 1  # tried once
    with caplog.at_level(logging.INFO, logger="camvideo.model.trace"), torch.inference_mode():
        assert torch.equal(tb.per_frame(x), out)                     # frame by frame too
    assert tb._graphs[(1, *x.shape[1:])] is None


def test_one_traced_backbone_per_model_and_precision(lite0):
    a = traced_backbone(lite0, None)
    assert traced_backbone(lite0, None) is a
    assert traced_backbone(lite0, torch.bfloat16) is not a
    other = optimize_model(load_model())
    assert traced_backbone(other, None) is not a


def test_engines_run_whole_batches_only_where_batches_are_equal(lite0):
    opts = Options()
    files = build_engine(opts, lite0)
    assert files._traced is not None and not files._per_frame
    live = build_engine(opts, lite0, equal_batches=False)
    strided = build_engine(Options(stride=3), lite0)
    assert live._per_frame and strided._per_frame
    assert live._traced is strided._traced is files._traced            # shared by all
    assert build_engine(opts, lite0, trace=False)._traced is None
