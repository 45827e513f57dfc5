"""CUDA paths of the pipeline: pinned uploads (I420 or RGB), device preprocessing,
autocast, smoothing and rendering on the device (on a stream of its own), NVENC (or its
libx264 fallback), no host sync per frame, memory at 720p and 4K. Every test is marked
``cuda`` and skipped without a GPU (see conftest.py); benchmarks/gpu_check runs them."""
from __future__ import annotations

import copy

import av
import numpy as np
import pytest
import torch
from torch import nn

from camvideo import api
from camvideo.media.files import FileSource
from camvideo.media.frames import Frame
from camvideo.model.registry import from_modules, load_model
from camvideo.model.device import resolve_precision
from camvideo.runtime.engine import CamEngine
from camvideo.render import Renderer
from camvideo.smoothing import Smoother

pytestmark = pytest.mark.cuda


def tiny_model():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.BatchNorm2d(8),
                             nn.ReLU(), nn.Conv2d(8, 8, 3, stride=4, padding=1), nn.ReLU())
    return from_modules(backbone, nn.Linear(8, 5), stride=16)


def engine_for(model, device: str, precision=None, stride: int = 1) -> CamEngine:
    model = copy.deepcopy(model).to(device)
    return CamEngine(model, Renderer(model.labels, topk=2),
                     Smoother(model.weight.detach().float(), tau=0.0), short_side=64,
                     precision=precision, stride=stride)


def frames(n: int, h: int = 72, w: int = 128, seed: int = 0) -> list[Frame]:
    rng = np.random.default_rng(seed)
    return [Frame(i, rng.integers(0, 256, (h, w, 3), dtype=np.uint8), i, i / 30)
            for i in range(n)]


def test_pinned_upload_round_trip_and_reuse():
    eng = engine_for(tiny_model(), "cuda")
    batches = [frames(4, seed=1), frames(4, seed=2), frames(7, seed=3), frames(2, seed=4)]
    uploaded = [eng._upload(b) for b in batches]  # buffers reused and grown in turn
    torch.cuda.synchronize()
    for b, dev in zip(batches, uploaded):
        assert dev.is_cuda and dev.dtype == torch.uint8
        assert (dev.cpu().numpy() == np.stack([f.image for f in b])).all()
    assert all(p.is_pinned() for p in eng._pinned)


def test_cuda_engine_matches_cpu_engine():
    model = tiny_model()
    batch = frames(6)
    cpu = engine_for(model, "cpu").process(batch)
    gpu = engine_for(model, "cuda").process(batch)
    half = engine_for(model, "cuda", precision=torch.float16).process(batch)
    assert len(cpu) == len(gpu) == len(half) == 6
    for c, g, h in zip(cpu, gpu, half):
        assert g.index == c.index and g.image.shape == c.image.shape
        # the CPU resizes as uint8, the GPU in float: inputs differ by < 1/255
        assert np.abs(g.map - c.map).max() <= 0.02
        assert np.abs(h.map - c.map).max() <= 0.05
        d = np.abs(g.image.astype(int) - c.image.astype(int))
        assert np.percentile(d, 99) <= 6  # OpenCV vs tensor colouring, input rounding


def test_render_on_the_device_equals_cpu_render():
    r = Renderer([f"c{i}" for i in range(5)], topk=2, bbox=True)
    g = torch.Generator().manual_seed(0)
    fr = torch.randint(0, 256, (3, 90, 160, 3), dtype=torch.uint8, generator=g)
    maps = torch.rand(3, 6, 10, generator=g)
    probs = torch.softmax(torch.randn(3, 5, generator=g), 1)
    cls = probs.argmax(1)
    a, na = r.render(list(fr.numpy()), maps, probs, cls)
    b, nb = r.render(fr.cuda(), maps.cuda(), probs.cuda(), cls.cuda())
    for x, y in zip(a, b):
        assert isinstance(y, np.ndarray) and y.flags.c_contiguous
        assert np.abs(x.astype(int) - y.astype(int)).max() <= 3
    assert [n.bbox for n in na] == [n.bbox for n in nb]


def test_stride_on_cuda():
    eng = engine_for(tiny_model(), "cuda", stride=3)
    out = eng.process(frames(8)) + eng.process(frames(8, seed=5)) + eng.flush()
    assert len(out) == 16 and eng.network_frames == 6


def test_auto_precision_is_fp16_on_cuda():
    assert resolve_precision("auto", torch.device("cuda")) is torch.float16


@pytest.mark.parametrize("codec", ["libx264", "h264_nvenc"])
def test_annotate_on_cuda_keeps_frames_and_timestamps(pan_clip, tmp_path, codec):
    model = load_model(device="cuda")
    out = tmp_path / f"{codec}.mp4"
    summary = api.annotate(pan_clip.path, out, model=model, device="cuda", codec=codec)
    assert summary.frames == pan_clip.frames
    with av.open(str(out)) as c:
        pts = [f.pts for f in c.decode(video=0)]
    with FileSource(pan_clip.path) as src:
        ref = [f.pts for f in src]
    assert pts == ref


