"""Audio: the input's audio streams copied packet by packet into the output as the video
advances (no decoding), or re-encoded where the output container refuses the codec.

Re-encoding (AAC; Opus for WebM; MP3 for AVI) decodes, converts with PyAV's
:class:`av.AudioResampler` to what the encoder takes (a named channel layout for the
input's channel count, a sample rate the encoder supports, its sample format) and keeps
the input's timing: frames are timed by their sample count from the input's first
timestamp (a late start stays late) and follow the input's timestamps where those jump
ahead: a gap is filled with silence, so the audio after it stays where it was (an
encoder with a lapped transform cannot leave a hole without shifting what follows).
Frames that overlap what was already encoded are dropped. AVI stores no timestamps at
all, so there a late start is kept as leading silence (audio that starts late is
re-encoded even where AVI could take its codec).
"""
from __future__ import annotations

import logging
from fractions import Fraction

import av

from ..errors import OutputError, first_line

log = logging.getLogger(__name__)

# Audio codecs each output container takes as they are (otherwise: re-encode).
_AUDIO_COPY = {
    "mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le", "pcm_f32le"},
    "matroska": None,  # None: anything the muxer takes
    "webm": {"opus", "vorbis"},
    "avi": {"mp3", "mp2", "ac3", "aac", "pcm_s16le", "pcm_s24le", "pcm_u8"},
}
# The audio encoder each container re-encodes to (the first one this FFmpeg has).
_AUDIO_REENCODE = {"webm": ("libopus", "opus"), "avi": ("libmp3lame", "ac3")}
_DEFAULT_REENCODE = ("aac",)
# FFmpeg's default layout for a channel count (the encoders refuse unnamed ones, such as
# the "2 channels" of PCM in AVI or Matroska).
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1",
            8: "7.1"}
#: Timestamps within this of where the samples so far end count as contiguous.
_JITTER = 0.005


def audio_streams(container: av.container.InputContainer) -> list[av.audio.AudioStream]:
    """The audio streams FFmpeg can read (a stream of unknown codec is dropped)."""
    streams = []
    for s in container.streams.audio:
        if s.codec_context is None:
            log.warning("audio stream %d has an unknown codec; dropped", s.index)
        else:
            streams.append(s)
    return streams


def _encoder(fmt: str) -> av.codec.Codec:
    names = _AUDIO_REENCODE.get(fmt, _DEFAULT_REENCODE)
    for name in names:
        try:
            return av.codec.Codec(name, "w")
        except (av.FFmpegError, ValueError):
            continue
    raise OutputError(f"no audio encoder for {fmt} output ({', '.join(names)}); "
                      "use --no-audio")


def _rate(codec: av.codec.Codec, rate: int) -> int:
    """``rate``, or the nearest rate above it that ``codec`` supports (else its highest)."""
    rates = codec.audio_rates
    if not rates or rate in rates:
        return rate
    higher = [r for r in rates if r >= rate]
    return min(higher) if higher else max(rates)


def _sample_format(codec: av.codec.Codec, have: str) -> str | None:
    """The input's sample format if ``codec`` takes it, else a float one, else its first."""
    formats = [f.name for f in codec.audio_formats or []]
    if not formats or have in formats:
        return have if formats else None
    floats = [f for f in formats if f.startswith("flt")]
    return (floats or formats)[0]


def _layouts(layout: av.AudioLayout) -> list[str]:
    """Layouts to try, best first: the input's if it has a name, the default one for its
    channel count, stereo."""
    n = layout.nb_channels
    tries = [] if "channels" in layout.name else [layout.name]
    tries += [_LAYOUTS.get(n, "stereo"), "stereo"]
    return list(dict.fromkeys(tries))


def _silence(like: av.AudioFrame, samples: int, pts: int) -> av.AudioFrame:
    """``samples`` samples of silence in the format, layout and rate of ``like``, at
    ``pts`` (in 1/rate)."""
    frame = av.AudioFrame(format=like.format.name, layout=like.layout.name,
                          samples=samples)
    zero = b"\x80" if like.format.name.startswith("u8") else b"\x00"  # unsigned: 128
    for plane in frame.planes:
        plane.update(zero * plane.buffer_size)
    frame.sample_rate, frame.pts = like.sample_rate, pts
    frame.time_base = Fraction(1, like.sample_rate)
    return frame


