"""The on-disk cache of what start-up builds: a model's CAM head and labels, its traced
backbone graphs and its int8 network, so that a second run skips importing timm and
torchvision, building and folding the network, and tracing or quantising it.

Where: ``$CAMVIDEO_CACHE_DIR``, else ``$XDG_CACHE_HOME/camvideo``, else
``~/.cache/camvideo``; ``CAMVIDEO_CACHE=off`` (or ``0``, ``no``, ``false``) turns it off.
A folder that cannot be made or written leaves the cache off for the process, with a
log line.

Each entry is one file, ``<kind>-<digest>.pt``, written to a temporary file and renamed
into place (concurrent writers are safe; readers never see half a file), holding
``{"key": ..., "sha256": ..., "payload": ...}``. Its name is the digest of its key, and
the key names everything its contents depend on: what the entry is (:func:`key`'s
``kind`` and fields: model name, weights' SHA-256, precision, input shape, CPU class...),
and torch's, camvideo's and Python's versions. A change of any of them makes another key:
the stale entry is never read, a new one is built (the oldest beyond
:data:`MAX_ENTRIES` are removed). Reading checks that the stored key equals the one
asked for and that the payload's bytes hash to the stored SHA-256; the callers then check
the contents themselves (a graph against its stored output on a probe input). Anything
that fails (truncated, overwritten, unreadable, not loadable) is a corrupt entry: a
warning names it, it is removed and rebuilt. The cache is loaded with
``torch.load(weights_only=True)``: an entry cannot run code.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

#: entries kept; the least recently used beyond this are removed after each write
MAX_ENTRIES = 64
_OFF = ("0", "off", "no", "false")
_LOCK = threading.Lock()
_FAILED_DIRS: set[str] = set()  # folders that could not be written: said once


def cache_dir() -> Path | None:
    """The cache folder (not created here), or None when the cache is off."""
    if os.environ.get("CAMVIDEO_CACHE", "").strip().lower() in _OFF:
        return None
    explicit = os.environ.get("CAMVIDEO_CACHE_DIR", "").strip()
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "camvideo"


def versions() -> dict[str, str]:
    """The versions every key includes (their change makes every entry stale)."""
    from .. import __version__

    return {"camvideo": str(__version__), "torch": str(torch.__version__),
            "python": platform.python_version(), "machine": platform.machine()}


def key(kind: str, **fields: Any) -> dict[str, Any]:
    """A cache key: ``kind``, the ``fields`` (JSON values) and :func:`versions`."""
    return {"kind": kind, **fields, **versions()}


def _digest(k: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(k, sort_keys=True).encode()).hexdigest()[:32]


def entry_path(k: dict[str, Any]) -> Path | None:
    """Where the entry for key ``k`` lives (None: cache off)."""
    d = cache_dir()
    return None if d is None else d / f"{k['kind']}-{_digest(k)}.pt"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) for the process and
    in the cache folder's ``hashes.json`` (as git does for its index)."""
    p = Path(path).resolve()
    st = p.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    memo = _read_hashes()
    hit = memo.get(str(p))
    if hit and hit.get("stamp") == stamp:
        return str(hit["sha256"])
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    memo[str(p)] = {"stamp": stamp, "sha256": digest}
    _write_hashes(memo)
    return digest


_HASHES: dict[str, dict[str, str]] | None = None


def _read_hashes() -> dict[str, dict[str, str]]:
    global _HASHES
    if _HASHES is None:
        _HASHES = read_json("hashes.json")
    return _HASHES


def _write_hashes(memo: dict[str, dict[str, str]]) -> None:
    write_json("hashes.json", memo)


