"""``camvideo live``: real-time CAM overlay on a webcam, a capture device or a network stream.

A live session is :func:`camvideo.stream` over a live source, and its sinks:

- **capture** (:mod:`camvideo.media.streams`): decodes continuously, keeps only the newest
  frame; frames nobody took in time are dropped there, never queued;
- the **stream** (:class:`camvideo.runtime.stream.Stream`): reader, device and render
  threads; its reader takes a frame from the capture slot only when the device stage is
  free, so the frame the network gets is the newest one, and at most ``batch_size + 2``
  frames are in flight whatever stage is slow;
- this **caller's thread** iterates the results: stamps the capture→annotated latency,
  draws the HUD, records (:class:`camvideo.runtime.sinks.VideoFileSink`, timestamps from
  capture times: dropped frames are simply absent) and hands the frame to the window
  and the HTTP preview (sinks too);
- **window** (``cv2.imshow`` and its keys: q quit, space pause, c cycle the top classes,
  s snapshot) and **serve** (:mod:`camvideo.live.preview`, MJPEG) each on their own thread.

Ctrl-C (and SIGTERM, which the CLI turns into KeyboardInterrupt) stops the stream and
finalises the recording, like ``q``, ``--duration`` or the end of the source.

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
from typing import Any, Callable

import numpy as np

from ..errors import OptionError, OutputError, SourceLostError
from ..media.encoding import check_preset
from ..media.sources import open_live
from ..media.streams import DEFAULT_OPEN_TIMEOUT, DEFAULT_READ_TIMEOUT, LiveSource
from ..options import Options
from .window import WINDOW_MODES, Controls, WindowThread, display_available, draw_hud

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


def run_live(source: str = "0", *, options: Options | None = None, model: Any = None,
             output: str | None = None, serve: str | None = None, window: str = "auto",
             duration: float | None = None, hud: bool = False, realtime: bool = False,
             timeout: float = DEFAULT_READ_TIMEOUT, open_timeout: float = DEFAULT_OPEN_TIMEOUT,
             source_options: dict[str, str] | None = None, snapshot_dir: str = ".",
             stats: str | None = None, notify: Callable[[str], None] | None = None,
             stop: threading.Event | None = None, reconnect: int = 0,
             **overrides: Any) -> LiveSummary:
    """Annotate a live source until it ends, ``stop`` is set, ``--duration`` is reached,
    the window's q key, or Ctrl-C/SIGTERM (KeyboardInterrupt in this thread).

    Args:
        source: see :func:`camvideo.media.sources.parse_source`.
        options, **overrides: the run's :class:`~camvideo.options.Options` (model, render,
            smoothing, device; ``codec``, ``crf``, ``preset``, ``x264_params``,
            ``overwrite`` for the recording). Smoothing is always causal.
        model: a loaded :class:`camvideo.model.cammodel.CamModel` to reuse, or a name.
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
        reconnect: reopen a lost or ended camera or stream, up to this many attempts
            (see :func:`camvideo.media.sources.open_live`); gaps go into ``stats``.

    Raises:
        SourceLostError: the source cannot be opened, disappears or stalls.
        camvideo.errors.OutputError: the recording or ``stats`` cannot be written.
        camvideo.errors.CamVideoError: bad options, output or model.
    """
    from ..media.frames import VideoInfo
    from ..media.sink import check_output_path, check_writable
    from ..runtime.sinks import VideoFileSink
    from .preview import PreviewServer, parse_bind

    notify = notify or (lambda msg: None)
    if isinstance(model, str):
        overrides = {**overrides, "model": model}
        model = None
    opts = Options.of(options, **overrides).replace(smooth_mode="causal")
    check_preset(opts.codec, opts.preset)
    if window not in WINDOW_MODES:
        raise OptionError(f"window must be one of {', '.join(WINDOW_MODES)}, got {window!r}",
                          option="window")
    use_window = window == "on" or (window == "auto" and display_available())
    if window == "on" and not display_available():
        raise OptionError("window on, but there is no display (DISPLAY/WAYLAND_DISPLAY "
                          "unset, or OpenCV built without GUI); try {option}",
                          option="window", hint=("serve", "HOST:PORT"))
    if duration is not None and not duration > 0:
        raise OptionError(f"duration must be > 0 seconds, got {duration}", option="duration")
    out_path = check_output_path(output, [source], opts.overwrite) if output else None
    stats_path = Path(stats) if stats else None
    if stats_path is not None:  # refused now, not after a whole session
        check_writable(stats_path, "stats")
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
        log.warning("no display, no preview server and no output file: the annotated frames "
                    "are not shown anywhere")
    if src.kind != "file":
        src.start()  # a camera or stream is drained (newest frame kept) while the model loads
    viewer = recording = None
    try:
        from ..api import stream as open_stream  # torch: only once the source is open

        frames = open_stream(src, model, opts, render=True, duration=duration, stop=stop)
        engine = frames.engine
        if server is not None:
            server.source = src.label
            server.start()
            notify(f"live preview at {server.url}")
        controls = Controls(stop, engine.smoother, snapshot_dir, notify)
        if use_window:
            viewer = WindowThread(f"camvideo live: {src.label}", controls)
            viewer.start()
        views = [v for v in (server, viewer) if v is not None]
        meter = _Meter(src)
        error: BaseException | None = None
        watch = _Watch(src, meter, views if hud else [], duration, stop)
        src.start()  # a file plays from the moment the model is ready
        watch.start()
        try:
            with frames:
                for r in frames:
                    latency = meter.add(r)
                    if hud:
                        draw_hud(r.image, meter.hud(latency))
                    meter.last_image = r.image
                    if out_path is not None:
                        if recording is None:  # the source's audio is known from now on
                            info = VideoInfo(str(source), 0, 0, _rate(src.nominal_fps),
                                             src.time_base, 0, None, "", 0)
                            recording = VideoFileSink(
                                out_path, info, codec=opts.codec, crf=opts.crf,
                                preset=opts.preset, x264_params=opts.x264_params,
                                audio_from=src.audio_from() if opts.audio else None,
                                audio=opts.audio_codec)
                        recording.write(r)
                    controls.last_note = r
                    if not controls.paused:
                        for view in views:
                            view.write(r)
        except KeyboardInterrupt:
            log.info("interrupted: finalising")
        except SourceLostError as e:
            error = e
        finally:
            watch.close()
        seconds = meter.seconds()
        if isinstance(error, SourceLostError):
            message, kept = str(error), None
            if recording is not None and recording.frames:
                recording.close()  # what was recorded before the source was lost is kept
                message += f" (recording kept: {out_path}, {recording.frames} frames)"
                recording, kept = None, out_path
            if stats_path is not None:  # what happened up to the loss: most useful
                try:
                    _write_stats(stats_path, meter.summary(seconds, kept, server, engine))
                except OutputError as e:
                    log.warning("%s", e)
            raise SourceLostError(message) from None
        written = None
        if recording is not None and recording.frames:
            recording.close()
            written = out_path
        elif out_path is not None:
            log.warning("no frame was annotated: %s not written", out_path)
        recording = None
        summary = meter.summary(seconds, written, server, engine)
        if stats_path is not None:
            _write_stats(stats_path, summary)
        log.info("%s: %d frames shown of %d captured (%d dropped), %.1f fps, latency "
                 "p50 %.0f ms, p95 %.0f ms", src.label, summary.shown, summary.captured,
                 summary.dropped, summary.fps, 1000 * summary.latency_p50,
                 1000 * summary.latency_p95)
        return summary
    finally:
        stop.set()
        if recording is not None:
            recording.abort()
        if viewer is not None:
            viewer.close()
        if server is not None:
            server.close()
        src.stop()


class _Watch(threading.Thread):
    """While no frame comes (a stream waiting for its first keyframe, or reconnecting):
    shows the source's status on the last frame in the window and the preview (with
    ``--hud``), and ends the session at ``--duration``, which frames' times otherwise
    measure (a gap keeps wall-clock spacing, so for a source paced in real time, wall
    time since the first frame is the source time it will have)."""

    IDLE_S = 1.0   #: no frame for this long: the source is waiting

    def __init__(self, src: Any, meter: "_Meter", views: list, duration: float | None,
                 stop: threading.Event, period: float = 0.5) -> None:
        super().__init__(name="camvideo-watch", daemon=True)
        self.src, self.meter, self.views = src, meter, views
        self.duration, self.stop, self.period = duration, stop, period
        self._halt = threading.Event()

    def close(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(2.0)

    def run(self) -> None:
        while not self._halt.wait(self.period):
            first, last = self.meter.span
            if not last:
                continue  # nothing shown yet: the source's own open timeout applies
            now = time.monotonic()
            idle = now - last
            if idle < self.IDLE_S:
                continue
            paced = bool(getattr(self.src, "drop", False))  # a camera, a stream, --realtime
            if self.duration is not None and paced and now - first >= self.duration:
                log.info("the duration is reached while the source sends no frames")
                self.stop.set()
                return
            status = getattr(self.src, "status", None)
            image = self.meter.last_image
            if status and image is not None and self.views:
                shown = image.copy()
                draw_hud(shown, [status])
                for view in self.views:
                    (view.publish if hasattr(view, "publish") else view.show)(shown)


class _Meter:
    """Per shown frame: capture→annotated latency, the recent rate, the records kept for
    the :class:`LiveSummary`."""

    def __init__(self, src: LiveSource) -> None:
        self.src = src
        self.records: collections.deque = collections.deque(maxlen=_KEEP)
        self.recent: collections.deque = collections.deque()  # shown times, last second
        self.span = [0.0, 0.0]  # first and last time a frame was shown (monotonic)
        self.shown = 0
        self.t0 = time.monotonic()
        self.last_image: np.ndarray | None = None  #: the last frame shown (as drawn)

    def add(self, r: Any) -> float:
        """Record result ``r`` as shown now; returns its latency in seconds."""
        self.shown += 1
        now = time.monotonic()
        captured_at = self.src.capture_time(r.index)
        latency = now - captured_at if captured_at is not None else 0.0
        self.records.append((r.index, round(r.time, 4), round(latency, 4)))
        self.span[0] = self.span[0] or now
        self.span[1] = now
        self.recent.append(now)
        while self.recent and now - self.recent[0] > 1.0:
            self.recent.popleft()
        return latency

    def hud(self, latency: float) -> list[str]:
        recent = self.recent
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) > 1 else 0.0
        drop = self.src.dropped / max(1, self.src.captured)
        return [f"{fps:4.1f} fps  latency {latency * 1000:4.0f} ms",
                f"dropped {100 * drop:3.0f}%"]

    def seconds(self) -> float:
        return time.monotonic() - self.t0

    def summary(self, seconds: float, out_path: Path | None, server: Any,
                engine: Any) -> LiveSummary:
        shown, span = self.shown, self.span
        fps = (shown - 1) / (span[1] - span[0]) if shown > 1 and span[1] > span[0] else 0.0
        return _summary(self.src, shown, fps, self.records, seconds, out_path, server,
                        engine)


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
        raise OutputError(f"cannot write {{option}} {path}: {e.strerror or e}",
                          hint=("stats", None)) from None


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
