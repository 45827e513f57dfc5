"""The PyAV sink: encode frames to a file with the input's timing, remux (or, where the
container refuses the codec, re-encode) the audio; write to a temporary file and rename
it on success.

AVI has no timestamps, only a frame rate and one index entry per frame (the first frame
is always the first entry): its video gets the time base ``1/fps``, frame times counted
from the first frame and rounded to it (a longer gap becomes empty entries; a frame that
would show more than a frame late, as variable-rate input outruns the rate, is left out
with a warning), and no B-frames. A video encoder the container cannot hold, or an audio
encoder given as ``codec``, is an :class:`~camvideo.errors.OptionError` before anything
is written.
"""
from __future__ import annotations

import io
import logging
import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .. import pixels
from .audio import AudioRemuxer, AudioSource
from .encoding import DEFAULT_CODEC, encoder_options, settings_for
from ..errors import OptionError, OutputError, first_line
from .frames import VideoInfo

log = logging.getLogger(__name__)

_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska",
            ".webm": "webm", ".avi": "avi"}
#: Video encoder of containers that cannot hold the default (:data:`DEFAULT_CODEC`).
_DEFAULT_VIDEO = {"webm": "libvpx-vp9"}


def _choose_codec(codec: str, fmt: str, suffix: str,
                  supported: set[str]) -> tuple[str, str]:
    """``(encoder, fallback)`` for a container ``fmt`` that holds ``supported`` codecs:
    ``codec`` if the container takes it; the default ``libx264`` becomes the container's
    own default (VP9 for WebM); anything else it cannot hold, or an encoder that is not a
    video encoder, is an :class:`OptionError`."""
    default = _DEFAULT_VIDEO.get(fmt, DEFAULT_CODEC)
    try:
        found = av.codec.Codec(codec, "w")
    except (av.FFmpegError, ValueError):
        raise OptionError(f"unknown video encoder {codec!r}", option="codec") from None
    if found.type != "video":
        raise OptionError(f"codec {codec} is an {found.type} encoder, not a video "
                          "encoder", option="codec")
    if found.name in supported:
        return found.name, default
    if found.name == DEFAULT_CODEC:
        log.info("%s output cannot hold %s video; encoding with %s", suffix, codec,
                 default)
        return default, default
    raise OptionError(f"codec {codec}: {suffix} files cannot hold its video; use "
                      f"{default} or another container", option="codec")


def check_video_codec(codec: str, ext: str) -> str:
    """The encoder that ``codec`` gives ``ext`` files (as :class:`FileSink` would choose
    it), checked before any file is written (batch jobs).

    Raises:
        OptionError: not a video encoder, or one the container cannot hold.
    """
    fmt = _FORMATS[ext.lower()]
    with av.open(io.BytesIO(), "w", format=fmt) as probe:
        return _choose_codec(codec, fmt, ext.lower(), probe.supported_codecs)[0]


def check_output_path(output: str | os.PathLike, inputs: list[str | os.PathLike],
                      overwrite: bool) -> Path:
    """Refuse outputs that are an input (also through links), exist without ``overwrite``,
    have no known container extension, or lie in a missing/unwritable folder."""
    out = Path(output)
    for inp in inputs:
        same = out.exists() and Path(inp).exists() and os.path.samefile(out, inp)
        if same or out.resolve() == Path(inp).resolve():
            raise OutputError(f"output {output} is the input; choose another name")
    check_writable(out, "output", hint=False)  # a positional argument, or live's option
    if out.suffix.lower() not in _FORMATS:
        raise OutputError(f"unknown output container {out.suffix or '(none)'!r}; "
                          f"use one of {', '.join(sorted(_FORMATS))}")
    if out.exists() and not overwrite:
        raise output_exists(output)
    return out


def output_exists(path: str | os.PathLike) -> OutputError:
    """The error for an output that exists without ``overwrite``."""
    return OutputError(f"output exists: {path} (use {{option}})", hint=("overwrite", True))


def check_writable(path: Path, option: str, *, hint: bool = True) -> None:
    """Refuse a file path that is a folder, or whose folder is missing or not writable.
    ``option``, the parameter that gave the path, names it in the message: as a hint
    (the command line says its flag), or with ``hint=False`` as it is."""
    h = (option, None) if hint else None
    name = "{option}" if hint else option
    if path.is_dir():
        raise OutputError(f"{name} is a directory: {path}", hint=h)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        there = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if there is not None and not there.is_dir():
            raise OutputError(f"{name} folder is {'a' if there == parent else 'under a'} "
                              f"file: {there}", hint=h)
        raise OutputError(f"{name} folder does not exist: {parent}", hint=h)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{name} folder is not writable: {parent}", hint=h)


_SOURCE_TAG = "camvideo: "  #: the ``comment`` tag of outputs: this, then the input's name


