"""Tests of camvideo.runtime.engine through the pipeline (batching, concurrent forward
passes, the fast CPU path, --stride) and of the renderer's two colouring paths (the
threads and queues: tests/test_pipeline.py; camvideo.model.rewrite's folding and fusion:
tests/test_device.py).

The fast path must not change the results: batch size 1 in fp32 and batch size 8 in the
automatic precision (bf16 on CPUs with native bf16) give the same frame count, the same
timestamps and the same maps (within float rounding in fp32, bf16 rounding otherwise).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from camvideo.options import Options
from camvideo.runtime.engine import build_engine
from camvideo import api
from camvideo.model.device import resolve_precision
from camvideo.runtime.engine import CamEngine
from camvideo.errors import OptionError
from camvideo.media.files import FileSource
from camvideo.media.frames import Frame
from camvideo.model.registry import load_model
from camvideo.runtime.pipeline import run_stream
from camvideo.render import Renderer
from camvideo.smoothing import Smoother


@pytest.fixture(autouse=True)
def _keep_torch_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def video_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return sorted(int(f.pts) for f in c.decode(video=0))


def annotate(clip, tmp_path: Path, tag: str, model, **kw) -> tuple[Path, list[dict]]:
    out, side = tmp_path / f"{tag}.mp4", tmp_path / f"{tag}.jsonl"
    api.annotate(clip.path, out, model=model, json=str(side), json_cams=True,
                 overwrite=True, **kw)
    return out, records(side)


#: maps equal up to float rounding, as the JSON's 4 decimals show them: one unit of the last
#: decimal apart at most (fp32; the traced network of files and the eager one of
#: ``--stride``, or two batch shapes, sum in different orders)
JSON_TOL = 1.5e-4


def max_map_diff(a: list[dict], b: list[dict]) -> float:
    return max(float(np.abs(np.array(p["cam"]) - np.array(q["cam"])).max())
               for p, q in zip(a, b))


# ---------------------------------------------------------------------------------------
# the fast path equals the plain path


def test_fast_path_equals_plain_path(pan_clip, lite0, tmp_path):
    out1, plain = annotate(pan_clip, tmp_path, "plain", lite0, batch_size=1,
                           precision="fp32")
    out8, fast32 = annotate(pan_clip, tmp_path, "fast32", lite0, batch_size=8,
                            precision="fp32")
    outa, fast = annotate(pan_clip, tmp_path, "fast", lite0, batch_size=8,
                          precision="auto")
    assert len(plain) == len(fast32) == len(fast) == pan_clip.frames
    pts = video_pts(out1)
    assert len(pts) == pan_clip.frames and video_pts(out8) == pts and video_pts(outa) == pts
    assert [r["time"] for r in fast] == [r["time"] for r in plain]
    # batching changes nothing in fp32 beyond float rounding (each batch shape has its
    # own fused graph, camvideo.model.trace)
    assert max_map_diff(plain, fast32) <= JSON_TOL
    assert [r["class"] for r in plain] == [r["class"] for r in fast32]
    # bf16 (where native): maps within its rounding; measured 0.036 on this clip
    tol = 0.1 if resolve_precision("auto", torch.device("cpu")) is not None else JSON_TOL
    assert max_map_diff(plain, fast) <= tol
    assert max(abs(p["score"] - q["score"]) for p, q in zip(plain, fast)) <= tol


def test_concurrent_inference_equals_one_at_a_time(pan_clip, lite0):
    """Two forward passes at once (the CPU default) give the same frames, maps and
    scores, in the same order, as one at a time."""
    def run(workers: int) -> list:
        opts = Options()
        base = build_engine(opts, lite0)
        engine = CamEngine(base.model, base.renderer, base.smoother,
                           precision=base.precision, infer_workers=workers)
        assert engine.infer_workers == workers
        out: list = []
        run_stream(FileSource(pan_clip.path), engine, out.append, batch_size=4)
        return out

    one, two = run(1), run(2)
    assert [r.pts for r in two] == [r.pts for r in one] == sorted(r.pts for r in one)
    assert len(one) == pan_clip.frames
    for a, b in zip(one, two):
        assert (a.cls, a.topk) == (b.cls, b.topk)
        assert np.array_equal(a.image, b.image)


def test_a_loaded_model_runs_on_its_own_device(lite0, monkeypatch):
    """``annotate(..., model=load_model())`` on a GPU machine: "auto" would pick CUDA
    (and fp16), but the model is on the CPU; it runs there, with the CPU's precision.
    Asking for another device than the model's is refused."""
    monkeypatch.setattr(api, "resolve_device", lambda spec: torch.device("cuda"))
    engine = build_engine(Options(), lite0)
    assert engine.device.type == "cpu" and engine.precision != torch.float16
    with pytest.raises(OptionError, match="model given is on cpu"):
        build_engine(Options(device="cuda"), lite0)


def test_concurrent_inference_needs_cpu_and_stride_1(lite0):
    base = build_engine(Options(), lite0)
    assert base.infer_workers == 2  # the CPU default
    with pytest.raises(OptionError, match="stride 1"):
        CamEngine(base.model, base.renderer, base.smoother, stride=2, infer_workers=2)
    strided = CamEngine(base.model, base.renderer, base.smoother, stride=3)
    assert strided.infer_workers == 1


# ---------------------------------------------------------------------------------------
# --stride


