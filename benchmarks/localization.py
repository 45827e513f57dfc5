"""Localization on real photos: pointing, boxes, flicker and class switches, per clip.

Clips are made from real photos with hand-annotated object boxes
(:data:`camvideo.testing.synth.OBJECT_BOXES`, :data:`~camvideo.testing.synth.SCENE_BOXES`):
pans, a zoom in, a zoom out, a pan + zoom, a dolly (the object grows over a still
backdrop), a small object, two objects, hard cuts, and a real multi-object photo
(``astronaut``). Each is encoded with H.264 and decoded back, the default model runs once
per clip, and the same features go through ``--smooth 0`` (``off``) and the default
smoother (``default``). For each: pointing (the map's peak at frame size inside a
ground-truth box grown by 15 px), box accuracy (the share of frames whose box has IoU
>= 0.3 / 0.5 / 0.7 with the best-matching ground-truth box), flicker (mean
``|M_t - M_t-1|`` of the drawn maps at frame size), class switches (frame pairs across a
true cut left out) and the median box area; boxes with the paper's 0.2 and with the
calibrated default (``--bbox-threshold auto``).

Calibration (``--calibrate``): the MaxBoxAcc sweep of Choe et al. (CVPR 2020, "MaxBoxAccV2":
box accuracy averaged over IoU 0.3, 0.5 and 0.7, maximised over the threshold) on still
frames of the same annotated photos placed differently from the clips (whole frame,
zoomed in, and smaller over blurred backdrops, at two frame shapes), with per-frame maps
(``--smooth 0``); ``--write`` puts the best threshold into ``camvideo/cam.py``'s
``BBOX_THRESHOLDS``. Other ways of thresholding are swept beside it (Otsu on the map, a
threshold on the drawn map's values, i.e. relative to the smoothed range, the region
holding the peak instead of the largest).

Usage::

    python benchmarks/localization.py                    # the per-clip table
    python benchmarks/localization.py --readme           # also write it to README.md
    python benchmarks/localization.py --readme --calibrate --motion   # the whole section
    python benchmarks/localization.py --calibrate [--write]
    python benchmarks/localization.py --fine --readme --calibrate   # fine maps' section

``--fine``: the same with the model's maps twice as fine (``--fine-maps``, output stride
16: :mod:`camvideo.model.finemaps`), its threshold calibrated and filed apart.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from camvideo import cam as cammath  # noqa: E402
from camvideo.cam import map_bbox  # noqa: E402
from camvideo.model.registry import load_model  # noqa: E402
from camvideo.smoothing import Smoother  # noqa: E402
from camvideo.testing import synth  # noqa: E402
from quality import machine, model_outputs, run_smoother, write_readme  # noqa: E402

TOLERANCE_PX = 15
IOUS = (0.3, 0.5, 0.7)
SWEEP = tuple(round(t, 2) for t in np.arange(0.05, 0.96, 0.05))
HEADING = "## Localization (boxes, pointing, steadiness)"
FINE_HEADING = "## Localization with fine maps (`--fine-maps`)"
LOAD = 0.0   # the machine's 1-minute load average when the run started

Box = tuple[int, int, int, int]


@dataclass
class Bench:
    """A benchmark clip: the clip, every frame's ground-truth boxes, and its kind
    (``large``: one large object; ``small``; ``two``: two objects; ``scene``: a real
    multi-object photo)."""

    clip: synth.Clip
    truth: list[list[Box]]
    kind: str
    cls: str | None = None    # the object's ImageNet class (``--class``), if it has one


def _one(boxes: list[Box | None]) -> list[list[Box]]:
    return [[b] if b is not None else [] for b in boxes]


def make_clips(folder: Path, n: int, size: tuple[int, int], fps: float) -> dict[str, Bench]:
    """The benchmark clips (H.264 at ``fps``)."""
    out: dict[str, Bench] = {}

    def put(name: str, file: str, frames, truth: list[list[Box]], kind: str,
            cuts: list[int] | None = None, photo: str | None = None) -> None:
        first = [t[0] if t else None for t in truth]
        clip = synth.write_clip(folder / f"{file}.mp4", frames, fps=fps, boxes=first,
                                cuts=cuts)
        out[name] = Bench(clip, truth, kind, synth.OBJECT_CLASSES.get(photo or ""))

    for photo, label in (("coffee", "cup"), ("china", "pagoda")):
        frames, boxes = synth.pan_frames(photo, size, n, scale=0.5, background="astronaut")
        put(f"pan ({label})", f"pan-{photo}", frames, _one(boxes), "large", photo=photo)
    frames, boxes = synth.zoom_frames("coffee", size, n, zoom=(1.0, 2.0))
    put("zoom in (cup)", "zoom-in", frames, _one(boxes), "large", photo="coffee")
    frames, boxes = synth.zoom_frames("motorcycle", size, n, zoom=(2.0, 1.0))
    put("zoom out (motorcycle)", "zoom-out", frames, _one(boxes), "large",
        photo="motorcycle")
    frames, boxes = synth.zoom_frames("flower", size, n, zoom=(1.2, 2.2), start=(0.9, 0.3))
    put("pan + zoom (flower)", "pan-zoom", frames, _one(boxes), "large", photo="flower")
    frames, boxes = synth.move_frames([("chelsea", (0.35, 0.9), ((0.3, 0.45), (0.6, 0.5)))],
                                      size, n, background="flower")
    put("dolly (cat)", "dolly", frames, boxes, "large", photo="chelsea")
    frames, boxes = synth.move_frames([("motorcycle", (0.3, 0.85), ((0.7, 0.4),
                                                                    (0.45, 0.55)))],
                                      size, max(2, n // 2), background="china")
    put("fast dolly (motorcycle)", "fast-dolly", frames, boxes, "large", photo="motorcycle")
    frames, boxes = synth.move_frames([("coffee", (0.22, 0.22), ((0.15, 0.3), (0.85, 0.6)))],
                                      size, n, background="china")
    put("small object (cup)", "small", frames, boxes, "small", photo="coffee")
    frames, boxes = synth.move_frames([("chelsea", (0.5, 0.55), ((0.25, 0.5), (0.3, 0.5))),
                                       ("coffee", (0.5, 0.5), ((0.75, 0.5), (0.7, 0.5)))],
                                      size, n, background="china")
    put("two objects (cat, cup)", "two", frames, boxes, "two")
    photos = ("chelsea", "coffee", "china", "motorcycle")
    counts = [n // 4 + (1 if i < n % 4 else 0) for i in range(4)]
    frames, boxes, cuts = synth.cut_frames(photos, size, counts)
    put("cuts (4 shots)", "cuts", frames, _one(boxes), "large", cuts)
    scene = synth.SCENE_BOXES["astronaut"]
    objs = [scene["space shuttle"], scene["crash helmet"]]
    frames, _ = synth.zoom_frames("astronaut", size, n, zoom=(1.0, 1.4), box=objs[0],
                                  start=(0.5, 0.45))
    truth = _scene_truth("astronaut", objs, size, n, (1.0, 1.4), (0.5, 0.45))
    put("real scene (astronaut)", "astronaut", frames, truth, "scene")
    return out


def _scene_truth(photo: str, objs: list[Box], size: tuple[int, int], n: int,
                 zoom: tuple[float, float], start: tuple[float, float]) -> list[list[Box]]:
    """Boxes of several objects in the frames of ``zoom_frames(photo, ..., box=objs[0],
    start=start)`` (the view follows the first object)."""
    img = synth.load_photo(photo)
    ph, pw = img.shape[:2]
    box = objs[0]
    centre = ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2)
    first = (start[0] * pw, start[1] * ph)
    t = synth._ease(n)
    zs = zoom[0] + (zoom[1] - zoom[0]) * t
    out = []
    for z, f in zip(zs, t):
        m = synth._cover_matrix(pw, ph, size, float(z),
                                (first[0] + (centre[0] - first[0]) * f,
                                 first[1] + (centre[1] - first[1]) * f))
        out.append([b for b in (synth._map_box(o, m, size) for o in objs) if b is not None])
    return out


# ---------------------------------------------------------------------------------------
# boxes and metrics


def iou(a: Box, b: Box) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_of(cam: np.ndarray, size: tuple[int, int], method: str, t: float) -> Box | None:
    """The box of one drawn map ``(h, w)`` in ``[0, 1]`` by a thresholding ``method``:
    ``max`` (the paper's: ``t`` x the map's maximum, largest region), ``peak`` (the same,
    the region holding the maximum), ``range`` (the drawn map's values >= ``t``: relative
    to the range the smoother normalised against), ``otsu`` (Otsu's level on the map at
    8 px per cell, ``t`` unused)."""
    peak = float(cam.max())
    if peak <= 0:
        return None
    if method in ("max", "peak"):
        return map_bbox(cam, size, t, component="largest" if method == "max" else "peak")
    if method == "range":
        return map_bbox(cam, size, min(1.0, t / peak)) if t <= peak else None
    if method == "otsu":
        h, w = cam.shape
        grid = cv2.resize(cam, (w * 8, h * 8), interpolation=cv2.INTER_LINEAR)
        u8 = np.clip(grid / peak * 255.0, 0, 255).astype(np.uint8)
        level, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        return map_bbox(cam, size, max(1e-3, min(1.0, level / 255.0)))
    raise ValueError(method)


def box_scores(boxes: list[Box | None], truth: list[list[Box]]) -> list[float]:
    """Per frame with ground truth: IoU of the box with the best-matching true box."""
    return [max((iou(b, g) for g in gts), default=0.0) if b is not None else 0.0
            for b, gts in zip(boxes, truth) if gts]


def upsampled(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    w, h = size
    return F.interpolate(maps[:, None].float(), size=(h, w), mode="bilinear",
                         align_corners=False)[:, 0]


def pointing_hits(up: torch.Tensor, truth: list[list[Box]]) -> list[bool]:
    """Per frame with ground truth: the peak of its map at frame size ``up[t]`` lies
    inside a true box grown by :data:`TOLERANCE_PX`."""
    w = up.shape[-1]
    peaks = up.reshape(len(up), -1).argmax(dim=1).tolist()
    out = []
    for p, gts in zip(peaks, truth):
        if gts:
            x, y = p % w, p // w
            out.append(any(g[0] - TOLERANCE_PX <= x < g[2] + TOLERANCE_PX
                           and g[1] - TOLERANCE_PX <= y < g[3] + TOLERANCE_PX
                           for g in gts))
    return out


def clip_metrics(maps: torch.Tensor, classes: list[int], bench: Bench,
                 thresholds: dict[str, tuple[str, float]]) -> dict[str, float]:
    """Pointing, flicker, switches, and per threshold setting box accuracy at each IoU
    and the median box area (fraction of the frame)."""
    clip = bench.clip
    w, h = clip.size
    up = upsampled(maps, clip.size)
    cut_set = set(clip.cuts)
    keep = [t for t in range(1, len(classes)) if t not in cut_set]
    flicker = float((up[keep] - up[[t - 1 for t in keep]]).abs().mean()) if keep else 0.0
    switches = sum(classes[t] != classes[t - 1] for t in keep)
    hits = pointing_hits(up, bench.truth)
    out = dict(flicker=flicker, switches=switches, pointing=sum(hits) / max(len(hits), 1))
    cams = maps.float().numpy()
    for name, (method, t) in thresholds.items():
        boxes = [box_of(c, clip.size, method, t) for c in cams]
        scores = box_scores(boxes, bench.truth)
        for d in IOUS:
            out[f"{name}@{d}"] = float(np.mean([s >= d for s in scores])) if scores else 0.0
        areas = [(b[2] - b[0]) * (b[3] - b[1]) / (w * h) if b else 0.0 for b in boxes]
        out[f"{name}:area"] = float(np.median(areas))
        out[f"{name}:whole"] = float(np.mean([a >= 0.95 for a in areas]))
    return out


# ---------------------------------------------------------------------------------------
# calibration


def calibration_frames(size: tuple[int, int]) -> list[tuple[np.ndarray, Box, str]]:
    """Still frames of the annotated photos placed unlike the clips: the photo covering
    the frame, zoomed 1.5x on the object, and at 0.6 / 0.8 of the frame height over
    blurred backdrops at the left, centre and right."""
    out = []
    names = list(synth.OBJECT_BOXES)
    for k, photo in enumerate(names):
        bg = names[(k + 1) % len(names)]
        frames, boxes = synth.zoom_frames(photo, size, 2, zoom=(1.0, 1.5))
        out += [(frames[i], boxes[i], photo) for i in range(2) if boxes[i] is not None]
        for scale in (0.6, 0.8):
            for x in (0.3, 0.5, 0.7):
                frames, boxes = synth.move_frames([(photo, (scale, scale), ((x, 0.5),
                                                                            (x, 0.5)))],
                                                  size, 1, background=bg)
                if boxes[0][0] is not None:
                    out.append((frames[0], boxes[0][0], photo))
    return out


@torch.inference_mode()
def calibration_maps(model, sizes: list[tuple[int, int]]) -> list[tuple[np.ndarray, Box,
                                                                        tuple[int, int], str]]:
    """Per calibration frame: its per-frame drawn map (``--smooth 0``), true box, size and
    photo."""
    out = []
    weight = model.weight.detach().float()
    for size in sizes:
        hw = model.input_size(size[1], size[0])
        for img, box, photo in calibration_frames(size):
            x, _ = model.preprocess(torch.from_numpy(img[None]), hw)
            feats, logits = model(x)
            cls = logits.float().argmax(dim=1)
            m = cammath.minmax_normalize(cammath.cam_maps(feats.float(), weight, cls))
            out.append((m[0].numpy(), box, size, photo))
    return out


def sweep(items, methods=("max", "peak", "range")) -> dict[str, dict[float, dict[float, float]]]:
    """method -> threshold -> IoU level -> box accuracy; plus ``otsu`` at threshold 0."""
    res: dict[str, dict[float, dict[float, float]]] = {}
    for method in (*methods, "otsu"):
        res[method] = {}
        for t in (SWEEP if method != "otsu" else (0.0,)):
            scores = [iou(b, box) if (b := box_of(c, size, method, t)) else 0.0
                      for c, box, size, _ in items]
            res[method][t] = {d: float(np.mean([s >= d for s in scores])) for d in IOUS}
    return res


def best(per_t: dict[float, dict[float, float]]) -> tuple[float, float]:
    """(threshold, MaxBoxAccV2): the threshold maximising the mean over the IoU levels."""
    t = max(per_t, key=lambda k: (np.mean(list(per_t[k].values())), -abs(k - 0.5)))
    return t, float(np.mean(list(per_t[t].values())))


def calibrate(model, args) -> str:
    sizes = [(640, 360), (480, 480)]
    items = calibration_maps(model, sizes)
    res = sweep(items)
    lines = [f"Calibration set: {len(items)} still frames ({len(synth.OBJECT_BOXES)} "
             f"annotated photos x {len(items) // len(synth.OBJECT_BOXES)} placements, "
             "640x360 and 480x480), per-frame maps of "
             f"{model.calibration_name}.", "",
             "| method | best threshold | BoxAcc@0.3 | @0.5 | @0.7 | MaxBoxAccV2 |",
             "|---|---:|---:|---:|---:|---:|"]
    for method, per_t in res.items():
        t, v = best(per_t)
        a = per_t[t]
        lines.append(f"| {method} | {t if method != 'otsu' else '(Otsu)'} | "
                     f"{100 * a[0.3]:.1f}% | {100 * a[0.5]:.1f}% | {100 * a[0.7]:.1f}% | "
                     f"{100 * v:.1f}% |")
    p = res["max"][cammath.PAPER_THRESHOLD]
    lines.append(f"| max, the paper's | {cammath.PAPER_THRESHOLD} | {100 * p[0.3]:.1f}% | "
                 f"{100 * p[0.5]:.1f}% | {100 * p[0.7]:.1f}% | "
                 f"{100 * np.mean(list(p.values())):.1f}% |")
    # leave one photo out: how stable is the calibrated threshold?
    loo = []
    for photo in synth.OBJECT_BOXES:
        rest = [it for it in items if it[3] != photo]
        loo.append((photo, best(sweep(rest, methods=("max",))["max"])[0]))
    lines += ["", "Leave one photo out (max): " + ", ".join(f"without {p}: {t}"
                                                           for p, t in loo) + "."]
    curve = " ".join(f"{t}:{100 * np.mean(list(v.values())):.0f}"
                     for t, v in res["max"].items())
    lines += ["", f"BoxAccV2 (%) by threshold (max): {curve}."]
    text = "\n".join(lines)
    print(text)
    if args.write:
        t, _ = best(res["max"])
        write_threshold(model.calibration_name, t)
    return text


def write_threshold(model_name: str, t: float) -> None:
    path = ROOT / "camvideo" / "cam.py"
    src = path.read_text()
    a, b = src.index("#: calibrated: begin\n"), src.index("#: calibrated: end\n")
    block = src[a:b]
    entries = dict(re.findall(r'^\s+"([^"]+)": ([^,\n]+),$', block, flags=re.M))
    entries[model_name] = repr(float(t))
    body = "".join(f'    "{k}": {v},\n' for k, v in sorted(entries.items(),
                                                         key=lambda kv: kv[0] == "*"))
    new = ("#: calibrated: begin\nBBOX_THRESHOLDS: dict[str, float] = {\n" + body + "}\n")
    path.write_text(src[:a] + new + src[b:])
    print(f"wrote BBOX_THRESHOLDS[{model_name!r}] = {t} into {path}")


# ---------------------------------------------------------------------------------------
# motion models: how well does each carry features over the smoothing window?

MOTION_SPAN = 9  #: frames (0.3 s at 30 fps: the default time constant)


class _FittedMotion:
    """A global similarity (``sim``) or affine (``affine``) motion fitted by RANSAC to
    DIS flow, turned into per-cell displacements (what a parametric model would give
    the smoother)."""

    def __init__(self, kind: str) -> None:
        from camvideo import motion as mo
        self.kind, self.dis = kind, mo.MotionEstimator("dis")

    def estimate(self, prev: np.ndarray, cur: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
        flow = self.dis._flow(cur, prev)
        hs, ws = cur.shape
        ys, xs = np.mgrid[0:hs:2, 0:ws:2]
        src = np.stack((xs.ravel(), ys.ravel()), 1).astype(np.float32)
        dst = src + flow[ys.ravel(), xs.ravel()]
        fit = cv2.estimateAffinePartial2D if self.kind == "sim" else cv2.estimateAffine2D
        m, _ = fit(src, dst, method=cv2.RANSAC, ransacReprojThreshold=1.0)
        h, w = grid
        if m is None:
            return np.zeros((h, w, 2), np.float32)
        gx, gy = np.meshgrid((np.arange(w) + 0.5) * ws / w - 0.5,
                             (np.arange(h) + 0.5) * hs / h - 0.5)
        sx = m[0, 0] * gx + m[0, 1] * gy + m[0, 2]
        sy = m[1, 0] * gx + m[1, 1] * gy + m[1, 2]
        return np.stack(((sx - gx) * w / ws, (sy - gy) * h / hs), -1).astype(np.float32)


def motion_residual(batches: list[tuple], method: str, cuts: list[int]) -> float:
    """Mean ``|warp^k(F_{t-k}) - F_t|`` over the clip (``k`` = :data:`MOTION_SPAN`,
    spans across a cut left out): how far features carried by the motion model over
    the smoothing window are from the features there. ``none``: not moved."""
    from camvideo import motion as mo
    est = (None if method == "none" else _FittedMotion(method) if method in ("sim", "affine")
           else mo.MotionEstimator(method))
    held: list[torch.Tensor] = []
    prev = None
    num, den, index = 0.0, 0, 0
    for feats, _, _, f01 in batches:
        grid = (int(feats.shape[2]), int(feats.shape[3]))
        small = mo.downsample(f01.float() / 255, grid)
        for g, f in zip(mo.gray_u8(small), feats):
            f = f[None]
            if index in cuts:
                held = []
            elif est is not None and prev is not None:
                mat, _ = mo.sampling(torch.from_numpy(est.estimate(prev, g, grid)))
                held = [mo.warp(x, mat) for x in held]
            held.append(f)
            if len(held) > MOTION_SPAN:
                num += float((held.pop(0) - f).abs().mean())
                den += 1
            prev, index = g, index + 1
    return num / max(den, 1)


# ---------------------------------------------------------------------------------------
# the clip benchmark


def clip_outputs(model, bench: Bench, args) -> list[tuple]:
    """The model's outputs on a clip (:func:`quality.model_outputs`), read from / saved
    to ``args.cache`` when given (keyed by the clip, frame count, size and fine maps)."""
    cache = (args.cache / f"loc-{Path(bench.clip.path).stem}-{args.frames}-"
             f"{args.size}{'-os16' if args.fine else ''}.pt") if args.cache else None
    if cache is not None and cache.exists():
        return torch.load(cache)
    batches = model_outputs(model, bench.clip)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        torch.save(batches, cache)
    return batches


def run_clips(model, args, size) -> tuple[dict[str, dict[str, dict]], dict[str, Bench]]:
    auto = cammath.bbox_threshold("auto", model.calibration_name)
    thresholds = {"paper": ("max", cammath.PAPER_THRESHOLD), "auto": ("max", auto)}
    for spec in args.extra or []:
        name, method, t = spec.split(":")
        thresholds[name] = (method, float(t))
    variants = {"off": dict(tau=0.0), "default": {}}
    for spec in args.variant or []:
        name, _, kv = spec.partition("=")
        opts = {}
        for item in filter(None, kv.split(",")):
            k, _, v = item.partition(":")
            opts[k] = v if k in ("mode", "motion_method") else float(v)
        variants[name] = opts
    results: dict[str, dict[str, dict]] = {}
    weight = model.weight.detach().float()
    with tempfile.TemporaryDirectory() as tmp:
        benches = make_clips(Path(tmp), args.frames, size, args.fps)
        for name, bench in benches.items():
            if args.only and not any(o in name for o in args.only):
                continue
            batches = clip_outputs(model, bench, args)
            results[name] = {}
            if args.motion:
                res = {m: motion_residual(batches, m, bench.clip.cuts)
                       for m in ("none", "phase", "dis", "farneback", "sim", "affine")}
                MOTION[name] = {m: r / res["none"] for m, r in res.items()}
            runs = dict(variants)
            if bench.cls is not None:   # the object's own class asked for (GT-known)
                runs[f"`--class {bench.cls}`"] = dict(fixed_class=model.class_index(bench.cls))
            for v, opts in runs.items():
                maps, classes, _, spf = run_smoother(Smoother(weight, **opts), batches)
                results[name][v] = clip_metrics(maps, classes, bench, thresholds) | dict(
                    ms=1000 * spf)
            print(name, {v: {k: round(x, 3) for k, x in r.items()}
                         for v, r in results[name].items()}, flush=True)
    return results, benches


MOTION: dict[str, dict[str, float]] = {}


def motion_table() -> str:
    methods = list(next(iter(MOTION.values())))
    lines = ["| clip | " + " | ".join(methods) + " |", "|---|" + "---:|" * len(methods)]
    for clip, per in MOTION.items():
        lines.append(f"| {clip} | " + " | ".join(f"{per[m]:.3f}" for m in methods) + " |")
    mean = {m: np.mean([per[m] for per in MOTION.values()]) for m in methods}
    lines.append("| **mean** | " + " | ".join(f"{mean[m]:.3f}" for m in methods) + " |")
    return "\n".join(lines)


def table(results: dict[str, dict[str, dict]], benches: dict[str, Bench]) -> str:
    lines = ["| clip | smoothing | pointing | flicker | vs off | switches | "
             "box 0.2 @0.3 / 0.5 / 0.7 | box auto @0.3 / 0.5 / 0.7 | "
             "median box area 0.2 / auto |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for clip, per in results.items():
        base = per["off"]
        for v, m in per.items():
            rel = (f"{100 * (m['flicker'] / base['flicker'] - 1):+.0f}%"
                   if base["flicker"] > 0 else "")
            acc = {k: " / ".join(f"{100 * m[f'{k}@{d}']:.0f}" for d in IOUS)
                   for k in ("paper", "auto")}
            lines.append(f"| {clip} | {v} | {100 * m['pointing']:.1f}% | "
                         f"{m['flicker']:.4f} | {rel} | {m['switches']} | "
                         f"{acc['paper']} | {acc['auto']} | "
                         f"{100 * m['paper:area']:.0f}% / {100 * m['auto:area']:.0f}% |")
    return "\n".join(lines)


def checks(results: dict[str, dict[str, dict]], benches: dict[str, Bench]) -> str:
    """The issue's targets, clip by clip."""
    out = []
    for name, per in results.items():
        off, d = per["off"], per["default"]
        dp = 100 * (d["pointing"] - off["pointing"])
        cut = 1 - d["flicker"] / off["flicker"] if off["flicker"] > 0 else 0.0
        ok = dp >= -2.0 and cut >= 0.6
        line = (f"- {name}: pointing {dp:+.1f} points vs off, flicker {-100 * cut:+.0f}%"
                f" {'(met)' if ok else '(**not met**)'}")
        if benches[name].kind == "scene":
            line += (f"; default boxes: median {100 * d['auto:area']:.0f}% of the frame, "
                     f"{100 * d['auto:whole']:.0f}% of them >= 95% of it (0.2: "
                     f"{100 * d['paper:area']:.0f}%, {100 * d['paper:whole']:.0f}%)")
        if benches[name].kind == "large":
            line += (f"; default boxes IoU >= 0.5 on {100 * d['auto@0.5']:.0f}% of frames "
                     f"({'met' if d['auto@0.5'] >= 0.8 else '**not met**'}; 0.2: "
                     f"{100 * d['paper@0.5']:.0f}%)")
        asked = benches[name].cls
        if asked is not None and benches[name].kind == "large":
            a = per[f"`--class {asked}`"]
            line += f"; with `--class {asked}`: {100 * a['auto@0.5']:.0f}%"
        out.append(line)
    return "\n".join(out)


