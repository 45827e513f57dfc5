"""Audio: the input's audio streams copied packet by packet into the output as the video
advances (no decoding), or re-encoded, as ``--audio`` asks (:func:`parse_audio_mode`):

- ``auto`` (the default) copies audio that the output container *plays widely*
  (:data:`PLAYS_WIDELY`: AAC, MP3 and Opus in ``.mp4``, anything in ``.mkv``) and
  re-encodes the rest to the container's usual codec (AAC; Opus for WebM; MP3 for AVI):
  AC-3 copied into ``.mp4`` is valid, but web browsers do not play it;
- ``copy`` copies whatever the container can hold (:data:`HOLDS`), else refuses;
- an encoder name (``aac``, ``opus``, ``mp3``, ``ac3``, ``flac``...) re-encodes to it.

Re-encoding decodes, converts with PyAV's :class:`av.AudioResampler` to what the encoder
takes (a named channel layout for the input's channel count, a sample rate the encoder
supports, its sample format) and keeps the input's timing: frames are timed by their
sample count from the input's first timestamp (a late start stays late) and follow the
input's timestamps where those jump ahead: a gap is filled with silence, so the audio
after it stays where it was (an encoder with a lapped transform cannot leave a hole
without shifting what follows). Frames that overlap what was already encoded are
dropped. AVI stores no timestamps at all, so there a late start is kept as leading
silence (audio that starts late is re-encoded even where AVI could take its codec).

**Live recordings** (:mod:`camvideo.media.streams`) take their audio from a file played
as a camera, moved to the recording's timeline (:class:`AudioFrom` with an ``offset``
and a ``start``), or from an :class:`AudioFeed`: the audio packets a live stream's reader
thread demuxes beside the video, each moved by the offset between the stream's clock and
the recording's capture clock that its video frames set (:meth:`AudioFeed.anchor`).
"""
from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass
from fractions import Fraction
from contextlib import nullcontext
from typing import Union

import av

from ..errors import OptionError, OutputError, first_line
from .timeline import RESTART_S, Restarts, nominal_rate

log = logging.getLogger(__name__)

#: Audio codecs each output container can hold as they are (``--audio copy``; None:
#: anything the muxer takes).
HOLDS: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"}),
    "mov": frozenset({"aac", "mp3", "alac", "ac3", "eac3", "pcm_s16le", "pcm_s24le",
                      "pcm_f32le"}),
    "matroska": None,
    "webm": frozenset({"opus", "vorbis"}),
    "avi": frozenset({"mp3", "mp2", "ac3", "aac", "pcm_s16le", "pcm_s24le", "pcm_u8"}),
}
#: Audio codecs ``--audio auto`` copies: what players of each container play widely
#: (web browsers for MP4 and WebM; QuickTime for MOV); the rest is re-encoded.
PLAYS_WIDELY: dict[str, frozenset[str] | None] = {
    "mp4": frozenset({"aac", "mp3", "opus"}),
    "mov": frozenset({"aac", "mp3", "alac", "pcm_s16le", "pcm_s24le", "pcm_f32le"}),
    "matroska": None,
    "webm": HOLDS["webm"],
    "avi": HOLDS["avi"],
}


def codec_name(stream: av.audio.AudioStream) -> str:
    """The stream's codec as containers know it (``mp3``), not its decoder's name
    (FFmpeg decodes MP3 with ``mp3float``, MP2 with ``mp2float``, AC-3 maybe with
    ``ac3_fixed``)."""
    codec = stream.codec_context.codec
    return getattr(codec, "canonical_name", None) or codec.name


#: The ``--audio`` modes besides an encoder's name.
AUDIO_MODES = ("auto", "copy")
# The audio encoder each container re-encodes to (the first one this FFmpeg has).
_AUDIO_REENCODE = {"webm": ("libopus", "opus"), "avi": ("libmp3lame", "ac3")}
_DEFAULT_REENCODE = ("aac",)
# FFmpeg's default layout for a channel count (the encoders refuse unnamed ones, such as
# the "2 channels" of PCM in AVI or Matroska).
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1",
            8: "7.1"}
