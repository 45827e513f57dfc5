"""Video networks (camvideo.model.video, camvideo.runtime.clips): per family, random-initialised
weights saved the way torchvision saves them reproduce the network's logits and maps, and
a run end to end keeps frame count and timing; a hand-built 3-D network whose map follows
brightness shows the map is aligned in time; clips cover every frame once; options,
live streams and batches."""
from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import video as tvv

import camvideo
from camvideo.commands.main import main
from camvideo.errors import ModelError, OptionError
from camvideo.media.streams import LiveSource
from camvideo.model import heads
from camvideo.model.registry import from_modules, kinetics_labels, load_model
from camvideo.model.video import TimeAxis, VideoCamModel, time_axis_of
from camvideo.runtime.clips import ClipSchedule
from camvideo.testing import synth
from camvideo.testing.clip import decoded_times
from net_tools import as_if_trained

K = 10          # classes of the random networks
RTOL = 1e-4     # relative error allowed (to the largest value compared)
KINETICS_MEAN = torch.tensor(heads.KINETICS_MEAN).view(1, 3, 1, 1, 1)
KINETICS_STD = torch.tensor(heads.KINETICS_STD).view(1, 3, 1, 1, 1)

#: family name -> (feature time of input frame: scale, offset), read off the layers
AXES = {"r3d_18": (8.0, 0.0), "mc3_18": (1.0, 0.0), "r2plus1d_18": (8.0, 0.0),
        "s3d": (8.0, 2.0)}
#: a clip each family accepts: (T, H, W); S3D's 2x7x7 pooling needs 224 px
CLIPS = {"s3d": (16, 224, 256)}
FAMILY_CLIP = (16, 48, 80)


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


@pytest.fixture(scope="module", params=list(AXES))
def family(request, tmp_path_factory) -> tuple[str, nn.Module, Path, VideoCamModel]:
    """``(name, network in eval mode, weights file, loaded model)``, the weights saved as
    ``torch.save(net.state_dict())``."""
    name = request.param
    torch.manual_seed(0)
    net = as_if_trained(getattr(tvv, name)(num_classes=K)).eval()
    path = tmp_path_factory.mktemp("weights") / f"{name}.pth"
    torch.save(net.state_dict(), path)
    model = load_model(name, weights=path)               # the probe check runs inside
    assert isinstance(model, VideoCamModel)
    return name, net, path, model


def reference(name: str, net: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor,
                                                                   torch.Tensor]:
    """``(maps (N, K, t, h, w), logits (N, K))`` by hand from the network's own modules
    (normalised input ``x``); the logits are the network's forward pass. S3D's per-cell
    weights are the gradient of its own head (pooling, mean) with respect to the class
    maps, not camvideo's formula."""
    with torch.no_grad():
        logits = net(x)
    if name == "s3d":
        with torch.no_grad():
            m = net.classifier[1](net.features(x))      # class maps before the pooling
        m.requires_grad_(True)
        pooled = net.avgpool(m).mean(dim=(2, 3, 4))     # the head, pooling first
        omega = torch.autograd.grad(pooled.sum(), m)[0]  # (N, K, t, h, w), sums to 1
        assert rel_err(pooled.detach(), logits) <= RTOL   # conv and pooling commute
        cells = m.shape[2] * m.shape[3] * m.shape[4]
        maps, bias = m.detach() * omega * cells, torch.zeros(K)
    else:
        with torch.no_grad():
            f = net.layer4(net.layer3(net.layer2(net.layer1(net.stem(x)))))
            maps = torch.einsum("kc,ncthw->nkthw", net.fc.weight, f)
        bias = net.fc.bias
    assert rel_err(maps.mean(dim=(2, 3, 4)) + bias, logits) <= RTOL
    return maps, logits


