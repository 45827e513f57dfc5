"""Rendering: the label box names the class whose map is shown (``--class``, hysteresis)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from camvideo.render import Renderer, _label_lines

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
