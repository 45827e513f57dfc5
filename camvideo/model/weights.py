"""Reading weights and label files safely.

Weights are loaded with ``torch.load(weights_only=True)``: a pickle that would run code
is refused with a clear message rather than executed. DenseNet checkpoints with the old
key names (``denselayer1.norm.1.weight``, as in torchvision's own downloads) are renamed
the way torchvision renames them (:func:`rename_legacy_keys`).
"""
from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import ModelError


# Places365 ``categories_places365.txt``: ``/a/apartment_building/outdoor 8`` -> the name
# without its leading one-letter folder (``apartment_building/outdoor``).
_PLACES_PREFIX = re.compile(r"^/[^/]/")

# torchvision.models.densenet._load_state_dict: '.'s are no longer allowed in module names,
# but old _DenseLayer checkpoints have 'norm.1', 'relu.1', 'conv.1', 'norm.2', ... (its
# pattern, plus num_batches_tracked, which a re-saved old checkpoint may hold)
_LEGACY_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\."
    r"((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def read_labels(path: str | os.PathLike) -> list[str]:
    """One class name per line, UTF-8 (blank lines ignored). Places365-style lines
    (``/a/apartment_building/outdoor 8``) give the name without the leading letter folder
    and the index (``apartment_building/outdoor``), so every class keeps its own name."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ModelError(f"cannot read labels file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ModelError(f"labels file {path} is not UTF-8 text (byte "
                         f"0x{e.object[e.start]:02x} at offset {e.start}); save it as UTF-8"
                         ) from None
    labels = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("/"):
            line = _PLACES_PREFIX.sub("", line.split()[0]).lstrip("/")
        labels.append(line)
    if not labels:
        raise ModelError(f"labels file {path} is empty")
    return labels


def load_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Load a state_dict or a checkpoint holding one, safely (``weights_only=True``).

    Accepts ``{'state_dict': ...}``, ``{'model': ...}``, ``{'model_state_dict': ...}`` and
    strips a ``module.`` prefix (DataParallel checkpoints such as Places365's); old DenseNet
    key names are renamed (:func:`rename_legacy_keys`).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file not found: {path}")
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 ...": torch's aside
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds here
        if "Unsupported global" in str(e):  # a pickle of objects, not of tensors
            raise ModelError(f"refusing to load {path}: it is not a plain weights file "
                             "(it would run code when unpickled; loaded with "
                             "weights_only=True)") from None
        raise ModelError(f"cannot load weights {path}: {_not_loadable(path, e)}") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ModelError(f"{path} holds no state_dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return rename_legacy_keys(obj)


def _not_loadable(path: Path, e: Exception) -> str:
    """Why ``torch.load`` failed on ``path``, in words: told by the file's first bytes
    (``torch.save`` writes a zip archive, older versions a pickle), as torch's own errors
    are internal (a text file gives ``KeyError: 101``, the pickle opcode its first byte
    was taken for) or advice about ``weights_only``."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as err:
        return f"cannot read it: {err.strerror or err}"
    if not head:
        return "the file is empty"
    not_ckpt = "not a PyTorch weights file"
    if head.startswith(b"PK"):  # a zip archive: torch.save's format, or another one
        text = str(e)
        if "central directory" in text or isinstance(e, EOFError):
            return f"{not_ckpt}, or a damaged one (a zip archive cut short)"
        return f"{not_ckpt} (a zip archive without the files torch.save writes)"
    if head[0] == 0x80:  # a pickle (protocol 2+): torch.save's legacy format
        return f"{not_ckpt} (a pickle that holds no tensors torch can read)"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not a character cut at the end of the 64 bytes
            return f"{not_ckpt} (neither the zip archive nor the pickle torch.save writes)"
    if all(c >= 32 or c in b"\t\r\n" for c in head):  # no control characters
        return f"{not_ckpt} (a text file; torch.save writes a zip archive)"
    return f"{not_ckpt} (neither the zip archive nor the pickle torch.save writes)"


def rename_legacy_keys(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """``sd`` with old DenseNet key names (``...denselayer1.norm.1.weight``, as in
    torchvision's DenseNet downloads) renamed to today's (``...denselayer1.norm1.weight``),
    as ``torchvision.models.densenet`` does when it loads them; other keys unchanged, order
    kept (:func:`classes_in` reads the last 2-D weight)."""
    out = {}
    for key, value in sd.items():
        m = _LEGACY_DENSENET_KEY.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def apply_state_dict(model: nn.Module, sd: dict[str, Tensor], source: str) -> None:
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        detail = str(e).splitlines()[0] if str(e) else "mismatch"
        missing = [line.strip() for line in str(e).splitlines()[1:2]]
        raise ModelError(f"weights {source} do not fit the model: {detail} "
                         f"{' '.join(missing)}".strip()[:300]) from None


def drop_keys(sd: dict[str, Tensor],
              prefixes: tuple[str, ...]) -> tuple[dict[str, Tensor], int]:
    """``(sd without the keys starting with one of prefixes, how many were left out)``:
    the auxiliary heads of GoogLeNet (``aux1.``, ``aux2.``) and Inception v3
    (``AuxLogits.``), which torchvision saves and inference does not use."""
    if not prefixes:
        return sd, 0
    kept = {k: v for k, v in sd.items() if not k.startswith(prefixes)}
    return kept, len(sd) - len(kept)


def classes_in(sd: dict[str, Tensor], key: str | None = None) -> int | None:
    """Number of classes: the first dimension of ``sd[key]`` when given and present
    (SqueezeNet's ``classifier.1.weight``, a ``(K, C, 1, 1)`` convolution), else of the
    last 2-D weight in the state_dict (the linear head)."""
    if key is not None and key in sd and sd[key].ndim >= 1:
        return int(sd[key].shape[0])
    for key in reversed(list(sd)):
        if key.endswith("weight") and sd[key].ndim == 2:
            return int(sd[key].shape[0])
    return None
