"""Model registry: the default model's predictions on real photos, other families,
refusals with reasons, weights and labels files, class names."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torchvision

from camvideo.testing import synth
from camvideo.commands.main import main
from camvideo.errors import ClassNameError, ExitCode, ModelError
from camvideo.model.registry import available_models, from_modules, load_model
from camvideo.model.weights import read_labels

CATS = {281, 282, 283, 284, 285}           # tabby, tiger cat, Persian, Siamese, Egyptian
MUG = {504, 967, 968}                      # coffee mug, espresso, cup


@pytest.fixture(scope="module")
def lite0():
    return load_model()


def _predict(model, name: str) -> list[int]:
    img = synth.load_photo(name)
    frames = torch.from_numpy(img)[None]
    x, _ = model.preprocess(frames, model.input_size(*img.shape[:2]))
    with torch.inference_mode():
        _, logits = model(x)
    return logits[0].topk(5).indices.tolist()


def test_default_model_top1_on_real_photos(lite0):
    assert _predict(lite0, "chelsea")[0] in CATS
    assert _predict(lite0, "coffee")[0] in MUG
    assert lite0.labels[285] == "Egyptian cat"
    assert len(lite0.labels) == 1000 and lite0.weight.shape == (1000, 1280)


def test_input_size_keeps_aspect_ratio(lite0):
    assert lite0.input_size(1080, 1920) == (224, 384)   # 16:9 -> 7x12 map
    assert lite0.input_size(360, 640, 224) == (224, 384)
    assert lite0.input_size(480, 640) == (224, 288)
    assert lite0.input_size(1920, 1080) == (384, 224)   # portrait
    x = torch.zeros(1, 3, 224, 384)
    feats, _ = lite0(x)
    assert feats.shape[-2:] == (7, 12)


@pytest.mark.parametrize("name, why", [
    ("vgg16", "three fully connected layers"),
    ("mobilenet_v3_small", "two linear layers .*hidden layer after the pooling"),
    ("mobilenet_v3_large", "two linear layers .*hidden layer after the pooling"),
    ("vit_b_16", "transformer"),
    ("maxvit_t", "transformer hybrid"),
])
def test_refuses_heads_that_are_not_pool_plus_linear(name, why):
    with pytest.raises(ModelError, match=why):
        load_model(name)


def test_timm_head_with_norm_after_pooling_is_decomposed(tmp_path):
    """timm's ConvNeXt head (pool -> LayerNorm -> linear) was refused; it now loads, by the
    exact decomposition of camvideo.model.heads (tests/test_heads.py checks its maps)."""
    m = timm.create_model("convnext_atto", pretrained=False, num_classes=10)
    torch.save(m.state_dict(), tmp_path / "c.pth")
    model = load_model("timm:convnext_atto", weights=tmp_path / "c.pth")
    assert "LayerNorm" in model.head and model.weight.shape == (10, 320)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ModelError, match="close matches: resnet50"):
        load_model("resnet5")


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "densenet121",
                                  "regnet_y_400mf", "efficientnet_b0", "timm:resnet18",
                                  "timm:regnetx_002"])
def test_other_families_split_exactly(tmp_path, name):
    if name.startswith("timm:"):
        net = timm.create_model(name[5:], pretrained=False, num_classes=7)
    else:
        net = torchvision.models.get_model(name, num_classes=7)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    model = load_model(name, weights=tmp_path / "w.pth")   # probe check inside
    assert len(model.labels) == 7 and model.labels[0] == "class 0"
    x = torch.randn(1, 3, 224, 288)
    with torch.inference_mode():
        _, logits = model(x)
        assert torch.allclose(logits, net.eval()(x), atol=1e-3)


def test_places365_style_checkpoint_and_labels(tmp_path):
    net = torchvision.models.resnet18(num_classes=365)
    ckpt = {"epoch": 90, "state_dict": {"module." + k: v for k, v in net.state_dict().items()}}
    torch.save(ckpt, tmp_path / "resnet18_places365.pth.tar")
    names = [f"/{c}/scene_{i}" for i, c in enumerate("abcdefghijklmnopqrstuvwxyz" * 15)][:365]
    (tmp_path / "categories.txt").write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)))
    model = load_model("resnet18", weights=tmp_path / "resnet18_places365.pth.tar",
                       labels=tmp_path / "categories.txt")
    assert len(model.labels) == 365 and model.labels[2] == "scene_2"
    assert model.class_index("SCENE_2") == 2


def test_places365_labels_keep_indoor_and_outdoor_apart(tmp_path):
    (tmp_path / "categories.txt").write_text(
        "/a/apartment_building/outdoor 8\n/c/church/indoor 86\n/c/church/outdoor 87\n"
        "/a/abbey 0\nplain name\n")
    labels = read_labels(tmp_path / "categories.txt")
    assert labels == ["apartment_building/outdoor", "church/indoor", "church/outdoor",
                      "abbey", "plain name"]
    model = from_modules(torch.nn.Conv2d(3, 4, 1), torch.nn.Linear(4, 5), labels=labels)
    assert model.class_index("church/outdoor") == 2
    with pytest.raises(ClassNameError, match="close matches: .*church/outdoor"):
        model.class_index("outdoor")   # no longer silently the first '.../outdoor'


def test_densenet_checkpoint_with_torchvisions_old_key_names(tmp_path, monkeypatch):
    """torchvision's DenseNet downloads name keys ``denselayer1.norm.1.weight``; they load
    from --weights and from the hub cache, renamed the way torchvision renames them."""
    torch.manual_seed(0)
    net = torchvision.models.densenet121().eval()
    old = {re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", k): v
           for k, v in net.state_dict().items()
           if not k.endswith("num_batches_tracked")}   # as in the 2017 checkpoints
    assert sum(k.endswith("norm.1.weight") for k in old) == 58   # 58 dense layers
    url = torchvision.models.get_model_weights("densenet121").DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    torch.save(old, cached)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # offline: cache only
    x = torch.randn(1, 3, 160, 224)
    with torch.inference_mode():
        ref_feats = torch.relu(net.features(x))
        ref_logits = net(x)
        for model in (load_model("densenet121", weights=cached), load_model("densenet121")):
            feats, logits = model(x)
            assert torch.allclose(feats, ref_feats, atol=1e-5)
            assert torch.allclose(logits, ref_logits, atol=1e-4)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "in.mp4"
    synth.make_clip("pan", path, size=(160, 96), n=4, fps=12)
    return path


def assert_refused_by_cli(args: list, capsys, out: Path, words: str) -> None:
    rc = main([str(a) for a in args] + ["-q"])
    err = capsys.readouterr().err
    assert rc == ExitCode.MODEL, err
    assert err.count("\n") == 1 and err.startswith("camvideo: error: ") and words in err, err
    assert "Traceback" not in err
    assert not out.exists() and not [p for p in out.parent.iterdir() if "partial" in p.name]


@pytest.mark.parametrize("name, channels", [("mobilenetv3_small_050", "288 channels"),
                                            ("lcnet_050", "256 channels")])
def test_timm_head_with_layers_after_pooling_is_refused_by_the_cli(
        small_clip, tmp_path, capsys, name, channels):
    net = timm.create_model(name, pretrained=False, num_classes=10)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    assert_refused_by_cli([small_clip, out, "-m", f"timm:{name}", "--weights",
                           tmp_path / "w.pth"], capsys, out,
                          f"model timm:{name} is not supported for CAM: its head is not "
                          f"global average pooling + one linear layer: it has layers "
                          f"between the last feature map ({channels})")


_NO_SOCKETS = ("import socket\n"
               "def refuse(*a, **k): raise OSError('network access attempted')\n"
               "socket.socket.connect = refuse\nsocket.create_connection = refuse\n")


def test_timm_model_without_cached_weights_fails_at_once(small_clip, tmp_path):
    """``timm:NAME`` without ``--weights`` and not in the hub's cache: one line naming
    ``--weights``, at once (the hub used to retry each request five times with back-off:
    about 50 s and 22 "Retrying in 8s" lines before the error, with no network)."""
    out = tmp_path / "o.mp4"
    code = _NO_SOCKETS + ("import sys\nfrom camvideo.commands.main import main\n"
                          f"sys.exit(main([{str(small_clip)!r}, {str(out)!r}, '-m', "
                          "'timm:resnet18', '-q']))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE",
                                                            "TRANSFORMERS_OFFLINE")}
    env["HF_HUB_CACHE"] = str(tmp_path / "hub")  # empty: the weights are nowhere
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=40)  # the retries alone took 46 s
    assert proc.returncode == ExitCode.MODEL, proc.stderr
    assert proc.stderr == (f"camvideo: error: no weights for timm:resnet18: not in the "
                           f"Hugging Face hub cache ({tmp_path / 'hub'}), and camvideo does "
                           "not download them; pass --weights FILE\n")
    assert time.monotonic() - t0 < 40 and not out.exists()


def test_timm_weights_come_from_the_hub_cache_offline(tmp_path, monkeypatch):
    """Weights in the hub's cache are used with the network out of reach."""
    import socket

    from huggingface_hub import constants
    from safetensors.torch import save_file

    net = timm.create_model("resnet18", pretrained=False).eval()
    repo = tmp_path / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    save_file(net.state_dict(), repo / "snapshots" / ("0" * 40) / "model.safetensors")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(*a, **k):
        raise OSError("network access attempted")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    before = constants.HF_HUB_OFFLINE
    model = load_model("timm:resnet18")
    assert constants.HF_HUB_OFFLINE == before  # given back as it was
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(model(x)[1], net(x), atol=1e-3)


