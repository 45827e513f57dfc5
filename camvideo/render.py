"""Rendering: colormap, alpha blend, labels and boxes.

Colouring and blending are tensor work on the frames' device when that is a GPU (one
uint8 copy back per batch); on the CPU they are OpenCV uint8 calls per frame, which are
about ten times cheaper there than full-resolution float tensors (see benchmarks/README.md,
"Speed"). Text and rectangles are drawn on the CPU, last.

CPU frames may also be I420 (``(H * 3 // 2, W)`` uint8, :mod:`camvideo.pixels`), as the file
pipeline decodes them: the heatmap is then blended plane by plane (its colours converted
once, by the same OpenCV conversion the RGB frames get before encoding) and the output
stays I420; only the labels' box is drawn in RGB.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from . import pixels
from .cam import paper_bbox
from .errors import OptionError
from .options import COLORMAPS as COLORMAP_NAMES
from .options import LAYOUTS
from .transfer import to_host

log = logging.getLogger(__name__)

COLORMAPS = {name: getattr(cv2, f"COLORMAP_{name.upper()}") for name in COLORMAP_NAMES
             if hasattr(cv2, f"COLORMAP_{name.upper()}")}


def colormap_lut(name: str) -> Tensor:
    """``(256, 3)`` uint8 RGB lookup table of an OpenCV colormap (``jet``, ``turbo``, ...).

    Raises:
        OptionError: unknown name (the message lists the known ones).
    """
    key = name.lower()
    if key not in COLORMAPS:
        raise OptionError(f"unknown colormap {name!r}; choose from "
                          f"{', '.join(sorted(COLORMAPS))}")
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    bgr = cv2.applyColorMap(ramp, COLORMAPS[key]).reshape(256, 3)
    return torch.from_numpy(np.ascontiguousarray(bgr[:, ::-1]))


@dataclass
class Annotation:
    """What is (or would be) drawn on one output frame.

    ``peak`` is ``(x, y)`` and ``bbox`` ``(x0, y0, x1, y1)`` in output-frame pixels.
    """

    cls: int
    label: str
    score: float
    topk: list[tuple[int, str, float]]
    peak: tuple[int, int]
    bbox: tuple[int, int, int, int] | None


class Renderer:
    """Blend maps over frames and draw the top labels.

    Args:
        labels: class names.
        colormap: OpenCV colormap name.
        alpha: heatmap opacity in ``[0, 1]``.
        topk: number of labels drawn (0: none).
        bbox: draw the paper's box.
        bbox_threshold: box threshold as a fraction of the map's maximum, in ``(0, 1]``.
        layout: ``overlay`` (heatmap over the frame) or ``side`` (original | overlay).

    :meth:`render` draws a batch; :meth:`describe` gives the same annotations (peak, box,
    labels) without drawing.
    """

    def __init__(self, labels: list[str], *, colormap: str = "jet", alpha: float = 0.5,
                 topk: int = 3, bbox: bool = False, bbox_threshold: float = 0.2,
                 layout: str = "overlay") -> None:
        if not 0.0 <= alpha <= 1.0:
            raise OptionError(f"alpha must be in [0, 1], got {alpha}")
        if topk < 0 or topk > len(labels):
            raise OptionError(f"topk must be in 0..{len(labels)}, got {topk}")
        if not 0.0 < bbox_threshold <= 1.0:
            raise OptionError(f"bbox threshold must be in (0, 1], got {bbox_threshold}")
        if layout not in LAYOUTS:
            raise OptionError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        self.labels = labels
        self.lut = colormap_lut(colormap)
        self.alpha = alpha
        self.topk = topk
        self.bbox = bbox
        self.bbox_threshold = bbox_threshold
        self.layout = layout
        self._lut_np = np.ascontiguousarray(self.lut.numpy().reshape(256, 1, 3))
        self._lut_yuv = pixels.yuv_of_rgb(self.lut.numpy())
        self._lut_dev: Tensor | None = None
        self._lut_yuv_dev: list[Tensor] | None = None

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """``(W, H)`` of rendered frames for input frames of ``width × height``."""
        return (2 * width if self.layout == "side" else width), height

    @torch.inference_mode()
    def render(self, frames: Tensor | Sequence[np.ndarray], maps: Tensor, probs: Tensor,
               classes: Tensor) -> tuple[list[np.ndarray], list[Annotation]]:
        """Render a batch.

        Args:
            frames: ``(N, H, W, 3)`` uint8 RGB or ``(N, H * 3 // 2, W)`` uint8 I420 on the
                maps' device, or (CPU) a sequence of ``N`` numpy arrays (used as they
                are, no stacking), each ``(H, W, 3)`` uint8 RGB or ``(H * 3 // 2, W)``
                uint8 I420 (:mod:`camvideo.pixels`).
            maps: ``(N, h, w)`` float in ``[0, 1]``, the maps to draw.
            probs: ``(N, K)`` class probabilities (the labels drawn).
            classes: ``(N,)`` int64 class each map belongs to.

        Returns:
            ``N`` output frames ``(H, W', 3)`` uint8 RGB (C-contiguous numpy arrays; I420
            ``(H * 3 // 2, W')`` for I420 input frames) and their :class:`Annotation`.

        On CUDA the upsampling, colormap and blend are tensor work on the device with one
        uint8 copy back per batch. On the CPU they are OpenCV calls per frame (bilinear
        resize, colormap lookup, ``addWeighted``; SIMD, uint8, no full-resolution float
        tensors), several times cheaper than the same tensor code there; both give the
        same pixels up to rounding (±1 level, rarely 2-3).
        """
        if maps.device.type == "cpu":
            if isinstance(frames, Tensor):
                frames = list(frames.numpy())
            images, peaks, small = self._colour_cpu(frames, maps)
            h, w = _size(frames[0])
        else:
            images, peaks, small = self._colour_torch(frames, maps)
            h, w = (frames.shape[1] * 2 // 3 if frames.dim() == 3 else frames.shape[1],
                    frames.shape[2])
        return self._annotate(images, peaks, small, maps, probs, classes, h, w)

    @torch.inference_mode()
    def describe(self, maps: Tensor, probs: Tensor, classes: Tensor,
                 size: tuple[int, int]) -> list[Annotation]:
        """The :class:`Annotation` of each frame of a batch, as :meth:`render` gives them,
        without drawing: the same peaks (the map upsampled to the frame, as drawn) and
        boxes.

        Args:
            maps, probs, classes: as for :meth:`render`.
            size: ``(H, W)`` of the input frames.
        """
        h, w = size
        n = int(maps.shape[0])
        if maps.device.type == "cpu":
            cams = maps.float().numpy()
            peaks = []
            for cam in cams:
                up = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)
                _, _, _, (px, py) = cv2.minMaxLoc(up)
                peaks.append(py * w + px)
            small = self._small_cpu(cams, h, w)
        else:
            up = F.interpolate(maps[:, None].float(), size=(h, w), mode="bilinear",
                               align_corners=False)[:, 0].clamp_(0.0, 1.0)
            peaks = to_host([up.reshape(n, -1).argmax(dim=1)])[0].tolist()
            small = self._small_torch(maps, h, w)
        return self._annotate(None, peaks, small, maps, probs, classes, h, w)[1]

    def _small_cpu(self, cams: np.ndarray, h: int, w: int) -> np.ndarray | None:
        """The maps at about 180 px for the box (None without ``bbox``)."""
        if not self.bbox:
            return None
        scale = max(1, min(h, w) // 180)
        size = (w // scale, h // scale)
        return np.stack([cv2.resize(c, size, interpolation=cv2.INTER_LINEAR) for c in cams])

    def _small_torch(self, maps: Tensor, h: int, w: int) -> np.ndarray | None:
        if not self.bbox:
            return None
        scale = max(1, min(h, w) // 180)
        return to_host([F.interpolate(maps[:, None].float(), size=(h // scale, w // scale),
                                      mode="bilinear", align_corners=False)[:, 0]])[0]

    def _colour_cpu(self, frames: Sequence[np.ndarray],
                    maps: Tensor) -> tuple[list[np.ndarray], list[int], np.ndarray | None]:
        h, w = _size(frames[0])
        cams = maps.float().numpy()
        lut = self._lut_np
        a = self.alpha
        out, peaks = [], []
        for img, cam in zip(frames, cams):
            up = cv2.resize(cam, (w, h), interpolation=cv2.INTER_LINEAR)  # = torch bilinear
            _, _, _, (px, py) = cv2.minMaxLoc(up)
            peaks.append(py * w + px)
            idx = cv2.convertScaleAbs(up, alpha=255.0)
            if img.ndim == 2:
                out.append(self._blend_i420(img, cam, idx))
                continue
            colours = cv2.applyColorMap(idx, lut)
            if self.layout == "side":
                res = np.empty((h, 2 * w, 3), np.uint8)
                res[:, :w] = img
                cv2.addWeighted(img, 1.0 - a, colours, a, 0.0, dst=res[:, w:])
            else:
                res = cv2.addWeighted(img, 1.0 - a, colours, a, 0.0)
            out.append(res)
        return out, peaks, self._small_cpu(cams, h, w)

    def _blend_i420(self, img: np.ndarray, cam: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Blend over an I420 frame plane by plane: luma with the full-resolution colour
        index ``idx``, chroma with the map resized to the chroma planes' size."""
        h, w = _size(img)
        side = self.layout == "side"
        out = pixels.empty(h, 2 * w if side else w)
        idx_c = cv2.convertScaleAbs(cv2.resize(cam, (w // 2, h // 2),
                                               interpolation=cv2.INTER_LINEAR), alpha=255.0)
        a = self.alpha
        for src, dst, lut, ix in zip(pixels.planes(img), pixels.planes(out), self._lut_yuv,
                                     (idx, idx_c, idx_c)):
            x0 = src.shape[1] if side else 0
            if side:
                dst[:, :x0] = src
            cv2.addWeighted(src, 1.0 - a, cv2.LUT(ix, lut), a, 0.0, dst=dst[:, x0:])
        return out

    def _colour_torch_i420(self, frames: Tensor, maps: Tensor
                           ) -> tuple[list[np.ndarray], list[int], np.ndarray | None]:
        """:meth:`_blend_i420` as tensor work on the frames' device: I420 frames
        ``(N, H * 3 // 2, W)`` uint8 in, I420 out (one copy back per batch)."""
        n = frames.shape[0]
        y, u, v = pixels.tensor_planes(frames)
        h, w = y.shape[1:]
        dev = frames.device
        if self._lut_yuv_dev is None or self._lut_yuv_dev[0].device != dev:
            self._lut_yuv_dev = [torch.from_numpy(np.ascontiguousarray(t)).to(dev)
                                 for t in self._lut_yuv]
        a = self.alpha
        up = F.interpolate(maps[:, None].float(), size=(h, w), mode="bilinear",
                           align_corners=False)[:, 0].clamp_(0.0, 1.0)
        up_c = F.interpolate(maps[:, None].float(), size=(h // 2, w // 2), mode="bilinear",
                             align_corners=False)[:, 0].clamp_(0.0, 1.0)
        out = []
        for plane, lut, ix in zip((y, u, v), self._lut_yuv_dev, (up, up_c, up_c)):
            idx = ix.mul(255.0).round_().long()
            blended = torch.lerp(plane.float(), lut[idx].float(), a).round_().to(torch.uint8)
            out.append(torch.cat((plane, blended), dim=2) if self.layout == "side"
                       else blended)
        images = list(to_host([pixels.tensor_i420(*out)])[0])
        peaks, small = to_host([up.reshape(n, -1).argmax(dim=1)])[0].tolist(), None
        if self.bbox:
            small = self._small_torch(maps, h, w)
        return images, peaks, small

    def _colour_torch(self, frames: Tensor,
                      maps: Tensor) -> tuple[list[np.ndarray], list[int], np.ndarray | None]:
        if frames.dim() == 3:  # I420 frames
            return self._colour_torch_i420(frames, maps)
        n, h, w, _ = frames.shape
        dev = frames.device
        up = F.interpolate(maps[:, None].float(), size=(h, w), mode="bilinear",
                           align_corners=False)[:, 0].clamp_(0.0, 1.0)
        if self._lut_dev is None or self._lut_dev.device != dev:
            self._lut_dev = self.lut.to(dev)
        idx = up.mul(255.0).round_().to(torch.uint8)
        colours = self._lut_dev[idx.long()]                             # (N, H, W, 3) uint8
        a = self.alpha
        blended = torch.lerp(frames.float(), colours.float(), a).round_().to(torch.uint8)
        if self.layout == "side":
            blended = torch.cat((frames, blended), dim=2)
        peaks = up.reshape(n, -1).argmax(dim=1)
        small = self._small_torch(maps, h, w)
        # one copy back per batch into pinned memory (plus the few scalars below)
        host, host_peaks = to_host([blended, peaks])
        return list(host), host_peaks.tolist(), small

    def _annotate(self, images: list[np.ndarray] | None, peaks: list[int],
                  small: np.ndarray | None, maps: Tensor, probs: Tensor, classes: Tensor,
                  h: int, w: int) -> tuple[list[np.ndarray] | None, list[Annotation]]:
        """Top-k labels, boxes and the :class:`Annotation` records (CPU, text last); drawn
        on ``images`` unless that is None."""
        top_p, top_i = probs.float().topk(max(self.topk, 1), dim=1)
        cls_p = probs.float().gather(1, classes.view(-1, 1).to(probs.device))[:, 0]
        # one wait for all of them (pinned copies on a GPU; the tensors' memory on a CPU)
        top_p, top_i, cls_list, cls_p = (a.tolist() for a in to_host(
            [top_p, top_i, classes.to(probs.device), cls_p]))
        x_off = w if self.layout == "side" else 0
        notes = []
        for i in range(len(peaks)):
            box = None
            if small is not None:
                b = paper_bbox(small[i], self.bbox_threshold)
                if b is not None:
                    sy, sx = h / small.shape[1], w / small.shape[2]
                    box = (int(round(b[0] * sx)) + x_off, int(round(b[1] * sy)),
                           min(w, int(round(b[2] * sx))) + x_off,
                           min(h, int(round(b[3] * sy))))
            topk = [(int(j), self.labels[j], float(p))
                    for p, j in zip(top_p[i][:self.topk], top_i[i][:self.topk])]
            c = int(cls_list[i])
            note = Annotation(cls=c, label=self.labels[c], score=float(cls_p[i]), topk=topk,
                              peak=(peaks[i] % w + x_off, peaks[i] // w), bbox=box)
            if images is not None:
                if box is not None:
                    _draw_box(images[i], box)
                if self.topk:
                    _draw_labels(images[i], topk, c, x_off)
            notes.append(note)
        return images, notes


def _size(img: np.ndarray) -> tuple[int, int]:
    """``(H, W)`` of an RGB (3-D) or I420 (2-D) frame array."""
    return pixels.size(img, pixels.I420 if img.ndim == 2 else pixels.RGB)


_BOX_RGB = (0, 255, 0)
_BOX_YUV = [int(c[0]) for c in pixels.yuv_of_rgb(np.array([_BOX_RGB], np.uint8))]


def _draw_box(img: np.ndarray, box: tuple[int, int, int, int]) -> None:
    th = max(2, _size(img)[0] // 240)
    x0, y0, x1, y1 = box
    x1, y1 = max(x0, x1 - 1), max(y0, y1 - 1)
    if img.ndim == 3:
        cv2.rectangle(img, (x0, y0), (x1, y1), _BOX_RGB, th, cv2.LINE_AA)
        return
    for plane, value, s in zip(pixels.planes(img), _BOX_YUV, (1, 2, 2)):
        cv2.rectangle(plane, (x0 // s, y0 // s), (x1 // s, y1 // s), value,
                      max(1, th // s), cv2.LINE_AA)


def _draw_labels(img: np.ndarray, topk: list[tuple[int, str, float]], shown: int,
                 x_off: int) -> None:
    """Top-k labels in a dark, semi-transparent box, scaled to the frame height (readable
    from 360p to 4K; the shown class is highlighted). On an I420 frame the box is read
    out as RGB, drawn on and written back."""
    h, w = _size(img)
    scale = max(0.35, h / 720 * 0.75)
    thick = max(1, int(round(h / 720 * 1.6)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    lines = [f"{p * 100:5.1f}%  {label}" for _, label, p in topk]
    sizes = [cv2.getTextSize(s, font, scale, thick)[0] for s in lines]
    pad = max(4, int(round(8 * scale)))
    line_h = max(sz[1] for sz in sizes) + pad
    box_w = min(w - x_off, max(sz[0] for sz in sizes) + 2 * pad)
    box_h = line_h * len(lines) + pad
    x0, y0 = x_off + pad, pad
    x1, y1 = min(w, x0 + box_w), min(h, y0 + box_h)
    if x1 <= x0 or y1 <= y0:  # a frame a few pixels wide or high: no room for labels
        return
    if img.ndim == 2:
        area = pixels.even_box(x0, y0, x1, y1, h, w)
        canvas, (ox, oy) = pixels.read_rgb(img, area), area[:2]
    else:
        canvas, ox, oy = img, 0, 0
    roi = canvas[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken to 40%
    for k, ((idx, _, _), text) in enumerate(zip(topk, lines)):
        colour = (255, 255, 0) if idx == shown else (255, 255, 255)
        y = y0 + (k + 1) * line_h
        cv2.putText(canvas, text, (x0 + pad - ox, y - oy), font, scale, colour, thick,
                    cv2.LINE_AA)
    if img.ndim == 2:
        pixels.write_rgb(img, area, canvas)
