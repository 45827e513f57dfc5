"""Tests of camvideo.render: colormaps, describing a batch without drawing it, the
device I420 blend against the OpenCV one, and the label box naming the class whose map
is shown (``--class``, hysteresis). The colouring paths against each other:
tests/test_engine.py."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from camvideo.options import COLORMAPS
from camvideo.render import Renderer, _label_lines, colormap_lut


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


# --------------------------------------------------------------------------------------
# the label box

LABELS = ["albatross", "sea lion", "king penguin", "hare", "tabby"]
H, W = 360, 640


def _probs() -> torch.Tensor:
    """Top-3: albatross 0.55, sea lion 0.25, king penguin 0.199; hare 0.001."""
    return torch.tensor([[0.55, 0.25, 0.199, 0.001, 0.0]])


def _text_mask(text: str) -> np.ndarray:
    """``text`` drawn alone in the highlight colour on the label box's background (the
    grey frame darkened to 40 %), at the label box's size for this frame height (scale
    ``max(0.35, H / 720 * 0.75)``, thickness 1): its highlight-coloured pixels, cropped."""
    canvas = np.full((60, 400, 3), 128 * 2 // 5, np.uint8)
    cv2.putText(canvas, text, (5, 40), cv2.FONT_HERSHEY_SIMPLEX, max(0.35, H / 720 * 0.75),
                (255, 255, 0), 1, cv2.LINE_AA)
    return _crop(_yellow(canvas))


def _crop(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def _yellow(img: np.ndarray) -> np.ndarray:
    """Pixels of the highlight colour (yellow text: red and green high, blue low)."""
    r, g, b = (img[..., c].astype(int) for c in range(3))
    return (r > 100) & (g > 100) & (b < 0.5 * np.minimum(r, g))


def _render(cls: int) -> np.ndarray:
    r = Renderer(LABELS, topk=3, alpha=0.0)
    frame = np.full((H, W, 3), 128, np.uint8)
    maps = torch.zeros(1, 7, 12)
    imgs, notes = r.render([frame], maps, _probs(), torch.tensor([cls]))
    assert notes[0].cls == cls and notes[0].label == LABELS[cls]
    return imgs[0]


def _similar(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two cropped masks aligned at their top left (0 when the sizes differ by
    more than 2 px)."""
    if abs(a.shape[0] - b.shape[0]) > 2 or abs(a.shape[1] - b.shape[1]) > 2:
        return 0.0
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    a, b = a[:h, :w], b[:h, :w]
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_class_not_in_top_k_is_named_first_and_highlighted():
    img = _render(cls=3)  # --class hare: 0.1 %, not among the top 3
    yellow = _yellow(img)
    assert yellow.any(), "no highlighted line"
    ys = np.nonzero(yellow)[0]
    # the highlighted text is the first line: nothing yellow below its band
    white = (img.min(axis=2) > 200)[:100, :300]
    first_white = np.nonzero(white.any(axis=1))[0]
    assert ys.max() < first_white.min(), "the highlighted line is not the first"
    got = _crop(yellow)
    assert _similar(got, _text_mask("  0.1%  hare")) > 0.8
    # the test can fail: another label's text does not match
    assert _similar(got, _text_mask(" 55.0%  albatross")) < 0.5
    # then the top-3, in white: four lines in all
    rows = np.nonzero((white | _yellow(img)[:100, :300]).any(axis=1))[0]
    bands = 1 + int((np.diff(rows) > 2).sum())
    assert bands == 4


def test_top1_shown_is_first_and_highlighted_without_a_repeat():
    img = _render(cls=0)
    got = _crop(_yellow(img))
    assert _similar(got, _text_mask(" 55.0%  albatross")) > 0.8
    white = (img.min(axis=2) > 200)[:100, :300] | _yellow(img)[:100, :300]
    rows = np.nonzero(white.any(axis=1))[0]
    assert 1 + int((np.diff(rows) > 2).sum()) == 3  # top-3, the shown one not repeated


def test_label_lines_order():
    topk = [(0, "albatross", 0.55), (1, "sea lion", 0.25), (2, "king penguin", 0.199)]
    assert _label_lines(topk, (3, "hare", 0.001)) == [(3, "hare", 0.001)] + topk
    # held by hysteresis while second: first, then the others, k lines in all
    assert _label_lines(topk, (1, "sea lion", 0.25)) == [topk[1], topk[0], topk[2]]
    assert _label_lines(topk, topk[0]) == topk