def test_labels_file_that_is_not_utf8_is_refused_by_the_cli(small_clip, tmp_path, capsys):
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1") * 1000)
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    assert_refused_by_cli([small_clip, out, "--labels", tmp_path / "latin1.txt"], capsys,
                          out, "is not UTF-8 text (byte 0xe9 at offset 3)")


def test_labels_count_must_match(tmp_path):
    (tmp_path / "l.txt").write_text("a\nb\n")
    with pytest.raises(ModelError, match="2 labels given but model efficientnet_lite0 has 1000"):
        load_model(labels=tmp_path / "l.txt")


def test_weights_only_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))
    torch.save({"fc.weight": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(ModelError, match="would run code.*weights_only=True"):
        load_model("resnet18", weights=tmp_path / "evil.pth")
    (tmp_path / "text.pth").write_text("not weights\n")  # not a pickle at all
    with pytest.raises(ModelError, match=r"text.pth: not a PyTorch weights file \(a text "
                                         r"file; torch.save writes a zip archive\)$"):
        load_model("resnet18", weights=tmp_path / "text.pth")


def _cut_checkpoint(path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(4, 4)}, path)
    path.write_bytes(path.read_bytes()[:200])


@pytest.mark.parametrize("make, why", [
    # torch.load's error for these is KeyError(101): the first byte, 'e', as an opcode
    (lambda p: p.write_text("hello not a video\n"),
     "not a PyTorch weights file (a text file; torch.save writes a zip archive)"),
    (lambda p: p.write_bytes(b""), "the file is empty"),
    (lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256))),
     "not a PyTorch weights file (neither the zip archive nor the pickle torch.save "
     "writes)"),
    (_cut_checkpoint, "not a PyTorch weights file, or a damaged one (a zip archive cut "
                      "short)"),
], ids=["text", "empty", "video", "cut"])
def test_weights_file_that_is_no_checkpoint_is_refused_by_the_cli(small_clip, tmp_path,
                                                                  capsys, make, why):
    """A file torch cannot load as weights is named with what it is, not torch's
    internal error (a text file gave ``cannot load weights FILE: 101``)."""
    make(tmp_path / "w.mp4")
    out = tmp_path / "out" / "o.mp4"
    out.parent.mkdir()
    assert_refused_by_cli([small_clip, out, "--weights", tmp_path / "w.mp4"], capsys, out,
                          f"cannot load weights {tmp_path / 'w.mp4'}: {why}\n")


