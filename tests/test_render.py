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


def test_the_device_i420_blend_equals_the_cpu_one():
    """The GPU path's I420 blend (tensor operations, run here on the CPU) gives the
    OpenCV path's pixels (±1 level) and the same annotations, overlay and side by side."""
    from camvideo import pixels
    from camvideo.testing import synth

    img = cv2.resize(synth.load_photo("chelsea"), (320, 180))
    i420 = pixels.from_rgb(img)
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 7, 12, generator=g)
    probs = torch.softmax(torch.randn(2, 10, generator=g), 1)
    classes = probs.argmax(1)
    for layout in ("overlay", "side"):
        r = Renderer([str(i) for i in range(10)], layout=layout, bbox=True)
        cpu, cpu_notes = r.render([i420.copy(), i420.copy()], maps, probs, classes)
        dev, peaks, small = r._colour_torch_i420(torch.from_numpy(np.stack([i420, i420])),
                                                 maps)
        _, dev_notes = r._annotate(dev, peaks, small, maps, probs, classes, 180, 320)
        assert dev[0].shape == cpu[0].shape == ((270, 640) if layout == "side" else (270, 320))
        assert np.abs(dev[0].astype(int) - cpu[0].astype(int)).max() <= 1
        assert dev_notes == cpu_notes
