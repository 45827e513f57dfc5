"""PyAV sources: decode frames with their timestamps (the sink that encodes them back,
with the input's timing and audio, is :mod:`camvideo.media.sink`).

Every source has one shape: ``open`` in the constructor (raising :class:`InputError`),
iteration yields :class:`Frame` objects until the end, ``close()`` releases it.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .. import pixels
from .frames import Frame, VideoInfo
from .audio import audio_streams
from ..errors import InputError, first_line

log = logging.getLogger(__name__)

_NOT_VIDEO = {"tty"}


def _is_i420(vf: av.VideoFrame) -> bool:
    """8-bit 4:2:0, limited (or unspecified) range, even size: usable as it is."""
    return (vf.format.name == pixels.I420 and vf.color_range != 2  # 2: full ("JPEG") range
            and vf.width % 2 == 0 and vf.height % 2 == 0)


def _stream_duration(vs: av.video.stream.VideoStream, tb: Fraction) -> float | None:
    """The video stream's own duration in seconds (not the container's, which counts
    the audio too): from the stream, or Matroska's per-track ``DURATION`` tag."""
    if vs.duration:
        return float(vs.duration * tb)
    tag = vs.metadata.get("DURATION") or vs.metadata.get("duration")
    try:
        h, m, sec = tag.split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except (AttributeError, ValueError):
        return None


class FileSource:
    """Decode the first video stream of a file (threaded decoding).

    Undecodable packets are skipped and counted in :attr:`skipped`; a stream that breaks
    off (truncated file) ends early with a warning. Missing timestamps are filled from the
    frame rate; non-increasing ones are bumped so the output's are strictly increasing.

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
        fps = vs.average_rate or vs.guessed_rate or vs.base_rate or Fraction(30)
        if self._container.format.flags & av.format.Flags.no_timestamps.value and cc.framerate:
            fps = cc.framerate  # e.g. the SPS timing of a raw .h264 file
        tb = vs.time_base or Fraction(1, 90000)
        duration = _stream_duration(vs, tb)
        self._start = int(vs.start_time or 0)
        self.skipped = 0
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
        tb = self.info.time_base
        step = max(1, round(1 / (self.info.fps * tb))) if self.info.fps else 1
        last_pts: int | None = None
        self._max_gap = step
        self._regular = 0  # gaps of one nominal frame: most of them in constant-rate video
        for vf in self._decoded():
            pts = vf.pts
            if pts is None:
                pts = 0 if last_pts is None else last_pts + step
            elif last_pts is not None and pts <= last_pts:
                pts = last_pts + 1
            if last_pts is not None:
                self._max_gap = max(self._max_gap, pts - last_pts)
                self._regular += abs(pts - last_pts - step) <= step // 10
            last_pts = pts
            rot = int(getattr(vf, "rotation", 0) or 0) % 360
            fmt = pixels.I420 if self._i420 and not rot and _is_i420(vf) else pixels.RGB
            try:
                image = vf.to_ndarray(format=fmt)
            except (av.FFmpegError, ValueError) as e:
                self.skipped += 1
                log.debug("skipping unconvertible frame: %s", first_line(e))
                continue
            if rot:
                image = np.ascontiguousarray(np.rot90(image, k=rot // 90))
            self._rotation = rot
            yield Frame(self._next_index, image, int(pts), float(pts * tb), fmt)
            self._next_index += 1
        if self._next_index == 0:
            raise InputError(f"no decodable video frame in {self.path}")
        if self.skipped:
            log.warning("%s: %d undecodable packets/frames skipped", self.path, self.skipped)
        self._check_complete(last_pts)

    def _check_complete(self, last_pts: int | None) -> None:
        """Warn when fewer frames came out than the container announced (truncation)."""
        info, got = self.info, self._next_index
        if info.frames and got < info.frames:
            log.warning("%s: %d of %d frames decoded (truncated or damaged input?)",
                        self.path, got, info.frames)
        elif not info.frames and info.duration and last_pts is not None:
            end = float((last_pts - self._start) * info.time_base)
            # the rate's own period: a whole number of ticks is not one (1/30 s in ms)
            expected = info.duration * float(info.fps)
            if end + 1.5 * float(self._max_gap * info.time_base) < info.duration:
                log.warning("%s: video ends at %.2f s of %.2f s (truncated input?)",
                            self.path, end, info.duration)
            elif self._regular >= 0.8 * (got - 1) and got < expected - 0.5:
                log.warning("%s: %d of %d frames decoded (truncated or damaged input?)",
                            self.path, got, round(expected))

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
