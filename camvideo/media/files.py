"""PyAV sources: decode frames with their timestamps (the sink that encodes them back,
with the input's timing and audio, is :mod:`camvideo.media.sink`).

Every source has one shape: ``open`` in the constructor (raising :class:`InputError`),
iteration yields :class:`Frame` objects until the end, ``close()`` releases it.
"""
from __future__ import annotations

import collections
import heapq
import logging
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .. import pixels
from .frames import Frame, VideoInfo
from .timeline import MAX_REORDER, Restarts, nominal_rate
from .audio import audio_streams
from ..errors import InputError, first_line

log = logging.getLogger(__name__)

_NOT_VIDEO = {"tty"}
#: Frames held back to put their timestamps in order (doubled, up to the maximum, when a
#: timestamp arrives that is earlier than one already given out).
_REORDER, _MAX_REORDER = 2, MAX_REORDER
#: A time base tick longer than this (seconds) is refined, so that a frame moved by one
#: tick (a duplicate timestamp) stays within this of its time: 1/90000 s ticks then.
_FINE = Fraction(1, 2000)


def _is_i420(vf: av.VideoFrame) -> bool:
    """8-bit 4:2:0, limited (or unspecified) range, even size: usable as it is."""
    return (vf.format.name == pixels.I420 and vf.color_range != 2  # 2: full ("JPEG") range
            and vf.width % 2 == 0 and vf.height % 2 == 0)


def _stream_duration(vs: av.video.stream.VideoStream, tb: Fraction) -> float | None:
    """The video stream's own duration in seconds (not the container's, which counts
    the audio too): from the stream, or Matroska's per-track ``DURATION`` tag (the
    track's end: FFmpeg writes it from 0, so a late start is taken off)."""
    if vs.duration:
        return float(vs.duration * tb)
    tag = vs.metadata.get("DURATION") or vs.metadata.get("duration")
    try:
        h, m, sec = tag.split(":")
        end = int(h) * 3600 + int(m) * 60 + float(sec)
    except (AttributeError, ValueError):
        return None
    start = float(vs.start_time * tb) if vs.start_time else 0.0
    return end - start if 0 < start < end else end