def test_weights_that_do_not_fit(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ModelError, match="do not fit"):
        load_model("resnet34", weights=tmp_path / "r18.pth")
    with pytest.raises(ModelError, match="not found"):
        load_model("resnet34", weights=tmp_path / "missing.pth")


def test_class_names_and_indices(lite0):
    assert lite0.class_index("Egyptian cat") == 285
    assert lite0.class_index("egyptian CAT") == 285
    assert lite0.class_index("504") == 504
    with pytest.raises(ClassNameError, match="close matches: .*tabby"):
        lite0.class_index("tabby kat")
    with pytest.raises(ClassNameError, match="out of range"):
        lite0.class_index("1000")
    # "Cardigan" (the corgi) and "cardigan" (the sweater): no silent first pick
    assert [lab for lab in lite0.labels if lab.lower() == "cardigan"] == ["Cardigan",
                                                                         "cardigan"]
    with pytest.raises(ClassNameError, match="ambiguous.*classes 264, 474; give the index"):
        lite0.class_index("cardigan")
    assert lite0.class_index("474") == 474


def test_registry_lists_supported_families():
    names = available_models()
    assert names[0] == "efficientnet_lite0"
    for n in ("resnet50", "resnext50_32x4d", "wide_resnet50_2", "mobilenet_v2",
              "efficientnet_b3", "densenet121", "regnet_y_1_6gf"):
        assert n in names
    for n in ("googlenet", "inception_v3", "squeezenet1_0", "squeezenet1_1",
              "convnext_tiny", "convnext_large"):
        assert n in names
    assert "vgg16" not in names and "mobilenet_v3_small" not in names
    assert len(names) == len(set(names))
    assert np.all([isinstance(n, str) for n in names])


def test_missing_torchvision_weights_offline_is_one_line(tmp_path, capsys, monkeypatch):
    """No cached weights and no network: one line on stderr (torch's own 'Downloading:'
    line, which it prints to stdout, is kept out of the terminal), exit 5."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse_download)
    clip = synth.make_clip("pan", tmp_path / "in.mp4", size=(96, 64), n=3, fps=24)
    rc = main([str(clip.path), str(tmp_path / "out.mp4"), "-m", "resnet18", "-q"])
    out, err = capsys.readouterr()
    assert rc == ExitCode.MODEL and out == ""
    assert err.count("\n") == 1 and "no weights for resnet18" in err and "--weights" in err


def _refuse_download(url, dst, *a, **k):
    raise OSError(f"no network: {url}")