@torch.inference_mode()
def _ours(model: VideoCamModel, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    feats, logits = model(x)
    maps = torch.einsum("kc,ncthw->nkthw", model.weight, feats)
    return maps, logits


def test_decomposition_reproduces_logits_and_maps(family):
    name, net, _, model = family
    assert len(model.labels) == K and model.clip_len == 16
    t, h, w = CLIPS.get(name, FAMILY_CLIP)
    x01 = torch.rand(1, 3, t, h, w, generator=torch.Generator().manual_seed(2))
    x = (x01 - KINETICS_MEAN) / KINETICS_STD
    ref_maps, ref_logits = reference(name, net, x)
    maps, logits = _ours(model, (x01 - model.mean[..., None]) / model.std[..., None])
    assert rel_err(logits, ref_logits) <= RTOL
    assert rel_err(maps, ref_maps) <= RTOL
    # the time axis read off the layers, and the feature times it predicts
    assert (model.time_axis.scale, model.time_axis.offset) == AXES[name]
    assert model.time_axis.length(t) == maps.shape[2]


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory):
    """A tiny variable-frame-rate pan: 21 frames, 96x64 (two clips of 16 at hop 8, and
    the last clip)."""
    gaps = (0.04, 0.06, 0.03, 0.07, 0.033)
    times = [0.0]
    for i in range(20):
        times.append(round(times[-1] + gaps[i % len(gaps)], 3))
    return synth.make_clip("pan", tmp_path_factory.mktemp("clip") / "in.mp4", size=(96, 64),
                           n=len(times), fps=30, times=times)


def test_end_to_end_keeps_frame_count_and_timing(family, vfr_clip, tmp_path):
    """The whole run by name and weights file (the CLI's path): every frame out once,
    with its own time, in the video and the sidecar. S3D gets 7 frames (one clip, padded),
    the others 21 (two clips and the stream's last)."""
    name, _, path, _ = family
    n = 7 if name == "s3d" else vfr_clip.frames
    src = tmp_path / "in.mp4"
    if n == vfr_clip.frames:
        src = vfr_clip.path
    else:
        with av.open(str(vfr_clip.path)) as c:
            frames = [f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])]
        synth.write_clip(src, frames[:n], times=vfr_clip.times[:n])
    out, side = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    summary = camvideo.annotate(src, out, model=name, weights=str(path), size=32,
                                json=str(side))
    assert summary.frames == n
    assert decoded_times(out) == pytest.approx(vfr_clip.times[:n], abs=1e-3)
    recs = [json.loads(line) for line in side.read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(n))
    assert [r["time"] for r in recs] == pytest.approx(vfr_clip.times[:n], abs=1e-3)
    assert all(0 <= r["class"] < K and 0.0 <= r["score"] <= 1.0 for r in recs)


# ---------------------------------------------------------------------------------------
# Time alignment: a hand-built network whose map follows brightness


def brightness_net(time_strides: int = 2) -> VideoCamModel:
    """A 3-D network whose one feature is the mean brightness of an 8x8-pixel cell over a
    few frames, downsampling time by ``2 ** time_strides``; class 0's map is that
    brightness, class 1's its negative."""
    layers: list[nn.Module] = [nn.Conv3d(3, 1, (3, 8, 8), stride=(2, 8, 8),
                                         padding=(1, 0, 0), bias=False)]
    for _ in range(time_strides - 1):
        layers.append(nn.Conv3d(1, 1, (3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0),
                                bias=False))
    fc = nn.Linear(1, 2)
    with torch.no_grad():
        for layer in layers:
            layer.weight.fill_(1.0 / layer.weight[0].numel())
        fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
        fc.bias.zero_()
    return from_modules(nn.Sequential(*layers), fc, labels=["bright", "dark"],  # type: ignore
                        mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), stride=8, clip_len=16)


@pytest.fixture(scope="module")
def blob_clip(tmp_path_factory):
    """A bright disc crossing the darkened cat at ~6 px per frame: 48 frames, 320x96."""
    frames, centres, _ = synth.blob_frames((320, 96), 48, radius=10)
    clip = synth.write_clip(tmp_path_factory.mktemp("blob") / "blob.mp4", frames, fps=30)
    return clip, centres


def _peak_on_blob(clip, centres, model, **opts) -> np.ndarray:
    """Per frame: is the map's peak on the disc (within its radius of the centre)?"""
    on = []
    with camvideo.stream(clip.path, model, smooth=0, size=96, cls=0, topk=1, **opts) as rs:
        for r in rs:
            cx, cy = centres[r.index]
            on.append(np.hypot(r.peak[0] - cx, r.peak[1] - cy) <= 10)
    assert len(on) == clip.frames
    return np.array(on)


def test_video_map_is_aligned_in_time(blob_clip):
    """Time downsampled by 4 (16 frames -> 4 feature times, centred on frames 0, 4, 8,
    12 of each clip): the blob is under the map's peak on >= 90 % of the frames, with
    the default hop and with another. Misaligned by 1.5 frames (feature times taken as
    even segments' centres) it is not: the test can tell."""
    clip, centres = blob_clip
    model = brightness_net(2)
    assert (model.time_axis.scale, model.time_axis.offset) == (4.0, 0.0)
    assert _peak_on_blob(clip, centres, model).mean() >= 0.9
    assert _peak_on_blob(clip, centres, model, clip_hop=5).mean() >= 0.9
    shifted = brightness_net(2)
    shifted.time_axis = TimeAxis()                  # unknown: even segments, 4j + 1.5
    assert _peak_on_blob(clip, centres, shifted).mean() < 0.75


