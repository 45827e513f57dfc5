"""Synthetic test and benchmark clips made from real photos.

The photos come from scikit-image (``skimage.data``) and scikit-learn
(``sklearn.datasets.load_sample_image``), both *test extras*: they are imported lazily
and a missing one raises :class:`ImportError` with the extra to install.

Five kinds of motion are generated, each with the ground-truth box of the photo's main
ImageNet object in every output frame (:data:`OBJECT_BOXES` mapped through the exact
placement): :func:`pan_frames` (the photo slides across a background), :func:`zoom_frames`
(a camera zoom in or out on the object, optionally panning towards it), :func:`move_frames`
(one or more photos that move and grow or shrink independently over a still background:
a dolly, a small object, two objects), :func:`cut_frames` (hard cuts between photos) and
:func:`pair_frames` (two photos side by side, each moving on its own: a clip with two
objects, each with its own box). :data:`SCENE_BOXES` holds several hand-annotated
objects of a multi-object photo. For time alignment, :func:`blob_frames` moves a bright
disc across a darkened photo, with its centre in every frame.
Frames are rendered on access (:class:`FrameSequence`), so a long 1080p benchmark clip
does not have to fit in memory. :func:`make_clip` generates one of these and writes it
with :func:`camvideo.testing.clip.write_clip`, which encodes frames with PyAV and returns a
:class:`camvideo.testing.clip.Clip` recording what was written (both are importable from
here too, as ``synth.write_clip`` and ``synth.Clip``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from .clip import Box, Clip, write_clip

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "motorcycle", "china", "flower")

#: Hand-checked box of the main ImageNet object of each photo at its native resolution
#: (drawn on the photo and inspected; edges good to about 3 px). ``astronaut`` has none:
#: a person is not an ImageNet class.
OBJECT_BOXES: dict[str, Box] = {
    "chelsea": (0, 0, 398, 300),       # tabby cat: ears to chest, whiskers; fills the photo
    "coffee": (76, 17, 479, 390),      # espresso cup + saucer + spoon
    "rocket": (306, 126, 338, 402),    # Falcon 9 (ImageNet "missile"/"projectile")
    "motorcycle": (92, 75, 686, 450),  # Yamaha motorcycle, mirror to tyres
    "china": (60, 28, 372, 395),       # pagoda (Summer Palace tower)
    "flower": (168, 85, 447, 358),     # the front dahlia ("daisy"-like)
}

#: The ImageNet class of each :data:`OBJECT_BOXES` object, as ``--class`` names it (the
#: nearest one where ImageNet has none of its own: a motorcycle is "moped", a dahlia
#: "daisy"); None where ImageNet has nothing near (a pagoda).
OBJECT_CLASSES: dict[str, str | None] = {
    "chelsea": "tabby", "coffee": "cup", "rocket": "missile", "motorcycle": "moped",
    "china": None, "flower": "daisy",
}

#: Several hand-annotated objects of a multi-object photo (native resolution, drawn on the
#: photo and inspected; edges good to about 3 px), by what they are. Only the shuttle
#: model ("space shuttle") and the helmet ("crash helmet") are ImageNet classes.
SCENE_BOXES: dict[str, dict[str, Box]] = {
    "astronaut": {
        "person": (20, 10, 362, 512),        # Eileen Collins, hair to the bottom edge
        "space shuttle": (356, 0, 466, 283),  # the orbiter model with its tank and stand
        "crash helmet": (276, 343, 508, 512),
        "flag": (0, 0, 97, 512),
    },
}

_SKLEARN = {"china": "china.jpg", "flower": "flower.jpg"}


def load_photo(name: str) -> np.ndarray:
    """Load a bundled photo.

    Args:
        name: one of :data:`PHOTOS`.

    Returns:
        ``(H, W, 3) uint8`` RGB image in [0, 255], at native resolution.

    Raises:
        KeyError: unknown name.
        ImportError: scikit-image / scikit-learn (test extras) not installed.
    """
    if name not in PHOTOS:
        raise KeyError(f"unknown photo {name!r}; choose from {', '.join(PHOTOS)}")
    pkg = "scikit-learn" if name in _SKLEARN else "scikit-image"
    try:
        if name in _SKLEARN:
            from sklearn.datasets import load_sample_image
            img = load_sample_image(_SKLEARN[name])
        else:
            import skimage.data
            img = (skimage.data.stereo_motorcycle()[0] if name == "motorcycle"
                   else getattr(skimage.data, name)())
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"photo {name!r} comes from {pkg}, a test extra that is not "
                          f"installed: pip install {pkg}") from e
    return np.ascontiguousarray(img[..., :3], dtype=np.uint8)


def _photo_and_box(photo: str | np.ndarray, box: Box | None) -> tuple[np.ndarray, Box]:
    """The photo's pixels and its object box (given, known, or the whole photo)."""
    if isinstance(photo, str):
        box = box or OBJECT_BOXES.get(photo)
        photo = load_photo(photo)
    h, w = photo.shape[:2]
    return photo, box or (0, 0, w, h)


