"""Tests of camvideo.model.cache (and its users: model/stored.py, model/trace.py): the
on-disk cache of start-up work. Every test uses its own temporary cache folder.

A valid entry gives exactly what a fresh build gives (graphs: equal features and maps);
a stale one (other weights, another version) is never read and a new one is built; a
corrupt one (garbage, truncated, altered bytes, another key inside, a graph whose probe
output no longer matches) is removed with a warning and rebuilt; a second process
finds the model and its graph in the cache without importing timm or torchvision.
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

from camvideo.cam import cam_maps
from camvideo.model import cache
from camvideo.model.registry import from_modules, imagenet_labels, load_model
from camvideo.model.rewrite import optimize_model
from camvideo.model.trace import TracedBackbone

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.delenv("CAMVIDEO_CACHE", raising=False)
    monkeypatch.setenv("CAMVIDEO_CACHE_DIR", str(d))
    monkeypatch.setattr(cache, "_HASHES", None)  # the per-process memo of file hashes
    return d


def probe(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 64, 96, generator=g).contiguous(memory_format=torch.channels_last)


def toy():
    """A small convolutional model (same weights every call): its cache key is the
    SHA-256 of its structure and tensors."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU6(),
                        nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU6())
    net[1].running_mean.uniform_(-0.5, 0.5)
    return from_modules(net.eval(), nn.Linear(16, 5), stride=4)


def features(model, x: torch.Tensor) -> tuple[torch.Tensor, TracedBackbone]:
    tb = TracedBackbone(optimize_model(model), None)
    with torch.inference_mode():
        return tb(x), tb


def entries(d: Path, kind: str) -> list[Path]:
    return sorted(d.glob(f"{kind}-*.pt"))


def test_where_the_cache_lives(tmp_path, monkeypatch):
    monkeypatch.delenv("CAMVIDEO_CACHE", raising=False)
    monkeypatch.delenv("CAMVIDEO_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir() == tmp_path / "xdg" / "camvideo"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: absolute only
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_dir() == tmp_path / "home" / ".cache" / "camvideo"
    monkeypatch.setenv("CAMVIDEO_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine"
    for off in ("off", "0", "no", "FALSE"):
        monkeypatch.setenv("CAMVIDEO_CACHE", off)
        assert cache.cache_dir() is None
        assert cache.store(cache.key("x", a=1), {"v": 1}) is None
        assert cache.load(cache.key("x", a=1)) is None


def test_a_key_holds_the_versions_and_every_field(cache_dir, monkeypatch):
    k = cache.key("graph", model="m", precision="None", shape=[4, 3, 64, 96], cpu="AVX2")
    assert k["torch"] == str(torch.__version__) and k["camvideo"]
    path = cache.store(k, {"t": torch.arange(3)})
    assert path is not None and path.parent == cache_dir
    assert torch.equal(cache.load(k)["t"], torch.arange(3))
    for field, other in (("shape", [1, 3, 64, 96]), ("precision", "torch.bfloat16"),
                         ("cpu", "AVX512-BF16"), ("model", "m2")):
        assert cache.entry_path({**k, field: other}) != path
        assert cache.load({**k, field: other}) is None
    monkeypatch.setattr(cache, "versions", lambda: {"torch": "0.0", "camvideo": "0"})
    assert cache.load(cache.key("graph", model="m", precision="None",
                                shape=[4, 3, 64, 96], cpu="AVX2")) is None


def test_a_valid_cached_graph_gives_identical_maps(cache_dir, caplog):
    """The second model comes from the cache without its network (backbone never built)
    and its graph from the cache: features and maps equal the freshly traced graph's."""
    x = probe()
    fresh, tb1 = features(load_model(), x)
    assert tb1._graphs[tuple(x.shape)] is not None
    assert len(entries(cache_dir, "graph")) == 1 and len(entries(cache_dir, "model")) == 1
    model2 = load_model()
    assert not model2.backbone_built  # head and labels from the cache
    with caplog.at_level(logging.INFO, logger="camvideo"):
        cached, _ = features(model2, x)
    assert "read from the cache" in caplog.text
    assert not model2.backbone_built  # the graph came from the cache: nothing was built
    assert torch.equal(cached, fresh)
    w = model2.weight.detach()
    cls = torch.tensor([285, 504])
    assert torch.equal(cam_maps(cached, w, cls), cam_maps(fresh, w, cls))
    assert model2.labels == imagenet_labels()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "altered", "other key"])