def test_frame_features_interpolate_between_feature_times():
    model = brightness_net(2)
    feats = torch.arange(4.0).view(1, 4, 1, 1).expand(1, 4, 2, 3)   # (C, t, h, w)
    got = model.frame_features(feats, torch.tensor([0.0, 2.0, 4.0, 13.0, 15.0]))
    assert got.shape == (5, 1, 2, 3)
    assert got[:, 0, 0, 0].tolist() == [0.0, 0.5, 1.0, 3.0, 3.0]   # held at the end


# ---------------------------------------------------------------------------------------
# Clips


@pytest.mark.parametrize("clip_len", [1, 4, 16])
def test_every_frame_gets_one_clip_in_order_within_one_clip_of_latency(clip_len):
    """For streams of 1..40 frames and every hop: the frames given maps are exactly
    0..n-1 in order, each from a clip that holds it, every clip ``T`` frames long (or
    the whole stream when shorter), and each frame's clip is complete at most ``T - 1``
    frames after it arrived."""
    for hop in range(1, clip_len + 1):
        for n in range(1, 41):
            sched = ClipSchedule(clip_len, hop)
            given: list[int] = []
            for received in range(1, n + 1):
                for p in sched.ready(received):
                    assert p.start + p.length <= received and p.length == clip_len
                    assert p.start <= p.first and p.stop <= p.start + clip_len
                    assert all(received - 1 - i <= clip_len - 1
                               for i in range(p.first, p.stop))
                    given += range(p.first, p.stop)
            last = sched.end(n)
            if last is not None:
                assert last.length == min(n, clip_len) and last.start + last.length == n
                assert last.start <= last.first
                given += range(last.first, last.stop)
            assert given == list(range(n)), (clip_len, hop, n)
    with pytest.raises(ValueError):
        ClipSchedule(16, 17)


def test_short_stream_is_one_padded_clip_and_frames_keep_their_times():
    """5 frames (fewer than a clip) through the engine: one forward pass on 16 frames
    (the last repeated), 5 results with the frames' own times."""
    model = brightness_net(2)
    frames, _, _ = synth.blob_frames((64, 32), 5, radius=4)
    from camvideo.media.frames import Frame
    src = [Frame(i, f, 100 + 7 * i, 0.25 + i / 7) for i, f in enumerate(frames)]
    with camvideo.stream(src, model, smooth=0, size=32, topk=1) as rs:
        out = list(rs)
    assert [r.index for r in out] == list(range(5))
    assert [r.pts for r in out] == [100 + 7 * i for i in range(5)]
    assert [r.time for r in out] == pytest.approx([0.25 + i / 7 for i in range(5)])
    assert rs.engine.network_frames == 16


def test_no_clip_spans_a_source_cut():
    """A frame its source marks as a cut (a live source reopened after a gap) ends the
    clips so far: 10 + 30 frames give one padded clip, then clips of their own (at 0
    and 8 of the new part, and its last 16 frames); every frame comes out once, in order."""
    model = brightness_net(2)
    frames, _, _ = synth.blob_frames((64, 32), 40, radius=4)
    from camvideo.media.frames import Frame
    src = [Frame(i, f, i, i / 30, cut=i == 10) for i, f in enumerate(frames)]
    with camvideo.stream(src, model, size=32, topk=1, batch_size=4) as rs:
        out = list(rs)
    assert [r.index for r in out] == list(range(40))
    assert rs.engine._clips.clips == 4 and rs.engine.network_frames == 4 * 16
    assert out[10].cut and not any(r.cut for r in out[11:])   # the smoothing restarts


def test_time_axis_of_pointwise_and_unknown_layers():
    conv = nn.Conv3d(2, 2, (5, 1, 1), stride=(3, 1, 1), padding=(1, 0, 0), dilation=(2, 1, 1))
    axis = time_axis_of(nn.Sequential(conv, nn.BatchNorm3d(2), nn.ReLU()))
    # j -> 3 j - 1 + 2 * (5 - 1) / 2
    assert (axis.scale, axis.offset) == (3.0, 3.0)
    x = torch.zeros(1, 2, 17, 1, 1)
    assert axis.length(17) == conv(x).shape[2]

    class Resample(nn.Module):           # moves time in a way the walk does not know
        def forward(self, x):
            return nn.functional.interpolate(x, scale_factor=(0.5, 1, 1))

    assert not time_axis_of(nn.Sequential(conv, Resample())).known