class FrameSequence(Sequence[np.ndarray]):
    """Frames rendered on access: ``len()``, indexing and iteration, constant memory.

    Each item is an ``(H, W, 3) uint8`` RGB frame; ``list(seq)`` materialises them all.
    """

    def __init__(self, n: int, render: Callable[[int], np.ndarray]) -> None:
        self._n, self._render = n, render

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._render(i % self._n)


def _background(size: tuple[int, int], spec: str | np.ndarray | None) -> np.ndarray:
    """``(H, W, 3) uint8`` backdrop: a blue-grey gradient, or a blurred, darkened photo."""
    w, h = size
    if spec is None:
        ys = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
        xs = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :, None]
        top, bottom = np.array([96, 104, 118], np.float32), np.array([34, 36, 42], np.float32)
        img = top + (bottom - top) * ys + 18.0 * (xs - 0.5)
        return np.clip(img, 0, 255).astype(np.uint8)
    img = load_photo(spec) if isinstance(spec, str) else spec
    img = _warp(img, _cover_matrix(img.shape[1], img.shape[0], size, 1.0, None), size)
    img = cv2.GaussianBlur(img, (0, 0), sigmaX=max(2.0, 0.03 * w))
    return (img.astype(np.float32) * 0.45).astype(np.uint8)


def _map_box(box: Box, m: np.ndarray, size: tuple[int, int]) -> Box | None:
    """Map a photo box through the 2x3 scale+shift ``m`` and clip it to the frame."""
    x0, y0 = m[0, 0] * box[0] + m[0, 2], m[1, 1] * box[1] + m[1, 2]
    x1, y1 = m[0, 0] * box[2] + m[0, 2], m[1, 1] * box[3] + m[1, 2]
    out = (max(0, round(x0)), max(0, round(y0)), min(size[0], round(x1)), min(size[1], round(y1)))
    return out if out[2] > out[0] and out[3] > out[1] else None


def _cover_matrix(w: int, h: int, size: tuple[int, int], zoom: float,
                  centre: tuple[float, float] | None) -> np.ndarray:
    """Scale+shift showing a ``w x h`` photo so it covers ``size``, zoomed on ``centre``."""
    s = max(size[0] / w, size[1] / h) * zoom
    half_w, half_h = size[0] / (2 * s), size[1] / (2 * s)
    cx, cy = centre or (w / 2, h / 2)
    cx, cy = min(max(cx, half_w), w - half_w), min(max(cy, half_h), h - half_h)
    return np.array([[s, 0.0, size[0] / 2 - s * cx], [0.0, s, size[1] / 2 - s * cy]])


def _warp(photo: np.ndarray, m: np.ndarray, size: tuple[int, int],
          border: int = cv2.BORDER_REFLECT) -> np.ndarray:
    """Render ``photo`` through ``m`` (pre-shrinking with area filtering to avoid aliasing;
    ``border``: what lies outside the photo, reflected or black)."""
    s = m[0, 0]
    if s < 0.9:
        h, w = photo.shape[:2]
        photo = cv2.resize(photo, (max(1, round(w * s)), max(1, round(h * s))),
                           interpolation=cv2.INTER_AREA)
        m = m.copy()
        m[0, 0] *= w / photo.shape[1]
        m[1, 1] *= h / photo.shape[0]
    return cv2.warpAffine(photo, m, size, flags=cv2.INTER_LINEAR, borderMode=border)


def _ease(n: int) -> np.ndarray:
    """``n`` smoothly eased (cosine) fractions from 0 to 1."""
    t = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    return 0.5 - 0.5 * np.cos(np.pi * t)