#: Timestamps within this of where the samples so far end count as contiguous.
_JITTER = 0.005
# at most this many audio packets read ahead to the video's restart (about 20 s)
_READ_AHEAD = 1000


def parse_audio_mode(text: str) -> str:
    """``--audio``'s value: ``auto``, ``copy``, or an audio encoder by its name or its
    codec's (``opus`` is ``libopus``, ``mp3`` ``libmp3lame``): returns the mode or the
    encoder's name.

    Raises:
        OptionError: not a mode, not an encoder this FFmpeg has, or not an audio one.
    """
    name = (text or "").strip().lower()
    if name in AUDIO_MODES:
        return name
    try:
        codec = av.codec.Codec(name, "w")
    except (av.FFmpegError, ValueError):
        raise OptionError(f"audio_codec must be auto, copy or an audio encoder (aac, "
                          f"opus, mp3, ac3, flac...); no encoder {text!r}",
                          option="audio_codec") from None
    if codec.type != "audio":
        raise OptionError(f"audio_codec {text}: {codec.name} is a {codec.type} encoder, "
                          "not an audio one", option="audio_codec")
    if codec.experimental:
        raise OptionError(f"audio_codec {text}: FFmpeg's {codec.name} encoder is "
                          "experimental; choose another", option="audio_codec")
    return codec.name


@dataclass(frozen=True)
class AudioFrom:
    """A recording's audio from a file: the audio streams of ``path``, their times moved
    by ``offset`` seconds, from ``start`` (a time of the recording) on; None: all of it.
    A packet that ends before ``start`` is left out (a copied packet cannot be cut)."""

    path: str
    offset: float = 0.0
    start: float | None = None


def audio_streams(container: av.container.InputContainer) -> list[av.audio.AudioStream]:
    """The audio streams FFmpeg can read (a stream of unknown codec is dropped)."""
    streams = []
    for s in container.streams.audio:
        if s.codec_context is None:
            log.warning("audio stream %d has an unknown codec; dropped", s.index)
        else:
            streams.append(s)
    return streams


def _encoder(fmt: str, name: str | None = None) -> av.codec.Codec:
    """The encoder ``name``, else the container's usual one (the first this FFmpeg has)."""
    names = (name,) if name else _AUDIO_REENCODE.get(fmt, _DEFAULT_REENCODE)
    for name in names:
        try:
            return av.codec.Codec(name, "w")
        except (av.FFmpegError, ValueError):
            continue
    raise OutputError(f"no audio encoder for {fmt} output ({', '.join(names)}); "
                      "use {option}", hint=("audio", False))


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
                 fmt: str, lead_in: bool = False, encoder: str | None = None) -> None:
        codec = _encoder(fmt, encoder)
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
                              f"{fmt}: {first_line(error)}; use {{option}}",
                              hint=("audio", False))
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