def test_stride_runs_the_network_on_every_nth_frame(pan_clip, lite0, tmp_path):
    engine = build_engine(Options(stride=3, smooth=0, precision="fp32"), lite0)
    from camvideo.media.files import FileSource

    with FileSource(pan_clip.path) as src:
        frames = list(src)
    out = []
    for i in range(0, len(frames), 8):
        out += engine.process(frames[i:i + 8])
    out += engine.flush()
    assert len(out) == len(frames)
    assert engine.network_frames == math.ceil(len(frames) / 3)
    # the frames between carry the last labels
    for k in range(0, len(out) - 2, 3):
        assert out[k + 1].topk == out[k].topk == out[k + 2].topk


def test_stride_output_matches_on_key_frames_and_moves_with_the_image(pan_clip, lite0,
                                                                      tmp_path):
    o1, every = annotate(pan_clip, tmp_path, "s1", lite0, smooth=0, precision="fp32")
    o3, third = annotate(pan_clip, tmp_path, "s3", lite0, smooth=0, precision="fp32",
                         stride=3, batch_size=5)
    _, still = annotate(pan_clip, tmp_path, "s3n", lite0, smooth=0, precision="fp32",
                        stride=3, motion=False)
    assert video_pts(o3) == video_pts(o1) and len(third) == len(every)
    assert max_map_diff(every[::3], third[::3]) <= JSON_TOL  # key frames: the network's

    def err(a, b):
        return float(np.mean([np.abs(np.array(p["cam"]) - np.array(q["cam"])).mean()
                              for p, q in zip(a, b)]))

    # the carried maps moved with the image are closer to the true ones than unmoved ones
    assert err(every, third) < err(every, still)


def test_stride_runs_the_network_on_scene_cuts(cuts_clip, lite0, tmp_path):
    _, every = annotate(cuts_clip, tmp_path, "c1", lite0, smooth=0, precision="fp32")
    _, fifth = annotate(cuts_clip, tmp_path, "c5", lite0, smooth=0, precision="fp32",
                        stride=5)
    for cut in cuts_clip.cuts:  # 0, 16, 32: not multiples of 5 except 0
        assert max_map_diff([every[cut]], [fifth[cut]]) <= JSON_TOL
        assert every[cut]["class"] == fifth[cut]["class"]


def test_stride_and_smoother_share_one_motion_estimate_per_frame(pan_clip, lite0, tmp_path,
                                                                 monkeypatch):
    """With ``--stride`` and smoothing on, the carry and the smoother both need each
    frame's motion: it is estimated once per frame, not once for each."""
    from camvideo import motion

    pairs = []
    estimate = motion.MotionEstimator.estimate

    def counted(self, prev, cur, grid):
        pairs.append((prev.tobytes(), cur.tobytes()))
        return estimate(self, prev, cur, grid)

    monkeypatch.setattr(motion.MotionEstimator, "estimate", counted)
    _, smoothed = annotate(pan_clip, tmp_path, "ss", lite0, precision="fp32", stride=3,
                           batch_size=5)
    assert len(smoothed) == pan_clip.frames
    assert len(pairs) == pan_clip.frames - 1          # one per frame after the first
    assert len(set(pairs)) == len(pairs)              # each pair of frames once


def test_stride_is_validated():
    with pytest.raises(OptionError):
        Options(stride=0)


# ---------------------------------------------------------------------------------------
# rendering: the CPU (OpenCV) path equals the tensor path used on GPUs


@pytest.mark.parametrize("layout", ["overlay", "side"])
def test_cpu_render_equals_tensor_render(layout):
    labels = [f"class {i}" for i in range(5)]
    r = Renderer(labels, topk=2, bbox=True, layout=layout)
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (3, 90, 160, 3), dtype=torch.uint8, generator=g)
    maps = torch.rand(3, 6, 10, generator=g)
    probs = torch.softmax(torch.randn(3, 5, generator=g), 1)
    classes = probs.argmax(1)
    before = frames.clone()
    cpu_imgs, cpu_notes = r.render(list(frames.numpy()), maps, probs, classes)
    assert torch.equal(frames, before)  # drawn on copies
    t_imgs, t_peaks, t_small = r._colour_torch(frames, maps)
    ref_imgs, ref_notes = r._annotate(t_imgs, t_peaks, t_small, maps, probs, classes, 90, 160)
    for a, b in zip(cpu_imgs, ref_imgs):
        assert a.shape == b.shape == (90, 320 if layout == "side" else 160, 3)
        d = np.abs(a.astype(int) - b.astype(int))
        assert d.max() <= 3 and (d > 1).mean() < 1e-3
    for a, b in zip(cpu_notes, ref_notes):
        assert a.bbox == b.bbox and a.topk == b.topk and a.cls == b.cls
        assert abs(a.peak[0] - b.peak[0]) <= 1 and abs(a.peak[1] - b.peak[1]) <= 1
    if layout == "side":  # the left half is the frame (a box's antialiased edge aside)
        assert (cpu_imgs[0][:, :158] == frames[0].numpy()[:, :158]).all()


def test_engine_does_not_modify_the_input_frames(lite0):
    engine = CamEngine(lite0, Renderer(lite0.labels), Smoother(lite0.weight.detach()))
    img = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    keep = img.copy()
    out = engine.process([Frame(0, img, 0, 0.0)])
    assert (img == keep).all() and out[0].image is not img