class FileSource:
    """Decode the first video stream of a file (threaded decoding).

    Undecodable packets are skipped and counted in :attr:`skipped`; a stream that breaks
    off (truncated file) ends early with a warning. What was warned about (skipped
    packets, fewer frames than announced) is kept in :attr:`warnings`.

    **Timing**: every frame keeps its presentation time. The decoder gives frames out in
    display order, but the timestamps it hangs on them can be out of order (AVI stores
    none, and packed B-frames, a DivX/Xvid habit, make FFmpeg's guesses swap pairs), so
    the frames pass through a small window (:data:`_REORDER` frames, more when needed)
    and each takes the smallest timestamp in it. A duplicate timestamp moves one tick on,
    in a time base no coarser than 1/90000 s (:attr:`VideoInfo.time_base` is the input's
    divided by a whole number where it was coarser than 0.5 ms: AVI's 1/fps, Matroska's
    milliseconds). Missing timestamps follow on at the frame rate; timestamps that start
    again (streams joined end to end: a jump back of :data:`~camvideo.media.timeline.
    RESTART_S` or more, or to the first timestamp) continue after the last one.

    Args:
        path: the file.
        threads: decoder threads (0: FFmpeg's choice).
        i420: yield 8-bit, limited-range 4:2:0 frames of even size without rotation as
            they were decoded (I420, no conversion); all others are converted to RGB.

    Raises:
        InputError: missing, unreadable, not a video, or no decodable frame.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 0,
                 i420: bool = False) -> None:
        self.path = str(path)
        self._i420 = i420
        p = Path(path)
        if not p.exists():
            raise InputError(f"input not found: {path}")
        if p.is_dir():
            raise InputError(f"input is a directory: {path}")
        if not os.access(p, os.R_OK):
            raise InputError(f"input is not readable: {path}")
        if p.stat().st_size == 0:
            raise InputError(f"input is empty (0 bytes): {path}")
        try:
            self._container = av.open(self.path, "r", timeout=30.0)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise InputError(f"not a readable video: {path} ({first_line(e)})") from None
        if self._container.format.name in _NOT_VIDEO:  # FFmpeg renders text files as video
            self._container.close()
            raise InputError(f"not a video: {path} (a text file)")
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"no video stream in {path}")
        usable = [v for v in self._container.streams.video if v.codec_context is not None]
        if not usable:
            self._container.close()
            raise InputError(f"no decodable video stream in {path} (unknown codec)")
        self._stream = vs = usable[0]
        vs.thread_type = "AUTO"
        vs.codec_context.thread_count = threads
        cc = vs.codec_context
        if not cc.width or not cc.height:
            self._container.close()
            raise InputError(f"video stream of {path} has no frame size (corrupt header?)")
        fps = nominal_rate(self._container, vs)
        tb = Fraction(vs.time_base or Fraction(1, 90000))
        duration = _stream_duration(vs, tb)
        # input ticks per output tick: a coarse time base is refined (see the class docs)
        self._scale = math.ceil(tb * 90000) if tb > _FINE else 1
        tb /= self._scale
        self._start = int(vs.start_time or 0) * self._scale
        self.skipped = 0
        self.bumped = 0  #: frames whose duplicate timestamp moved one tick on
        self.warnings: list[str] = []  #: what was warned about, one line each
        self._last_pts: int | None = None
        self._rotation = 0
        self._next_index = 0
        self._closed = False
        self.info = VideoInfo(path=self.path, width=cc.width, height=cc.height,
                              fps=Fraction(fps), time_base=Fraction(tb),
                              frames=int(vs.frames or 0), duration=duration,
                              codec=cc.name,
                              audio_streams=len(audio_streams(self._container)))

    def _packets(self) -> Iterator[av.Packet]:
        try:
            yield from self._container.demux(self._stream)
        except av.FFmpegError as e:
            log.warning("%s: stream broke off after %d frames (%s)", self.path,
                        self._next_index, first_line(e))

    def _decoded(self) -> Iterator[av.VideoFrame]:
        for packet in self._packets():
            try:
                yield from packet.decode()
            except av.FFmpegError as e:
                self.skipped += 1
                log.debug("skipping undecodable packet: %s", first_line(e))

    def __iter__(self) -> Iterator[Frame]:
        """Decoded frames in display order, each with its presentation time (see the
        class docs: a small window of frames puts their timestamps in order)."""
        tb, scale = self.info.time_base, self._scale
        step = max(1, round(1 / (self.info.fps * tb))) if self.info.fps else 1
        clock = Restarts.of_video(step, second=1 / tb)  # the timestamps starting again
        window: collections.deque[av.VideoFrame] = collections.deque()
        stamps: list[int] = []  # heap of the window's timestamps
        depth = _REORDER
        self._last_pts: int | None = None
        self._max_gap = step
        self._regular = 0  # gaps of one nominal frame: most of them in constant-rate video
        for vf in self._decoded():
            if vf.pts is None:  # follows on at the frame rate
                t = clock.see(0 if clock.end is None else clock.end - clock.offset, step)
            else:
                raw = int(vf.pts) * scale
                if clock.starts_again(raw):
                    high = clock.end - step
                    self._warn(f"timestamps jump back "
                               f"{float((high - raw - clock.offset) * tb):.3f} s after "
                               f"{float(high * tb):.3f} s; the frames after it follow on")
                t = clock.see(raw, step)
                if self._last_pts is not None and t < self._last_pts and \
                        depth < _MAX_REORDER:
                    depth = min(_MAX_REORDER, 2 * depth)  # reordered beyond the window
            heapq.heappush(stamps, t)
            window.append(vf)
            if len(window) > depth:
                frame = self._frame(window.popleft(), heapq.heappop(stamps), step)
                if frame is not None:
                    yield frame
        while window:
            frame = self._frame(window.popleft(), heapq.heappop(stamps), step)
            if frame is not None:
                yield frame
        if self._next_index == 0:
            raise InputError(f"no decodable video frame in {self.path}")
        if self.skipped:
            self._warn(f"{self.skipped} undecodable packets/frames skipped")
        self._check_complete(self._last_pts)

    def _frame(self, vf: av.VideoFrame, pts: int, step: int) -> Frame | None:
        """The :class:`Frame` of ``vf`` at ``pts`` (made strictly increasing: a duplicate
        moves one tick on), or None when it cannot be converted."""
        last = self._last_pts
        if last is not None and pts <= last:
            self.bumped += 1
            pts = last + 1
        if last is not None:
            self._max_gap = max(self._max_gap, pts - last)
            self._regular += abs(pts - last - step) <= step // 10
        self._last_pts = pts
        rot = int(getattr(vf, "rotation", 0) or 0) % 360
        fmt = pixels.I420 if self._i420 and not rot and _is_i420(vf) else pixels.RGB
        try:
            image = vf.to_ndarray(format=fmt)
        except (av.FFmpegError, ValueError) as e:
            self.skipped += 1
            log.debug("skipping unconvertible frame: %s", first_line(e))
            return None
        if rot:
            image = np.ascontiguousarray(np.rot90(image, k=rot // 90))
        self._rotation = rot
        frame = Frame(self._next_index, image, int(pts), float(pts * self.info.time_base),
                      fmt)
        self._next_index += 1
        return frame

    def _warn(self, text: str) -> None:
        """Log ``text`` as a warning about this file and keep it in :attr:`warnings`."""
        self.warnings.append(text)
        log.warning("%s: %s", self.path, text)

    def _check_complete(self, last_pts: int | None) -> None:
        """Warn when fewer frames came out than the container announced (truncation)."""
        info, got = self.info, self._next_index
        if info.frames and got < info.frames:
            self._warn(f"{got} of {info.frames} frames decodable (truncated or damaged "
                       "input?)")
        elif not info.frames and info.duration and last_pts is not None:
            end = float((last_pts - self._start) * info.time_base)
            # the rate's own period: a whole number of ticks is not one (1/30 s in ms)
            expected = info.duration * float(info.fps)
            if end + 1.5 * float(self._max_gap * info.time_base) < info.duration:
                self._warn(f"video ends at {end:.2f} s of {info.duration:.2f} s "
                           "(truncated input?)")
            elif self._regular >= 0.8 * (got - 1) and got < expected - 0.5:
                self._warn(f"{got} of {round(expected)} frames decodable (truncated or "
                           "damaged input?)")

    def display_size(self) -> tuple[int, int]:
        """``(W, H)`` as displayed, from the first frame's rotation (call after it)."""
        w, h = self.info.width, self.info.height
        return (h, w) if self._rotation in (90, 270) else (w, h)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()

    def __enter__(self) -> "FileSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
