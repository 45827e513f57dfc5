"""The shown classes of each output frame, on the render thread: several classes at once
(:class:`camvideo.multiclass.MultiClass`), each one's box and peak, the boxes' tracks
(:class:`camvideo.tracks.BoxTracker`, moved with the smoother's image motion), and the
drawing of all of it (:class:`camvideo.render.ClassPainter`, :class:`camvideo.render.
Timeline`). :class:`~camvideo.runtime.engine.CamEngine` calls :meth:`ClassStage.step`
after the smoother and :meth:`ClassStage.draw` after the heatmap.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from ..cam import bbox_threshold
from ..errors import OptionError
from ..media.frames import Frame
from ..model.cammodel import CamModel
from ..multiclass import MultiClass, Shown, class_box, class_peak
from ..options import ClassResult, Options
from ..render import Annotation, ClassPainter, Renderer, Timeline, palette_rgb
from ..smoothing import DEFAULT_HOLD, Smoothed
from ..tracks import BoxTracker
from ..transfer import to_host


class ClassStage:
    """Per output frame: which classes are shown, their maps, peaks, boxes and track IDs
    (frames in order: it is stateful).

    Args:
        labels: class names.
        multi: the choice of several classes (None: the smoother's one class).
        tracker: follows the boxes (None: no track IDs).
        threshold: the box threshold, a fraction of the map's maximum.
        boxes: one class: its box is the frame's ``bbox`` (``--bbox``, or tracked).
        painter: draws the classes (None: nothing drawn by this stage).
        timeline: the probability strip (None: none).
        topk: how many of the most probable classes each result lists.
        layout: ``overlay`` or ``side`` (positions in the output frame are shifted right
            by the frame's width with ``side``).
        tensors: the classes' maps stay device tensors.
    """

    def __init__(self, labels: list[str], *, multi: MultiClass | None,
                 tracker: BoxTracker | None, threshold: float, boxes: bool = True,
                 painter: ClassPainter | None = None, timeline: Timeline | None = None,
                 topk: int = 3, layout: str = "overlay", tensors: bool = False) -> None:
        self.labels, self.multi, self.tracker = labels, multi, tracker
        self.threshold, self.painter, self.timeline = threshold, painter, timeline
        self.boxes = boxes
        self.topk, self.side, self.tensors = topk, layout == "side", tensors
        self._motion: dict[int, Tensor | None] = {}

    @property
    def needs_motion(self) -> bool:
        """The tracker moves boxes with the image motion: the engine hands it over."""
        return self.tracker is not None

    def record_motion(self, frames: Sequence[Frame], disps: Sequence[Tensor | None]) -> None:
        """The displacement of each input frame back to the previous one (the smoother's
        :class:`~camvideo.motion.Cues`), kept until the frame comes out."""
        for f, d in zip(frames, disps):
            self._motion[f.index] = d

    def step(self, smoothed: Smoothed, frames: Sequence[Frame]
             ) -> tuple[Smoothed, list[list[ClassResult]], list[Shown] | None]:
        """The shown classes of a batch of output frames.

        Args:
            smoothed: the smoother's results for ``frames``.
            frames: the output frames, in order.

        Returns:
            ``smoothed`` (with several classes: its ``classes`` and ``maps`` are each
            frame's most probable shown class), each frame's :class:`ClassResult` list,
            and each frame's :class:`~camvideo.multiclass.Shown` (None: one class).
        """
        m = len(frames)
        cuts = smoothed.cut or [False] * m
        if self.multi is not None:
            shown = [self.multi.step(smoothed.probs[i], smoothed.frame_maps[i],
                                     frames[i].time, cuts[i]) for i in range(m)]
            dev = smoothed.maps.device
            smoothed = replace(
                smoothed,
                classes=torch.tensor([s.classes[s.primary] if s.classes else 0
                                      for s in shown], dtype=torch.long, device=dev),
                maps=torch.stack([s.maps[s.primary] if s.classes else
                                  torch.zeros_like(smoothed.maps[i])
                                  for i, s in enumerate(shown)]))
        else:
            shown = None
        # the batch's probabilities (and, with one class, its maps and classes) read back
        # together: one wait per batch on a GPU
        if shown is None:
            probs, all_cams, all_classes = to_host(
                [smoothed.probs.float(), smoothed.maps.float(), smoothed.classes])
        else:
            probs, = to_host([smoothed.probs.float()])
        out: list[list[ClassResult]] = []
        for i, f in enumerate(frames):
            if shown is not None:
                classes, slots, maps = shown[i].classes, shown[i].slots, shown[i].maps
                cams = maps.float().cpu().numpy()
            else:
                classes, slots = [int(all_classes[i])], [0]
                maps = smoothed.maps[i:i + 1]
                cams = all_cams[i:i + 1]
            h, w = f.size
            boxes = [class_box(c, (w, h), self.threshold) for c in cams]
            tracks: list[int | None] = [None] * len(classes)
            if self.tracker is not None:
                disp = self._motion.pop(f.index, None)
                tracks = self.tracker.update(
                    boxes, classes, f.time, cut=bool(cuts[i]),
                    motion=None if disp is None else disp.float().cpu().numpy(),
                    size=(w, h))
            dx = w if self.side else 0
            out.append([ClassResult(
                cls=c, label=self.labels[c], score=float(probs[i, c]),
                map=maps[j] if self.tensors else cams[j],
                peak=_shift(class_peak(cams[j], (w, h)), dx),
                bbox=None if boxes[j] is None else _shift(boxes[j], dx),
                track=tracks[j], slot=slots[j]) for j, c in enumerate(classes)])
        return smoothed, out, shown

    def notes(self, smoothed: Smoothed, results: list[list[ClassResult]]) -> list[Annotation]:
        """The frames' :class:`~camvideo.render.Annotation` when several classes are shown
        (the most probable shown class's peak and box; the top-k of the probabilities)."""
        k = max(self.topk, 1)
        top_p, top_i = smoothed.probs.float().topk(k, dim=1)
        top_p, top_i = top_p.cpu().tolist(), top_i.cpu().tolist()
        notes = []
        for i, shown in enumerate(results):
            best = max(shown, key=lambda c: c.score)
            notes.append(Annotation(
                cls=best.cls, label=best.label, score=best.score,
                topk=[(int(j), self.labels[j], float(p))
                      for p, j in zip(top_p[i][:self.topk], top_i[i][:self.topk])],
                peak=best.peak, bbox=best.bbox))
        return notes

    def paint(self, images: Any, shown: list[Shown]) -> list[np.ndarray]:
        """The frames with the shown classes' maps blended in their colours (CPU arrays,
        or an ``(N, H, W, 3)`` device tensor)."""
        assert self.painter is not None
        if isinstance(images, Tensor) and images.device.type != "cpu":
            return self.painter.paint_torch(images, [s.maps for s in shown],
                                            [s.slots for s in shown])
        if isinstance(images, Tensor):
            images = list(images.numpy())
        return [self.painter.paint(img, s.maps.cpu(), s.slots)
                for img, s in zip(images, shown)]

    def draw(self, images: Sequence[np.ndarray], frames: Sequence[Frame],
             results: list[list[ClassResult]], probs: Tensor) -> None:
        """Boxes with track IDs, the legend (several classes) and the timeline strip, on
        the rendered frames, in place.

        Args:
            images: the rendered frames.
            frames: their frames (times).
            results: their :meth:`step` results.
            probs: ``(N, K)`` their smoothed probabilities (the timeline's history).
        """
        p = probs.float().cpu().numpy() if self.timeline is not None else None
        for i, (img, f, shown) in enumerate(zip(images, frames, results)):
            if self.painter is not None:
                self.painter.annotate(img, shown)
            if self.timeline is not None:
                self.timeline.push(f.time, p[i])  # type: ignore[index]
                w = img.shape[1]
                self.timeline.draw(img, [(c.cls, palette_rgb(c.slot)) for c in shown],
                                   x_off=w // 2 if self.side else 0)


def _shift(v: tuple[int, ...], dx: int) -> Any:
    """A point ``(x, y)`` or box ``(x0, y0, x1, y1)`` moved right by ``dx``."""
    if not dx:
        return tuple(v)
    return tuple(c + dx if k % 2 == 0 else c for k, c in enumerate(v))


def class_stage(opts: Options, model: CamModel, renderer: Renderer, *,
                tensors: bool = False) -> ClassStage | None:
    """The :class:`ClassStage` ``opts`` asks for (``classes``, ``tracks`` or
    ``timeline``), or None. With one class and a box, the renderer's own box gives way to
    the stage's (drawn with its track ID)."""
    if opts.classes is None and not opts.tracks and not opts.timeline:
        return None
    multi = None
    if opts.classes is not None:
        if isinstance(opts.classes, int):
            multi = MultiClass(opts.classes, tau=opts.smooth, margin=opts.switch_margin,
                               hold=DEFAULT_HOLD, ratio=opts.switch_ratio)
        else:
            fixed = [model.class_index(c) for c in opts.classes]
            if len(set(fixed)) < len(fixed):
                raise OptionError(f"classes lists a class twice: "
                                  f"{', '.join(map(str, opts.classes))}", option="classes")
            multi = MultiClass(fixed=fixed, tau=opts.smooth, margin=opts.switch_margin,
                               hold=DEFAULT_HOLD, ratio=opts.switch_ratio)
    tracker = BoxTracker() if (multi is not None or opts.tracks) else None
    boxes = opts.bbox
    renderer.bbox = False  # the stage draws the boxes (in the class's colour, with IDs)
    painter = ClassPainter(alpha=opts.alpha, layout=opts.layout,
                           legend=multi is not None and opts.topk > 0, boxes=boxes)
    return ClassStage(model.labels, multi=multi, tracker=tracker,
                      threshold=bbox_threshold(opts.bbox_threshold, model.calibration_name),
                      painter=painter,
                      boxes=opts.bbox or tracker is not None,
                      timeline=Timeline(opts.timeline) if opts.timeline else None,
                      topk=opts.topk, layout=opts.layout, tensors=tensors)
