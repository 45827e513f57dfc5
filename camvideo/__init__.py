"""camvideo: what a CNN looks at, in video (Class Activation Mapping, Zhou et al. 2016).

Public API::

    import camvideo
    camvideo.annotate("in.mp4", "out.mp4", smooth=0.3, bbox=True, json="out.jsonl")
    model = camvideo.load_model("resnet50", weights="resnet50.pth")

The names are imported on first use, so ``import camvideo`` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"annotate": "api", "Options": "options", "Summary": "options",
         "load_model": "model.registry"}
__all__ = ["Options", "Summary", "annotate", "load_model", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'camvideo' has no attribute {name!r}")
