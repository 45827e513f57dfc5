"""The pixel layouts frames travel in, shared by decoding, the model's input, rendering and
encoding: RGB arrays and I420 images, their conversions and uint8 resizes.

I420 is 8-bit YUV 4:2:0, what most video decodes to and what x264 encodes. On the CPU,
camvideo's file pipeline keeps frames in I420 from the decoder to the encoder:
converting 720p to RGB and back cost ~1.3 ms a frame, and blending 4:2:0 touches half
the bytes of RGB (benchmarks/README.md, "Speed"). Only the model's small
input is made RGB, and only the labels' box is drawn in RGB.

An I420 image is a ``(H * 3 // 2, W)`` uint8 array, PyAV's and OpenCV's layout: the
``H × W`` luma plane, then the two ``H/2 × W/2`` chroma planes (U, then V), flat, one
after the other; ``H`` and ``W`` are even. Colours are BT.601, limited range, as OpenCV's
``COLOR_RGB2YUV_I420``/``COLOR_YUV2RGB_I420`` (and swscale's default) convert them; the
conversions here are those OpenCV calls, so a colour drawn here is the colour the RGB
renderer would have encoded.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: decoding and encoding need none
    from torch import Tensor

RGB = "rgb24"       #: ``(H, W, 3)`` uint8 RGB
I420 = "yuv420p"    #: ``(H * 3 // 2, W)`` uint8 I420


def resize_u8(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Antialiased bilinear resize of ``(N, 3, H, W)`` uint8 CPU frames (a channels_last
    view is fine), as uint8: ~20x cheaper than making a full-resolution float copy first;
    differs from the float resize by < 1/255 (benchmarks/README.md, "Speed")."""
    from torch.nn import functional

    return functional.interpolate(x, size=size, mode="bilinear", align_corners=False,
                                  antialias=True)


def size(image: np.ndarray, fmt: str) -> tuple[int, int]:
    """``(H, W)`` of the picture in ``image``."""
    if fmt == I420:
        return image.shape[0] * 2 // 3, image.shape[1]
    return image.shape[0], image.shape[1]


def planes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views ``(Y (H, W), U (H/2, W/2), V (H/2, W/2))`` of an I420 image (no copy)."""
    h, w = size(image, I420)
    flat = image.reshape(-1)
    n, c = h * w, (h // 2) * (w // 2)
    return (flat[:n].reshape(h, w), flat[n:n + c].reshape(h // 2, w // 2),
            flat[n + c:n + 2 * c].reshape(h // 2, w // 2))


def empty(h: int, w: int) -> np.ndarray:
    """An uninitialised I420 image of ``H × W`` (both even)."""
    return np.empty((h * 3 // 2, w), np.uint8)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """I420 → ``(H, W, 3)`` uint8 RGB."""
    return cv2.cvtColor(image, cv2.COLOR_YUV2RGB_I420)


def from_rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB (even sizes) → I420."""
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420)