class _Reencoder:
    """One re-encoded stream: decoded frames → resampler → encoder, with timestamps that
    follow the sample count and the input's jumps."""

    def __init__(self, ins: av.audio.AudioStream, out: av.container.OutputContainer,
                 fmt: str, lead_in: bool = False) -> None:
        codec = _encoder(fmt)
        self._lead_in = lead_in  # silence from 0 s to the first sample (AVI)
        icc = ins.codec_context
        rate = _rate(codec, icc.sample_rate or 48000)
        sample_fmt = _sample_format(codec, icc.format.name if icc.format else "fltp")
        error: Exception | None = None
        for layout in _layouts(icc.layout):
            try:  # a trial encoder first: a stream once added cannot be taken back
                trial = av.codec.CodecContext.create(codec, "w")
                trial.sample_rate, trial.layout = rate, layout
                if sample_fmt:
                    trial.format = sample_fmt
                trial.open()
                break
            except (av.FFmpegError, ValueError) as e:
                error = e
                log.debug("%s refuses layout %s: %s", codec.name, layout, first_line(e))
        else:
            raise OutputError(f"cannot re-encode audio {icc.name} to {codec.name} for "
                              f"{fmt}: {first_line(error)}; use --no-audio")
        stream = out.add_stream(codec.name, rate=rate, layout=layout)
        if sample_fmt:
            stream.codec_context.format = sample_fmt
        self.stream = stream
        cc = stream.codec_context
        self._resampler: av.AudioResampler | None = None
        self._target = (cc.format.name, cc.layout.name, cc.sample_rate)
        self._source: tuple | None = None
        self._next: Fraction | None = None  # where the samples so far end (seconds)
        start = ins.start_time  # for a first frame without a timestamp
        self._start = Fraction(start * ins.time_base) if start is not None and \
            ins.time_base else Fraction(0)
        self.dropped = 0
        self.describe = (f"{icc.name} {icc.sample_rate} Hz {icc.layout.name} → "
                         f"{codec.name} {cc.sample_rate} Hz {cc.layout.name}")

    def encode(self, frame: av.AudioFrame | None) -> list[av.Packet]:
        """Packets for one decoded frame (None: flush everything)."""
        if frame is None:
            frames = self._resampler.resample(None) if self._resampler else []
            self._resampler = None
            return self._encode(frames + [None])
        rate = frame.sample_rate
        t = Fraction(frame.pts * frame.time_base) if frame.pts is not None and \
            frame.time_base else None
        expect = self._next if self._next is not None else self._start
        if t is None or (self._next is not None and abs(t - expect) <= _JITTER):
            t = expect  # contiguous (or untimed): timed by the samples so far
        elif self._next is not None and t < expect:
            self.dropped += 1  # overlaps what was already encoded (damaged input)
            log.debug("dropping audio frame at %.3f s (samples so far end at %.3f s)",
                      float(t), float(expect))
            return []
        pts = round(t * rate)
        packets = []
        source = (frame.format.name, frame.layout.name, rate)
        if source != self._source:  # first frame, or the input changed mid-stream
            if self._resampler is not None:
                packets += self._encode(self._resampler.resample(None))
            fmt, layout, out_rate = self._target
            self._resampler = av.AudioResampler(format=fmt, layout=layout, rate=out_rate)
            self._source = source
        if self._next is None and self._lead_in and t > _JITTER:
            self._next = expect = Fraction(0)
        if self._next is not None and t > expect:
            # a gap: filled with silence, as a lapped-transform encoder (AAC, Opus, MP3)
            # cannot leave a hole in its output without moving the audio after it
            at = round(expect * rate)
            while at < pts:
                n = min(pts - at, rate)
                packets += self._encode(self._resampler.resample(
                    _silence(frame, n, at)))
                at += n
        self._next = Fraction(pts + frame.samples, rate)
        frame.pts, frame.time_base = pts, Fraction(1, rate)
        return packets + self._encode(self._resampler.resample(frame))

    def _encode(self, frames: list) -> list[av.Packet]:
        return [p for f in frames for p in self.stream.encode(f)]


