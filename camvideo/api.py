"""The Python API: ``annotate(input, output, **options)`` and the options it takes."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import IO, Callable

import cv2

from .cam import bbox_threshold
from .errors import OptionError, OutputError
from .media.encoding import check_preset
from .media.files import FileSource
from .media.sink import FileSink, check_output_path, check_writable, source_comment
from .model.cammodel import CamModel
from .model.device import (default_batch_size, parse_device, resolve_device,
                           resolve_precision)
from .model.registry import load_model
from .options import Options, Summary
from .render import Renderer
from .runtime.engine import CamEngine, Rendered
from .runtime.pipeline import run_stream
from .smoothing import Smoother

log = logging.getLogger(__name__)


class JsonLinesSink:
    """JSON Lines sidecar, one object per output frame, written to a temp file and renamed
    into place on :meth:`close` (:meth:`abort` removes it, also after :meth:`close`).

    Raises:
        OutputError: the file cannot be written (folder, permissions, disk full).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self._placed = False
        try:
            self._fh: IO[str] = open(self.tmp, "w", encoding="utf-8")
        except OSError as e:
            raise self._error(e) from None

    def _error(self, e: OSError) -> OutputError:
        return OutputError(f"cannot write {self.path}: {e.strerror or e}")

    def write(self, r: Rendered) -> None:
        n = r.note
        rec = {"frame": r.frame.index, "time": round(r.frame.time, 6), "class": n.cls,
               "label": n.label, "score": round(n.score, 6),
               "topk": [[i, lab, round(p, 6)] for i, lab, p in n.topk],
               "peak": list(n.peak), "bbox": list(n.bbox) if n.bbox else None}
        if n.cam is not None:
            rec["cam"] = n.cam
        try:
            self._fh.write(json.dumps(rec) + "\n")
        except OSError as e:
            raise self._error(e) from None

    def close(self) -> None:
        try:
            self._fh.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            raise self._error(e) from None
        self._placed = True

    def abort(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass  # a full disk again: the file goes anyway
        self.tmp.unlink(missing_ok=True)
        if self._placed:  # closed, then the video failed: no sidecar without its video
            self.path.unlink(missing_ok=True)


def build_engine(opts: Options, model: CamModel | None = None, *,
                 infer_workers: int | None = None, trace: bool = True,
                 equal_batches: bool = True) -> CamEngine:
    """Model (loaded unless given), renderer and smoother for ``opts``; ``infer_workers``,
    ``trace`` and ``equal_batches`` as :class:`CamEngine`'s (workers None: its default, 2
    on the CPU; live streams want 1 worker and batches of any size).

    A given model runs on its own device (``opts.device`` ``auto`` follows it; another
    device is an :class:`OptionError`: load the model there), and ``opts.model``,
    ``weights`` and ``labels`` are not used."""
    if model is None:
        device = resolve_device(opts.device)
        model = load_model(opts.model, opts.weights, opts.labels, device=device)
    else:
        device, wanted = model.device, parse_device(opts.device)
        if wanted is not None and (wanted.type != device.type or (
                wanted.index is not None and wanted.index != (device.index or 0))):
            raise OptionError(f"device {opts.device!r} asked for, but the model given is "
                              f"on {device}; load it there (load_model(..., device=...))")
    precision = resolve_precision(opts.precision, device)
    fixed = model.class_index(opts.cls) if opts.cls is not None else None
    renderer = Renderer(model.labels, colormap=opts.colormap, alpha=opts.alpha,
                        topk=opts.topk, bbox=opts.bbox,
                        bbox_threshold=bbox_threshold(opts.bbox_threshold, model.name),
                        layout=opts.layout, keep_cams=opts.json_cams)
    smoother = Smoother(model.weight.detach().float(), tau=opts.smooth,
                        switch_margin=opts.switch_margin, motion=opts.motion,
                        cut_reset=opts.cut_reset, mode=opts.smooth_mode, fixed_class=fixed)
    return CamEngine(model, renderer, smoother, short_side=opts.size, precision=precision,
                     stride=opts.stride, infer_workers=infer_workers, trace=trace,
                     equal_batches=equal_batches)


def annotate(input: str | os.PathLike, output: str | os.PathLike, *,
             progress: Callable[[int, int], None] | None = None,
             stop: threading.Event | None = None, **options: object) -> Summary:
    """Annotate a video file: CAM heatmap and top labels on every frame.

    Args:
        input: video file.
        output: output file (``.mp4``, ``.mkv``, ``.mov``, ``.webm``, ``.avi``); written
            to a temporary file and renamed on success.
        progress: called as ``progress(frames_done, frames_total_or_0)`` after each frame.
        stop: set it to stop early: the output is then discarded and the call raises
            KeyboardInterrupt (as Ctrl-C does).
        **options: see :class:`Options`; ``model`` may also be a loaded
            :class:`CamModel` to reuse (batch jobs load it once).

    Returns:
        A :class:`Summary`.

    Raises:
        camvideo.errors.CamVideoError: bad input, output or option (nothing is left behind).
        KeyboardInterrupt: ``stop`` was set, or Ctrl-C (nothing is left behind).
    """
    model = options.pop("model", None)
    if isinstance(model, CamModel):
        options["model"] = model.name
    elif model is not None:
        options["model"] = model
        model = None
    opts = Options.from_kwargs(**options)
    opts.validate()
    check_preset(opts.codec, opts.preset)
    out_path = check_output_path(output, [input], opts.overwrite)
    if opts.json:
        _check_sidecar_path(opts.json, [input, output], opts.overwrite)
    engine = build_engine(opts, model)
    t0 = time.monotonic()
    # on the CPU, frames stay I420 from decoder to encoder where they can (camvideo.pixels)
    source = FileSource(input, i420=engine.device.type == "cpu")
    sink = json_sink = None
    try:
        frames = iter(source)
        first = next(frames)  # decode one frame: size after rotation, fail early
        h, w = first.size
        sink = FileSink(out_path, source.info, engine.renderer.output_size(w, h),
                        codec=opts.codec, crf=opts.crf, preset=opts.preset,
                        x264_params=opts.x264_params,
                        audio_from=str(input) if opts.audio else None,
                        comment=source_comment(input))
        json_sink = JsonLinesSink(opts.json) if opts.json else None
        total = source.info.frames

        def consume(r: Rendered) -> None:
            sink.write(r.image, r.frame.pts, r.frame.time)
            if json_sink is not None:
                json_sink.write(r)
            if progress is not None:
                progress(r.frame.index + 1, total)

        def all_frames():
            yield first
            for f in frames:
                if f.size != (h, w):  # the stream changed size mid-way
                    f = type(f)(f.index, cv2.resize(f.rgb(), (w, h)), f.pts, f.time)
                yield f

        bs = opts.batch_size or default_batch_size(engine.device)
        stop = stop or threading.Event()
        n = run_stream(all_frames(), engine, consume, batch_size=bs, stop=stop)
        if stop.is_set():
            raise KeyboardInterrupt
        if json_sink is not None:  # first: a sidecar failure leaves no video behind
            json_sink.close()
        sink.close()
    except BaseException:
        for s in (sink, json_sink):
            if s is not None:
                s.abort()
        raise
    finally:
        source.close()
    return Summary(str(out_path), n, source.skipped, time.monotonic() - t0, opts.json)


def _check_sidecar_path(path: str | os.PathLike, inputs: list, overwrite: bool) -> None:
    """Refuse a ``--json`` path that is an input or the video output, exists without
    ``overwrite``, or lies in a missing/unwritable folder."""
    p = Path(path)
    for inp in inputs:
        if Path(inp).resolve() == p.resolve():
            raise OutputError(f"--json {path} would overwrite {inp}")
    check_writable(p, "--json")
    if p.exists() and not overwrite:
        raise OutputError(f"output exists: {path} (use -y/--overwrite)")