def i420_frames(n: int, h: int = 72, w: int = 128, seed: int = 0) -> list[Frame]:
    from camvideo import pixels

    return [Frame(f.index, pixels.from_rgb(f.image), f.pts, f.time, pixels.I420)
            for f in frames(n, h, w, seed)]


def test_i420_upload_preprocess_and_blend_on_the_device_match_the_cpu():
    """I420 frames go up as they were decoded (1.5 bytes a pixel), are converted for the
    model and blended as I420 on the device, and come back I420: as the CPU path does."""
    model = tiny_model()
    batch = i420_frames(6)
    gpu_eng = engine_for(model, "cuda")
    up = gpu_eng._upload(batch)
    torch.cuda.synchronize()
    assert up.shape == (6, 72 * 3 // 2, 128) and up.dtype == torch.uint8
    assert (up.cpu().numpy() == np.stack([f.image for f in batch])).all()
    cpu = engine_for(model, "cpu").process(batch)
    gpu = engine_for(model, "cuda").process(batch)
    for c, g in zip(cpu, gpu):
        assert g.image.ndim == 2 and g.image.shape == c.image.shape  # I420 out
        assert np.abs(g.map - c.map).max() <= 0.03
        d = np.abs(g.image.astype(int) - c.image.astype(int))
        assert np.percentile(d, 99) <= 6


@pytest.mark.parametrize("overrides", [{}, {"cls": "tabby"}, {"smooth_mode": "centered"},
                                       {"stride": 3}])
def test_smoothing_and_class_on_cuda_match_the_cpu(pan_clip, overrides):
    """Smoothing on (motion, hysteresis, ranges), a fixed class, centered mode, stride:
    the CUDA results equal the CPU's (fp32 both; the CPU resizes as uint8)."""
    import camvideo

    cpu_model, gpu_model = load_model(), load_model(device="cuda")
    with camvideo.stream(pan_clip.path, cpu_model, precision="fp32", **overrides) as s:
        cpu = list(s)
    with camvideo.stream(pan_clip.path, gpu_model, precision="fp32", **overrides) as s:
        gpu = list(s)
    assert [r.index for r in gpu] == [r.index for r in cpu]
    agree = np.mean([g.cls == c.cls for g, c in zip(gpu, cpu)])
    assert agree >= 0.95
    for g, c in zip(gpu, cpu):
        if g.cls == c.cls:
            assert np.abs(g.map - c.map).max() <= 0.05


def test_the_encoder_actually_used_is_reported(pan_clip, tmp_path):
    """H100/H200 have no NVENC: h264_nvenc falls back to libx264 (and says so)."""
    out = tmp_path / "o.mp4"
    summary = api.annotate(pan_clip.path, out, model=load_model(device="cuda"),
                           codec="h264_nvenc", preset="p5")
    assert summary.extra["encoder"] in ("h264_nvenc", "libx264")
    assert summary.extra["device"].startswith("cuda")
    print(f"encoder used for h264_nvenc: {summary.extra['encoder']}")


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_a_second_gpu_runs_there_and_leaves_gpu_0_alone(pan_clip, tmp_path):
    before = torch.cuda.memory_allocated(0)
    model = load_model(device="cuda:1")
    summary = api.annotate(pan_clip.path, tmp_path / "o.mp4", model=model)
    assert summary.frames == pan_clip.frames and summary.extra["device"] == "cuda:1"
    assert torch.cuda.memory_allocated(0) == before


def test_no_host_sync_in_the_steady_state():
    """After the first batches (tracing, buffers, the colour tables), a batch makes no
    implicit host synchronisation: only the explicit event waits of the pinned copies."""
    eng = CamEngine(copy.deepcopy(tiny_model()).cuda(), Renderer([str(i) for i in range(5)],
                    topk=2), Smoother(tiny_model().weight.detach().float().cuda()),
                    short_side=64)
    batches = [i420_frames(4, seed=s) for s in range(6)]
    for b in batches[:2]:
        eng.process(b)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for b in batches[2:]:
            eng.process(b)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("size", [(1280, 720), (3840, 2160)])
def test_peak_gpu_memory(tmp_path, size):
    """Peak GPU memory of a default run at 720p and 4K (printed for the GPU check)."""
    from camvideo.testing import synth

    clip = synth.make_clip("pan", tmp_path / "c.mp4", size=size, n=24, fps=24)
    model = load_model(device="cuda")
    torch.cuda.reset_peak_memory_stats()
    api.annotate(clip.path, tmp_path / "o.mp4", model=model)
    peak = torch.cuda.max_memory_allocated() / 2**20
    print(f"peak GPU memory at {size[0]}x{size[1]}: {peak:.0f} MiB")
    assert peak < (2048 if size[0] <= 1280 else 8192)