class AudioFeed:
    """The audio packets of a live stream, handed from its reader thread to a recording.

    The reader calls :meth:`begin` with each (re)opened container's audio streams (an
    *epoch*), :meth:`put` for each audio packet it demuxes, and :meth:`end` before it
    closes the container. Whoever delivers the video frames calls :meth:`anchor` with the
    first frame of each epoch: the offset (seconds) from the stream's clock to the
    recording's, by which every audio packet of that epoch is moved. A recording takes
    the packets with :meth:`take`, in order; those of an epoch that never showed a
    picture are dropped. At most ``maxlen`` packets are kept (the oldest go first: about
    20 s of AAC at 48 kHz by default), whether or not anything records.
    """

    def __init__(self, maxlen: int = 1024) -> None:
        self.lock = threading.RLock()  #: held while streams are added from the templates
        self._packets: collections.deque[tuple[int, int, av.Packet]] = \
            collections.deque(maxlen=maxlen)
        self._streams: dict[int, list[av.audio.AudioStream]] = {}  # open epochs only
        self._codecs: dict[int, list[str]] = {}
        self._offsets: dict[int, float] = {}
        self._epoch = 0

    # ------------------------------------------------------------------ reader thread
    def begin(self, streams: list[av.audio.AudioStream]) -> int:
        """A container was (re)opened with these audio streams; returns its epoch."""
        with self.lock:
            self._epoch += 1
            self._streams[self._epoch] = list(streams)
            self._codecs[self._epoch] = [codec_name(s) for s in streams]
            return self._epoch

    def put(self, epoch: int, slot: int, packet: av.Packet) -> None:
        """An audio packet of the ``slot``-th audio stream of ``epoch``."""
        if packet.dts is None and packet.pts is None:  # the demuxer's flush packets
            return
        with self.lock:
            self._packets.append((epoch, slot, packet))

    def end(self, epoch: int) -> None:
        """The container of ``epoch`` is about to close: its streams are no templates any
        more (its packets stay)."""
        with self.lock:
            self._streams.pop(epoch, None)

    # ------------------------------------------------------------------ video side
    def anchor(self, epoch: int, offset: float, again: bool = False) -> None:
        """The recording time of ``epoch``'s first picture minus its stream time (once
        per epoch: later calls are ignored, unless ``again``: the video left the
        stream's clock, and the packets not taken yet follow it)."""
        with self.lock:
            if again:
                self._offsets[epoch] = float(offset)
            else:
                self._offsets.setdefault(epoch, float(offset))

    # ------------------------------------------------------------------ recording side
    def streams(self) -> list[av.audio.AudioStream]:
        """The audio streams of the newest open epoch (hold :attr:`lock` while using
        them: the reader closes a container only after :meth:`end`)."""
        with self.lock:
            return list(self._streams[max(self._streams)]) if self._streams else []

    def codec(self, epoch: int, slot: int) -> str | None:
        """The codec name of ``slot`` in ``epoch`` (None: no such stream)."""
        names = self._codecs.get(epoch, [])
        return names[slot] if slot < len(names) else None

    def take(self) -> tuple[int, int, av.Packet, float] | None:
        """The oldest packet ready to go: ``(epoch, slot, packet, offset)``; None when
        there is none yet (the next one's epoch has shown no picture yet)."""
        with self.lock:
            while self._packets:
                epoch, slot, packet = self._packets[0]
                offset = self._offsets.get(epoch)
                if offset is None:
                    if any(e > epoch for e in self._offsets) or \
                            (epoch not in self._streams and epoch < self._epoch):
                        self._packets.popleft()  # its epoch ended without a picture
                        continue
                    return None
                self._packets.popleft()
                return epoch, slot, packet, offset
            return None


AudioSource = Union[str, AudioFrom, AudioFeed]


class _Pair:
    """One input audio stream and where it goes: copied into ``out`` as it is
    (``enc`` None) or re-encoded by ``enc`` (with ``decoder``, a feed's own)."""

    def __init__(self, out: av.stream.Stream, enc: _Reencoder | None, codec: str,
                 decoder: av.codec.context.CodecContext | None = None) -> None:
        self.out, self.enc, self.codec, self.decoder = out, enc, codec, decoder


def _own_decoder(ins: av.audio.AudioStream) -> av.codec.context.CodecContext:
    """A decoder for ``ins``'s packets that does not depend on its container (which a
    live reader may close): the codec, its extradata, rate and layout."""
    icc = ins.codec_context
    dec = av.codec.context.CodecContext.create(icc.name, "r")
    if icc.extradata:
        dec.extradata = icc.extradata
    for name in ("sample_rate", "layout", "format"):
        try:
            value = getattr(icc, name)
            if value:
                setattr(dec, name, value)
        except (AttributeError, ValueError, TypeError, av.FFmpegError):
            pass
    return dec


