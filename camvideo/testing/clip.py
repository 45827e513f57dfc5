"""Writing synthetic clips: :func:`write_clip` and the :class:`Clip` it returns.

:func:`write_clip` encodes RGB frames (any iterable, e.g. a
:class:`camvideo.testing.synth.FrameSequence`) with PyAV at constant or variable frame rate, with
an optional tone track and display-rotation metadata. The :class:`Clip` records what was
written (exact frame times, object boxes, cut indices, audio) so tests can compare a
decode against it (:func:`decoded_times` reads a file's frame times back). The frames
themselves come from :mod:`camvideo.testing.synth`.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]
"""``(x0, y0, x1, y1)`` in pixels, half-open: ``x0 <= x < x1``, ``y0 <= y < y1``."""


@dataclass
class Clip:
    """What :func:`write_clip` wrote: the ground truth tests compare a decode against."""

    path: Path
    frames: int
    fps: float                                  #: nominal frames per second
    size: tuple[int, int]                       #: (W, H)
    times: list[float]                          #: presentation time of every frame, s
    boxes: list[Box | None] = field(default_factory=list)  #: object box per frame, or None
    cuts: list[int] = field(default_factory=lambda: [0])   #: indices that start a shot
    #: several objects' boxes per frame (multi-object clips: ``[[box, box], ...]``)
    objects: list[list[Box | None]] = field(default_factory=list)
    has_audio: bool = False
    audio_seconds: float = 0.0
    rotation: int | None = None                 #: display rotation, degrees CCW

    @property
    def duration(self) -> float:
        """Seconds from the first frame's time to the end of the last frame."""
        last = self.times[-1] - self.times[-2] if len(self.times) > 1 else 1 / self.fps
        return self.times[-1] + last - self.times[0]


def decoded_times(path: str | Path) -> list[float]:
    """Presentation times (s) of every decoded frame of a file's first video stream, as
    FFmpeg gives them: what a test compares with :attr:`Clip.times`."""
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


_MATROSKA = {".mkv", ".webm"}


def _tone(start: int, count: int, rate: int) -> av.AudioFrame:
    """Quiet stereo tone: 440 Hz left, 660 Hz right, amplitude 0.1, planar float."""
    t = (start + np.arange(count)) / rate
    data = 0.1 * np.sin(2 * np.pi * np.array([[440.0], [660.0]]) * t)
    frame = av.AudioFrame.from_ndarray(data.astype(np.float32), format="fltp", layout="stereo")
    frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
    return frame


def _video_stream(container, codec: str, rate: Fraction, tb: Fraction,
                  size: tuple[int, int], pix_fmt: str | None, crf: int, preset: str,
                  gop: int | None, rotation: int | None):
    """Add and configure the video stream (before its first frame is encoded)."""
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = size
    odd = size[0] % 2 or size[1] % 2
    stream.pix_fmt = pix_fmt or ("yuv444p" if odd and codec == "libx264" else "yuv420p")
    stream.codec_context.time_base = stream.time_base = tb
    opts = {"crf": str(crf)}
    if codec == "libx264":
        opts["preset"] = preset
    elif "vpx" in codec:
        opts.update({"b": "0", "deadline": "realtime", "cpu-used": "8"})
    stream.options = opts
    if gop:
        stream.codec_context.gop_size = gop
    if rotation is not None:
        stream.set_display_rotation(rotation)
    return stream