# ---------------------------------------------------------------------------------------
# Heads, labels, options


def test_s3d_weights_are_one_at_its_own_size_and_follow_the_pooling_when_wider():
    maps = heads.PooledClassMaps(nn.Identity(), nn.AvgPool3d((2, 7, 7), stride=1),
                                 nn.Conv3d(4, 3, 1))
    assert torch.equal(maps.weights((2, 7, 7), torch.device("cpu"), torch.float32),
                       torch.ones(1, 1, 2, 7, 7))
    w = maps.weights((2, 7, 9), torch.device("cpu"), torch.float32)[0, 0, 0, 0]
    # 3 windows of 7 columns: column coverage 1, 2, 3, 3, 3, 3, 3, 2, 1 of 21
    assert w.tolist() == pytest.approx([c * 9 / 21 for c in (1, 2, 3, 3, 3, 3, 3, 2, 1)])
    with pytest.raises(ModelError, match="not a stride-1 average pooling"):
        heads.pooled_class_map_head(nn.Identity(), nn.AvgPool3d(2), nn.Conv3d(4, 3, 1), "m")


@pytest.mark.parametrize("family", ["s3d"], indirect=True)
def test_probe_check_refuses_s3d_maps_without_the_pooling_weights(family):
    """The probe check holds video networks too: S3D's class maps without their cell
    weights (a plain mean where the network's 2x7x7 pooling counts border cells less)
    do not reproduce its logits on the probe (224x256: 7x8 maps), and are refused."""
    name, net, _, _ = family
    net = copy.deepcopy(net)
    with torch.no_grad():   # logits of a trained network's size (random ones are ~0.1,
        net.classifier[1].weight.mul_(100.0)   # under the check's absolute floor)
    split = heads.split_torchvision(net, "s3d", name, "class maps")
    probe = (1, 3, 16, 224, 256)
    assert heads.verify_split(name, split, probe_shape=probe) is None
    maps = split.backbone
    split.backbone = nn.Sequential(maps.body, maps.conv)          # unweighted
    with pytest.raises(ModelError, match=r"probe error .*class maps does not reproduce"):
        heads.verify_split(name, split, probe_shape=probe)


def test_weights_from_torchvisions_cache_with_kinetics_labels(tmp_path, monkeypatch, capsys):
    """400-class weights in torchvision's checkpoint cache (offline) load by name alone,
    with Kinetics-400's class names; a name whose weights are neither cached nor
    downloadable is one line, exit 5."""
    labels = kinetics_labels()
    assert len(labels) == 400 and labels[0] == "abseiling"
    torch.manual_seed(0)
    net = tvv.mc3_18(num_classes=400)
    url = tvv.MC3_18_Weights.DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    torch.save(net.state_dict(), cached)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse_download)
    model = load_model("mc3_18")
    assert model.labels == labels and model.default_side == 112
    assert torch.equal(model.weight, net.fc.weight)
    clip = synth.make_clip("pan", tmp_path / "in.mp4", size=(64, 48), n=3)
    code = main([str(clip.path), str(tmp_path / "out.mp4"), "-m", "r3d_18", "-q"])
    err = capsys.readouterr().err
    assert code == 5 and err.count("\n") == 1 and "no weights for r3d_18" in err


def _refuse_download(url, dst, *a, **k):
    raise OSError(f"no network: {url}")


