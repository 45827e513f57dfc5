"""``camvideo live``: real-time CAM overlay on a webcam, a capture device or a network stream.

Threads (all joined by bounded hand-offs, so latency cannot build up):

- **capture** (:mod:`camvideo.media.streams`): decodes continuously, keeps only the newest
  frame; frames nobody took in time are dropped there, never queued;
- the **pipeline** (:func:`camvideo.runtime.pipeline.run_stream` with ``live=True``: read, device,
  render and write threads). Its reader takes a frame from the capture slot only when the
  device stage is free (a credit returned after each batch's forward pass), so the frame
  the network gets is the newest one, not one that waited behind a slow forward pass; a
  second credit (returned when a frame has been shown/written) caps the frames in flight
  at ``batch_size + 2`` whatever stage is slow;
- the **write** stage stamps the capture→annotated latency, draws the HUD, records
  (:class:`camvideo.media.sink.FileSink`, timestamps from capture times: dropped frames are
  simply absent) and hands the newest frame to the window and the HTTP preview;
- **window** (``cv2.imshow`` and its keys: q quit, space pause, c cycle the top classes,
  s snapshot) and **serve** (:mod:`camvideo.live.preview`, MJPEG) each on their own thread.

The caller's thread only waits: Ctrl-C (and SIGTERM, which the CLI turns into
KeyboardInterrupt) stops the capture, lets the frames in flight drain and finalises the
recording, like ``q``, ``--duration`` or the end of the source.

The command line (arguments, exit code) is :mod:`camvideo.commands.live`.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import OptionError, OutputError, SourceLostError
from ..media.encoding import check_preset
from .window import WINDOW_MODES, Controls, WindowThread, display_available, draw_hud
from ..media.sources import open_live
from ..media.streams import DEFAULT_OPEN_TIMEOUT, DEFAULT_READ_TIMEOUT, LiveSource

log = logging.getLogger(__name__)

_KEEP = 100_000  #: latency records kept for the summary (about an hour at 30 fps)


@dataclass
class LiveSummary:
    """What a live session did.

    ``shown``: frames annotated and output; ``fps``: of those, per second of wall time;
    ``latency_*``: capture→annotated seconds (capture: the frame was decoded here);
    ``network_frames``: frames the network ran on (fewer with ``stride``); ``frames``:
    per shown frame ``[index, time s, latency s]`` (the last 100000; ``time`` is the
    capture time since the first frame, or a file's own time without ``realtime``).
    """

    source: str
    shown: int
    captured: int
    dropped: int
    seconds: float
    fps: float
    latency_p50: float
    latency_p95: float
    latency_max: float
    output: str | None = None
    url: str | None = None
    network_frames: int = 0
    frames: list = field(default_factory=list)
    gaps: list = field(default_factory=list)  # --reconnect: [Gap.as_dict()] per gap


class _Gated:
    """Hands ``run_stream`` the engine, returning a device credit after each forward
    pass, so the next frame is taken from the capture slot only then (see module docs)."""

    def __init__(self, engine: Any, credit: threading.Semaphore) -> None:
        self._engine, self._credit = engine, credit
        self.infer_workers = engine.infer_workers

    def infer(self, frames: Sequence[Any]) -> Any:
        try:
            return self._engine.infer(frames)
        finally:
            self._credit.release(max(1, len(frames)))

    def infer_flush(self) -> Any:
        return self._engine.infer_flush()

    def finish(self, batch: Any) -> Any:
        return self._engine.finish(batch)


def run_live(source: str = "0", *, output: str | None = None, serve: str | None = None,
             window: str = "auto", duration: float | None = None, hud: bool = False,
             realtime: bool = False, timeout: float = DEFAULT_READ_TIMEOUT,
             open_timeout: float = DEFAULT_OPEN_TIMEOUT,
             source_options: dict[str, str] | None = None, snapshot_dir: str = ".",
             stats: str | None = None, notify: Callable[[str], None] | None = None,
             stop: threading.Event | None = None, model: Any = None, reconnect: int = 0,
             **options: Any) -> LiveSummary:
    """Annotate a live source until it ends, ``stop`` is set, ``--duration`` is reached,
    the window's q key, or Ctrl-C/SIGTERM (KeyboardInterrupt in this thread).

    Args:
        source: see :func:`camvideo.media.sources.parse_source`.
        output: record the annotated stream there (finalised on every normal stop, and
            kept when the source is lost mid-way).
        serve: ``[HOST:]PORT`` of the MJPEG preview (see :mod:`camvideo.live.preview`).
        window: ``auto`` (when a display is available), ``on`` or ``off``.
        duration: stop after this many seconds of source time.
        hud: draw fps, latency and drops on the frames.
        realtime, timeout, open_timeout, source_options: see
            :func:`camvideo.media.sources.open_live`.
        snapshot_dir: where the window's s key saves PNGs.
        stats: write the :class:`LiveSummary` there as JSON (its folder is checked
            first; written on every normal stop and when the source is lost).
        notify: called with one-line messages for the user (preview URL, snapshots).
        stop: set it to stop (as q does).
        model: a model name, or a loaded :class:`camvideo.model.cammodel.CamModel` to reuse.
        reconnect: reopen a lost or ended camera or stream, up to this many attempts
            (see :func:`camvideo.media.sources.open_live`); gaps go into ``stats``.
        **options: :class:`camvideo.api.Options` (model, render, smoothing, device;
            ``codec``, ``crf``, ``preset``, ``x264_params``, ``overwrite`` for the
            recording). Smoothing is always causal.

    Raises:
        SourceLostError: the source cannot be opened, disappears or stalls.
        camvideo.errors.OutputError: the recording or ``stats`` cannot be written.
        camvideo.errors.CamVideoError: bad options, output or model.
    """
    from ..options import Options
    from ..api import build_engine
    from ..media.frames import VideoInfo
    from ..media.sink import FileSink, check_output_path, check_writable
    from ..model.device import default_batch_size
    from ..runtime.pipeline import run_stream
    from .preview import PreviewServer, parse_bind

    notify = notify or (lambda msg: None)
    loaded = None
    if isinstance(model, str):
        options["model"] = model
    elif model is not None:
        loaded, options["model"] = model, model.name
    opts = Options.from_kwargs(**options)
    opts.smooth_mode = "causal"
    opts.validate()
    check_preset(opts.codec, opts.preset)
    if window not in WINDOW_MODES:
        raise OptionError(f"window must be one of {', '.join(WINDOW_MODES)}, got {window!r}")
    use_window = window == "on" or (window == "auto" and display_available())
    if window == "on" and not display_available():
        raise OptionError("--window on, but there is no display (DISPLAY/WAYLAND_DISPLAY "
                          "unset, or OpenCV built without GUI); try --serve HOST:PORT")
    if duration is not None and not duration > 0:
        raise OptionError(f"--duration must be > 0 seconds, got {duration}")
    out_path = check_output_path(output, [source], opts.overwrite) if output else None
    stats_path = Path(stats) if stats else None
    if stats_path is not None:  # refused now, not after a whole session
        check_writable(stats_path, "--stats")
    bind = parse_bind(serve) if serve else None
    stop = stop or threading.Event()

    server = PreviewServer(*bind, source=source) if bind is not None else None  # binds now
    try:
        src: LiveSource = open_live(source, realtime=realtime, open_timeout=open_timeout,
                                    read_timeout=timeout, options=source_options,
                                    reconnect=reconnect)
    except BaseException:
        if server is not None:
            server.close()
        raise
    if not (use_window or serve or output or stats):
        log.warning("no display, --serve or --output: the annotated frames are not shown "
                    "anywhere")
    if src.kind != "file":
        src.start()  # a camera or stream is drained (newest frame kept) while the model loads
    viewer = sink = None
    try:
        live = src.drop
        # a live stream runs one batch at a time (latency first): all threads to it; its
        # batches take what has arrived, of any size
        engine = build_engine(opts, loaded, infer_workers=1 if live else None,
                              equal_batches=not live)
        bs = opts.batch_size or (1 if live else default_batch_size(engine.device))
        device_credit = threading.Semaphore(bs) if live else None
        flight_credit = threading.Semaphore(bs + 2) if live else None
        if server is not None:
            server.source = src.label
            server.start()
            notify(f"live preview at {server.url}")
        controls = Controls(stop, engine.smoother, snapshot_dir, notify)
        if use_window:
            viewer = WindowThread(f"camvideo live: {src.label}", controls)
            viewer.start()
        records: collections.deque = collections.deque(maxlen=_KEEP)
        recent: collections.deque = collections.deque()  # consume times, last second
        first_time: list[float] = []
        span = [0.0, 0.0]  # first and last time a frame was shown (monotonic)
        shown = 0

        def frames() -> Iterator[Any]:
            while not stop.is_set():
                if device_credit is not None:
                    if not device_credit.acquire(timeout=0.1):
                        continue
                    while not flight_credit.acquire(timeout=0.1):  # type: ignore[union-attr]
                        if stop.is_set():
                            return
                f = src.read(stop)
                if f is None:
                    return
                if not first_time:
                    first_time.append(f.time)
                if duration is not None and f.time - first_time[0] >= duration:
                    return
                yield f

        def consume(r: Any) -> None:
            nonlocal sink, shown
            shown += 1
            now = time.monotonic()
            captured_at = src.capture_time(r.frame.index)
            latency = now - captured_at if captured_at is not None else 0.0
            records.append((r.frame.index, round(r.frame.time, 4), round(latency, 4)))
            span[0] = span[0] or now
            span[1] = now
            recent.append(now)
            while recent and now - recent[0] > 1.0:
                recent.popleft()
            image = r.image
            if hud:
                fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 \
                    else 0.0
                drop = src.dropped / max(1, src.captured)
                draw_hud(image, [f"{fps:4.1f} fps  latency {latency * 1000:4.0f} ms",
                                 f"dropped {100 * drop:3.0f}%"])
            if out_path is not None:
                if sink is None:
                    h, w = image.shape[:2]
                    info = VideoInfo(str(source), w, h, _rate(src.nominal_fps),
                                     src.time_base, 0, None, "", 0)
                    sink = FileSink(out_path, info, (w, h), codec=opts.codec, crf=opts.crf,
                                    preset=opts.preset, x264_params=opts.x264_params,
                                    audio_from=src.audio_from() if opts.audio else None,
                                    audio=opts.audio_codec)
                sink.write(image, r.frame.pts, r.frame.time)
            controls.last_note = r.note
            if not controls.paused:
                if server is not None:
                    server.publish(image)
                if viewer is not None:
                    viewer.show(image)
            if flight_credit is not None:
                flight_credit.release()

        outcome: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                run_stream(frames(), _Gated(engine, device_credit) if live else engine,
                           consume, batch_size=bs, live=True, stop=stop, queue_batches=1)
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                outcome["error"] = e
            finally:
                done.set()

        src.start()  # a file plays from the moment the model is ready
        t0 = time.monotonic()
        worker = threading.Thread(target=work, name="camvideo-live", daemon=True)
        worker.start()
        # Wait on an Event, not Thread.join: a KeyboardInterrupt inside join() can mark
        # a running thread as finished (bpo-45274), and the drain would not be awaited.
        try:
            while not done.wait(0.2):
                pass
        except KeyboardInterrupt:
            log.info("interrupted: finishing the frames in flight")
            stop.set()
            done.wait(30.0)
        if not done.is_set():
            raise SourceLostError(f"{src.label}: the pipeline did not stop within 30 s")
        worker.join(5.0)
        seconds = time.monotonic() - t0
        fps = (shown - 1) / (span[1] - span[0]) if shown > 1 and span[1] > span[0] else 0.0
        error = outcome.get("error")
        if error is not None and not isinstance(error, KeyboardInterrupt):
            if isinstance(error, SourceLostError):
                message, kept = str(error), None
                if sink is not None and sink.frames:
                    sink.close()  # what was recorded before the source was lost is kept
                    message += f" (recording kept: {out_path}, {sink.frames} frames)"
                    sink, kept = None, out_path
                if stats_path is not None:  # what happened up to the loss: most useful
                    summary = _summary(src, shown, fps, records, seconds, kept, server,
                                       engine)
                    try:
                        _write_stats(stats_path, summary)
                    except OutputError as e:
                        log.warning("%s", e)
                raise SourceLostError(message) from None
            raise error
        if sink is not None:
            sink.close()
            sink = None
        elif out_path is not None:
            log.warning("no frame was annotated: %s not written", out_path)
        summary = _summary(src, shown, fps, records, seconds, out_path, server, engine)
        if stats_path is not None:
            _write_stats(stats_path, summary)
        log.info("%s: %d frames shown of %d captured (%d dropped), %.1f fps, latency "
                 "p50 %.0f ms, p95 %.0f ms", src.label, summary.shown, summary.captured,
                 summary.dropped, summary.fps, 1000 * summary.latency_p50,
                 1000 * summary.latency_p95)
        return summary
    finally:
        stop.set()
        if sink is not None:
            sink.abort()
        if viewer is not None:
            viewer.close()
        if server is not None:
            server.close()
        src.stop()


def _write_stats(path: Path, summary: LiveSummary) -> None:
    """Write ``summary`` as JSON (via a temporary file, so a failed write leaves nothing).

    Raises:
        OutputError: it cannot be written (disk full, folder gone).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        tmp.write_text(json.dumps(asdict(summary)), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise OutputError(f"cannot write --stats {path}: {e.strerror or e}") from None


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001) if 1 <= fps <= 240 else Fraction(30)


def _summary(src: LiveSource, shown: int, fps: float, records: collections.deque,
             seconds: float, out_path: Path | None, server: Any, engine: Any) -> LiveSummary:
    lat = np.array([r[2] for r in records], dtype=np.float64)
    pct = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: 0.0)
    return LiveSummary(src.label, shown, src.captured, src.dropped, seconds, fps,
                       pct(50), pct(95), float(lat.max()) if lat.size else 0.0,
                       str(out_path) if out_path else None,
                       server.url if server is not None else None,
                       int(getattr(engine, "network_frames", 0)), [list(r) for r in records],
                       [g.as_dict() for g in src.gaps])
