"""The public API, a façade over the runtime: :func:`stream` (results frame by frame, the
core loop every front-end shares) and :func:`annotate` (a stream into a video file and
its sidecar)."""
from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .errors import InputError, OutputError
from .media.encoding import check_preset
from .media.files import FileSource
from .media.frames import Frame
from .media.sink import (check_output_path, check_video_codec, check_writable, output_exists,
                         source_comment)
from .model.cammodel import CamModel
from .model.device import default_batch_size, resolve_device
from .model.registry import load_model
from .options import Options, Summary
from .runtime.engine import build_engine
from .report import HtmlReportSink
from .runtime.sinks import JsonLinesSink, Sink, TracksSink, VideoFileSink
from .runtime.stream import Stream

log = logging.getLogger(__name__)

__all__ = ["annotate", "stream"]


def _is_live(source: Any) -> bool:
    return hasattr(source, "read") and hasattr(source, "drop")


def stream(source: Any, model: CamModel | str | None = None, options: Options | None = None,
           *, render: bool = False, frames: bool = False, tensors: bool = False,
           duration: float | None = None, stop: threading.Event | None = None,
           **overrides: Any) -> Stream:
    """Run the model over a video, frame by frame: CAM, smoothing, labels and boxes.

    Iterate the returned :class:`~camvideo.runtime.stream.Stream` (best in a ``with``
    block) for one :class:`~camvideo.options.FrameResult` per frame, in order::

        with camvideo.stream("clip.mp4", smooth=0.3) as results:
            for r in results:
                print(r.time, r.label, r.score, r.map.shape)

    Args:
        source: a video file's path; a camera index, device or stream URL (``"0"``,
            ``"/dev/video0"``, ``"rtsp://..."``: a live source, see
            :func:`camvideo.media.sources.open_live`); an opened
            :class:`~camvideo.media.streams.LiveSource`; or any iterable of
            :class:`~camvideo.media.frames.Frame` in order.
        model: a loaded :class:`~camvideo.model.cammodel.CamModel` (reused as it is, on
            its own device), or a registry name (as ``options.model``); None: the
            options' model, loaded here.
        options: an :class:`~camvideo.options.Options` (default: the defaults);
            ``**overrides`` replace its fields (``smooth=0``, ``cls="tabby"``, ...).
        render: also draw the annotated frames (``result.image``); off, the results
            still carry the peak, box and labels.
        frames: give each result its source frame as RGB (``result.rgb``).
        tensors: results' ``probs``, ``map`` and ``map_for`` as torch tensors on the
            model's device (numpy otherwise).
        duration: stop after this many seconds of the video (None: to the end).
        stop: set it to end early and gracefully (the frames already read still come
            out).

    Raises:
        camvideo.errors.CamVideoError: a bad option, input or model, before any frame
            (the input is opened and checked before the model loads).
    """
    opts = _options(options, model, overrides)
    loaded = model if isinstance(model, CamModel) else None
    src, info = _open_source(source)
    try:
        if loaded is None:
            loaded = load_model(opts.model, opts.weights, opts.labels,
                                device=resolve_device(opts.device), fine=opts.fine_maps)
        gated = _is_live(src) and bool(src.drop)
        engine = build_engine(opts, loaded, infer_workers=1 if gated else None,
                              equal_batches=not gated, draw=render, keep_rgb=frames,
                              tensors=tensors)
        bs = opts.batch_size or (1 if gated else default_batch_size(engine.device))
        return Stream(src, engine, batch_size=bs, duration=duration, stop=stop, info=info)
    except BaseException:
        _close(src)
        raise


