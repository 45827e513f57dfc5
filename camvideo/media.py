"""PyAV sources and sinks: decode frames with their timestamps, encode them back with the
input's timing, remux (or, where the container refuses the codec, re-encode) the audio.

Every source has one shape: ``open`` in the constructor (raising :class:`InputError`),
iteration yields :class:`Frame` objects until the end, ``close()`` releases it.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from .audio import AudioRemuxer, audio_streams
from .encoding import encoder_options
from .errors import InputError, OptionError, OutputError, first_line

log = logging.getLogger(__name__)

_NOT_VIDEO = {"tty"}
_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska",
            ".webm": "webm", ".avi": "avi"}


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position in the output.
        image: ``(H, W, 3)`` uint8 RGB, rotation metadata already applied.
        pts: presentation timestamp in ``time_base`` units (strictly increasing).
        time: presentation time in seconds.
    """

    index: int
    image: np.ndarray
    pts: int
    time: float


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know of an input video.

    ``width``/``height`` are the displayed size (after rotation); ``frames`` is the
    container's count (may be 0 when unknown); ``fps`` the average rate.
    """

    path: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: int
    duration: float | None
    rotation: int
    codec: str
    audio_streams: int


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

    Raises:
        InputError: missing, unreadable, not a video, or no decodable frame.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 0) -> None:
        self.path = str(path)
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
        tb = vs.time_base or Fraction(1, 90000)
        duration = _stream_duration(vs, tb)
        self._start = int(vs.start_time or 0)
        self.skipped = 0
        self._rotation = 0
        self._next_index = 0
        self._closed = False
        self.info = VideoInfo(path=self.path, width=cc.width, height=cc.height,
                              fps=Fraction(fps), time_base=Fraction(tb),
                              frames=int(vs.frames or 0), duration=duration, rotation=0,
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
        self._max_gap = self._step = step
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
            try:
                image = vf.to_ndarray(format="rgb24")
            except (av.FFmpegError, ValueError) as e:
                self.skipped += 1
                log.debug("skipping unconvertible frame: %s", first_line(e))
                continue
            rot = int(getattr(vf, "rotation", 0) or 0) % 360
            if rot:
                image = np.ascontiguousarray(np.rot90(image, k=rot // 90))
            self._rotation = rot
            yield Frame(self._next_index, image, int(pts), float(pts * tb))
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
            step = float(self._step * info.time_base)
            if end + 1.5 * float(self._max_gap * info.time_base) < info.duration:
                log.warning("%s: video ends at %.2f s of %.2f s (truncated input?)",
                            self.path, end, info.duration)
            elif self._regular >= 0.8 * (got - 1) and got < info.duration / step - 0.5:
                log.warning("%s: %d of %d frames decoded (truncated or damaged input?)",
                            self.path, got, round(info.duration / step))

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


def check_output_path(output: str | os.PathLike, inputs: list[str | os.PathLike],
                      overwrite: bool) -> Path:
    """Refuse outputs that are an input (also through links), exist without ``overwrite``,
    have no known container extension, or lie in a missing/unwritable folder."""
    out = Path(output)
    for inp in inputs:
        same = out.exists() and Path(inp).exists() and os.path.samefile(out, inp)
        if same or out.resolve() == Path(inp).resolve():
            raise OutputError(f"output {output} is the input; choose another name")
    if out.suffix.lower() not in _FORMATS:
        raise OutputError(f"unknown output container {out.suffix or '(none)'!r}; "
                          f"use one of {', '.join(sorted(_FORMATS))}")
    if out.is_dir():
        raise OutputError(f"output is a directory: {output}")
    if out.exists() and not overwrite:
        raise OutputError(f"output exists: {output} (use -y/--overwrite)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {parent}")
    return out


def _temp_path(out: Path) -> Path:
    return out.with_name(f".{out.stem}.{os.getpid()}.{threading.get_ident() % 100000}"
                         f".partial{out.suffix}")


class FileSink:
    """Encode frames to a file with the input's timing and audio.

    Writes to a hidden temporary file beside the output and renames it on :meth:`close`;
    :meth:`abort` (or any error) removes it, so a failed run leaves nothing half written.

    Args:
        output: destination path (container from its extension).
        info: the input's :class:`VideoInfo` (time base, rate).
        size: ``(W, H)`` of the frames that will be written.
        codec: video encoder name (``libx264``, ``h264_nvenc``, ``libx265``, ...).
        crf: constant rate factor (quality) for encoders that have one.
        preset: encoder speed preset (None: :data:`camvideo.encoding.DEFAULT_PRESET`).
        x264_params: extra libx264 options (see :func:`encoder_options`).
        audio_from: file whose audio streams are copied (None: no audio).
    """

    def __init__(self, output: str | os.PathLike, info: VideoInfo, size: tuple[int, int], *,
                 codec: str = "libx264", crf: int = 20, preset: str | None = None,
                 x264_params: str | None = None, audio_from: str | None = None) -> None:
        self.output = Path(output)
        self.fmt = _FORMATS[self.output.suffix.lower()]
        self.tmp = _temp_path(self.output)
        self.frames = 0
        self._done = False
        try:
            self._container = av.open(str(self.tmp), "w", format=self.fmt)
        except (av.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {output}: {first_line(e)}") from None
        try:
            self._stream = self._add_video(codec, info, size, crf, preset, x264_params)
            self._audio = AudioRemuxer(audio_from, self._container, self.fmt) \
                if audio_from and info.audio_streams else None
        except BaseException:
            self.abort()
            raise

    def _add_video(self, codec: str, info: VideoInfo, size: tuple[int, int], crf: int,
                   preset: str | None, x264_params: str | None
                   ) -> av.video.stream.VideoStream:
        w, h = size
        try:
            av.codec.Codec(codec, "w")
        except (av.FFmpegError, ValueError):
            raise OptionError(f"unknown video encoder {codec!r}") from None
        rate = info.fps if info.fps and info.fps > 0 else Fraction(30)
        for attempt in (codec, "libx264"):
            stream = self._container.add_stream(attempt, rate=rate)
            formats = {f.name for f in (stream.codec_context.codec.video_formats or [])}
            odd = w % 2 or h % 2
            pix = "yuv420p" if "yuv420p" in formats or not formats else sorted(formats)[0]
            if odd and "yuv444p" in formats:
                pix = "yuv444p"  # 4:2:0 needs even sizes; 4:4:4 keeps the input's size
            elif odd:
                raise OptionError(f"encoder {attempt} cannot encode the odd size {w}x{h}")
            stream.width, stream.height, stream.pix_fmt = w, h, pix
            stream.time_base = info.time_base
            stream.codec_context.time_base = info.time_base
            stream.codec_context.thread_type = "FRAME"
            stream.codec_context.options = encoder_options(attempt, crf, preset, x264_params)
            try:
                stream.codec_context.open()
                return stream
            except av.FFmpegError as e:
                if attempt == "libx264":
                    raise OutputError(f"cannot open encoder {attempt}: {first_line(e)}"
                                      ) from None
                log.warning("encoder %s unavailable (%s); falling back to libx264",
                            attempt, first_line(e))
                self._container.close()
                self._container = av.open(str(self.tmp), "w", format=self.fmt)
        raise AssertionError("unreachable")

    def write(self, image: np.ndarray, pts: int, time: float) -> None:
        """Encode one ``(H, W, 3)`` uint8 RGB frame at ``pts`` (input time base)."""
        if self._audio is not None:
            self._audio.mux_until(time)
        if self._stream.pix_fmt == "yuv420p" and image.shape[0] % 2 == 0 \
                and image.shape[1] % 2 == 0:
            # RGB → YUV 4:2:0 (BT.601, limited range, like swscale's default) with OpenCV:
            # ~10x cheaper than letting the encoder call swscale (benchmarks/README.md)
            import cv2

            vf = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_RGB2YUV_I420),
                                            format="yuv420p")
        else:
            vf = av.VideoFrame.from_ndarray(image, format="rgb24")
        vf.pts = pts
        vf.time_base = self._stream.codec_context.time_base
        try:
            for packet in self._stream.encode(vf):
                self._container.mux(packet)
        except (av.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.output}: {first_line(e)}") from None
        self.frames += 1

    def close(self) -> None:
        """Flush, finish the audio, close and rename into place."""
        if self._done:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                self._audio.mux_until(float("inf"))
            self._container.close()
        except (av.FFmpegError, OSError) as e:
            self.abort()
            raise OutputError(f"cannot write {self.output}: {first_line(e)}") from None
        except BaseException:
            self.abort()
            raise
        self._done = True
        if self._audio is not None:
            self._audio.close()
        os.replace(self.tmp, self.output)
        log.info("wrote %s (%d frames)", self.output, self.frames)

    def abort(self) -> None:
        """Discard everything written so far."""
        self._done = True
        for closer in (getattr(self, "_container", None),
                       getattr(self, "_audio", None)):
            try:
                if closer is not None:
                    closer.close()
            except Exception:  # noqa: BLE001 - already failing; just clean up
                pass
        self.tmp.unlink(missing_ok=True)