def yuv_of_rgb(colours: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``(Y, U, V)`` uint8 values of ``(N, 3)`` uint8 RGB colours, each ``(N,)``:
    exactly what :func:`from_rgb` gives a flat area of that colour."""
    n = colours.shape[0]
    tiles = np.repeat(np.repeat(colours.reshape(1, n, 3).astype(np.uint8), 2, axis=0),
                      2, axis=1)                                     # (2, 2N, 3)
    y, u, v = planes(from_rgb(tiles))
    return (np.ascontiguousarray(y[0, ::2]), np.ascontiguousarray(u[0]),
            np.ascontiguousarray(v[0]))


def resize_rgb(image: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """I420 image → ``(H', W', 3)`` uint8 RGB of ``out_size`` ``(H', W')``, for the model.

    The full-resolution RGB picture is never made: luma is halved (2×2 means) to the
    chroma planes' size when the output is no larger than that (else chroma is doubled),
    the three planes are resized together as one 4:4:4 picture with the same antialiased
    uint8 resize as RGB frames (:func:`camvideo.pixels.resize_u8`), then converted.
    ~0.9 ms for 720p → 224×384, against ~1.15 ms for converting to RGB and resizing.
    """
    import torch

    y, u, v = planes(image)
    oh, ow = out_size
    if 2 * oh <= y.shape[0] and 2 * ow <= y.shape[1]:
        y = cv2.resize(y, (u.shape[1], u.shape[0]), interpolation=cv2.INTER_AREA)
    else:
        u, v = (cv2.resize(c, (y.shape[1], y.shape[0]), interpolation=cv2.INTER_LINEAR)
                for c in (u, v))
    full = torch.from_numpy(cv2.merge([y, u, v]))[None].permute(0, 3, 1, 2)
    small = full if tuple(full.shape[-2:]) == (oh, ow) else resize_u8(full, (oh, ow))
    return cv2.transform(small[0].permute(1, 2, 0).numpy(), _YUV_TO_RGB)


def tensor_planes(frames: "Tensor") -> tuple["Tensor", "Tensor", "Tensor"]:
    """Views ``(Y (N, H, W), U (N, H/2, W/2), V (N, H/2, W/2))`` of a batch of I420
    images held as one ``(N, H * 3 // 2, W)`` uint8 tensor (any device; no copy)."""
    n, hh, w = frames.shape
    h = hh * 2 // 3
    flat = frames.reshape(n, -1)
    a, c = h * w, (h // 2) * (w // 2)
    return (flat[:, :a].view(n, h, w), flat[:, a:a + c].view(n, h // 2, w // 2),
            flat[:, a + c:a + 2 * c].view(n, h // 2, w // 2))


def tensor_i420(y: "Tensor", u: "Tensor", v: "Tensor") -> "Tensor":
    """Planes ``(N, H, W)``, ``(N, H/2, W/2)`` ×2 → ``(N, H * 3 // 2, W)`` I420 images."""
    import torch

    n, h, w = y.shape
    return torch.cat((y.reshape(n, -1), u.reshape(n, -1), v.reshape(n, -1)),
                     dim=1).view(n, h * 3 // 2, w)


def model_input_from_i420(frames: "Tensor", out_size: tuple[int, int]) -> "Tensor":
    """I420 images ``(N, H * 3 // 2, W)`` uint8 (any device) → ``(N, 3, H', W')`` float32
    RGB in ``[0, 1]`` of ``out_size``: :func:`resize_rgb`'s steps as tensor operations
    in float (luma halved to the chroma planes' size, or chroma doubled; the three planes
    resized together, antialiased; then BT.601), for frames already on a GPU. It differs
    from :func:`resize_rgb`, which rounds to uint8 twice, by 0.6 levels of 255 on average
    and at most 4 (a real photo, tests/test_pixels.py)."""
    import torch
    from torch.nn import functional as F

    y, u, v = (p.float() for p in tensor_planes(frames))
    oh, ow = out_size
    if 2 * oh <= y.shape[1] and 2 * ow <= y.shape[2]:
        y = F.avg_pool2d(y[:, None], 2)[:, 0]
    else:
        u, v = (F.interpolate(c[:, None], size=tuple(y.shape[1:]), mode="bilinear",
                              align_corners=False)[:, 0] for c in (u, v))
    yuv = torch.stack((y, u, v), dim=1)
    if tuple(yuv.shape[-2:]) != (oh, ow):
        yuv = F.interpolate(yuv, size=(oh, ow), mode="bilinear", align_corners=False,
                            antialias=True)
    m = torch.as_tensor(_YUV_TO_RGB, device=frames.device)
    rgb = torch.einsum("rc,nchw->nrhw", m[:, :3], yuv) + m[:, 3].view(1, 3, 1, 1)
    return rgb.clamp_(0.0, 255.0).div_(255.0)


# BT.601 limited range, YUV → RGB as an affine map (OpenCV's COLOR_YUV2RGB_I420, per pixel)
_M = np.array([[1.164383, 0.0, 1.596027],
               [1.164383, -0.391762, -0.812968],
               [1.164383, 2.017232, 0.0]])
_YUV_TO_RGB = np.hstack([_M, -_M @ np.array([[16.0], [128.0], [128.0]])]).astype(np.float32)


def even_box(x0: int, y0: int, x1: int, y1: int, h: int,
             w: int) -> tuple[int, int, int, int]:
    """The smallest box with even corners that holds ``[x0, x1) × [y0, y1)``, clipped
    to the ``H × W`` picture (I420's chroma samples cover 2×2 pixels)."""
    return (max(0, x0 - x0 % 2), max(0, y0 - y0 % 2), min(w, x1 + x1 % 2),
            min(h, y1 + y1 % 2))


def read_rgb(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The part ``box`` ``(x0, y0, x1, y1)`` (even corners) of an I420 image, as RGB."""
    x0, y0, x1, y1 = box
    part = empty(y1 - y0, x1 - x0)
    for src, dst, s in zip(planes(image), planes(part), (1, 2, 2)):
        dst[:] = src[y0 // s:y1 // s, x0 // s:x1 // s]
    return to_rgb(part)


def write_rgb(image: np.ndarray, box: tuple[int, int, int, int], rgb: np.ndarray) -> None:
    """Put ``rgb`` (the size of ``box``, even corners) into the I420 ``image`` at ``box``."""
    x0, y0, x1, y1 = box
    part = from_rgb(rgb)
    for src, dst, s in zip(planes(part), planes(image), (1, 2, 2)):
        dst[y0 // s:y1 // s, x0 // s:x1 // s] = src