class AudioRemuxer:
    """Puts the audio of ``source`` into ``out`` as the video advances: copied, or
    re-encoded (see the module's docstring and ``mode``).

    Args:
        source: a file (its path, or an :class:`AudioFrom` that moves and trims it), or
            a live stream's :class:`AudioFeed`.
        out: the output container (before its first packet).
        fmt: its FFmpeg format name (``mp4``, ``matroska``...).
        mode: ``auto``, ``copy`` or an encoder (:func:`parse_audio_mode`).

    Raises:
        OptionError: ``mode`` is unknown, or asks for what the container cannot hold.
        OutputError: no encoder can re-encode an audio stream.
    """

    def __init__(self, source: AudioSource, out: av.container.OutputContainer, fmt: str,
                 mode: str = "auto") -> None:
        mode = parse_audio_mode(mode)
        self.dropped = 0
        self.trimmed = 0  #: packets left out before the recording's start
        self.overlapped = 0  #: packets left out where a joined part's audio overlapped
        self._pairs: list[_Pair] = []
        self._feed = source if isinstance(source, AudioFeed) else None
        self._in: av.container.InputContainer | None = None
        if self._feed is None:
            src = source if isinstance(source, AudioFrom) else AudioFrom(str(source))
            self._offset, self._start = float(src.offset), src.start
            self._in = av.open(src.path, "r")
        else:
            self._offset, self._start = 0.0, 0.0  # a live recording starts at 0
        try:
            with self._feed.lock if self._feed is not None else nullcontext():
                usable = self._feed.streams() if self._feed is not None \
                    else audio_streams(self._in)
                self._pairs = [self._pair(ins, out, fmt, mode) for ins in usable]
        except BaseException:
            self.close()
            raise
        # a file's timestamps that start again (files joined end to end, see
        # camvideo.media.timeline): each audio stream's, and the video's, which its
        # packets are read beside the audio's for (not decoded); audio read ahead of
        # the video's restart, waiting for it
        self._clocks: dict[int, Restarts] = {}
        self._video = self._video_clock = None
        self._ahead: collections.deque[av.Packet] = collections.deque()
        self._overlap: dict[int, Fraction] = {}  # per slot: the audio before a join ends
        videos = [v for v in self._in.streams.video if v.codec_context is not None] \
            if self._in is not None else []
        if videos:  # the one FileSource decodes
            self._video = videos[0]
            self._video_step = 1 / nominal_rate(self._in, self._video)
            self._video_clock = Restarts.of_video(self._video_step)  # as FileSource's
        self._out = out
        self._packets = self._in.demux(usable + ([self._video] if self._video and usable
                                                 else [])) if self._in is not None else None
        self._slots = {s.index: i for i, s in enumerate(usable)}
        self._pending: tuple[int, int, av.Packet, float] | None = None
        self._ended = self._flushed = False
        self._last_dts: dict[int, int] = {}
        # AVI: audio that starts before 0 (AAC's priming packet at -1024) would make the
        # muxer shift the video by part of a frame; it is moved to start at 0 instead
        self._shift: dict[int, int] | None = {} if fmt == "avi" else None
        # Matroska cannot store times before 0 either: its muxer would move every
        # stream, the video too, by a copied AAC stream's priming packet; that packet
        # (wholly before 0, what the decoder skips anyway) is left out instead (what
        # an encoder makes here starts at 0, its delay stored as such)
        self._no_priming = {p.out.index for p in self._pairs if p.enc is None} \
            if fmt in ("matroska", "webm") else set()
        self.primed = 0  #: priming packets left out (Matroska)
        self._mismatch = False

    @property
    def streams(self) -> int:
        """How many audio streams go into the output."""
        return len(self._pairs)

    def _pair(self, ins: av.audio.AudioStream, out: av.container.OutputContainer, fmt: str,
              mode: str) -> _Pair:
        name = codec_name(ins)
        holds, plays = HOLDS.get(fmt), PLAYS_WIDELY.get(fmt)
        can_hold = (holds is None or name in holds) and name in out.supported_codecs
        start = float(ins.start_time * ins.time_base) \
            if ins.start_time is not None and ins.time_base else 0.0
        # AVI has no timestamps: audio that starts late needs leading silence
        late = fmt == "avi" and self._feed is None and start + self._offset > _JITTER
        if mode == "copy" and not can_hold:
            raise OptionError(f"audio_codec copy: {fmt} files cannot hold {name} audio; "
                              "use auto or name an encoder", option="audio_codec")
        if mode == "copy" or (mode == "auto" and can_hold and not late and
                              (plays is None or name in plays)):
            if late:
                log.warning("audio %s starts %.3f s late, which AVI cannot store: copied "
                            "as asked, it starts with the video", name, start)
            return _Pair(out.add_stream_from_template(ins), None, name)
        encoder = None
        if mode != "auto":
            codec = av.codec.Codec(mode, "w")
            if codec.canonical_name not in out.supported_codecs:
                raise OptionError(f"audio_codec {mode}: {fmt} files cannot hold "
                                  f"{codec.canonical_name} audio", option="audio_codec")
            encoder = mode
        enc = _Reencoder(ins, out, fmt, lead_in=fmt == "avi" and self._feed is None,
                         encoder=encoder)
        why = (f"{mode} asked for" if encoder else
               f"{fmt} files cannot hold it" if not can_hold else
               "it starts late, which AVI cannot store" if late else
               f"{fmt} players do not all play it")
        log.info("audio %s re-encoded (%s): %s", name, why, enc.describe)
        return _Pair(enc.stream, enc, name,
                     _own_decoder(ins) if self._feed is not None else None)

    # ------------------------------------------------------------------ muxing
    def mux_until(self, t: float) -> None:
        """Mux every audio packet that starts before ``t`` seconds (of the output)."""
        while True:
            item = self._pending or self._next()
            if item is None:
                break
            _, _, pkt, offset = item
            if pkt.pts is not None and pkt.time_base is not None and \
                    float(pkt.pts * pkt.time_base) + offset > t:
                self._pending = item
                return
            self._pending = None
            self._mux(*item)
        if self._ended:
            self._flush()

    def finish(self, until: float = float("inf")) -> None:
        """Mux what starts before ``until`` (all of it by default), then drain the
        re-encoders: the audio ends here."""
        self.mux_until(until)
        self._flush()

    def _flush(self) -> None:
        if self._flushed:
            return
        self._flushed = True
        for pair in self._pairs:
            if pair.enc is not None:  # drain the re-encoders
                for p in self._reencode(pair.enc, None):
                    self._put(p, pair.out)

    def _next(self) -> tuple[int, int, av.Packet, float] | None:
        if self._feed is not None:
            return self._feed.take()
        pkt = self._ahead.popleft() if self._ahead else self._read()
        if pkt is None:
            return None
        while True:
            slot = self._slots[pkt.stream.index]
            shift = self._follow_on(slot, pkt)
            if shift is not None:
                return 0, slot, pkt, self._offset + shift
            self.overlapped += 1
            pkt = self._ahead.popleft() if self._ahead else self._read()
            if pkt is None:
                return None

    def _read(self) -> av.Packet | None:
        """The file's next audio packet (the video's on the way only timed: see
        :meth:`_follow_on`); None at the end."""
        while not self._ended:
            try:
                pkt = next(self._packets)
            except StopIteration:
                self._ended = True
            except av.FFmpegError as e:
                log.warning("audio stream broke off: %s", first_line(e))
                self._ended = True
            else:
                if self._video is None or pkt.stream.index != self._video.index:
                    return pkt
                if pkt.pts is not None and pkt.time_base is not None:
                    self._video_clock.see(pkt.pts * pkt.time_base, self._video_step)
        return None

    def _follow_on(self, slot: int, pkt: av.Packet) -> float | None:
        """Seconds to add to a file's packet where the file's timestamps started again
        (:class:`~camvideo.media.timeline.Restarts`): the same as the video's, read
        ahead to its restart, so each joined part's audio stays in step with its video
        (its own end is followed only where the video does not start again). None: the
        packet is left out, as it overlaps the audio before the join (a part's audio
        longer than its video)."""
        # (back at its first timestamp after at least 0.1 s: not a damaged duplicate)
        clock = self._clocks.setdefault(slot, Restarts(jump=RESTART_S, near=0.1))
        stamp = pkt.dts if pkt.dts is not None else pkt.pts
        if stamp is None or pkt.time_base is None:
            return float(clock.offset)
        raw = stamp * pkt.time_base
        shift = None
        if clock.starts_again(raw) and self._video_clock is not None:
            k, video = len(clock.shifts), self._video_clock
            while len(video.shifts) <= k and len(self._ahead) < _READ_AHEAD:
                nxt = self._read()
                if nxt is None:
                    break
                self._ahead.append(nxt)
            if len(video.shifts) > k:
                shift = video.shifts[k]
                self._overlap[slot] = clock.end  # what came before ends there
            log.info("audio timestamps start again at %.3f s: moved on by %.3f s%s",
                     float(raw), float(shift if shift is not None else clock.end - raw),
                     " as the video" if shift is not None else "")
        t = clock.see(raw, (pkt.duration or 0) * pkt.time_base, shift)
        before = self._overlap.get(slot)
        if before is not None:
            if t + _JITTER < before:
                return None  # the part's audio starts before the last part's ended
            del self._overlap[slot]
        return float(clock.offset)

    def _mux(self, epoch: int, slot: int, pkt: av.Packet, offset: float) -> None:
        if slot >= len(self._pairs):
            return
        pair = self._pairs[slot]
        if self._feed is not None and self._feed.codec(epoch, slot) != pair.codec:
            if not self._mismatch:
                self._mismatch = True
                log.warning("the stream came back with %s audio instead of %s: its audio "
                            "is left out", self._feed.codec(epoch, slot), pair.codec)
            return
        tb = pkt.time_base
        if self._start is not None and pkt.pts is not None and tb is not None and \
                float((pkt.pts + (pkt.duration or 0)) * tb) + offset < self._start:
            self.trimmed += 1  # before the recording's start
            return
        if pair.enc is None:
            if pkt.dts is None:  # None: the demuxer's flush packet
                return
            if offset and tb is not None:
                ticks = round(Fraction(offset) / tb)
                pkt.dts += ticks
                if pkt.pts is not None:
                    pkt.pts += ticks
            self._put(pkt, pair.out)
            return
        try:
            frames = pair.decoder.decode(pkt) if pair.decoder is not None else pkt.decode()
        except av.FFmpegError as e:
            log.debug("skipping undecodable audio packet: %s", first_line(e))
            return
        for frame in frames:
            if offset and frame.pts is not None and frame.time_base:
                frame.pts += round(Fraction(offset) / frame.time_base)
            for p in self._reencode(pair.enc, frame):
                self._put(p, pair.out)

    @staticmethod
    def _reencode(enc: _Reencoder, frame: av.AudioFrame | None) -> list[av.Packet]:
        try:
            return enc.encode(frame)
        except (av.FFmpegError, ValueError) as e:
            raise OutputError(f"cannot re-encode the audio ({enc.describe}): "
                              f"{first_line(e)}; use {{option}}",
                              hint=("audio", False)) from None

    def _put(self, pkt: av.Packet, outs: av.stream.Stream) -> None:
        """Mux ``pkt`` into ``outs``, dropping what the muxer would refuse."""
        if outs.index in self._no_priming and pkt.pts is not None and pkt.duration and \
                pkt.pts + pkt.duration <= 0:
            self.primed += 1
            return
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
        dropped = self.dropped + sum(p.enc.dropped for p in self._pairs
                                     if p.enc is not None)
        if dropped:
            log.warning("%d damaged audio packets dropped", dropped)
        if self.overlapped:
            log.info("%d audio packets left out where joined parts' audio overlapped the "
                     "part before", self.overlapped)
        if self._in is not None:
            self._in.close()

