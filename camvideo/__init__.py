"""camvideo: what a CNN looks at, in video (Class Activation Mapping, Zhou et al. 2016).

Public API::

    import camvideo
    with camvideo.stream("in.mp4", smooth=0.3) as results:   # one FrameResult per frame
        for r in results:
            print(r.time, r.label, r.score, r.map.shape)
    camvideo.annotate("in.mp4", "out.mp4", smooth=0.3, bbox=True, json="out.jsonl")
    model = camvideo.load_model("resnet50", weights="resnet50.pth")
    opts = camvideo.Options(size=320, smooth=0)               # validated, immutable

The names are imported on first use, so ``import camvideo`` stays light.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.1.0"

# A library's logger: silent unless the application configures logging (Python's
# last-resort handler would print its warnings on stderr); the command line sets its own.
logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {"stream": "api", "annotate": "api", "Options": "options", "Summary": "options",
         "FrameResult": "options", "ClassResult": "options", "Stream": "runtime.stream",
         "load_model": "model.registry", "Frame": "media.frames"}
__all__ = ["ClassResult", "Frame", "FrameResult", "Options", "Stream", "Summary", "annotate",
           "load_model", "stream", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'camvideo' has no attribute {name!r}")