class AudioRemuxer:
    """Copies the audio packets of ``path`` into ``out`` as the video advances, or
    re-encodes them (see the module's docstring) where the container refuses the codec."""

    def __init__(self, path: str, out: av.container.OutputContainer, fmt: str) -> None:
        self._in = av.open(path, "r")
        self._pairs: dict[int, tuple[av.stream.Stream, _Reencoder | None]] = {}
        try:
            allowed = _AUDIO_COPY.get(fmt, None)
            supported = out.supported_codecs
            usable = audio_streams(self._in)
            for ins in usable:
                name = ins.codec_context.name
                start = float(ins.start_time * ins.time_base) \
                    if ins.start_time is not None and ins.time_base else 0.0
                # AVI has no timestamps: audio that starts late needs leading silence
                late = fmt == "avi" and start > _JITTER
                if (allowed is None or name in allowed) and name in supported and \
                        not late:
                    outs = out.add_stream_from_template(ins)
                    self._pairs[ins.index] = (outs, None)
                else:
                    enc = _Reencoder(ins, out, fmt, lead_in=fmt == "avi")
                    self._pairs[ins.index] = (enc.stream, enc)
                    log.info("audio %s cannot go into %s as is; re-encoding (%s)", name,
                             fmt, enc.describe)
        except BaseException:
            self._in.close()
            raise
        self._out = out
        self._packets = self._in.demux(usable)
        self._pending: av.Packet | None = None
        self._ended = self._flushed = False
        self._last_dts: dict[int, int] = {}
        # AVI: audio that starts before 0 (AAC's priming packet at -1024) would make the
        # muxer shift the video by part of a frame; it is moved to start at 0 instead
        self._shift: dict[int, int] | None = {} if fmt == "avi" else None
        self.dropped = 0

    def mux_until(self, t: float) -> None:
        """Mux every audio packet that starts before ``t`` seconds."""
        while not self._ended:
            pkt = self._pending or self._next()
            if pkt is None:
                break
            if pkt.pts is not None and pkt.time_base is not None and \
                    float(pkt.pts * pkt.time_base) > t:
                self._pending = pkt
                return
            self._pending = None
            self._mux(pkt)
        if self._ended and not self._flushed:
            self._flushed = True
            for outs, enc in self._pairs.values():
                if enc is not None:  # drain the re-encoders
                    for p in self._reencode(enc, None):
                        self._put(p, outs)

    def _next(self) -> av.Packet | None:
        try:
            pkt = next(self._packets)
        except StopIteration:
            self._ended = True
            return None
        except av.FFmpegError as e:
            log.warning("audio stream broke off: %s", first_line(e))
            self._ended = True
            return None
        return pkt

    def _mux(self, pkt: av.Packet) -> None:
        outs, enc = self._pairs[pkt.stream.index]
        if enc is None:
            if pkt.dts is not None:  # None: the demuxer's flush packet
                self._put(pkt, outs)
            return
        try:
            frames = pkt.decode()
        except av.FFmpegError as e:
            log.debug("skipping undecodable audio packet: %s", first_line(e))
            return
        for frame in frames:
            for p in self._reencode(enc, frame):
                self._put(p, outs)

    @staticmethod
    def _reencode(enc: _Reencoder, frame: av.AudioFrame | None) -> list[av.Packet]:
        try:
            return enc.encode(frame)
        except (av.FFmpegError, ValueError) as e:
            raise OutputError(f"cannot re-encode the audio ({enc.describe}): "
                              f"{first_line(e)}; use --no-audio") from None

    def _put(self, pkt: av.Packet, outs: av.stream.Stream) -> None:
        """Mux ``pkt`` into ``outs``, dropping what the muxer would refuse."""
        if self._shift is not None:
            first = min((t for t in (pkt.pts, pkt.dts) if t is not None), default=0)
            shift = self._shift.setdefault(outs.index, max(0, -first))
            if shift:
                pkt.pts = None if pkt.pts is None else pkt.pts + shift
                pkt.dts = None if pkt.dts is None else pkt.dts + shift
        last = self._last_dts.get(outs.index)
        if pkt.dts is not None and last is not None and pkt.dts <= last:
            self.dropped += 1  # damaged input: muxers need increasing timestamps
            log.debug("dropping audio packet with non-increasing dts %d", pkt.dts)
            return
        if pkt.dts is not None:
            self._last_dts[outs.index] = pkt.dts
        pkt.stream = outs
        try:
            self._out.mux(pkt)
        except (av.error.ArgumentError, av.error.InvalidDataError) as e:
            self.dropped += 1  # a damaged packet the muxer refuses
            log.debug("dropping audio packet: %s", first_line(e))

    def close(self) -> None:
        dropped = self.dropped + sum(enc.dropped for _, enc in self._pairs.values()
                                     if enc is not None)
        if dropped:
            log.warning("%d damaged audio packets dropped", dropped)
        self._in.close()