def test_options_for_video_networks(family, tmp_path, capsys):
    """A hop longer than the clip, --clip-hop with an image network and --stride with a
    video network are refused naming the option (exit 2, one line)."""
    name, _, path, model = family
    with pytest.raises(OptionError) as e:
        camvideo.stream([], model, clip_hop=17)
    assert e.value.option == "clip_hop" and "1..16" in str(e.value)
    with pytest.raises(OptionError) as e:
        camvideo.stream([], model, stride=2)
    assert e.value.option == "stride"
    if name != "r3d_18":
        return
    src = tmp_path / "in.mp4"
    synth.make_clip("pan", src, size=(64, 48), n=3)
    code = main([str(src), str(tmp_path / "out.mp4"), "-m", name, "--weights", str(path),
                 "--clip-hop", "20", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--clip-hop must be in 1..16" in err[0], err
    tiny = from_modules(nn.Sequential(nn.Conv2d(3, 4, 32, stride=32)), nn.Linear(4, 3))
    with pytest.raises(OptionError) as e:
        camvideo.stream([], tiny, clip_hop=4)
    assert e.value.option == "clip_hop"


# ---------------------------------------------------------------------------------------
# Live and batch


def test_live_source_with_a_video_network_keeps_up_within_one_clip():
    """A live source (newest frame only) through a video network: no stall on the
    credits while a clip fills, every delivered frame comes out once, in order, and
    each result comes at most one clip (plus a batch) after its frame was read."""
    model = brightness_net(2)
    img, _, _ = synth.blob_frames((64, 32), 1, radius=4)

    def produce():
        for i in range(60):
            time.sleep(1 / 60)
            yield i

    src = LiveSource("test", produce(), lambda i: (img[0], 0), lambda: None)
    got, lag = [], []
    stalled = threading.Event()               # a watchdog: ends the stream gracefully
    timer = threading.Timer(30, stalled.set)
    timer.start()
    try:
        with camvideo.stream(src, model, smooth=0, size=32, topk=1, stop=stalled) as rs:
            for r in rs:
                got.append(r.index)
                lag.append(src.delivered - 1 - r.index)
    finally:
        timer.cancel()
    assert not stalled.is_set(), f"stalled after {len(got)} results"
    assert got == list(range(src.delivered)) and len(got) >= 16
    assert max(lag) <= model.clip_len + 2


def test_batch_with_a_video_network(tmp_path):
    name = "r3d_18"
    torch.manual_seed(0)
    torch.save(tvv.r3d_18(num_classes=K).state_dict(), tmp_path / "w.pth")
    tree, out = tmp_path / "in", tmp_path / "out"
    tree.mkdir()
    clips = [synth.make_clip("pan", tree / "a.mp4", size=(64, 48), n=9),
             synth.make_clip("zoom", tree / "b.mp4", size=(64, 48), n=18)]
    code = main(["batch", str(tree), str(out), "-m", name, "--weights",
                 str(tmp_path / "w.pth"), "--size", "32", "--json", "-j", "1", "-q"])
    assert code == 0
    for clip in clips:
        stem = clip.path.stem
        assert decoded_times(out / f"{stem}.mp4") == pytest.approx(clip.times, abs=1e-3)
        assert len((out / f"{stem}.jsonl").read_text().splitlines()) == clip.frames


@pytest.mark.parametrize("family", ["r3d_18"], indirect=True)
def test_readme_video_example_runs(family, tmp_path):
    """The README's video-network command, on a tiny clip with the family's random
    weights (offline) and a small input."""
    name, _, path, _ = family
    import re
    import shlex
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split("### Video networks", 1)[1].split("\n## ", 1)[0]
    command = re.findall(r"```sh\n(.+?)\n```", section, flags=re.S)[0].split("#")[0]
    argv = shlex.split(command)
    assert argv[0] == "camvideo" and argv[argv.index("-m") + 1] == name
    clip = synth.make_clip("pan", tmp_path / argv[1], size=(64, 48), n=20)
    args = [str(tmp_path / a) if a.endswith((".mp4", ".jsonl")) else a for a in argv[1:]]
    assert main([*args, "--weights", str(path), "--size", "32", "-q"]) == 0
    assert decoded_times(tmp_path / argv[2]) == pytest.approx(clip.times, abs=1e-3)
    sidecar = next(a for a in args if a.endswith(".jsonl"))
    assert len(Path(sidecar).read_text().splitlines()) == clip.frames


@pytest.mark.cuda
def test_video_network_on_cuda_matches_the_cpu(blob_clip):
    """The CUDA path (pinned uploads, device preprocessing, clips on the device): the same
    per-frame classes, maps and peaks as on the CPU (fp32)."""
    clip, centres = blob_clip
    results = {}
    for device in ("cpu", "cuda"):
        model = brightness_net(2).to(device)
        with camvideo.stream(clip.path, model, smooth=0, size=96, topk=1,
                             precision="fp32") as rs:
            results[device] = [(r.cls, np.asarray(r.map), r.peak) for r in rs]
    assert len(results["cuda"]) == len(results["cpu"]) == clip.frames
    for (c0, m0, p0), (c1, m1, p1) in zip(results["cpu"], results["cuda"]):
        assert c0 == c1 and np.abs(m0 - m1).max() < 1e-3
        assert np.hypot(p0[0] - p1[0], p0[1] - p1[1]) <= 2