def annotate(input: str | os.PathLike, output: str | os.PathLike,
             options: Options | None = None, *, model: CamModel | str | None = None,
             progress: Callable[[int, int], None] | None = None,
             stop: threading.Event | None = None, **overrides: Any) -> Summary:
    """Annotate a video file: CAM heatmap and top labels on every frame, encoded with the
    input's timing and audio (and with ``json``, a JSON Lines sidecar).

    Args:
        input: video file.
        output: output file (``.mp4``, ``.mkv``, ``.mov``, ``.webm``, ``.avi``); written
            to a temporary file and renamed on success.
        options, **overrides: as for :func:`stream` (``json``, ``json_cams``,
            ``tracks``, ``html_report``, ``overwrite``, ``codec``, ``crf``, ``preset``,
            ``x264_params``, ``audio`` are the output's).
        model: a loaded model to reuse (batch jobs load it once), or a registry name.
        progress: called as ``progress(frames_done, frames_total_or_0)`` after each frame.
        stop: set it to stop early: the output is then discarded and the call raises
            KeyboardInterrupt (as Ctrl-C does).

    Returns:
        A :class:`~camvideo.options.Summary`.

    Raises:
        camvideo.errors.CamVideoError: bad input, output or option (nothing is left behind).
        KeyboardInterrupt: ``stop`` was set, or Ctrl-C (nothing is left behind).
    """
    opts = _options(options, model, overrides)
    check_preset(opts.codec, opts.preset)
    out_path = check_output_path(output, [input], opts.overwrite)
    check_video_codec(opts.codec, out_path.suffix.lower())
    others = [input, output]
    for path, option in ((opts.json, "json"), (opts.tracks, "tracks"),
                         (opts.html_report, "html_report")):
        if path:
            _check_sidecar_path(path, others, opts.overwrite, option)
            others.append(path)
    stop = stop or threading.Event()
    t0 = time.monotonic()
    # frames stay I420 from decoder to encoder where they can (camvideo.pixels)
    s = stream(input, model if isinstance(model, CamModel) else None, opts, render=True,
               stop=stop)
    sinks: list[Sink] = []
    n = 0
    try:
        with s:
            sinks.append(VideoFileSink(out_path, s.info, codec=opts.codec, crf=opts.crf,
                                       preset=opts.preset, x264_params=opts.x264_params,
                                       audio_from=str(input) if opts.audio else None,
                                       audio=opts.audio_codec,
                                       comment=source_comment(input)))
            if opts.json:
                sinks.append(JsonLinesSink(opts.json, cams=opts.json_cams))
            if opts.tracks:
                sinks.append(TracksSink(opts.tracks))
            if opts.html_report:
                sinks.append(HtmlReportSink(opts.html_report, s.engine.model.labels, opts,
                                            source=Path(input).name, output=str(out_path)))
            total = s.info.frames if s.info is not None else 0
            for r in s:
                for sink in sinks:
                    sink.write(r)
                n += 1
                if progress is not None:
                    progress(r.index + 1, total)
        if stop.is_set():
            raise KeyboardInterrupt
        for sink in reversed(sinks):  # the sidecar first: a failure leaves no video
            sink.close()
    except BaseException:
        for sink in sinks:
            sink.abort()
        raise
    video = sinks[0]
    return Summary(str(out_path), n, s.skipped, time.monotonic() - t0, opts.json,
                   extra={"encoder": video.encoder, "device": str(s.engine.device),
                          "warnings": list(getattr(s.source, "warnings", []))})


def _options(options: Options | None, model: Any, overrides: dict) -> Options:
    if isinstance(model, str):
        overrides = {**overrides, "model": model}
    elif model is not None and not isinstance(model, CamModel):
        from .errors import OptionError

        raise OptionError(f"model must be a CamModel or a registry name, got "
                          f"{type(model).__name__}", option="model")
    opts = Options.of(options, **overrides)
    if isinstance(model, CamModel):
        if opts.fine_maps and not model.fine_maps:
            from .errors import OptionError

            raise OptionError("fine_maps: the given model's maps are not fine; load it "
                              "with load_model(..., fine=True)", option="fine_maps")
        if (opts.model, opts.fine_maps) != (model.name, model.fine_maps):
            opts = opts.replace(model=model.name, fine_maps=model.fine_maps)
    return opts


def _open_source(source: Any) -> tuple[Any, Any]:
    """The source object and its VideoInfo (None when not a file). Files decode to I420
    where they can (:mod:`camvideo.pixels`): the CPU pipeline keeps it to the encoder,
    the GPU's uploads it (half the bytes of RGB) and converts it there."""
    if isinstance(source, int) and not isinstance(source, bool):
        source = str(source)  # a camera index
    if isinstance(source, (str, os.PathLike)):
        from .media.sources import open_live, parse_source

        text = os.fspath(source)
        if parse_source(text).kind != "file":
            return open_live(text), None
        src = FileSource(text, i420=True)
        return src, src.info
    if hasattr(source, "stop") or hasattr(source, "close"):
        return source, getattr(source, "info", None)  # a source object: its own frames
    if not hasattr(source, "__iter__"):
        raise InputError(f"source must be a file, a camera index, a stream URL or an "
                         f"iterable of Frames, got {type(source).__name__}")
    return _frames(source), getattr(source, "info", None)


def _frames(items: Any) -> Any:
    """The frames of an iterable, each checked to be a :class:`Frame` (its picture and
    time): a bare picture has no time to smooth over."""
    for item in items:
        if not isinstance(item, Frame):
            raise InputError(f"an iterable source must give camvideo.media.frames.Frame "
                             f"objects (a picture and its time), got "
                             f"{type(item).__name__}")
        yield item


def _close(src: Any) -> None:
    for name in ("stop", "close"):
        fn = getattr(src, name, None)
        if callable(fn) and not isinstance(fn, threading.Event):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - already failing
                log.debug("closing the source: %s", e)
            return


def _check_sidecar_path(path: str | os.PathLike, inputs: list, overwrite: bool,
                        option: str = "json") -> None:
    """Refuse a sidecar path (``json``, ``tracks``, ``html_report``) that is an input,
    the video output or another sidecar, exists without ``overwrite``, or lies in a
    missing/unwritable folder."""
    p = Path(path)
    for inp in inputs:
        if Path(inp).resolve() == p.resolve():
            raise OutputError(f"{{option}} {path} would overwrite {inp}", hint=(option, None))
    check_writable(p, option)
    if p.exists() and not overwrite:
        raise output_exists(path)
