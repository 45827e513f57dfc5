"""Rendering: colormap, alpha blend, labels and boxes; with several classes at once, each
class's colour, the legend and the tagged boxes; the ``--timeline`` strip.

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
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from . import pixels
from .cam import map_bbox
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
        bbox: draw the paper's box (:func:`camvideo.cam.map_bbox`, at frame resolution);
            each :class:`Annotation` carries it either way.
        bbox_threshold: box threshold as a fraction of the map's maximum, in ``(0, 1]``
            (resolve ``"auto"`` first: :func:`camvideo.cam.bbox_threshold`).
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
            small = cams
        else:
            up = F.interpolate(maps[:, None].float(), size=(h, w), mode="bilinear",
                               align_corners=False)[:, 0].clamp_(0.0, 1.0)
            host_peaks, small = to_host([up.reshape(n, -1).argmax(dim=1), maps.float()])
            peaks = host_peaks.tolist()
        return self._annotate(None, peaks, small, maps, probs, classes, h, w)[1]

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
        return out, peaks, cams

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
        host, host_peaks, small = to_host([pixels.tensor_i420(*out),
                                           up.reshape(n, -1).argmax(dim=1), maps.float()])
        return list(host), host_peaks.tolist(), small

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
        # one copy back per batch into pinned memory (plus the few scalars below)
        host, host_peaks, small = to_host([blended, peaks, maps.float()])
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
            if small is not None:  # the maps at feature resolution, (N, h, w)
                b = map_bbox(small[i], (w, h), self.bbox_threshold)
                if b is not None:
                    box = (b[0] + x_off, b[1], b[2] + x_off, b[3])
            topk = [(int(j), self.labels[j], float(p))
                    for p, j in zip(top_p[i][:self.topk], top_i[i][:self.topk])]
            c = int(cls_list[i])
            note = Annotation(cls=c, label=self.labels[c], score=float(cls_p[i]), topk=topk,
                              peak=(peaks[i] % w + x_off, peaks[i] // w), bbox=box)
            if images is not None:
                if box is not None and self.bbox:  # the box is always given, drawn on request
                    _draw_box(images[i], box)
                if self.topk:
                    _draw_labels(images[i], topk, (c, note.label, note.score), x_off)
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


def _label_lines(topk: list[tuple[int, str, float]],
                 shown: tuple[int, str, float]) -> list[tuple[int, str, float]]:
    """The label box's entries: the shown class first (its map is the one drawn), then the
    top-k without it (k entries in all when the shown class is among them, k + 1 when it
    is not: a ``--class`` or a class held by hysteresis)."""
    rest = [e for e in topk if e[0] != shown[0]]
    return [shown] + rest[:len(topk) - 1 if len(rest) < len(topk) else len(topk)]


_SHOWN_RGB = (255, 255, 0)    #: text colour of the shown class (yellow)
_OTHER_RGB = (255, 255, 255)  #: text colour of the other classes


def _draw_labels(img: np.ndarray, topk: list[tuple[int, str, float]],
                 shown: tuple[int, str, float], x_off: int) -> None:
    """Labels in a dark, semi-transparent box, scaled to the frame height (readable from
    360p to 4K): the shown class ``(index, label, probability)`` first, highlighted, then
    the top-k (:func:`_label_lines`). On an I420 frame the box is read out as RGB, drawn
    on and written back."""
    entries = _label_lines(topk, shown)
    h, w = _size(img)
    scale = max(0.35, h / 720 * 0.75)
    thick = max(1, int(round(h / 720 * 1.6)))
    font = cv2.FONT_HERSHEY_SIMPLEX
    lines = [f"{p * 100:5.1f}%  {label}" for _, label, p in entries]
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
    for k, text in enumerate(lines):
        colour = _SHOWN_RGB if k == 0 else _OTHER_RGB
        y = y0 + (k + 1) * line_h
        cv2.putText(canvas, text, (x0 + pad - ox, y - oy), font, scale, colour, thick,
                    cv2.LINE_AA)
    if img.ndim == 2:
        pixels.write_rgb(img, area, canvas)


# ---------------------------------------------------------------------------------------
# Several classes at once (``--classes``), tracked boxes, the timeline strip

#: Okabe & Ito's colour-blind-safe palette (2008), RGB, without its black: one colour per
#: shown class (slot); ``options.MAX_CLASSES`` classes at most.
PALETTE = np.array([(230, 159, 0),     # orange
                    (86, 180, 233),    # sky blue
                    (0, 158, 115),     # bluish green
                    (240, 228, 66),    # yellow
                    (0, 114, 178),     # blue
                    (213, 94, 0),      # vermillion
                    (204, 121, 167)],  # reddish purple
                   dtype=np.uint8)
_PALETTE_YUV = pixels.yuv_of_rgb(PALETTE)


def palette_rgb(slot: int) -> tuple[int, int, int]:
    """The RGB colour of a shown class's slot."""
    r, g, b = (int(v) for v in PALETTE[slot % len(PALETTE)])
    return r, g, b


