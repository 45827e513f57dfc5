"""Drawing several classes (camvideo.render: ClassPainter, the legend, tracked boxes, the
Timeline strip), checked pixel by pixel at 360p and 4K, RGB and I420."""
from __future__ import annotations

import av
import numpy as np
import pytest
import torch

from camvideo import pixels
from camvideo.options import ClassResult
from camvideo.render import PALETTE, ClassPainter, Timeline, opacity

GREY = 128


def frame(h: int, w: int) -> np.ndarray:
    return np.full((h, w, 3), GREY, np.uint8)


def two_maps(h: int = 6, w: int = 12) -> torch.Tensor:
    """Class 0 hot on the left third, class 1 on the right third."""
    m = torch.zeros(2, h, w)
    m[0, :, : w // 3] = 1.0
    m[1, :, -(w // 3):] = 1.0
    return m


def test_each_class_in_its_colour_the_strongest_per_pixel():
    img = frame(360, 640)
    out = ClassPainter(alpha=0.6).paint(img, two_maps(), [0, 1])
    assert out.shape == img.shape and out is not img and (img == GREY).all()
    left, right, mid = out[180, 40].astype(int), out[180, 600].astype(int), out[180, 320]
    expect = lambda slot: np.round(GREY * 0.4 + PALETTE[slot] * 0.6)      # noqa: E731
    assert np.abs(left - expect(0)).max() <= 2 and np.abs(right - expect(1)).max() <= 2
    assert (mid == GREY).all()                                    # no class: untouched
    # slot 3 paints the right class yellow instead: colours follow the slots
    out3 = ClassPainter(alpha=0.6).paint(img, two_maps(), [0, 3])
    assert np.abs(out3[180, 600].astype(int) - expect(3)).max() <= 2
    # side by side: the original on the left, the same overlay on the right
    side = ClassPainter(alpha=0.6, layout="side").paint(img, two_maps(), [0, 1])
    assert side.shape == (360, 1280, 3) and (side[:, :640] == GREY).all()
    assert np.array_equal(side[:, 640:], out)


def test_i420_frames_get_the_same_colours():
    rgb = frame(360, 640)
    rgb[:, :, 2] = np.linspace(0, 255, 640, dtype=np.uint8)[None]
    painter = ClassPainter(alpha=0.5)
    want = painter.paint(rgb, two_maps(), [0, 1])
    got = pixels.to_rgb(painter.paint(pixels.from_rgb(rgb), two_maps(), [0, 1]))
    ref = pixels.to_rgb(pixels.from_rgb(want))        # what the RGB path encodes to
    assert np.abs(got.astype(int) - ref).mean() < 1.5
    assert np.abs(got.astype(int) - ref).max() <= 12  # chroma subsampling at edges


def test_opacity_ramp():
    v = np.array([0.0, 0.15, 0.45, 0.75, 1.0])
    assert np.allclose(opacity(v, 0.5), [0, 0, 0.25, 0.5, 0.5])
    assert torch.allclose(opacity(torch.tensor(v), 0.5), torch.tensor([0, 0, 0.25, 0.5, 0.5],
                                                                      dtype=torch.float64))


def shown(h: int) -> list[ClassResult]:
    s = h / 360
    return [ClassResult(281, "tabby", 0.452, None, (0, 0),
                        (int(40 * s), int(120 * s), int(200 * s), int(300 * s)), 1, 0),
            ClassResult(968, "cup", 0.071, None, (0, 0),
                        (int(400 * s), int(100 * s), int(600 * s), int(320 * s)), 2, 1)]


def mask_of(img: np.ndarray, rgb: np.ndarray, tol: int = 0) -> np.ndarray:
    return (np.abs(img.astype(int) - rgb.astype(int)) <= tol).all(axis=-1)


@pytest.mark.parametrize("h, w", [(360, 640), (2160, 3840)])
def test_legend_swatches_text_and_boxes_scale_with_the_frame(h, w):
    img = frame(h, w)
    ClassPainter(boxes=True).annotate(img, shown(h))
    corner = img[: h // 4, : w // 3]
    # the legend box is darkened (40%: grey 128 -> 51), at the top-left corner
    dark = (corner == 51).all(axis=-1)
    dy, dx = np.nonzero(dark)
    assert dark.mean() > 0.05 and dy.min() <= 0.03 * h and dx.min() <= 0.03 * h
    # one swatch per class, in its colour, in order (slot 0 above slot 1), squares about
    # as high as the text: 5-8% of a 360p frame's height, the same share at 4K
    ys = []
    for slot in (0, 1):
        m = mask_of(corner, PALETTE[slot])
        yy, xx = np.nonzero(m)
        assert len(yy) > 0, f"no swatch of slot {slot}"
        side = yy.max() - yy.min() + 1
        assert 0.02 * h <= side <= 0.08 * h and abs((xx.max() - xx.min() + 1) - side) <= 1
        ys.append(yy.mean())
    assert ys[0] < ys[1]
    # white text right of the swatches
    text = (corner > 200).all(axis=-1)
    assert text.sum() > 0.0005 * h * w / 12 and np.nonzero(text)[1].min() > \
        np.nonzero(mask_of(corner, PALETTE[0]))[1].max()
    # each box in its class's colour with its ID tag: the tag is a filled label of that
    # colour at the box's top-left corner
    s = h / 360
    for c in shown(h):
        x0, y0, x1, y1 = c.bbox
        colour = PALETTE[c.slot]
        assert mask_of(img[y0 + 1:y1 - 1, x1 - 2:x1 - 1], colour, 40).mean() > 0.8
        tag = img[y0:y0 + int(12 * s), x0 + int(2 * s):x0 + int(20 * s)]
        assert mask_of(tag, colour).mean() > 0.4
        assert (tag < 60).all(axis=-1).any()                     # the ID, in black


@pytest.mark.parametrize("h, w", [(360, 640), (2160, 3840)])
@pytest.mark.parametrize("fmt", ["rgb", "i420"])
def test_timeline_strip(h, w, fmt):
    tl = Timeline(5.0)
    k = 10
    for i in range(151):                            # 5 s at 30 fps
        p = np.zeros(k, np.float32)
        p[2] = 0.1 * i / 150                        # class 2 rises from 0 to 10 %
        p[7] = 0.05                                 # class 7 stays at 5 %
        tl.push(i / 30, p)
    img = frame(h, w)
    if fmt == "i420":
        img = pixels.from_rgb(img)
    tl.draw(img, [(2, tuple(int(v) for v in PALETTE[0])), (7, tuple(int(v) for v in PALETTE[1]))])
    if fmt == "i420":
        img = pixels.to_rgb(img)
    sh = tl.height(h)
    assert sh == max(36, round(h / 7))
    above, strip = img[: h - sh - 2], img[h - sh:]
    assert (np.abs(above.astype(int) - GREY) <= 1).all()      # nothing drawn above it
    tol = 0 if fmt == "rgb" else 30
    rising, flat = mask_of(strip, PALETTE[0], tol), mask_of(strip, PALETTE[1], tol)
    assert rising.sum() > 0.2 * w and flat.sum() > 0.2 * w
    # the flat 5 % line sits half-way up the plot (the axis reads 0..10 %), level
    fy, fx = np.nonzero(flat)
    assert abs(np.median(fy) - sh / 2) <= 0.12 * sh
    assert np.percentile(fy, 95) - np.percentile(fy, 5) <= 0.1 * sh
    # the rising line climbs from left to right across the strip's width
    ry, rx = np.nonzero(rising)
    assert rx.min() < 0.25 * w and rx.max() > 0.95 * w
    assert ry[rx > 0.8 * w].mean() < ry[rx < 0.3 * w].mean() - 0.3 * sh
    # the cursor: a white vertical line at the right end; the axis label at the left
    white = (strip > 230).all(axis=-1)
    cols = white.sum(axis=0)
    assert cols[int(0.95 * w):].max() >= 0.6 * sh
    assert (strip[:, : int(0.06 * w)] > 200).all(axis=-1).sum() > 0   # "10%"


def test_a_rendered_video_has_the_legend_and_the_strip(pair_clip, pair_run):
    with av.open(str(pair_run["video"])) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i == 45:
                img = f.to_ndarray(format="rgb24")
                break
    h, w = img.shape[:2]
    assert (w, h) == pair_clip.size
    corner = img[: h // 3, : w // 2]
    for slot in (0, 1):                             # both swatches, through H.264
        assert mask_of(corner, PALETTE[slot], 40).sum() >= 20
    strip = img[h - max(36, round(h / 7)):]
    assert strip.mean() < img[: h // 2].mean()       # the strip is darkened
    for slot in (0, 1):
        assert mask_of(strip, PALETTE[slot], 50).sum() >= 10


def test_the_device_path_paints_the_same_colours():
    """``paint_torch`` (CUDA frames; run here on CPU tensors) gives the CPU path's colours
    where one class is clearly the strongest (they differ only in how the boundary between
    two classes is interpolated)."""
    img = frame(360, 640)
    img[:, :, 1] = np.linspace(0, 255, 360, dtype=np.uint8)[:, None]
    painter = ClassPainter(alpha=0.6, layout="side")
    cpu = painter.paint(img, two_maps(), [2, 4])
    dev = painter.paint_torch(torch.from_numpy(img)[None], [two_maps()], [[2, 4]])[0]
    assert dev.shape == cpu.shape == (360, 1280, 3)
    for x in (40, 120, 560, 620, 320):
        assert np.abs(dev[:, 640 + x].astype(int) - cpu[:, 640 + x]).max() <= 2, x
    assert np.array_equal(dev[:, :640], img)


def test_timeline_keeps_only_its_window():
    tl = Timeline(1.0)
    for i in range(300):                      # 10 s at 30 fps; the ring grows, then wraps
        p = np.zeros(4, np.float32)
        p[1] = i
        tl.push(i / 30, p)
    times, probs = tl._history([1, 3])
    assert len(times) == 31 and times[0] == pytest.approx(269 / 30) and times[-1] == 299 / 30
    assert probs.shape == (31, 2) and list(probs[:, 0]) == list(range(269, 300))