def source_comment(input: str | os.PathLike) -> str:
    """The ``comment`` tag that names the input an output was made from."""
    return _SOURCE_TAG + Path(input).name


def source_of(output: str | os.PathLike) -> str | None:
    """The input file name recorded in a camvideo output's ``comment`` tag (None: not
    one, unreadable, or written without it)."""
    try:
        with av.open(str(output)) as c:
            tag = c.metadata.get("comment") or c.metadata.get("COMMENT") or ""
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return None
    return tag[len(_SOURCE_TAG):] if tag.startswith(_SOURCE_TAG) else None


#: Encoders that failed to open in this process (NVENC without a GPU, or a data-centre
#: GPU without NVENC): later files go straight to the fallback instead of creating and
#: destroying a CUDA context each time.
_UNAVAILABLE: set[str] = set()


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
        codec: video encoder name (``libx264``, ``h264_nvenc``, ``libx265``, ...); the
            default ``libx264`` becomes ``libvpx-vp9`` for WebM. An encoder that cannot
            be opened (no GPU for NVENC) falls back to the container's default one.
        crf: constant rate factor (quality) for encoders that have one.
        preset: encoder speed preset (None: :data:`camvideo.media.encoding.DEFAULT_PRESET`).
        x264_params: extra libx264 options (see :func:`encoder_options`).
        audio_from: where the audio comes from (None: no audio): a file, whose audio
            streams go in whole; or, for a live recording, an
            :class:`~camvideo.media.audio.AudioFrom` or a live stream's
            :class:`~camvideo.media.audio.AudioFeed`, whose audio ends with the video.
        audio: ``auto``, ``copy`` or an audio encoder (see :mod:`camvideo.media.audio`).
        comment: the container's ``comment`` tag (see :func:`source_of`).

    Raises:
        OptionError: a video encoder the container cannot hold, or an ``audio`` mode
            that cannot be followed.
        OutputError: the file cannot be written.
    """

    def __init__(self, output: str | os.PathLike, info: VideoInfo, size: tuple[int, int], *,
                 codec: str = "libx264", crf: int = 20, preset: str | None = None,
                 x264_params: str | None = None, audio_from: AudioSource | None = None,
                 audio: str = "auto", comment: str | None = None) -> None:
        self.output = Path(output)
        self.fmt = _FORMATS[self.output.suffix.lower()]
        self.tmp = _temp_path(self.output)
        self.frames = 0
        self._video_packets = 0
        self.left_out = 0  #: AVI: frames that came faster than its one rate allows
        self.encoder = ""  #: the video encoder that opened
        self._done = False
        try:
            self._container = av.open(str(self.tmp), "w", format=self.fmt)
        except (av.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {output}: {first_line(e)}") from None
        try:
            self._stream = self._add_video(codec, info, size, crf, preset, x264_params)
            whole = isinstance(audio_from, (str, os.PathLike))
            self._audio = AudioRemuxer(audio_from, self._container, self.fmt, audio) \
                if audio_from and (info.audio_streams or not whole) else None
            # a live recording's audio ends with its video (one frame after the last)
            self._audio_tail = None if whole else 1 / float(info.fps or 30)
            self._last_time: float | None = None
            if comment:
                self._container.metadata["comment"] = comment
        except BaseException:
            self.abort()
            raise

    def _add_video(self, codec: str, info: VideoInfo, size: tuple[int, int], crf: int,
                   preset: str | None, x264_params: str | None
                   ) -> av.video.stream.VideoStream:
        w, h = size
        codec, default = _choose_codec(codec, self.fmt, self.output.suffix.lower(),
                                       self._container.supported_codecs)
        rate = info.fps if info.fps and info.fps > 0 else Fraction(30)
        # AVI has no timestamps, only a frame rate: its time base is one frame, and it
        # cannot reorder frames (no B-frames); the other containers keep the input's
        tb = 1 / Fraction(rate) if self.fmt == "avi" else info.time_base
        self._rescale = info.time_base / tb if self.fmt == "avi" else None
        self._first_pts: int | None = None
        self._last_pts: int | None = None
        self._rate = rate
        wanted = codec
        if codec != default and codec in _UNAVAILABLE:
            log.info("encoder %s did not open earlier in this process; using %s", codec,
                     default)
            codec = default
        for attempt in dict.fromkeys((codec, default)):
            a_preset, a_params = (preset, x264_params) if attempt == wanted else \
                settings_for(attempt, preset, x264_params)
            stream = self._container.add_stream(attempt, rate=rate)
            formats = {f.name for f in (stream.codec_context.codec.video_formats or [])}
            odd = w % 2 or h % 2
            pix = "yuv420p" if "yuv420p" in formats or not formats else sorted(formats)[0]
            if odd and "yuv444p" in formats:
                pix = "yuv444p"  # 4:2:0 needs even sizes; 4:4:4 keeps the input's size
            elif odd:
                raise OptionError(f"encoder {attempt} cannot encode the odd size {w}x{h}")
            stream.width, stream.height, stream.pix_fmt = w, h, pix
            stream.time_base = tb
            stream.codec_context.time_base = tb
            stream.codec_context.thread_type = "FRAME"
            options = encoder_options(attempt, crf, a_preset, a_params)
            if self.fmt == "avi":
                stream.codec_context.max_b_frames = 0
                if "x264-params" in options:  # x264's own options would win: last word
                    options["x264-params"] += ":bframes=0"
            stream.codec_context.options = options
            try:
                stream.codec_context.open()
                self.encoder = attempt
                if odd:
                    log.warning("%dx%d is odd, which 4:2:0 cannot hold: %s writes 4:4:4, "
                                "which browsers, QuickTime and hardware decoders do not "
                                "play", w, h, attempt)
                return stream
            except av.FFmpegError as e:
                if attempt == default:
                    raise OutputError(f"cannot open encoder {attempt}: {first_line(e)}"
                                      ) from None
                _UNAVAILABLE.add(attempt)  # not retried for the next file (a batch)
                dropped = [f"preset {preset}"] if preset and \
                    settings_for(default, preset, None)[0] is None else []
                log.warning("encoder %s unavailable (%s); falling back to %s%s",
                            attempt, first_line(e), default,
                            f" with its default {dropped[0].split()[0]}" if dropped else "")
                self._container.close()
                self._container = av.open(str(self.tmp), "w", format=self.fmt)
        raise AssertionError("unreachable")

    def write(self, image: np.ndarray, pts: int, time: float) -> None:
        """Encode one frame at ``pts`` (input time base): ``(H, W, 3)`` uint8 RGB, or
        ``(H * 3 // 2, W)`` uint8 I420 (:mod:`camvideo.pixels`; a 2-D array)."""
        if self._audio is not None:
            self._audio.mux_until(time)
        self._last_time = time
        i420 = self._stream.pix_fmt == pixels.I420
        if image.ndim == 2 and not i420:
            image = pixels.to_rgb(image)
        if image.ndim == 2:  # a copy: from_numpy_buffer gets H % 4 == 2 wrong (PyAV 18)
            vf = av.VideoFrame.from_ndarray(image, format=pixels.I420)
        elif i420 and image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0:
            # RGB → YUV 4:2:0 (BT.601, limited range, like swscale's default) with OpenCV:
            # ~10x cheaper than letting the encoder call swscale (benchmarks/README.md)
            vf = av.VideoFrame.from_ndarray(pixels.from_rgb(image), format=pixels.I420)
        else:
            vf = av.VideoFrame.from_ndarray(image, format="rgb24")
        if self._rescale is not None:  # AVI: one tick per frame, strictly increasing,
            if self._first_pts is None:  # from the first frame (the muxer puts it first)
                self._first_pts = pts
            exact = (pts - self._first_pts) * self._rescale
            pts = round(exact)
            if self._last_pts is not None and pts <= self._last_pts:
                if self._last_pts + 1 - exact > 1:  # it would show over a frame late:
                    self.left_out += 1              # frames faster than the rate
                    return
                pts = self._last_pts + 1
            self._last_pts = pts
        vf.pts = pts
        vf.time_base = self._stream.codec_context.time_base
        try:
            for packet in self._stream.encode(vf):
                self._mux_video(packet)
        except (av.FFmpegError, OSError) as e:
            raise OutputError(f"cannot write {self.output}: {first_line(e)}") from None
        self.frames += 1

    def _mux_video(self, packet: av.Packet) -> None:
        """Mux an encoded video packet. libx265 (FFmpeg 7/8) now and then gives the only
        packet of a one-frame video a garbage decoding time (such as -4.6e18), which the
        MP4 muxer refuses ('Not yet implemented', 'Invalid argument'); a first packet
        decoded after it is shown, or over a second before, gets its presentation time."""
        if self._video_packets == 0 and packet.dts is not None and packet.pts is not None \
                and packet.time_base and not 0 <= (packet.pts - packet.dts) * \
                packet.time_base <= 1:
            packet.dts = packet.pts
        self._video_packets += 1
        self._container.mux(packet)

    def close(self) -> None:
        """Flush, finish the audio, close and rename into place."""
        if self._done:
            return
        try:
            for packet in self._stream.encode(None):
                self._mux_video(packet)
            if self._audio is not None:
                until = float("inf")
                if self._audio_tail is not None:
                    until = (self._last_time or 0.0) + self._audio_tail
                self._audio.finish(until)
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
        if self.left_out:
            log.warning("%d frames left out of %s: AVI stores one frame rate (%.4g fps) "
                        "and they came faster (variable-rate input; .mp4 and .mkv keep "
                        "every frame at its time)", self.left_out, self.output.name,
                        float(self._rate))
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