def pan_frames(photo: str | np.ndarray = "chelsea", size: tuple[int, int] = (320, 180),
               n: int = 48, *, scale: float = 0.6, background: str | np.ndarray | None = None,
               box: Box | None = None) -> tuple[FrameSequence, list[Box | None]]:
    """The photo slides left to right (with a gentle vertical bob) across a backdrop.

    Args:
        photo: photo name (its :data:`OBJECT_BOXES` entry is the object) or an
            ``(h, w, 3) uint8`` RGB array.
        size: output ``(W, H)``.
        n: number of frames.
        scale: height of the placed photo as a fraction of the frame height (0, 1].
        background: ``None`` for a blue-grey gradient, a photo name or an RGB array for a
            blurred, darkened copy of it.
        box: object box in the photo's pixels; default its :data:`OBJECT_BOXES` entry, or
            the whole photo.

    Returns:
        ``(frames, boxes)``: ``n`` frames ``(H, W, 3) uint8`` and the object box of each,
        exact up to rounding to whole pixels (the photo is placed at integer offsets).
    """
    photo, box = _photo_and_box(photo, box)
    w, h = size
    ph = max(1, min(h, round(h * scale)))
    pw = max(1, min(w, round(photo.shape[1] * ph / photo.shape[0])))
    small = cv2.resize(photo, (pw, ph), interpolation=cv2.INTER_AREA)
    bg = _background(size, background)
    t = _ease(n)
    xs = np.round(t * (w - pw)).astype(int)
    bob = (h - ph) / 2
    ys = np.round(bob + 0.5 * bob * np.sin(2 * np.pi * np.linspace(0, 1, n))).astype(int)
    m0 = np.array([[pw / photo.shape[1], 0.0, 0.0], [0.0, ph / photo.shape[0], 0.0]])
    boxes = []
    for x, y in zip(xs, ys):
        m = m0.copy()
        m[:, 2] = (x, y)
        boxes.append(_map_box(box, m, size))

    def render(i: int) -> np.ndarray:
        frame = bg.copy()
        frame[ys[i]:ys[i] + ph, xs[i]:xs[i] + pw] = small
        return frame

    return FrameSequence(n, render), boxes


def zoom_frames(photo: str | np.ndarray = "chelsea", size: tuple[int, int] = (320, 180),
                n: int = 48, *, zoom: tuple[float, float] = (1.0, 1.6),
                box: Box | None = None,
                start: tuple[float, float] | None = None) -> tuple[FrameSequence,
                                                                   list[Box | None]]:
    """A slow, eased zoom from ``zoom[0]`` to ``zoom[1]`` centred on the object.

    Zoom 1 is the whole photo scaled to cover the frame (cropped to its aspect ratio);
    pass ``zoom=(2.0, 1.0)`` to zoom out. The view stays inside the photo.

    Args:
        photo: photo name or ``(h, w, 3) uint8`` RGB array.
        size: output ``(W, H)``.
        n: number of frames.
        zoom: start and end magnification, each >= 1.
        box: object box in the photo's pixels (default as in :func:`pan_frames`).
        start: where the view is centred at the first frame, as fractions ``(fx, fy)``
            of the photo's width and height; it then pans (eased, with the zoom) to the
            object's centre. None: centred on the object throughout.

    Returns:
        ``(frames, boxes)``: ``n`` frames ``(H, W, 3) uint8`` and the object box of each,
        clipped to the frame (``None`` if the object is entirely outside it).
    """
    photo, box = _photo_and_box(photo, box)
    ph, pw = photo.shape[:2]
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    first = centre if start is None else (start[0] * pw, start[1] * ph)
    t = _ease(n)
    zs = zoom[0] + (zoom[1] - zoom[0]) * t
    mats = [_cover_matrix(pw, ph, size, float(z),
                          (first[0] + (centre[0] - first[0]) * f,
                           first[1] + (centre[1] - first[1]) * f)) for z, f in zip(zs, t)]
    return (FrameSequence(n, lambda i: _warp(photo, mats[i], size)),
            [_map_box(box, m, size) for m in mats])