def write_clip(path: str | Path, frames: Iterable[np.ndarray], *, fps: float = 30.0,
               times: Sequence[float] | None = None, codec: str | None = None, crf: int = 18,
               pix_fmt: str | None = None, audio: float | bool = 0.0,
               audio_codec: str | None = None, rotation: int | None = None,
               gop: int | None = None, preset: str = "veryfast",
               boxes: Sequence[Box | None] | None = None,
               cuts: Sequence[int] | None = None) -> Clip:
    """Encode RGB frames to a video file with PyAV, with exact timestamps.

    The container follows the extension (``.mp4``, ``.mov``, ``.mkv``: H.264 + AAC;
    ``.webm``: VP9 + Opus). Constant rate uses time base ``1/fps`` and ``pts = i``; with
    ``times`` (variable rate) the time base is 1/90000 (1/1000 for Matroska/WebM, which
    store milliseconds) and every ``frame.pts`` is set from ``times``.

    Args:
        path: output file; its extension picks the container.
        frames: ``(H, W, 3) uint8`` RGB frames, all the same size.
        fps: nominal frame rate (the rate itself without ``times``).
        times: presentation time in seconds of every frame, strictly increasing.
        codec: video encoder; default ``libx264`` (``libvpx-vp9`` for ``.webm``).
        crf: constant rate factor (quality; lower is better).
        pix_fmt: default ``yuv420p``, or ``yuv444p`` when libx264 gets an odd size.
        audio: seconds of tone track (0: none; ``True``: as long as the video).
        audio_codec: default ``aac`` (``libopus`` for ``.webm``); 48 kHz stereo.
        rotation: display-matrix rotation in degrees counter-clockwise (what
            ``VideoFrame.rotation`` reads back), written as stream side data.
        gop: maximum keyframe interval in frames (encoder default if None).
        preset: libx264 speed preset.
        boxes, cuts: ground truth to record in the returned :class:`Clip`.

    Returns:
        The :class:`Clip` written, ``times`` rounded to the stream's time base.
    """
    path = Path(path)
    webm = path.suffix.lower() == ".webm"
    codec = codec or ("libvpx-vp9" if webm else "libx264")
    audio_codec = audio_codec or ("libopus" if webm else "aac")
    rate = Fraction(fps).limit_denominator(1001)
    if times is not None:
        tb = Fraction(1, 1000 if path.suffix.lower() in _MATROSKA else 90000)
        pts = [round(t / tb) for t in times]
        if any(b <= a for a, b in zip(pts, pts[1:])):
            raise ValueError("times must be strictly increasing (after rounding to "
                             f"{tb} s)")
    else:
        tb, pts = 1 / rate, None
    sample_rate, written = 48000, 0
    want = None if audio is True else round(float(audio) * sample_rate)  # None: video's
    container = av.open(str(path), "w")
    ok, stream, astream, n, size = False, None, None, 0, (0, 0)
    try:
        for frame in frames:
            if stream is None:
                size = (frame.shape[1], frame.shape[0])
                stream = _video_stream(container, codec, rate, tb, size, pix_fmt, crf,
                                       preset, gop, rotation)
                if audio:
                    astream = container.add_stream(audio_codec, rate=sample_rate,
                                                   layout="stereo")
            if frame.shape != (size[1], size[0], 3) or frame.dtype != np.uint8:
                raise ValueError(f"frame {n}: expected {(size[1], size[0], 3)} uint8, "
                                 f"got {frame.shape} {frame.dtype}")
            if pts is not None and n >= len(pts):
                raise ValueError(f"more frames than the {len(pts)} times given")
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts, vf.time_base = (pts[n] if pts is not None else n), tb
            container.mux(stream.encode(vf))
            n += 1
            if astream is not None:  # interleave: tone up to this frame's time
                upto = round(float((vf.pts + 1) * tb) * sample_rate)
                upto = upto if want is None else min(upto, want)
                while written + 1024 <= upto:
                    container.mux(astream.encode(_tone(written, 1024, sample_rate)))
                    written += 1024
        if stream is None:
            raise ValueError("no frames to write")
        if pts is not None and len(pts) != n:
            raise ValueError(f"got {len(pts)} times for only {n} frames")
        container.mux(stream.encode(None))
        clip = Clip(path=path, frames=n, fps=float(rate), size=size,
                    times=[float(p * tb) for p in (pts or range(n))],
                    boxes=list(boxes) if boxes is not None else [None] * n,
                    cuts=list(cuts) if cuts is not None else [0], rotation=rotation)
        if astream is not None:
            total = round(clip.duration * sample_rate) if want is None else want
            while written < total:
                k = min(1024, total - written)
                container.mux(astream.encode(_tone(written, k, sample_rate)))
                written += k
            container.mux(astream.encode(None))
            clip.has_audio, clip.audio_seconds = True, total / sample_rate
        ok = True
    finally:
        container.close()
        if not ok:
            path.unlink(missing_ok=True)
    logger.debug("wrote %s: %d frames %dx%d, %s, audio %.2fs", path, n, *size,
                 "VFR" if times is not None else f"{float(rate):g} fps", clip.audio_seconds)
    return clip