def report(tab: str, chk: str, calib: str | None, mot: str | None, args, size,
           seconds: float, model) -> str:
    auto = cammath.bbox_threshold("auto", model.name)
    return (
        f"{HEADING}\n\n"
        f"`python benchmarks/localization.py --readme{' --calibrate' if calib else ''}"
        f"{' --motion' if mot else ''}{' --cache DIR' if args.cache else ''}`: "
        f"{args.frames} frames per clip, "
        f"{size[0]}x{size[1]} at {args.fps:g} fps, encoded (H.264) and decoded back; default "
        f"model {model.name} at 224 px (7x12 maps), calibrated threshold {auto} "
        f"(`--bbox-threshold auto`) beside the paper's 0.2. {machine()}, AVX2 only, KVM "
        f"(1-minute load average {LOAD:.1f} at the start), torch {torch.__version__}; "
        f"{seconds:.0f} s in all.\n\n"
        "Clips (`camvideo.testing.synth`, real photos, hand-annotated boxes): **pan**: the "
        "`coffee` / `china` photo (half the frame high) slides over a blurred `astronaut`; "
        "**zoom in**: 1x to 2x on the cup; **zoom out**: 2x to 1x on the motorcycle; "
        "**pan + zoom**: the view pans from the top right of `flower` to the dahlia while "
        "zooming 1.2x to 2.2x; **dolly**: the cat photo grows from 35% to 90% of the frame "
        "height while drifting, over a still blurred backdrop (local motion: the "
        "background does not move); **fast dolly**: the `motorcycle` photo grows from 30% "
        "to 85% of the frame height in half the frames (1.5 s) over a blurred `china`; "
        "**small object**: the cup photo at 22% of the frame "
        "height crossing the frame; **two objects**: cat and cup side by side; **cuts**: "
        "four shots (cat, cup, pagoda, motorcycle); **real scene**: `astronaut` (a "
        "person, a flag, a shuttle model, a helmet), slowly zooming 1x to 1.4x, boxes for "
        "its two ImageNet objects (shuttle, helmet).\n\n"
        f"{tab}\n\n"
        f"- pointing: the drawn map's peak at frame size inside a true box grown by "
        f"{TOLERANCE_PX} px; box @d: share of frames whose box has IoU >= d with the "
        "best-matching true box (frames with no box count as misses); flicker: mean "
        "|M_t - M_t-1| of the drawn maps at frame size; switches: changes of the shown "
        "class (both leave out frame pairs across a true cut); median box area: fraction "
        "of the frame.\n\n"
        f"Targets (default smoothing vs `--smooth 0`: pointing within 2 points, flicker "
        f"cut by >= 60%; default boxes IoU >= 0.5 on >= 80% of frames on the clips with "
        f"one large object):\n\n{chk}\n\n{FINDINGS}\n"
        + (f"\n### Calibration\n\n`python benchmarks/localization.py --calibrate "
           f"--write`\n\n{calib}\n" if calib else "")
        + (f"\n### Motion models\n\n`--motion`: features carried {MOTION_SPAN} frames "
           "(0.3 s, the default time constant) by each motion model, against the features "
           "there: mean |warp^9(F_t-9) - F_t|, relative to not moving them (`none`; lower "
           "is better). `dis` / `farneback`: dense flow averaged per feature cell (what the "
           "smoother uses: local motion, and scale as the flow's divergence); `phase`: one "
           "global translation; `sim` / `affine`: a global similarity / affine model fitted "
           f"(RANSAC) to the DIS flow.\n\n{mot}\n" if mot else ""))