def class_layers(maps: np.ndarray, slots: Sequence[int], alpha: float,
                 grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The colour layer of several classes' maps, each pixel showing the strongest class
    in its slot's colour with an opacity of ``alpha`` times that class's map value.

    Args:
        maps: ``(n, h, w)`` float32 in ``[0, 1]``.
        slots: each map's slot (its :data:`PALETTE` colour).
        alpha: the opacity of a map value of 1.
        grid: ``(W, H)`` the layer is made at (the frame is blended with it upsampled).

    Returns:
        ``(winner, opacity)``: ``(H, W)`` int64 index into ``maps`` of the strongest
        class, and ``(H, W)`` float32 opacity in ``[0, alpha]`` (:func:`opacity`).
    """
    up = np.stack([cv2.resize(m, grid, interpolation=cv2.INTER_LINEAR) for m in maps])
    return up.argmax(axis=0), opacity(up.max(axis=0), alpha)


_OPAQUE_FROM, _CLEAR_BELOW = 0.75, 0.15


def opacity(v: Any, alpha: float) -> Any:
    """A class colour's opacity for map values ``v`` in ``[0, 1]`` (numpy or tensor):
    clear below 0.15, ``alpha`` from 0.75 on, linear between; so each class's colour
    marks its object rather than tinting the whole frame."""
    ramp = (v - _CLEAR_BELOW) / (_OPAQUE_FROM - _CLEAR_BELOW)
    return (ramp.clip(0.0, 1.0) if isinstance(ramp, np.ndarray) else ramp.clamp(0.0, 1.0)) \
        * alpha


def _blend_layer(dst: np.ndarray, src: np.ndarray, colour: np.ndarray,
                 opacity: np.ndarray) -> None:
    """``dst = src * (1 - a) + c * a`` for uint8 images (2-D planes or RGB), with the
    premultiplied colour ``c * a`` and the opacity ``a`` given at a coarser grid and
    upsampled bilinearly here (uint8 throughout)."""
    h, w = src.shape[:2]
    ca = cv2.resize(colour, (w, h), interpolation=cv2.INTER_LINEAR)
    a = cv2.resize(opacity, (w, h), interpolation=cv2.INTER_LINEAR)
    if src.ndim == 3:
        a = cv2.merge((a, a, a))
    keep = cv2.multiply(src, a, scale=1.0 / 255.0)
    cv2.add(cv2.subtract(src, keep), ca, dst=dst)


class ClassPainter:
    """Draws several classes at once (``--classes``): each map in its slot's colour
    (:data:`PALETTE`), each pixel showing the strongest class; the legend (a colour
    swatch, probability and name per class) in the label box; each class's box in its
    colour with its track ID.

    Args:
        alpha: opacity of a map value of 1.
        layout: ``overlay`` or ``side`` (original | overlay).
        legend: draw the legend.
        boxes: draw the boxes (with their track IDs when tracked).
    """

    def __init__(self, *, alpha: float = 0.5, layout: str = "overlay", legend: bool = True,
                 boxes: bool = False) -> None:
        self.alpha, self.layout, self.legend, self.boxes = alpha, layout, legend, boxes
        self._palette_dev: Tensor | None = None

    def paint(self, image: np.ndarray, maps: Tensor, slots: Sequence[int]) -> np.ndarray:
        """One frame with the maps blended over it (the classes' colours), a new array.

        Args:
            image: ``(H, W, 3)`` uint8 RGB or ``(H * 3 // 2, W)`` uint8 I420.
            maps: ``(n, h, w)`` float in ``[0, 1]`` on the CPU.
            slots: each map's slot.

        Returns:
            The frame (``(H, W', 3)`` RGB or I420 as given; twice as wide with ``side``).
        """
        h, w = _size(image)
        side = self.layout == "side"
        cams = maps.float().numpy()
        gh, gw = cams.shape[1:]
        grid = (min(w, gw * 8), min(h, gh * 8))
        out = (pixels.empty(h, 2 * w if side else w) if image.ndim == 2 else
               np.empty((h, 2 * w if side else w, 3), np.uint8))
        if not len(cams):
            if side:
                _copy_side(out, image)
            else:
                out[:] = image
            return out
        win, a = class_layers(cams, slots, self.alpha, grid)
        a8 = (a * 255.0 + 0.5).astype(np.uint8)
        pal_idx = np.asarray(slots, dtype=np.int64)[win] % len(PALETTE)
        if image.ndim == 3:
            colour = (PALETTE[pal_idx].astype(np.float32) * a[..., None] + 0.5).astype(np.uint8)
            dst = out[:, w:] if side else out
            if side:
                out[:, :w] = image
            _blend_layer(dst, image, colour, a8)
            return out
        for k, (src, dst) in enumerate(zip(pixels.planes(image), pixels.planes(out))):
            x0 = src.shape[1] if side else 0
            if side:
                dst[:, :x0] = src
            colour = (_PALETTE_YUV[k][pal_idx].astype(np.float32) * a + 0.5).astype(np.uint8)
            _blend_layer(dst[:, x0:], src, colour, a8)
        return out

    @torch.inference_mode()
    def paint_torch(self, frames: Tensor, maps: Sequence[Tensor],
                    slots: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """The same on a device: ``(N, H, W, 3)`` uint8 RGB frames, each frame's
        ``(n, h, w)`` maps and slots; the strongest class is chosen per frame pixel.
        Returns the ``N`` frames as numpy (one copy back)."""
        n, h, w, _ = frames.shape
        dev = frames.device
        if self._palette_dev is None or self._palette_dev.device != dev:
            self._palette_dev = torch.from_numpy(PALETTE).to(dev).float()
        out = []
        for frame, m, sl in zip(frames, maps, slots):
            if m.shape[0] == 0:
                blended = frame
            else:
                up = F.interpolate(m[None].float(), size=(h, w), mode="bilinear",
                                   align_corners=False)[0].clamp_(0.0, 1.0)
                v, win = up.max(dim=0)
                idx = torch.as_tensor(list(sl), device=dev)[win] % len(PALETTE)
                a = opacity(v, self.alpha)[..., None]
                blended = torch.lerp(frame.float(), self._palette_dev[idx], a)
                blended = blended.round_().to(torch.uint8)
            if self.layout == "side":
                blended = torch.cat((frame, blended), dim=1)
            out.append(blended)
        return list(torch.stack(out).cpu().numpy())

    def annotate(self, image: np.ndarray, shown: Sequence[Any]) -> None:
        """Draw the boxes (with track IDs) and the legend of ``shown``
        (:class:`~camvideo.options.ClassResult`, positions already in output-frame
        pixels) on an output frame, in place."""
        h, w = _size(image)
        x_off = w // 2 if self.layout == "side" else 0
        if self.boxes:
            for c in shown:
                if c.bbox is not None:
                    _draw_tagged_box(image, c.bbox, palette_rgb(c.slot),
                                     f"#{c.track}" if c.track is not None else None)
        if self.legend and shown:
            _draw_legend(image, [(palette_rgb(c.slot), f"{c.score * 100:5.1f}%  {c.label}")
                                 for c in shown], x_off)


def _copy_side(out: np.ndarray, image: np.ndarray) -> None:
    """Both halves of a ``side`` output frame are the frame itself."""
    if image.ndim == 3:
        w = image.shape[1]
        out[:, :w] = out[:, w:] = image
        return
    for src, dst in zip(pixels.planes(image), pixels.planes(out)):
        dst[:, :src.shape[1]] = dst[:, src.shape[1]:] = src


def _text_metrics(h: int) -> tuple[float, int, int]:
    """Font scale, stroke and padding for text on a frame ``h`` pixels high (as the
    label box: readable from 360p to 4K)."""
    scale = max(0.35, h / 720 * 0.75)
    return scale, max(1, int(round(h / 720 * 1.6))), max(4, int(round(8 * scale)))


def _on_rgb(img: np.ndarray, area: tuple[int, int, int, int], draw: Any) -> None:
    """Run ``draw(canvas, (x0, y0, x1, y1))`` on an RGB view of ``area`` of a frame
    (I420 frames: read out, drawn on, written back), the box in the canvas' pixels."""
    h, w = _size(img)
    x0, y0, x1, y1 = max(0, area[0]), max(0, area[1]), min(w, area[2]), min(h, area[3])
    if x1 <= x0 or y1 <= y0:
        return
    if img.ndim == 3:
        draw(img[y0:y1, x0:x1], (0, 0, x1 - x0, y1 - y0))
        return
    box = pixels.even_box(x0, y0, x1, y1, h, w)
    canvas = pixels.read_rgb(img, box)
    draw(canvas[y0 - box[1]:y1 - box[1], x0 - box[0]:x1 - box[0]],
         (0, 0, x1 - x0, y1 - y0))
    pixels.write_rgb(img, box, canvas)


def _draw_legend(img: np.ndarray, entries: list[tuple[tuple[int, int, int], str]],
                 x_off: int) -> None:
    """The legend of the shown classes in the label box's place: per class a swatch of
    its colour, then its text (probability and name), on a darkened box."""
    h, w = _size(img)
    scale, thick, pad = _text_metrics(h)
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(t, font, scale, thick)[0] for _, t in entries]
    line_h = max(s[1] for s in sizes) + pad
    sw = max(s[1] for s in sizes)                     # the swatch: a square, text high
    box_w = sw + pad + max(s[0] for s in sizes) + 2 * pad
    box_h = line_h * len(entries) + pad
    x0, y0 = x_off + pad, pad

    def draw(canvas: np.ndarray, _: tuple[int, int, int, int]) -> None:
        canvas[:] = (canvas.astype(np.uint16) * 2 // 5).astype(np.uint8)
        for k, (rgb, text) in enumerate(entries):
            base = (k + 1) * line_h
            cv2.rectangle(canvas, (pad, base - sw), (pad + sw - 1, base - 1), rgb, -1)
            cv2.putText(canvas, text, (2 * pad + sw, base), font, scale, (255, 255, 255),
                        thick, cv2.LINE_AA)

    _on_rgb(img, (x0, y0, x0 + box_w, y0 + box_h), draw)


def _draw_tagged_box(img: np.ndarray, box: tuple[int, int, int, int],
                     rgb: tuple[int, int, int], tag: str | None) -> None:
    """A box in a class's colour, with its tag (the track ID) on a filled label at its
    top-left corner."""
    h, w = _size(img)
    th = max(2, h // 240)
    x0, y0, x1, y1 = box
    x1, y1 = max(x0, x1 - 1), max(y0, y1 - 1)
    if img.ndim == 3:
        cv2.rectangle(img, (x0, y0), (x1, y1), rgb, th, cv2.LINE_AA)
    else:
        yuv = [int(c[0]) for c in pixels.yuv_of_rgb(np.array([rgb], np.uint8))]
        for plane, value, s in zip(pixels.planes(img), yuv, (1, 2, 2)):
            cv2.rectangle(plane, (x0 // s, y0 // s), (x1 // s, y1 // s), value,
                          max(1, th // s), cv2.LINE_AA)
    if not tag:
        return
    scale, thick, pad = _text_metrics(h)
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, tht), _ = cv2.getTextSize(tag, font, scale, thick)
    bx0, by0 = x0, max(0, y0)
    area = (bx0, by0, bx0 + tw + 2 * pad, by0 + tht + 2 * pad)

    def draw(canvas: np.ndarray, _: tuple[int, int, int, int]) -> None:
        canvas[:] = rgb
        cv2.putText(canvas, tag, (pad, pad + tht), font, scale, (0, 0, 0), thick,
                    cv2.LINE_AA)

    _on_rgb(img, area, draw)


class Timeline:
    """The ``--timeline`` strip: the shown classes' smoothed probabilities over the last
    ``seconds``, along the bottom of the frame, with a cursor at the current frame
    (the strip's right end). Keeps each frame's probabilities for that long.

    Args:
        seconds: how far back the strip reaches.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)
        self._times = np.zeros(0)                       # a ring of (time, probs) rows
        self._probs = np.zeros((0, 0), np.float32)
        self._start = self._count = 0

    def push(self, time: float, probs: np.ndarray) -> None:
        """Record a frame's ``(K,)`` probabilities (frames in order)."""
        cap = len(self._times)
        while self._count and self._times[self._start] < time - self.seconds - 1e-6:
            self._start, self._count = (self._start + 1) % cap, self._count - 1
        if self._count == cap:                          # full: twice the room, in order
            order = (self._start + np.arange(self._count)) % max(cap, 1)
            new = max(64, 2 * cap)
            times, rows = np.zeros(new), np.zeros((new, probs.shape[0]), np.float32)
            if cap:
                times[:cap], rows[:cap] = self._times[order], self._probs[order]
            self._times, self._probs, self._start, cap = times, rows, 0, new
        i = (self._start + self._count) % cap
        self._times[i], self._probs[i] = time, probs
        self._count += 1

    def _history(self, classes: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(times (T,), probs (T, n))`` of the frames kept, oldest first."""
        order = (self._start + np.arange(self._count)) % max(len(self._times), 1)
        return self._times[order], self._probs[order[:, None], np.asarray(classes, int)[None]]

    def height(self, frame_h: int) -> int:
        """The strip's height on a frame ``frame_h`` pixels high (a seventh of it, at
        least 36 px)."""
        return max(36, int(round(frame_h / 7)))

    def draw(self, img: np.ndarray, series: Sequence[tuple[int, tuple[int, int, int]]],
             x_off: int = 0) -> None:
        """Draw the strip on an output frame, in place (after :meth:`push` of that frame).

        Args:
            img: ``(H, W, 3)`` uint8 RGB or I420 output frame.
            series: the classes to plot, ``(class, rgb colour)`` each.
            x_off: the left edge of the picture the strip belongs to (``side`` layout).
        """
        if not self._count:
            return
        h, w = _size(img)
        sh = min(h, self.height(h))
        scale, thick, pad = _text_metrics(h)
        scale *= 0.8
        font = cv2.FONT_HERSHEY_SIMPLEX
        cls = [c for c, _ in series]
        times, probs = self._history(cls)                         # (T,), (T, n)
        now = float(times[-1])
        top = float(probs.max()) if cls else 0.0
        nice = next((v for v in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0) if top <= v * 1.001), 1.0)
        label = f"{nice * 100:g}%"
        (lw, lh), _ = cv2.getTextSize(label, font, scale, thick)
        line = max(1, int(round(h / 360)))

        def draw(canvas: np.ndarray, _: tuple[int, int, int, int]) -> None:
            ch, cw = canvas.shape[:2]
            canvas[:] = (canvas.astype(np.uint16) * 3 // 10).astype(np.uint8)
            px0, px1 = lw + 2 * pad, cw - pad - 1            # the plot's x range
            py0, py1 = pad, ch - pad - 1                      # its y range (top, bottom)
            if px1 <= px0 + 2 or py1 <= py0 + 2:
                return
            cv2.putText(canvas, label, (pad, py0 + lh), font, scale, (220, 220, 220),
                        thick, cv2.LINE_AA)
            cv2.line(canvas, (px0, py1), (px1, py1), (140, 140, 140), line)
            step = 1.0 if self.seconds <= 20 else 5.0 if self.seconds <= 100 else 30.0
            k = 0
            while k * step <= self.seconds + 1e-9:           # a tick a second (or 5, 30)
                x = int(round(px1 - k * step / self.seconds * (px1 - px0)))
                cv2.line(canvas, (x, py1), (x, py1 - max(2, (py1 - py0) // 8)),
                         (140, 140, 140), line)
                k += 1
            xs = px1 - (now - times) / self.seconds * (px1 - px0)
            for j, (_, rgb) in enumerate(series):
                ys = py1 - probs[:, j] / nice * (py1 - py0)
                pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
                if len(pts) > 1:
                    cv2.polylines(canvas, [pts], False, rgb, max(1, line + 1), cv2.LINE_AA)
                cv2.circle(canvas, tuple(int(v) for v in pts[-1]), 2 * line + 1, rgb, -1,
                           cv2.LINE_AA)
            cv2.line(canvas, (px1, py0), (px1, py1), (255, 255, 255), line)  # the cursor

        _on_rgb(img, (x_off, h - sh, w, h), draw)