def move_frames(objects: Sequence[tuple[str | np.ndarray, tuple[float, float],
                                        tuple[tuple[float, float], tuple[float, float]]]],
                size: tuple[int, int] = (320, 180), n: int = 48, *,
                background: str | np.ndarray | None = None,
                boxes: Sequence[Box | None] | None = None
                ) -> tuple[FrameSequence, list[list[Box | None]]]:
    """Photos that move and grow or shrink over a still backdrop (eased): a dolly towards
    an object (it grows while the background stays), a small object crossing the frame,
    two objects at once. Later objects are drawn over earlier ones.

    Args:
        objects: per photo ``(photo, (h0, h1), ((x0, y0), (x1, y1)))``: the photo (name
            or ``(h, w, 3) uint8`` RGB array), its height as a fraction of the frame
            height at the first and last frame, and its centre as fractions of the
            frame's ``(W, H)`` at the first and last frame.
        size: output ``(W, H)``.
        n: number of frames.
        background: as in :func:`pan_frames`.
        boxes: per photo, its object box in the photo's pixels (None: the photo's
            :data:`OBJECT_BOXES` entry, or the whole photo).

    Returns:
        ``(frames, boxes)``: ``n`` frames ``(H, W, 3) uint8`` and, per frame, one box per
        object (in ``objects``' order), exact up to rounding, clipped to the frame (None
        where the object is outside it). Where objects overlap, a box is not reduced to
        the visible part.
    """
    w, h = size
    bg = _background(size, background)
    t = _ease(n)
    placed = []
    for k, (photo, (h0, h1), ((x0, y0), (x1, y1))) in enumerate(objects):
        img, box = _photo_and_box(photo, boxes[k] if boxes else None)
        mats = []
        for f in t:
            s = (h0 + (h1 - h0) * f) * h / img.shape[0]
            cx, cy = (x0 + (x1 - x0) * f) * w, (y0 + (y1 - y0) * f) * h
            mats.append(np.array([[s, 0.0, cx - s * img.shape[1] / 2],
                                  [0.0, s, cy - s * img.shape[0] / 2]]))
        placed.append((img, box, mats))

    def render(i: int) -> np.ndarray:
        frame = bg.copy()
        for img, _, mats in placed:
            layer = _warp(img, mats[i], size, border=cv2.BORDER_CONSTANT)
            mask = _warp(np.full(img.shape[:2], 255, np.uint8), mats[i], size,
                         border=cv2.BORDER_CONSTANT)
            a = mask[..., None].astype(np.float32) / 255.0
            frame = (frame * (1.0 - a) + layer * a + 0.5).astype(np.uint8)
        return frame

    per_frame = [[_map_box(box, mats[i], size) for _, box, mats in placed] for i in range(n)]
    return FrameSequence(n, render), per_frame


def cut_frames(photos: Sequence[str | np.ndarray] = ("chelsea", "coffee", "china"),
               size: tuple[int, int] = (320, 180), n_per_shot: int | Sequence[int] = 16,
               *, drift: float = 0.08) -> tuple[FrameSequence, list[Box | None], list[int]]:
    """Hard cuts between photos; each shot drifts (zooms in by ``drift``) a little.

    Args:
        photos: one photo (name or RGB array) per shot.
        size: output ``(W, H)``.
        n_per_shot: frames in every shot, or one count per shot.
        drift: relative zoom over each shot (0 = still shots).

    Returns:
        ``(frames, boxes, cuts)``: the frames ``(H, W, 3) uint8``, the object box of each
        (the whole frame for an array without a known box), and the indices of the frames
        that start a new shot (always beginning with 0).
    """
    counts = [n_per_shot] * len(photos) if isinstance(n_per_shot, int) else list(n_per_shot)
    if len(counts) != len(photos) or min(counts, default=0) < 1:
        raise ValueError("need one positive frame count per photo")
    shots = [zoom_frames(p, size, k, zoom=(1.0, 1.0 + drift)) for p, k in zip(photos, counts)]
    cuts = [int(c) for c in np.cumsum([0, *counts[:-1]])]

    def render(i: int) -> np.ndarray:
        k = int(np.searchsorted(cuts, i, side="right")) - 1
        return shots[k][0][i - cuts[k]]

    boxes = [b for _, shot_boxes in shots for b in shot_boxes]
    return FrameSequence(sum(counts), render), boxes, cuts


