"""Audio: the input's audio streams copied packet by packet into the output as the video
advances (no decoding), or re-encoded where the output container refuses the codec."""
from __future__ import annotations

import logging

import av

from .errors import first_line

log = logging.getLogger(__name__)

# Audio codecs each output container takes as they are (otherwise: re-encode).
_AUDIO_COPY = {
    "mp4": {"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"},
    "mov": {"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le", "pcm_f32le"},
    "matroska": None,  # None: anything
    "webm": {"opus", "vorbis"},
}
_AUDIO_REENCODE = {"webm": "libopus"}


def audio_streams(container: av.container.InputContainer) -> list[av.audio.AudioStream]:
    """The audio streams FFmpeg can read (a stream of unknown codec is dropped)."""
    streams = []
    for s in container.streams.audio:
        if s.codec_context is None:
            log.warning("audio stream %d has an unknown codec; dropped", s.index)
        else:
            streams.append(s)
    return streams


class AudioRemuxer:
    """Copies the audio packets of ``path`` into ``out`` as the video advances, or
    re-encodes them (AAC, or Opus for WebM) where the container refuses the codec."""

    def __init__(self, path: str, out: av.container.OutputContainer, fmt: str) -> None:
        self._in = av.open(path, "r")
        self._pairs: dict[int, tuple[av.stream.Stream, bool]] = {}
        allowed = _AUDIO_COPY.get(fmt, None)
        usable = audio_streams(self._in)
        for ins in usable:
            name = ins.codec_context.name
            if allowed is None or name in allowed:
                outs = out.add_stream_from_template(ins)
                self._pairs[ins.index] = (outs, True)
            else:
                enc = _AUDIO_REENCODE.get(fmt, "aac")
                rate = ins.codec_context.sample_rate or 48000
                outs = out.add_stream(enc, rate=rate, layout=ins.codec_context.layout)
                self._pairs[ins.index] = (outs, False)
                log.info("audio %s cannot go into %s as is; re-encoding to %s", name, fmt,
                         enc)
        self._out = out
        self._packets = self._in.demux(usable)
        self._pending: av.Packet | None = None
        self._ended = self._flushed = False
        self._last_dts: dict[int, int] = {}
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
            for outs, copy in self._pairs.values():
                if not copy:  # drain the re-encoders
                    for p in outs.encode(None):
                        self._out.mux(p)

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
        outs, copy = self._pairs[pkt.stream.index]
        if copy:
            if pkt.dts is None:
                return  # demuxer's flush packet
            last = self._last_dts.get(pkt.stream.index)
            if last is not None and pkt.dts <= last:
                self.dropped += 1  # damaged input: muxers need increasing timestamps
                log.debug("dropping audio packet with non-increasing dts %d", pkt.dts)
                return
            self._last_dts[pkt.stream.index] = pkt.dts
            pkt.stream = outs
            try:
                self._out.mux(pkt)
            except (av.error.ArgumentError, av.error.InvalidDataError) as e:
                self.dropped += 1  # a damaged packet the muxer refuses
                log.debug("dropping audio packet: %s", first_line(e))
            return
        try:
            for frame in pkt.decode():
                frame.pts = None
                for p in outs.encode(frame):
                    self._out.mux(p)
        except av.FFmpegError as e:
            log.debug("skipping undecodable audio packet: %s", first_line(e))

    def close(self) -> None:
        if self.dropped:
            log.warning("%d damaged audio packets dropped", self.dropped)
        self._in.close()