def read_json(name: str) -> dict[str, Any]:
    """A JSON object kept beside the entries (``hashes.json``, ``sources.json``): ``{}``
    when the cache is off or the file is missing, unreadable or not an object."""
    d = cache_dir()
    if d is None:
        return {}
    try:
        data = json.loads((d / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(name: str, data: dict[str, Any]) -> None:
    """Replace the JSON object ``name`` beside the entries at once (readers never see
    half a file); nothing when the cache is off or cannot be written."""
    d = cache_dir()
    if d is None:
        return
    try:
        _atomic_write(d / name, json.dumps(data, indent=1).encode())
    except OSError:
        pass


def load(k: dict[str, Any]) -> Any | None:
    """The payload stored under ``k``, or None when there is none (or the cache is off).

    A corrupt entry (unreadable, another key inside, bytes that do not hash to the stored
    SHA-256) is removed with a warning, and None returned: the caller rebuilds it.
    """
    path = entry_path(k)
    if path is None or not path.is_file():
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(obj, dict) or not {"key", "sha256", "payload"} <= set(obj):
            raise ValueError("not a camvideo cache entry")
        if obj["key"] != k:
            raise ValueError("it holds another key")
        if _payload_sha256(obj["payload"]) != obj["sha256"]:
            raise ValueError("its contents do not match their checksum")
    except Exception as e:  # noqa: BLE001 - any failure to read is a corrupt entry
        discard(k, e)
        return None
    try:
        os.utime(path)  # recently used: kept by the pruning
    except OSError:
        pass
    return obj["payload"]


def discard(k: dict[str, Any], why: BaseException | str) -> None:
    """Remove the corrupt entry of key ``k``, with the warning that says so and ``why``
    (an exception: its type and the first line of its message)."""
    path = entry_path(k)
    if path is None:
        return
    if isinstance(why, BaseException):
        text = str(why).strip()
        why = f"{type(why).__name__}: {text.splitlines()[0][:120] if text else ''}"
    log.warning("ignoring a corrupt cache entry %s (%s); rebuilding it", path, why)
    try:
        path.unlink()
    except OSError:
        pass


def store(k: dict[str, Any], payload: Any) -> Path | None:
    """Write ``payload`` (tensors, non-empty bytes, str, numbers, None, lists, dicts:
    what ``torch.load(weights_only=True)`` reads back) under ``k``;
    returns the entry's path, or None when the cache is off or cannot be written."""
    path = entry_path(k)
    if path is None:
        return None
    buf = io.BytesIO()
    torch.save({"key": k, "sha256": _payload_sha256(payload), "payload": payload}, buf)
    try:
        _atomic_write(path, buf.getvalue())
    except OSError as e:
        folder = str(path.parent)
        if folder not in _FAILED_DIRS:
            _FAILED_DIRS.add(folder)
            log.warning("cannot write the cache in %s (%s); set CAMVIDEO_CACHE_DIR or "
                        "CAMVIDEO_CACHE=off", folder, e.strerror or e)
        return None
    _prune(path.parent)
    return path


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _payload_sha256(payload: Any) -> str:
    """A digest of the payload's contents: tensors by their bytes, the rest as JSON."""
    h = hashlib.sha256()

    def feed(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            h.update(f"T{v.dtype}{tuple(v.shape)}".encode())
            h.update(_tensor_bytes(v))
        elif isinstance(v, (bytes, bytearray)):
            h.update(b"B%d:" % len(v))
            h.update(v)
        elif isinstance(v, dict):
            h.update(b"{")
            for kk in sorted(v, key=str):
                h.update(json.dumps(str(kk)).encode())
                feed(v[kk])
            h.update(b"}")
        elif isinstance(v, (list, tuple)):
            h.update(b"[")
            for x in v:
                feed(x)
            h.update(b"]")
        else:
            h.update(json.dumps(v).encode())

    feed(payload)
    return h.hexdigest()


def _prune(folder: Path) -> None:
    with _LOCK:
        try:
            entries = sorted((p for p in folder.glob("*.pt") if p.is_file()),
                             key=lambda p: p.stat().st_mtime, reverse=True)
        except OSError:
            return
        for old in entries[MAX_ENTRIES:]:
            try:
                old.unlink()
            except OSError:
                pass


def state_sha256(module: torch.nn.Module) -> str:
    """A fingerprint of a network: its structure (``repr``) and every parameter's and
    buffer's bytes (for models whose weights file is not known, e.g. built in code)."""
    h = hashlib.sha256(repr(module).encode())
    for name, t in list(module.state_dict(keep_vars=False).items()):
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def _tensor_bytes(t: torch.Tensor) -> bytes:
    """A tensor's values as bytes, in logical (row-major) order whatever its layout."""
    flat = t.detach().cpu().reshape(-1).contiguous()
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def fingerprint(model: torch.nn.Module) -> str:
    """What identifies a CAM model's network in keys: set by
    :func:`camvideo.model.registry.load_model` from the model's name and its weights
    file's SHA-256, else the :func:`state_sha256` of its backbone (computed once)."""
    fp = model.__dict__.get("_camvideo_fingerprint")
    if fp is None:
        fp = model.__dict__["_camvideo_fingerprint"] = \
            "state:" + state_sha256(model.backbone)  # type: ignore[arg-type]
    return str(fp)


__all__ = ["MAX_ENTRIES", "cache_dir", "discard", "entry_path", "file_sha256",
           "fingerprint", "key", "load", "read_json", "state_sha256", "store", "versions",
           "write_json"]
