"""Tests of camvideo.render: colormaps, and describing a batch without drawing it (the
colouring paths against each other: tests/test_engine.py)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from camvideo.options import COLORMAPS
from camvideo.render import Renderer, colormap_lut


def test_the_colormap_names_are_opencv_s():
    """The names the command line offers without importing OpenCV are exactly cv2's."""
    ours = sorted(COLORMAPS)
    theirs = sorted(n[len("COLORMAP_"):].lower() for n in dir(cv2) if n.startswith("COLORMAP_"))
    assert ours == theirs
    assert colormap_lut("turbo").shape == (256, 3)


def test_describe_gives_what_render_draws():
    """Peaks, boxes and labels from describe() (no pixels) equal render()'s, for RGB and
    I420 frames, overlay and side by side."""
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 7, 12, generator=g)
    probs = torch.softmax(torch.randn(3, 10, generator=g), dim=1)
    classes = probs.argmax(dim=1)
    labels = [f"class {i}" for i in range(10)]
    frames = [np.full((180, 320, 3), 60 * i, np.uint8) for i in range(3)]
    for layout in ("overlay", "side"):
        r = Renderer(labels, bbox=True, topk=3, layout=layout)
        images, drawn = r.render(frames, maps, probs, classes)
        described = r.describe(maps, probs, classes, (180, 320))
        assert described == drawn
        assert len(images) == 3 and images[0].shape == (180, 640 if layout == "side"
                                                        else 320, 3)
        assert all(d.bbox is not None for d in described)
    assert [d.cls for d in described] == classes.tolist()
    # the frames themselves are not drawn on
    assert all((f == 60 * i).all() for i, f in enumerate(frames))
