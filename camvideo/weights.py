"""Reading weights and label files safely.

Weights are loaded with ``torch.load(weights_only=True)``: a pickle that would run code
is refused with a clear message rather than executed.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ModelError


def read_labels(path: str | os.PathLike) -> list[str]:
    """One class name per line (blank lines ignored; Places365-style ``/a/abbey 0`` lines
    give ``abbey``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ModelError(f"cannot read labels file {path}: {e.strerror or e}") from None
    labels = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        name = line.split()[0] if line.startswith("/") else line
        labels.append(name.split("/")[-1] if name.startswith("/") else name)
    if not labels:
        raise ModelError(f"labels file {path} is empty")
    return labels


def load_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a state_dict or a checkpoint holding one, safely (``weights_only=True``).

    Accepts ``{'state_dict': ...}``, ``{'model': ...}``, ``{'model_state_dict': ...}`` and
    strips a ``module.`` prefix (DataParallel checkpoints such as Places365's).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise ModelError(f"refusing to load {path}: it is not a plain weights file "
                             "(it would run code when unpickled; loaded with "
                             "weights_only=True)") from None
        raise ModelError(f"cannot load weights {path}: {first}") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelError(f"{path} holds no state_dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def apply_state_dict(model: nn.Module, sd: dict[str, Tensor], source: str) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        detail = str(e).splitlines()[0] if str(e) else "mismatch"
        missing = [line.strip() for line in str(e).splitlines()[1:2]]
        raise ModelError(f"weights {source} do not fit the model: {detail} "
                         f"{' '.join(missing)}".strip()[:300]) from None


def classes_in(sd: dict[str, Tensor]) -> int | None:
    """Number of classes of the last 2-D weight in a state_dict (the linear head)."""
    for key in reversed(list(sd)):
        if key.endswith("weight") and sd[key].ndim == 2:
            return int(sd[key].shape[0])
    return None