def test_a_corrupt_graph_entry_is_rebuilt_with_a_warning(cache_dir, caplog, damage):
    x = probe(1)
    fresh, _ = features(toy(), x)
    (path,) = entries(cache_dir, "graph")
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "altered":  # still a valid file; the stored probe output changed
        entry = torch.load(path, weights_only=True)
        entry["payload"]["probe_out"] = entry["payload"]["probe_out"] + 1.0
        torch.save(entry, path)
    else:  # an entry for another key under this name
        k = torch.load(path, weights_only=True)["key"]
        torch.save({"key": {**k, "shape": [9]}, "sha256": "", "payload": {}}, path)
    with caplog.at_level(logging.INFO, logger="camvideo"):
        again, _ = features(toy(), x)
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "ignoring a corrupt cache entry" in warned[0].getMessage()
    assert str(path) in warned[0].getMessage()
    assert "traced and fused" in caplog.text  # rebuilt
    assert torch.equal(again, fresh)
    # the rebuilt entry is valid again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="camvideo"):
        third, _ = features(toy(), x)
    assert "read from the cache" in caplog.text and "corrupt" not in caplog.text
    assert torch.equal(third, fresh)


def test_a_graph_that_no_longer_matches_its_probe_is_rebuilt(cache_dir, caplog):
    """A graph whose checksum is right but that computes something else (its stored
    probe output rewritten with a matching checksum) fails the probe check."""
    x = probe(2)
    fresh, _ = features(toy(), x)
    (path,) = entries(cache_dir, "graph")
    entry = torch.load(path, weights_only=True)
    entry["payload"]["probe_out"] = entry["payload"]["probe_out"] * 1.5
    entry["sha256"] = cache._payload_sha256(entry["payload"])
    torch.save(entry, path)
    with caplog.at_level(logging.WARNING, logger="camvideo"):
        again, _ = features(toy(), x)
    assert "output on the probe is off" in caplog.text
    assert torch.equal(again, fresh)


def test_stale_weights_make_a_new_entry(cache_dir, tmp_path, caplog):
    """Other weights in the same file: another SHA-256, another key; the old entry is
    not used, and the model and graph are built for the new weights."""
    sd = load_model().backbone.m.state_dict()  # timm's tf_efficientnet_lite0, whole
    path = tmp_path / "lite0.pth"
    torch.save(sd, path)
    x = probe(3)
    first, _ = features(load_model(weights=path), x)
    assert len(entries(cache_dir, "model")) == 2  # the default model's and this file's
    sd["classifier.bias"] = sd["classifier.bias"] + 1.0
    sd["conv_head.weight"] = sd["conv_head.weight"] * 0.5
    torch.save(sd, path)
    with caplog.at_level(logging.INFO, logger="camvideo"):
        model = load_model(weights=path)
        assert model.backbone_built  # not from the cache: built
        second, _ = features(model, x)
    assert "traced and fused" in caplog.text and "corrupt" not in caplog.text
    assert not torch.equal(first, second)
    assert torch.equal(model.bias.detach(), sd["classifier.bias"])
    assert len(entries(cache_dir, "model")) == 3 and len(entries(cache_dir, "graph")) == 2