def blob_frames(size: tuple[int, int] = (256, 96), n: int = 36, *, radius: int = 10,
                background: str | np.ndarray | None = "chelsea", bob: float = 0.25
                ) -> tuple[FrameSequence, list[tuple[float, float]], list[Box | None]]:
    """A bright white disc crossing a blurred, darkened photo from left to right at a
    constant speed, bobbing up and down once.

    Args:
        size: output ``(W, H)``.
        n: number of frames.
        radius: the disc's radius, pixels.
        background: photo name or RGB array for the backdrop (blurred, at 45 %
            brightness), or None for the blue-grey gradient.
        bob: vertical amplitude as a fraction of the height (one sine period over the
            clip).

    Returns:
        ``(frames, centres, boxes)``: ``n`` frames ``(H, W, 3) uint8``, the disc's centre
        ``(x, y)`` in pixels (to 1/16 pixel: drawn antialiased) and the box of the pixels
        it touches in each.
    """
    w, h = size
    bg = _background(size, background)
    margin = 2 * radius
    xs = np.linspace(margin, w - margin, n) if n > 1 else np.array([w / 2])
    ph = np.linspace(0.0, 2 * np.pi, n) if n > 1 else np.zeros(1)
    ys = h / 2 + bob * h * np.sin(ph)
    xs, ys = np.round(xs * 16) / 16, np.round(ys * 16) / 16   # as drawn: 1/16 pixel
    centres = [(float(x), float(y)) for x, y in zip(xs, ys)]
    r = radius + 0.5   # the pixels the antialiased edge touches
    boxes: list[Box | None] = [(int(np.floor(x - r)), int(np.floor(y - r)),
                                int(np.ceil(x + r)), int(np.ceil(y + r))) for x, y in centres]

    def render(i: int) -> np.ndarray:
        frame = bg.copy()
        cv2.circle(frame, (int(xs[i] * 16), int(ys[i] * 16)), radius * 16,
                   (255, 255, 255), -1, lineType=cv2.LINE_AA, shift=4)
        return frame

    return FrameSequence(n, render), centres, boxes
def pair_frames(photos: tuple[str | np.ndarray, str | np.ndarray] = ("chelsea", "coffee"),
                size: tuple[int, int] = (384, 192), n: int = 60, *, scale: float = 0.55,
                background: str | np.ndarray | None = None,
                boxes: tuple[Box | None, Box | None] | None = None
                ) -> tuple[FrameSequence, list[list[Box | None]]]:
    """Two photos side by side over a backdrop, each moving on its own: the left one
    drifts right and bobs up, the right one drifts left and bobs down (eased sine paths
    that keep them apart: the left photo stays in the left half, the right one in the
    right half, so each object keeps its own side of the frame).

    Args:
        photos: the two photos (names, or ``(h, w, 3) uint8`` RGB arrays).
        size: output ``(W, H)``.
        n: number of frames.
        scale: each photo's height as a fraction of the frame height (0, 1]; its width
            is clipped to 46 % of the frame width (the photo is cropped at its sides to
            fit, around its object's centre).
        background: as in :func:`pan_frames`.
        boxes: each photo's object box in its pixels (None: its :data:`OBJECT_BOXES`
            entry, or the whole photo).

    Returns:
        ``(frames, boxes)``: ``n`` frames ``(H, W, 3) uint8`` and, per frame, the two
        objects' boxes ``[left, right]`` in frame pixels (exact: the photos are placed at
        integer offsets), clipped to the part of the photo that is shown.
    """
    w, h = size
    bg = _background(size, background)
    placed = []
    for k, photo in enumerate(photos):
        img, box = _photo_and_box(photo, boxes[k] if boxes else None)
        ph = max(1, min(h, round(h * scale)))
        s = ph / img.shape[0]
        pw = min(round(img.shape[1] * s), int(0.46 * w))
        # crop the photo's sides to pw around the object's centre
        cx = (box[0] + box[2]) / 2 * s
        left = int(round(min(max(cx - pw / 2, 0), img.shape[1] * s - pw)))
        small = cv2.resize(img, (round(img.shape[1] * s), ph),
                           interpolation=cv2.INTER_AREA)[:, left:left + pw]
        sb = (max(0, round(box[0] * s) - left), round(box[1] * s),
              min(pw, round(box[2] * s) - left), min(ph, round(box[3] * s)))
        placed.append((small, sb))
    t = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    wave = np.sin(2 * np.pi * t)
    paths = []
    for k, (small, _) in enumerate(placed):
        ph, pw = small.shape[:2]
        room_x = max(0, w // 2 - pw)            # how far it can move within its half
        room_y = max(0, h - ph)
        x0 = 0 if k == 0 else w - w // 2
        ease = _ease(n) if k == 0 else 1.0 - _ease(n)
        xs = np.round(x0 + ease * room_x).astype(int)
        ys = np.round(room_y / 2 + (room_y / 2) * (wave if k == 0 else -wave)).astype(int)
        paths.append((xs, ys))
    per_frame = []
    for i in range(n):
        row: list[Box | None] = []
        for (small, sb), (xs, ys) in zip(placed, paths):
            x, y = int(xs[i]), int(ys[i])
            b = (x + sb[0], y + sb[1], x + sb[2], y + sb[3])
            b = (max(0, b[0]), max(0, b[1]), min(w, b[2]), min(h, b[3]))
            row.append(b if b[2] > b[0] and b[3] > b[1] else None)
        per_frame.append(row)

    def render(i: int) -> np.ndarray:
        frame = bg.copy()
        for (small, _), (xs, ys) in zip(placed, paths):
            ph, pw = small.shape[:2]
            frame[ys[i]:ys[i] + ph, xs[i]:xs[i] + pw] = small
        return frame

    return FrameSequence(n, render), per_frame


def in_box(point: tuple[int, int] | None, box: Box | None) -> bool:
    """Whether pixel ``(x, y)`` lies in a half-open box (None: no point, or no box)."""
    return point is not None and box is not None and \
        box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]