def _vop_type(data: bytes) -> str:
    """``I``, ``P``, ``B`` or ``S``: the coding type of the first MPEG-4 Part 2 VOP."""
    i = data.find(b"\x00\x00\x01\xb6")
    return "IPBS"[data[i + 4] >> 6] if i >= 0 else "?"


def _nvop(fps: int) -> bytes:
    """A not-coded P-VOP (an "N-VOP", the placeholder chunk of packed B-frames) for the
    time increment resolution ``fps``: start code, then the bits ``01`` (P), ``0`` (no
    modulo time base), marker, the time increment, marker, ``0`` (not coded), stuffing."""
    width = max(1, (fps - 1).bit_length())
    bits = "01" + "0" + "1" + "0" * width + "1" + "0"
    bits += "0" + "1" * ((-len(bits) - 1) % 8)
    return b"\x00\x00\x01\xb6" + int(bits, 2).to_bytes(len(bits) // 8, "big")


def write_bframes_avi(path: str | Path, frames: Iterable[np.ndarray], *, fps: int = 24,
                      packed: bool = True) -> Clip:
    """MPEG-4 Part 2 with B-frames in AVI, as DivX and Xvid wrote it: with ``packed``,
    "packed B-frames" (each P-frame and the B-frame shown before it in one chunk, an
    N-VOP chunk in the P-frame's own slot, and the ``DivX503b1393p`` user data that tells
    decoders so); without, one frame per chunk in decoding order (as FFmpeg writes it).

    AVI stores no presentation times: FFmpeg reads such a file one frame late (the
    decoder's delay, which AVI cannot signal), the times the returned :class:`Clip`
    records (``(i + 1) / fps``). Decoding a packed file, FFmpeg's own timestamps come out
    swapped in pairs (1, 3, 2, 5, 4, ...) while the pictures come in order.

    Args:
        path: the ``.avi`` to write.
        frames: ``(H, W, 3)`` uint8 RGB frames of even size.
        fps: whole frames per second.
        packed: pack the B-frames.
    """
    path = Path(path)
    chunks: list[bytes] = []
    size = (0, 0)
    codec = av.CodecContext.create("mpeg4", "w")
    n = 0
    for frame in frames:
        if n == 0:
            size = (frame.shape[1], frame.shape[0])
            codec.width, codec.height, codec.pix_fmt = size[0], size[1], "yuv420p"
            codec.time_base, codec.framerate = Fraction(1, fps), Fraction(fps)
            codec.max_b_frames, codec.gop_size = 1, 12
            codec.open()
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = n
        chunks += [bytes(p) for p in codec.encode(vf.reformat(format="yuv420p"))]
        n += 1
    if n == 0:
        raise ValueError("no frames to write")
    chunks += [bytes(p) for p in codec.encode(None)]
    if packed:
        out, i = [], 0
        while i < len(chunks):
            if _vop_type(chunks[i]) in "IP" and i + 1 < len(chunks) and \
                    _vop_type(chunks[i + 1]) == "B":
                out += [chunks[i] + chunks[i + 1], _nvop(fps)]
                i += 2
            else:
                out.append(chunks[i])
                i += 1
        first = out[0].find(b"\x00\x00\x01\xb6")
        out[0] = out[0][:first] + b"\x00\x00\x01\xb2DivX503b1393p" + out[0][first:]
        chunks = out
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.codec_context.time_base = stream.time_base = Fraction(1, fps)
        for k, data in enumerate(chunks):
            packet = av.Packet(data)
            packet.pts = packet.dts = k
            packet.time_base = Fraction(1, fps)
            packet.is_keyframe = _vop_type(data) == "I"
            packet.stream = stream
            container.mux(packet)
    return Clip(path=path, frames=n, fps=float(fps), size=size,
                times=[(i + 1) / fps for i in range(n)], boxes=[None] * n)
