"""Stills made of the bundled real photos, as a model sees them (crops, and frames of
pans over backdrops): for measuring how far a reduced precision moves the maps and
classes (tests/test_quantize.py, benchmarks/bench_int8.py)."""
from __future__ import annotations

import cv2
import numpy as np

from .synth import load_photo

#: photos with an ImageNet object that the int8 calibration set does not contain
#: (camvideo/model/calibration holds crops of other photos)
HELD_OUT = ("chelsea", "motorcycle", "china", "flower")


def photo_crops(names: tuple[str, ...] = HELD_OUT, per_photo: int = 8,
                size: tuple[int, int] = (224, 384), seed: int = 0) -> list[np.ndarray]:
    """``per_photo`` random crops of each photo (60-100 % of the largest window of the
    ``size`` aspect ratio, half of them mirrored), resized to ``size`` ``(H, W)``.

    Returns:
        ``(H, W, 3)`` uint8 RGB arrays, photo by photo.
    """
    rng = np.random.default_rng(seed)
    out_h, out_w = size
    crops = []
    for name in names:
        img = load_photo(name)
        h, w = img.shape[:2]
        for _ in range(per_photo):
            s = rng.uniform(0.6, 1.0)
            ch = int(min(h, w * out_h / out_w) * s)
            cw = int(ch * out_w / out_h)
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            c = cv2.resize(img[y:y + ch, x:x + cw], (out_w, out_h),
                           interpolation=cv2.INTER_AREA)
            crops.append(np.ascontiguousarray(c[:, ::-1] if rng.random() < 0.5 else c))
    return crops


def pan_stills(names: tuple[str, ...] = HELD_OUT, per_photo: int = 8,
               size: tuple[int, int] = (224, 384)) -> list[np.ndarray]:
    """``per_photo`` frames of a pan of each photo (60 % of the frame high) across a
    backdrop, as the test clips have them: the smooth gradient for the first half of the
    photos, another photo blurred and darkened for the rest. Large flat areas like
    these (sky, walls, letterboxing) are what moved int8's class scores most.

    Returns:
        ``(H, W, 3)`` uint8 RGB arrays, photo by photo.
    """
    from .synth import pan_frames

    out = []
    for i, name in enumerate(names):
        backdrop = None if i < (len(names) + 1) // 2 else names[(i + 1) % len(names)]
        frames, _ = pan_frames(name, (size[1], size[0]), per_photo, scale=0.6,
                               background=backdrop)
        out += [np.ascontiguousarray(frames[k]) for k in range(per_photo)]
    return out