def fine_report(tab: str, chk: str, calib: str | None, args, size, seconds: float,
                model) -> str:
    auto = cammath.bbox_threshold("auto", model.calibration_name)
    return (
        f"{FINE_HEADING}\n\n"
        f"`python benchmarks/localization.py --fine --readme"
        f"{' --calibrate' if calib else ''}{' --cache DIR' if args.cache else ''}`: the "
        "clips, measures and targets of "
        "\"Localization\" above, with the default model's maps twice as fine "
        f"({model.calibration_name}: the last downsampling undone and the layers after it "
        "dilated, 14x24 maps at 224 px; `camvideo.model.finemaps`), its own calibrated "
        f"threshold {auto} beside the paper's 0.2. {args.frames} frames per clip, "
        f"{size[0]}x{size[1]} at {args.fps:g} fps. {machine()}, AVX2 only, KVM (1-minute "
        f"load average {LOAD:.1f} at the start), torch {torch.__version__}; {seconds:.0f} s "
        f"in all.\n\n{tab}\n\n{chk}\n\n{FINE_FINDINGS}\n"
        + (f"\n### Calibration (fine maps)\n\n`python benchmarks/localization.py --fine "
           f"--calibrate --write`\n\n{calib}\n" if calib else ""))


FINE_FINDINGS = """What the figures say (written at the run of 2026-11-30; the coarse
figures are the section above's):

- **Boxes.** On the calibration set fine maps reach MaxBoxAccV2 69.1 % at their
  calibrated 0.3 against 65.6 % for the coarse maps at theirs (also 0.3): +3.5 points,
  most of it at IoU 0.7 (47.9 vs 39.6 %; at 0.5 76.0 vs 74.0 %). On the
  clips, with default smoothing, boxes at IoU >= 0.5: pan (cup) 100 % (coarse 81 %),
  zoom in 49 % (27 %), dolly 84 % (80 %), cuts 94 % (80 %), zoom out and pan + zoom
  100 % (as coarse); no better on the pagoda (2 %: a cell narrower still covers more
  than the pagoda, for "birdhouse") or the fast dolly (38 %: its first frames' class,
  "mousetrap", covers the pasted photo). So the box target is still missed on three
  clips, now by less on the zoom in.
- **Steadiness.** Finer maps move more from frame to frame: with default smoothing the
  fast dolly's pointing falls 11 points below `--smooth 0` (the coarse maps gain 9) and
  the small object's flicker is cut by 59 % (coarse 62 %): two of the steadiness targets
  the coarse maps meet are missed, which is one reason fine maps are an option and not
  the default. The other is time ("Fine maps: cost").
"""


