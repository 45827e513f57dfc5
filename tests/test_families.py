"""The registry's table (camvideo.model.families): it matches the installed torchvision,
every name is either a family's or refused with a reason, and ``camvideo models`` is
answered from it without importing torch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torchvision
from torchvision import models as tvm

from camvideo.commands.main import main
from camvideo.model import heads
from camvideo.model.families import (DEFAULT_MODEL, FAMILIES, available_models,
                                     describe_models, family_of, model_table, refusal)

ROOT = Path(__file__).resolve().parents[1]


def test_table_matches_the_installed_torchvision():
    """Names, input sizes (the default weights' crop), checkpoint file names and minimum
    input sizes (and clip lengths) are torchvision's own; every other torchvision image or
    video classifier has a refusal."""
    installed = set(tvm.list_models(module=tvm)) | set(tvm.list_models(module=tvm.video))
    video = set(tvm.list_models(module=tvm.video))
    ran = set()
    for fam in FAMILIES:
        if fam.source != "torchvision":
            continue
        for name, size, file in fam.models:           # smallest model of a family first
            assert name in installed, f"not in torchvision {torchvision.__version__}: {name}"
            installed.discard(name)
            w = tvm.get_model_weights(name).DEFAULT
            assert family_of(name) is fam
            assert size == w.transforms().crop_size[0], name
            assert file == Path(w.url).name, name
            assert (fam.kind == "video") == (fam.clip_len > 0) == (name in video), name
            assert fam.kind == "image" or fam.clip_len >= w.meta.get("min_temporal_size", 1)
            smallest = max(fam.min_side, 32)          # inputs are >= 32 px
            if smallest < w.meta["min_size"][0] and fam.name not in ran:
                # torchvision's figure is conservative (EfficientNetV2: 33): it runs
                ran.add(fam.name)
                with torch.inference_mode():
                    net = tvm.get_model(name).eval()
                    assert net(torch.zeros(1, 3, smallest, smallest)).shape == (1, 1000)
    for name in installed:
        assert refusal(name), f"{name}: neither a family's nor refused"
        assert family_of(name) is None, name


def test_every_torchvision_family_has_a_split_and_a_kind():
    for fam in FAMILIES:
        assert fam.kind in ("image", "video")
        if fam.source == "torchvision":
            assert fam.name in heads._TV_SPLITS, fam.name
    assert family_of("inception_v3").min_side == 75
    assert family_of("googlenet").aux_prefixes == ("aux1.", "aux2.")
    assert family_of(DEFAULT_MODEL).source == "bundled"
    assert family_of("timm:convnext_atto").source == "timm"
    assert family_of("efficientnet_lite1") is not family_of(DEFAULT_MODEL)


def test_listing_rows():
    rows = {r.name: r for r in model_table()}
    assert list(rows) == [*available_models(), "timm:NAME"]
    assert rows["inception_v3"].size == 299 and rows["efficientnet_b7"].size == 600
    assert rows[DEFAULT_MODEL].weights == "bundled (offline)"
    assert rows["squeezenet1_1"].family == "squeezenet" and rows["convnext_tiny"].kind == "image"
    assert [(rows[n].kind, rows[n].size, rows[n].clip_len) for n in
            ("r3d_18", "mc3_18", "r2plus1d_18", "s3d")] == [("video", 112, 16)] * 3 + \
        [("video", 224, 16)]
    notes = dict(describe_models())
    assert notes["inception_v3"].split()[:3] == ["image", "299", "px"]
    assert notes["r3d_18"].split()[:3] == ["video", "112", "px"]
    assert notes["r3d_18"].endswith("; clips of 16 frames")
    assert "clips" not in notes["resnet18"]
    assert notes[DEFAULT_MODEL].endswith("; default")


def test_cached_weights_are_found_with_and_without_torch(tmp_path, monkeypatch, capsys):
    ckpt = tmp_path / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    (ckpt / "googlenet-1378be20.pth").write_bytes(b"")
    # torch imported: torch.hub's own folder (set_dir honoured)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    notes = dict(describe_models())
    assert notes["googlenet"].endswith("torchvision cache: cached")
    assert notes["resnet18"].endswith("torchvision cache: downloaded on first use")
    assert main(["models"]) == 0
    assert "torchvision cache: cached" in capsys.readouterr().out
    # without torch: $TORCH_HOME, torch.hub's rule, and torch never imported
    code = ("import sys\n"
            "from camvideo.model.families import describe_models\n"
            "notes = dict(describe_models())\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print(notes['googlenet']); print(notes['squeezenet1_0'])\n")
    env = {**os.environ, "TORCH_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    googlenet, squeezenet = proc.stdout.splitlines()
    assert googlenet.endswith("cached") and squeezenet.endswith("downloaded on first use")