def test_an_unwritable_cache_folder_warns_once_and_runs(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.delenv("CAMVIDEO_CACHE", raising=False)
    monkeypatch.setenv("CAMVIDEO_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(cache, "_FAILED_DIRS", set())
    with caplog.at_level(logging.WARNING, logger="camvideo"):
        assert cache.store(cache.key("x", a=1), {"v": 1}) is None
        assert cache.store(cache.key("x", a=2), {"v": 2}) is None
    assert caplog.text.count("cannot write the cache") == 1


def test_old_entries_beyond_the_limit_are_removed(cache_dir, monkeypatch):
    monkeypatch.setattr(cache, "MAX_ENTRIES", 3)
    paths = []
    for i in range(5):
        paths.append(cache.store(cache.key("x", i=i), {"v": i}))
        os.utime(paths[-1], (1000 + i, 1000 + i))  # distinct ages
    assert sorted(p.name for p in cache_dir.glob("*.pt")) == sorted(p.name for p in paths[-3:])


_WARM = """
import sys, torch
from camvideo.model.registry import from_modules, imagenet_labels, load_model
from camvideo.model.rewrite import optimize_model
from camvideo.model.trace import traced_backbone
torch.set_num_threads(1)
m = optimize_model(load_model())
g = torch.Generator().manual_seed(0)
x = torch.randn(2, 3, 64, 96, generator=g).contiguous(memory_format=torch.channels_last)
with torch.inference_mode():
    f = traced_backbone(m, None)(x)
torch.save(f, sys.argv[1])
print(m.backbone_built, "timm" in sys.modules, "torchvision" in sys.modules)
"""


def test_a_second_process_skips_timm_torchvision_and_tracing(cache_dir, tmp_path):
    env = {**os.environ, "CAMVIDEO_CACHE_DIR": str(cache_dir), "PYTHONPATH": str(ROOT)}
    env.pop("CAMVIDEO_CACHE", None)
    outs = []
    for run in ("cold", "warm"):
        out = tmp_path / f"{run}.pt"
        res = subprocess.run([sys.executable, "-c", _WARM, str(out)], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        outs.append((res.stdout.split(), torch.load(out)))
    assert outs[0][0] == ["True", "True", "True"]    # cold: built, timm and torchvision
    assert outs[1][0] == ["False", "False", "False"]  # warm: neither
    assert torch.equal(outs[0][1], outs[1][1])


def test_a_corrupt_model_entry_is_rebuilt_with_a_warning(cache_dir, caplog):
    """The model entry (head, labels): garbage in it → one warning, the model built as
    on a first run (same head and labels), and a valid entry written again."""
    first = load_model()
    (path,) = entries(cache_dir, "model")
    path.write_bytes(b"\x80\x02not a torch file" * 64)
    with caplog.at_level(logging.WARNING, logger="camvideo"):
        again = load_model()
    assert again.backbone_built  # built, not read
    assert caplog.text.count("ignoring a corrupt cache entry") == 1 and str(path) in caplog.text
    assert torch.equal(again.weight, first.weight) and again.labels == first.labels
    third = load_model()
    assert not third.backbone_built and torch.equal(third.weight, first.weight)


def test_a_cached_head_that_differs_from_the_built_network_gives_way(cache_dir, caplog):
    """Should the network built later have another head than the cached one, its weight
    and bias both replace the cached ones (with a warning), not the weight alone."""
    from camvideo.model import stored
    from camvideo.model.cammodel import CamModel

    torch.manual_seed(0)
    k = cache.key("model", name="toy", weights="0" * 64, labels="default")
    stored.store_model(k, CamModel("toy", nn.Conv2d(3, 4, 1), nn.Linear(4, 3),
                                   ["a", "b", "c"], (0.5,) * 3, (0.25,) * 3))
    real = nn.Linear(4, 3)  # other weights and bias
    got = stored.load_model(k, "toy", lambda: (nn.Conv2d(3, 4, 1), real))
    assert got is not None and not got.backbone_built
    with caplog.at_level(logging.WARNING, logger="camvideo"):
        got.backbone  # noqa: B018 - builds it
    assert "the cached head differs" in caplog.text
    assert torch.equal(got.fc.weight, real.weight) and torch.equal(got.fc.bias, real.bias)