FINDINGS = """What the figures say (read with the tables; written at the run of 2026-11-30):

- **Boxes.** The calibrated 0.3 beats the paper's 0.2 on the calibration set
  (MaxBoxAccV2 65.6 % vs 62.2 %; every leave-one-photo-out sweep picks 0.3 again) and on
  the clips where the object is well inside the frame (pan (cup): IoU >= 0.5 on 81 % of
  frames vs 0 %; dolly: 80 vs 67 %; two objects: 100 vs 82 %), and shrinks the boxes
  everywhere (real scene, default smoothing: median 86 % of the frame vs 90 %, and no box
  of 95 % of the frame or more against 24 % of them at 0.2). It loses where the object
  fills the frame (zoom in: 27 % vs 100 %; cuts: 80 vs 100 %). No single threshold met
  IoU >= 0.5 on 80 % of the frames of every one-large-object clip (0.4: zoom in 0 %, cuts
  72 %; 0.5: pan + zoom and zoom out fall). The pagoda pan fails at every threshold: the
  7x12 map covers the whole pasted photo (the model's class there is "birdhouse", not
  the pagoda); the small cup (about 80x75 px) is smaller than one map cell (53 px) spread by
  the bilinear upsampling: no box reaches IoU 0.5. The fast dolly fails with both
  thresholds: over its first 17 frames the model's class is "mousetrap", whose map covers
  the whole pasted photo; the smoothed "moped" leads from frame 26 of 45 and is shown
  from frame 28 (from frame 39 before the ratio rule).
  Otsu on the map (61.8 %), the region holding the peak (same as the largest here) and
  a threshold on the drawn map's values (the smoothed range; same as the max with
  per-frame maps) were no better on the calibration set, so the default stays the
  paper's rule with a calibrated threshold. Calibrated on the object's own class's map
  instead of the predicted one's (Choe et al.'s GT-known protocol; 80 stills: `china`
  has no class), the sweep peaks at 0.25 (MaxBoxAccV2 65.8 %) with 0.3 at 65.0 %:
  within a point, so 0.3 stays (one-off script). Boxes for all regions at once (tried on the
  clips) did not help the zoom in either: there the map covers the cup, the true box
  the cup, saucer and spoon.
- **The object's own class asked for** (`--class`, rows named so: the "GT-known"
  protocol of Choe et al., which separates localising from classifying). Where the shown
  class names a part or a neighbour of the object, asking for the object's class fits
  the box: zoom in 92 % of frames at IoU >= 0.5 with `--class cup` against 27 % for the
  shown "espresso" (its map is the coffee, not the cup, saucer and spoon); fast dolly
  53 % against 38 %. Where the shown class already fits, it can fit better than the
  object's (pan (cup): 81 % shown, 64 % for `cup`, whose map takes in the saucer's
  shadow). So the misses are partly the classifier's (what it names on these composites)
  and partly the maps' (7x12 cells of 53 px). The pagoda has no ImageNet class. Also
  tried on these clips with one-off scripts (not kept in the repo; same cached model
  outputs): the model at 448 px (14x25 maps) fitted worse (pan (cup) 0 % at every
  threshold 0.2-0.5); a guided filter (He et al.) on the map with the frame as guide
  moved the one-large-object clips by -25 to +32 points at 0.3, met the target on none
  of the three that fail and broke pan (cup) (81 -> 56-73 %); bicubic instead of
  bilinear warping of the smoothed state moved pan (cup) 81 -> 94 % and zoom in
  27 -> 14 %; Bae et al.'s training-free fixes (ECCV 2020: negative CAM weights clamped
  to zero, and the threshold relative to the map's 90th/95th percentile instead of its
  maximum) beat nothing on the calibration set (64.9 %, 65.3 %, 65.6 % at their best
  thresholds against 65.6 %) and traded clips against each other (the 90th percentile
  at 0.4: zoom in 60 %, cuts 100 %, pan (cup) 7 %).
  Two other maps for the box, measured with one-off scripts: the probability-weighted
  sum of the top-5 classes' maps (after Yang et al.'s combinational CAM, WACV 2020)
  reached 65.6 % on the calibration set (the top 10's: 66.3 %) and, per frame at 0.3,
  pagoda 0 %, zoom in 33 %, fast dolly 58 %, pan (cup) 71 % (the top-1 map: 4, 33, 60,
  82 %); the features' channel mean (class-agnostic, so not the shown class's map) 64.9 %
  at 0.35, and at 0.3 zoom in 100 % but pan (cup) 36 %, dolly 72 %, pagoda 0 %, fast
  dolly 38 %. GrabCut (OpenCV) seeded by the drawn map (>= 0.3 probably the object, >=
  0.7 the object, < 0.05 background; half size, 3 iterations) fitted worse (every third
  frame: pagoda 0-3 %, zoom in 0 %) at 100-250 ms a frame.
  The most promising, the last stage
  dilated instead of strided (output
  stride 16: 14x24 maps from the same weights, as DeepLab does), is now an option,
  `--fine-maps`, with its own calibration and section ("Localization with fine maps"
  below): better boxes on four of these clips, not the default (it misses two
  steadiness targets the coarse maps meet, and costs time).
- **Motion.** The smoother's motion (DIS flow averaged per feature cell) already holds
  scale: a zoom's displacement field diverges (`tests/test_smoothing.py`), unlike one
  global translation (phase correlation). Over the smoothing window none of the models
  carries the features much closer than not moving them on zooms and dollies (ratios
  0.99-1.03): CNN features of an object seen larger are not the smaller ones moved, so
  no warp can match them; on pans all gain 15-19 %. A global similarity or affine model
  fitted to the flow (0.944 mean) was no better than the per-cell flow (0.944) and
  worse where objects move differently (pan (cup), small object), so the per-cell flow
  stays. Default smoothing keeps pointing within 2 points of `--smooth 0` and cuts
  flicker by >= 60 % on every clip. Before the ratio rule of the class hysteresis
  (another class twice as probable takes over at once, `--switch-ratio 2`) the fast
  dolly lost 15.6 points: the held class, not the motion model ("Localization: class
  hysteresis" below).
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=90, help="frames per clip")
    ap.add_argument("--size", default="640x360", help="clip size WxH")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--readme", action="store_true", help="write the table to README.md")
    ap.add_argument("--calibrate", action="store_true", help="run the threshold sweep")
    ap.add_argument("--write", action="store_true", help="with --calibrate: write the "
                    "threshold into camvideo/cam.py")
    ap.add_argument("--cache", type=Path, help="reuse model outputs saved in this folder")
    ap.add_argument("--only", action="append", help="only clips whose name has this")
    ap.add_argument("--motion", action="store_true", help="also compare motion models "
                    "(feature residual over the smoothing window)")
    ap.add_argument("--extra", action="append", metavar="NAME:METHOD:T",
                    help="another box setting, e.g. otsu:otsu:0 or r5:range:0.5")
    ap.add_argument("--variant", action="append", metavar="NAME=K:V,...",
                    help="another smoother, e.g. 'phase=motion_method:phase'")
    ap.add_argument("--fine", action="store_true", help="the model with fine maps "
                    "(output stride 16; its own calibration and README section)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    global LOAD
    LOAD = os.getloadavg()[0]
    model = load_model(fine=args.fine)
    t0 = time.perf_counter()
    calib = calibrate(model, args) if args.calibrate else None
    if args.calibrate and not args.readme:
        return 0
    if args.write:
        import importlib
        importlib.reload(cammath)
    results, benches = run_clips(model, args, size)
    tab = table(results, benches)
    chk = checks(results, benches)
    mot = motion_table() if MOTION else None
    print(tab)
    print(chk)
    if mot:
        print(mot)
    if args.readme and args.fine:
        write_readme(fine_report(tab, chk, calib, args, size, time.perf_counter() - t0,
                                 model), FINE_HEADING)
    elif args.readme:
        write_readme(report(tab, chk, calib, mot, args, size, time.perf_counter() - t0,
                            model), HEADING)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