def one_peak_on_each(peaks: Sequence[tuple[int, int] | None],
                     boxes: Sequence[Box | None]) -> bool:
    """The two-object score of a :func:`pair_frames` frame: two peaks, one in each
    object's box (either order)."""
    a, b = boxes
    return len(peaks) == 2 and ((in_box(peaks[0], a) and in_box(peaks[1], b))
                                or (in_box(peaks[1], a) and in_box(peaks[0], b)))


def make_clip(kind: str, path: str | Path, *, size: tuple[int, int] = (320, 180),
              n: int = 48, photo: str | np.ndarray | None = None,
              photos: tuple[str | np.ndarray, str | np.ndarray] | None = None,
              **write_kw) -> Clip:
    """Generate and write a ready-made clip.

    Args:
        kind: ``"pan"`` (the cat slides across a gradient), ``"zoom"`` (slow zoom on the
            cat), ``"cuts"`` (chelsea, coffee, china shots with hard cuts), ``"pair"``
            (the cat and the coffee cup side by side, each moving: :func:`pair_frames`;
            the clip's ``objects`` holds both boxes per frame, ``boxes`` the cat's) or
            ``"blob"`` (a bright disc crossing the darkened cat, :func:`blob_frames`; its
            boxes are the disc's).
        path: output file (extension picks the container, see :func:`write_clip`).
        size: output ``(W, H)``; small by default so tests stay fast.
        n: number of frames.
        photo: photo for ``pan``/``zoom`` (default ``"chelsea"``).
        photos: the two photos for ``pair`` (default the cat and the coffee cup).
        **write_kw: passed to :func:`write_clip` (``fps``, ``times``, ``audio``, ...).

    Returns:
        The :class:`Clip`, with per-frame object boxes and cut indices.
    """
    cuts = None
    if kind == "pair":
        frames, objects = pair_frames(photos or ("chelsea", "coffee"), size, n)
        clip = write_clip(path, frames, boxes=[o[0] for o in objects], **write_kw)
        clip.objects = objects
        return clip
    if kind == "pan":
        frames, boxes = pan_frames(photo if photo is not None else "chelsea", size, n)
    elif kind == "zoom":
        frames, boxes = zoom_frames(photo if photo is not None else "chelsea", size, n)
    elif kind == "cuts":
        names = ("chelsea", "coffee", "china")
        counts = [n // 3 + (1 if i < n % 3 else 0) for i in range(3)]
        frames, boxes, cuts = cut_frames(names, size, counts)
    elif kind == "blob":
        frames, _, boxes = blob_frames(size, n, background=photo if photo is not None
                                       else "chelsea")
    else:
        raise ValueError(f"unknown clip kind {kind!r}; choose pan, zoom, cuts, pair or "
                         "blob")
    return write_clip(path, frames, boxes=boxes, cuts=cuts, **write_kw)
