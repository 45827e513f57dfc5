"""Which models exist: the registry's table, as plain data (no torch import).

Each :class:`Family` says which names it holds, what kind of network it is (``image``: one
frame in, one map out; ``video``: a clip of frames in, a map per frame out, see
:mod:`camvideo.model.video`), how its head decomposes into CAM's "features + one linear
layer" (:mod:`camvideo.model.heads` does the splitting), the input size its weights were
trained at (and for video networks the clip length), and where the weights come from:

- ``bundled``: shipped with a Python package (the default model; offline);
- ``torchvision``: torchvision's checkpoint cache (``$TORCH_HOME/hub/checkpoints``), where
  torchvision downloads them on first use; or ``--weights FILE``;
- ``timm``: timm's own cache (the Hugging Face hub); or ``--weights FILE``.

:func:`describe_models` answers ``camvideo models`` from this table alone: it reads the
checkpoint cache's folder but imports neither torch nor torchvision. The torchvision rows
(names, input sizes, checkpoint file names) are those of torchvision 0.29's default
weights; ``tests/test_families.py`` checks them against the installed torchvision.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..options import DEFAULT_MODEL

__all__ = ["DEFAULT_MODEL", "FAMILIES", "Family", "ModelRow", "REFUSED", "available_models",
           "describe_models", "family_of", "hub_checkpoints", "model_table", "refusal"]


@dataclass(frozen=True)
class Family:
    """One family of models and how the registry treats it.

    Attributes:
        name: the family's name (``resnet``, ``googlenet``, ...); for torchvision families
            also the key of its split in :mod:`camvideo.model.heads`.
        kind: ``"image"`` (one frame in, one map out) or ``"video"`` (a clip in).
        source: where weights come from: ``"bundled"``, ``"torchvision"`` or ``"timm"``.
        head: how the head decomposes into CAM's features and linear layer (for people).
        prefixes: registry names starting with one of these belong to the family.
        models: ``(name, input side in pixels, default checkpoint file name)`` per model
            (the file name is where torchvision caches the default weights).
        min_side: the smallest input side the network accepts (pixels).
        aux_prefixes: state_dict key prefixes of auxiliary (training-only) heads, accepted
            in checkpoints and ignored.
        head_key: the state_dict key whose first dimension is the number of classes (None:
            the last 2-D weight, see :func:`camvideo.model.weights.classes_in`).
        clip_len: video networks: frames per clip (0 for image networks).
        stride: the backbone's spatial downsampling (input sides are multiples of it).
    """

    name: str
    kind: str
    source: str
    head: str
    prefixes: tuple[str, ...]
    models: tuple[tuple[str, int, str], ...]
    min_side: int = 1
    aux_prefixes: tuple[str, ...] = ()
    head_key: str | None = None
    clip_len: int = 0
    stride: int = 32


_GAP = "pool + linear"

FAMILIES: tuple[Family, ...] = (
    Family("efficientnet_lite", "image", "bundled", _GAP, (DEFAULT_MODEL,),
           ((DEFAULT_MODEL, 224, ""),)),
    Family("resnet", "image", "torchvision", _GAP, ("resnet", "resnext", "wide_resnet"), (
        ("resnet18", 224, "resnet18-f37072fd.pth"),
        ("resnet34", 224, "resnet34-b627a593.pth"),
        ("resnet50", 224, "resnet50-11ad3fa6.pth"),
        ("resnet101", 224, "resnet101-cd907fc2.pth"),
        ("resnet152", 224, "resnet152-f82ba261.pth"),
        ("resnext50_32x4d", 224, "resnext50_32x4d-1a0047aa.pth"),
        ("resnext101_32x8d", 224, "resnext101_32x8d-110c445d.pth"),
        ("resnext101_64x4d", 224, "resnext101_64x4d-173b62eb.pth"),
        ("wide_resnet50_2", 224, "wide_resnet50_2-9ba9bcbe.pth"),
        ("wide_resnet101_2", 224, "wide_resnet101_2-d733dc28.pth"))),
    Family("regnet", "image", "torchvision", _GAP, ("regnet_",), (
        ("regnet_x_400mf", 224, "regnet_x_400mf-62229a5f.pth"),
        ("regnet_x_800mf", 224, "regnet_x_800mf-94a99ebd.pth"),
        ("regnet_x_1_6gf", 224, "regnet_x_1_6gf-a12f2b72.pth"),
        ("regnet_x_3_2gf", 224, "regnet_x_3_2gf-7071aa85.pth"),
        ("regnet_x_8gf", 224, "regnet_x_8gf-2b70d774.pth"),
        ("regnet_x_16gf", 224, "regnet_x_16gf-ba3796d7.pth"),
        ("regnet_x_32gf", 224, "regnet_x_32gf-6eb8fdc6.pth"),
        ("regnet_y_400mf", 224, "regnet_y_400mf-e6988f5f.pth"),
        ("regnet_y_800mf", 224, "regnet_y_800mf-58fc7688.pth"),
        ("regnet_y_1_6gf", 224, "regnet_y_1_6gf-0d7bc02a.pth"),
        ("regnet_y_3_2gf", 224, "regnet_y_3_2gf-9180c971.pth"),
        ("regnet_y_8gf", 224, "regnet_y_8gf-dc2b1b54.pth"),
        ("regnet_y_16gf", 224, "regnet_y_16gf-3e4a00f9.pth"),
        ("regnet_y_32gf", 224, "regnet_y_32gf-8db6d4b5.pth"),
        ("regnet_y_128gf", 384, "regnet_y_128gf_swag-c8ce3e52.pth"))),
    Family("mobilenet_v2", "image", "torchvision", _GAP, ("mobilenet_v2",), (
        ("mobilenet_v2", 224, "mobilenet_v2-7ebf99e0.pth"),)),
    Family("efficientnet", "image", "torchvision", _GAP, ("efficientnet_",), (
        ("efficientnet_b0", 224, "efficientnet_b0_rwightman-7f5810bc.pth"),
        ("efficientnet_b1", 240, "efficientnet_b1-c27df63c.pth"),
        ("efficientnet_b2", 288, "efficientnet_b2_rwightman-c35c1473.pth"),
        ("efficientnet_b3", 300, "efficientnet_b3_rwightman-b3899882.pth"),
        ("efficientnet_b4", 380, "efficientnet_b4_rwightman-23ab8bcd.pth"),
        ("efficientnet_b5", 456, "efficientnet_b5_lukemelas-1a07897c.pth"),
        ("efficientnet_b6", 528, "efficientnet_b6_lukemelas-24a108a5.pth"),
        ("efficientnet_b7", 600, "efficientnet_b7_lukemelas-c5b4e57e.pth"),
        ("efficientnet_v2_s", 384, "efficientnet_v2_s-dd5fe13b.pth"),
        ("efficientnet_v2_m", 480, "efficientnet_v2_m-dc08266a.pth"),
        ("efficientnet_v2_l", 480, "efficientnet_v2_l-59c71312.pth"))),
    Family("mnasnet", "image", "torchvision", _GAP, ("mnasnet",), (
        ("mnasnet0_5", 224, "mnasnet0.5_top1_67.823-3ffadce67e.pth"),
        ("mnasnet0_75", 224, "mnasnet0_75-7090bc5f.pth"),
        ("mnasnet1_0", 224, "mnasnet1.0_top1_73.512-f206786ef8.pth"),
        ("mnasnet1_3", 224, "mnasnet1_3-a4c69d6f.pth"))),
    Family("densenet", "image", "torchvision", _GAP, ("densenet",), (
        ("densenet121", 224, "densenet121-a639ec97.pth"),
        ("densenet161", 224, "densenet161-8d451a50.pth"),
        ("densenet169", 224, "densenet169-b2777c0a.pth"),
        ("densenet201", 224, "densenet201-c1103571.pth"))),
    Family("shufflenet_v2", "image", "torchvision", _GAP, ("shufflenet_v2",), (
        ("shufflenet_v2_x0_5", 224, "shufflenetv2_x0.5-f707e7126e.pth"),
        ("shufflenet_v2_x1_0", 224, "shufflenetv2_x1-5666bf0f80.pth"),
        ("shufflenet_v2_x1_5", 224, "shufflenetv2_x1_5-3c479a10.pth"),
        ("shufflenet_v2_x2_0", 224, "shufflenetv2_x2_0-8be3c8ee.pth"))),
    Family("googlenet", "image", "torchvision",
           "pool + linear; input transform folded into mean/std", ("googlenet",), (
               ("googlenet", 224, "googlenet-1378be20.pth"),),
           min_side=15, aux_prefixes=("aux1.", "aux2.")),
    Family("inception_v3", "image", "torchvision",
           "pool + linear; input transform folded into mean/std", ("inception_v3",), (
               ("inception_v3", 299, "inception_v3_google-0cc3c7bd.pth"),),
           min_side=75, aux_prefixes=("AuxLogits.",)),
    Family("squeezenet", "image", "torchvision",
           "class maps before the pooling (1x1 conv + ReLU)", ("squeezenet",), (
               ("squeezenet1_0", 224, "squeezenet1_0-b66bff10.pth"),
               ("squeezenet1_1", 224, "squeezenet1_1-b8a52dc0.pth")),
           min_side=21, head_key="classifier.1.weight"),
    Family("convnext", "image", "torchvision",
           "pool + LayerNorm + linear; per-frame normalised features", ("convnext_",), (
               ("convnext_tiny", 224, "convnext_tiny-983f1562.pth"),
               ("convnext_small", 224, "convnext_small-0c510722.pth"),
               ("convnext_base", 224, "convnext_base-6075fbad.pth"),
               ("convnext_large", 224, "convnext_large-ea097f82.pth"))),
    # Kinetics-400 video classifiers. Clip length 16: the clips torchvision evaluates its
    # R3D/MC3/R(2+1)D weights on (``meta["_docs"]``); S3D's shortest multiple of 8 above its
    # 14-frame minimum (it was evaluated on 128-frame clips). Input sizes are the weights'
    # crops (112, S3D 224: its 7x7x2 pooling needs at least 224 px).
    Family("video_resnet", "video", "torchvision",
           "3-D pool + linear; maps over time x height x width",
           ("r3d_", "mc3_", "r2plus1d_"), (
               ("r3d_18", 112, "r3d_18-b3b3357e.pth"),
               ("mc3_18", 112, "mc3_18-a90a0ba3.pth"),
               ("r2plus1d_18", 112, "r2plus1d_18-91a641e6.pth")),
           clip_len=16, stride=16),
    Family("s3d", "video", "torchvision",
           "class maps before the 2x7x7 pooling (1x1x1 conv), weighted as it pools them",
           ("s3d",), (("s3d", 224, "s3d-d76dad2f.pth"),),
           min_side=224, head_key="classifier.1.weight", clip_len=16, stride=32),
    Family("timm", "image", "timm",
           "pool + linear, or pool + LayerNorm + linear", ("timm:",), (("timm:NAME", 0, ""),)),
)

#: torchvision families refused, by name prefix, and why.
REFUSED: dict[str, str] = {
    "alexnet": "its head is three fully connected layers, not pooling + one linear layer",
    "vgg": "its head is three fully connected layers, not pooling + one linear layer",
    "mobilenet_v3": "its head is two linear layers with an activation between them (a "
                    "hidden layer after the pooling)",
    "vit": "it is a transformer: there is no last convolutional feature map",
    "swin": "it is a transformer: there is no last convolutional feature map",
    "maxvit": "it is a transformer hybrid whose head is not pool + linear",
    "mvit": "it is a video transformer: there is no last convolutional feature map",
    "swin3d": "it is a video transformer: there is no last convolutional feature map",
}


class ModelRow(NamedTuple):
    """One row of ``camvideo models``."""

    name: str      #: the name to pass to ``-m``
    family: str    #: :attr:`Family.name`
    kind: str      #: ``image`` or ``video``
    size: int      #: input side the weights were trained at (pixels); 0: the model's own
    weights: str   #: where the weights come from (and whether they are there)
    head: str      #: how the head decomposes
    clip_len: int = 0  #: video networks: frames per clip (0: an image network)


def family_of(name: str) -> Family | None:
    """The family a registry name belongs to (None: not one camvideo supports)."""
    for fam in FAMILIES:
        if name in fam.prefixes or (fam.source != "bundled" and name.startswith(fam.prefixes)):
            return fam
    return None


def refusal(name: str) -> str | None:
    """Why a (torchvision) name is refused, or None when no rule says."""
    return next((why for prefix, why in REFUSED.items() if name.startswith(prefix)), None)


def available_models() -> list[str]:
    """Names accepted by :func:`camvideo.model.registry.load_model` (``timm:NAME``
    aside), the default first, then family by family."""
    return [m for fam in FAMILIES if fam.source != "timm" for m, _, _ in fam.models]


def hub_checkpoints() -> Path:
    """torchvision's checkpoint cache folder, without importing torch when it is not
    imported yet (torch.hub's rule: ``$TORCH_HOME/hub``, else
    ``$XDG_CACHE_HOME/torch/hub``, else ``~/.cache/torch/hub``; plus ``checkpoints``)."""
    hub = sys.modules.get("torch.hub")
    if hub is not None:  # honours torch.hub.set_dir()
        return Path(hub.get_dir()) / "checkpoints"
    home = os.getenv("TORCH_HOME") or os.path.join(
        os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints"


def model_table() -> list[ModelRow]:
    """Every model name with its family, kind, input size and weights source (whether
    torchvision's weights are already in the cache is looked up on disk)."""
    ckpt = hub_checkpoints()
    rows = []
    for fam in FAMILIES:
        for name, size, file in fam.models:
            if fam.source == "bundled":
                where = "bundled (offline)"
            elif fam.source == "timm":
                where = "timm cache (Hugging Face hub) or a weights file"
            else:
                where = "torchvision cache: " + ("cached" if (ckpt / file).is_file()
                                                 else "downloaded on first use")
            rows.append(ModelRow(name, fam.name, fam.kind, size, where, fam.head,
                                 fam.clip_len))
    return rows


def describe_models() -> list[tuple[str, str]]:
    """``(name, note)`` rows for ``camvideo models``: the note gives the kind, input size,
    family and where the weights come from (imports no torch)."""
    rows = model_table()
    fam_w = max(len(r.family) for r in rows)
    out = []
    for r in rows:
        size = f"{r.size} px" if r.size else "own size"
        note = f"{r.kind:<5}  {size:>8}  {r.family:<{fam_w}}  {r.weights}"
        if r.clip_len:
            note += f"; clips of {r.clip_len} frames"
        if r.name == DEFAULT_MODEL:
            note += "; default"
        out.append((r.name, note))
    return out
