"""Output containers and their codecs, checked in the files written: audio re-encoded where
the container refuses the input's codec (named layout, a rate the encoder takes, the
input's timing kept), AVI timing, WebM's default video codec, and the codec/container
mismatches refused with one line and the right exit code.

Inputs are written here with PyAV: about 1 s at 160x96, audio as a tone in the segments
asked for (so a start offset or a gap is known exactly).
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from camvideo.commands.main import main
from camvideo.errors import ExitCode

W, H = 160, 96


def _image(i: int) -> np.ndarray:
    """``(H, W, 3)`` uint8: a bright block moving right over a dark background."""
    f = np.full((H, W, 3), (30, 60, 90), np.uint8)
    x = (i * 4) % (W - 24)
    f[30:60, x:x + 24] = (250, 200, 10)
    return f


def make_clip(path: Path, *, vcodec: str = "libx264", fps: int = 30, frames: int = 30,
              video_tb: Fraction | None = None, acodec: str | None = None,
              rate: int = 48000, layout: str = "stereo",
              segments: tuple[tuple[float, float], ...] = ((0.0, 1.0),)) -> Path:
    """Write a clip: ``frames`` frames at ``fps``; with ``acodec``, a tone at ``rate`` Hz
    in ``layout`` over each ``(start, end)`` second range of ``segments`` (silence of no
    samples between them: a real gap in the timestamps)."""
    c = av.open(str(path), "w")
    vs = c.add_stream(vcodec, rate=fps)
    vs.width, vs.height = W, H
    vs.pix_fmt = "yuvj420p" if vcodec == "mjpeg" else "yuv420p"
    if video_tb is not None:
        vs.time_base = video_tb
    astream = c.add_stream(acodec, rate=rate, layout=layout) if acodec else None
    vtb = Fraction(1, fps)
    audio_frames = []
    if astream is not None:
        fmt = astream.codec_context.format.name
        channels = astream.codec_context.layout.nb_channels
        chunk = astream.codec_context.frame_size or 1024
        for start, end in segments:
            n, stop = round(start * rate), round(end * rate)
            while n < stop:
                k = min(chunk, stop - n)
                t = np.arange(n, n + k) / rate
                tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                planes = np.repeat(tone[None], channels, 0)
                if fmt.endswith("p"):
                    data = planes
                else:
                    data = planes.T.reshape(1, -1)
                if fmt.startswith("s16"):
                    data = (data * 32767).astype(np.int16)
                elif fmt.startswith("s32"):     # libmp3lame's
                    data = (data * 2147483647).astype(np.int32)
                af = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt,
                                                layout=layout)
                af.sample_rate, af.pts, af.time_base = rate, n, Fraction(1, rate)
                audio_frames.append(af)
                n += k
    for i in range(frames):
        vf = av.VideoFrame.from_ndarray(_image(i), format="rgb24")
        vf = vf.reformat(format=vs.pix_fmt)
        vf.pts, vf.time_base = i, vtb
        c.mux(vs.encode(vf))
        while audio_frames and audio_frames[0].pts / rate < (i + 1) / fps:
            c.mux(astream.encode(audio_frames.pop(0)))
    c.mux(vs.encode(None))
    if astream is not None:
        for af in audio_frames:
            c.mux(astream.encode(af))
        c.mux(astream.encode(None))
    c.close()
    return path


def audio_info(path: Path) -> dict:
    """The first audio stream of ``path``: codec, rate, layout, start (s), the decoded
    frames' ``(start, end)`` times in seconds, and ``level``: ``(times, peak)``, each
    sample's time and its largest absolute value over the channels (full scale 1)."""
    times, peaks, spans = [], [], []
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        info = dict(codec=a.codec_context.name, rate=a.codec_context.sample_rate,
                    layout=a.codec_context.layout.name,
                    start=float(a.start_time * a.time_base))
        for f in c.decode(a):
            t0 = float(f.pts * f.time_base)
            spans.append((t0, t0 + f.samples / f.sample_rate))
            x = f.to_ndarray()
            scale = 32768.0 if x.dtype == np.int16 else 1.0
            x = np.abs(x.astype(np.float64) / scale)
            peak = x.max(0) if f.format.is_planar else \
                x.reshape(-1, f.layout.nb_channels).max(1)
            times.append(t0 + np.arange(f.samples) / f.sample_rate)
            peaks.append(peak)
    info["spans"] = spans
    info["level"] = (np.concatenate(times), np.concatenate(peaks))
    return info


def onsets(info: dict, threshold: float = 0.1, quiet: float = 0.1) -> list[float]:
    """Times (s) where the tone starts: above ``threshold`` after ``quiet`` s below it."""
    t, peak = info["level"]
    loud = t[peak > threshold]
    return [float(x) for i, x in enumerate(loud) if i == 0 or x - loud[i - 1] > quiet]


def gaps(spans: list[tuple[float, float]], over: float = 0.05) -> list[tuple[float, float]]:
    """The holes longer than ``over`` seconds between consecutive decoded frames."""
    return [(a[1], b[0]) for a, b in zip(spans, spans[1:]) if b[0] - a[1] > over]


def run(args: list, capsys) -> tuple[int, str]:
    rc = main([str(a) for a in args] + ["-q"])
    return rc, capsys.readouterr().err.strip()


# --- audio re-encoding -----------------------------------------------------------------

def test_pcm_avi_camera_clip_to_mp4_gets_stereo_aac(tiny_model, tmp_path, capsys):
    # camera-style AVI: MJPEG + PCM, whose stereo layout reads back unnamed ("2 channels")
    src = make_clip(tmp_path / "cam.avi", vcodec="mjpeg", fps=25, frames=25,
                    acodec="pcm_s16le", rate=16000)
    assert audio_info(src)["layout"] == "2 channels"
    out = tmp_path / "cam.mp4"
    rc, err = run([src, out], capsys)
    assert rc == ExitCode.OK, err
    a = audio_info(out)
    assert (a["codec"], a["rate"], a["layout"]) == ("aac", 16000, "stereo")
    assert abs(a["spans"][-1][1] - 1.0) < 0.07 and not gaps(a["spans"])


def test_mono_pcm_mkv_to_mp4_gets_mono_aac(tiny_model, tmp_path, capsys):
    src = make_clip(tmp_path / "mono.mkv", acodec="pcm_s16le", rate=48000, layout="mono")
    assert audio_info(src)["layout"] == "1 channels"
    out = tmp_path / "mono.mp4"
    rc, err = run([src, out], capsys)
    assert rc == ExitCode.OK, err
    a = audio_info(out)
    assert (a["codec"], a["rate"], a["layout"]) == ("aac", 48000, "mono")


def test_44k_aac_to_webm_is_resampled_to_48k_opus(tiny_model, tmp_path, capsys):
    src = make_clip(tmp_path / "a44.mp4", acodec="aac", rate=44100, segments=((0.2, 1.0),))
    assert onsets(audio_info(src)) == pytest.approx([0.2], abs=0.001)
    out = tmp_path / "a44.webm"
    rc, err = run([src, out, "--codec", "libvpx-vp9"], capsys)
    assert rc == ExitCode.OK, err
    a = audio_info(out)
    assert (a["codec"], a["rate"], a["layout"]) == ("opus", 48000, "stereo")
    assert onsets(a) == pytest.approx([0.2], abs=0.003)  # the tone where it was
    assert abs(a["spans"][-1][1] - 1.0) < 0.03
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
        assert sum(1 for _ in c.decode(video=0)) == 30


@pytest.mark.parametrize("container, segments", [
    ("mov", ((0.5, 1.5),)),                # PCM in .mov: starts 0.5 s after the video
    ("mkv", ((0.5, 0.8), (1.2, 1.5))),     # ... and with a 0.4 s hole (Matroska keeps it)
])
def test_reencoded_audio_keeps_its_start_and_gaps(tiny_model, tmp_path, capsys, container,
                                                  segments):
    src = make_clip(tmp_path / f"late.{container}", frames=60, acodec="pcm_s16le",
                    segments=segments)
    ain = audio_info(src)
    assert abs(ain["start"] - 0.5) < 0.001
    assert len(gaps(ain["spans"])) == len(segments) - 1
    assert onsets(ain) == pytest.approx([a for a, _ in segments], abs=0.001)
    out = tmp_path / "late.mp4"  # PCM is not allowed in .mp4: re-encoded to AAC
    rc, err = run([src, out], capsys)
    assert rc == ExitCode.OK, err
    a = audio_info(out)
    assert a["codec"] == "aac"
    # the stream starts where the input's does, less the encoder's priming samples
    # (1024 at 48 kHz: decoded, they come before the input's first sample)
    assert 0.5 - 1024 / 48000 - 0.002 <= a["start"] <= 0.5 + 0.002, a["start"]
    # the tone starts (and after the gap starts again) where it did in the input
    assert onsets(a) == pytest.approx([a for a, _ in segments], abs=0.003)
    t, peak = a["level"]
    for (_, end), (start, _) in zip(segments, segments[1:]):  # the gap: silence
        assert peak[(t > end + 0.03) & (t < start - 0.03)].max() < 0.02
    assert abs(a["spans"][-1][1] - 1.5) < 0.03


@pytest.mark.parametrize("name, vcodec, acodec", [
    ("in.webm", "libvpx-vp9", "libopus"),  # AVI takes no Opus
    ("in.mov", "libx264", "pcm_s16le"),    # AVI takes PCM, but not its late start
])
def test_avi_audio_is_reencoded_where_needed_and_keeps_its_start(tiny_model, tmp_path,
                                                                  capsys, name, vcodec,
                                                                  acodec):
    # AVI stores no timestamps: a late start becomes leading silence
    src = make_clip(tmp_path / name, vcodec=vcodec, acodec=acodec, segments=((0.3, 1.0),))
    out = tmp_path / "out.avi"
    rc, err = run([src, out], capsys)
    assert rc == ExitCode.OK, err
    a = audio_info(out)
    assert a["codec"] in ("mp3", "mp3float")  # FFmpeg's MP3 decoder names
    assert (a["rate"], a["layout"]) == (48000, "stereo")
    # within the MP3 encoder's delay (1152 samples, 24 ms), which AVI cannot signal
    assert onsets(a) == pytest.approx([0.3 + 0.012], abs=0.015)
    t, peak = a["level"]
    assert t[0] < 0.001 and peak[t < 0.28].max() < 0.02


def block_x(image: np.ndarray) -> float:
    """Where :func:`_image`'s bright block is: the mean column of its yellow pixels."""
    yellow = (image[..., 0] > 180) & (image[..., 2] < 100)
    return float(np.nonzero(yellow)[1].mean())


@pytest.mark.parametrize("fps", [30, 25])
def test_avi_output_has_the_input_rate_and_every_frame_in_order(tiny_model, tmp_path,
                                                               capsys, caplog, fps):
    # an .mp4 input in its usual fine time base (1/15360)
    src = make_clip(tmp_path / "in.mp4", fps=fps, frames=fps, video_tb=Fraction(1, 15360))
    out = tmp_path / "out.avi"
    # --preset medium: 3 B-frames elsewhere; --alpha 0 -k 0: the frames as they came in
    rc, err = run([src, out, "--preset", "medium", "--alpha", "0", "-k", "0"], capsys)
    assert rc == ExitCode.OK, err
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert vs.time_base == Fraction(1, fps) and vs.average_rate == fps
        assert vs.frames == fps
        # one index entry per frame (no fillers), in display order (no B-frames)
        assert [p.dts for p in c.demux(vs) if p.size] == list(range(fps))
    with av.open(str(out)) as c:
        decoded = list(c.decode(video=0))
    # AVI stores no presentation times: FFmpeg reads H.264 in AVI one frame late, as
    # it does every AVI written by ffmpeg itself (players take the index, not this)
    pts = [f.pts for f in decoded]
    assert len(decoded) == fps and pts == list(range(pts[0], pts[0] + fps)), pts
    assert pts[0] in (0, 1)
    xs = [block_x(f.to_ndarray(format="rgb24")) for f in decoded]
    assert xs == pytest.approx([4 * i + 11.5 for i in range(fps)], abs=3.0)
    assert all(2 < b - a < 6 for a, b in zip(xs, xs[1:])), xs  # each frame in its place
    caplog.clear()
    rc, err = run([out, tmp_path / "back.mp4"], capsys)  # reads back without complaint
    assert rc == ExitCode.OK and "decodable" not in err and "truncated" not in caplog.text


def test_avi_of_variable_rate_input_keeps_each_frame_within_a_frame(tiny_model, tmp_path,
                                                                    capsys):
    """AVI stores one rate (the input's average): where frames come faster than that,
    each used to be pushed one slot on, and the video fell behind by up to 0.27 s on
    this input; now a frame that would show more than one frame late is left out
    (counted in a warning) and the rest are shown within a frame of their time."""
    gaps = [0.033, 0.020, 0.050] * 6 + [0.066] * 11
    times = np.concatenate([[0.0], np.cumsum(gaps)])
    src = tmp_path / "vfr.mp4"
    with av.open(str(src), "w") as c:
        vs = c.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        vs.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            vf = av.VideoFrame.from_ndarray(_image(i), format="rgb24").reformat(
                format="yuv420p")
            vf.pts, vf.time_base = round(t * 1000), Fraction(1, 1000)
            c.mux(vs.encode(vf))
        c.mux(vs.encode(None))
    out = tmp_path / "out.avi"
    rc, err = run([src, out, "--alpha", "0", "-k", "0"], capsys)
    assert rc == ExitCode.OK, err
    assert "frames left out of out.avi" in err
    with av.open(str(out)) as c:
        v = c.streams.video[0]
        slot = float(v.time_base)
        shown = [p.dts * slot for p in c.demux(v) if p.size]
    with av.open(str(out)) as c:
        which = [round((block_x(f.to_ndarray(format="rgb24")) - 11.5) / 4)
                 for f in c.decode(video=0)]
    assert len(shown) == len(which) < len(times) and which == sorted(set(which))
    late = np.array(shown) - times[which]
    assert late.min() >= -0.5 * slot - 0.002 and late.max() <= slot + 0.002, late


def test_avi_with_copied_aac_keeps_the_video_on_its_grid(tiny_model, tmp_path, capsys):
    """AAC copied from an .mp4 starts at -1024 samples (its priming); in AVI that must
    not shift the video off its 1/fps grid (an empty index entry after frame 0)."""
    src = make_clip(tmp_path / "in.mp4", fps=24, frames=24, acodec="aac")
    out = tmp_path / "out.avi"
    rc, err = run([src, out], capsys)
    assert rc == ExitCode.OK, err
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert c.streams.audio[0].codec_context.name == "aac"  # copied
        assert [p.dts for p in c.demux(vs) if p.size] == list(range(24))
    assert onsets(audio_info(out)) == pytest.approx([0.0], abs=0.03)


# --- refused codec/container combinations ----------------------------------------------

def test_webm_output_defaults_to_vp9(tiny_model, tmp_path, capsys):
    src = make_clip(tmp_path / "in.mp4")
    out = tmp_path / "out.webm"
    rc, err = run([src, out], capsys)
    assert rc == ExitCode.OK, err
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
        assert c.streams.video[0].frames in (0, 30)
        assert sum(1 for _ in c.decode(video=0)) == 30


@pytest.mark.parametrize("codec, words", [
    ("aac", ("aac", "audio")),          # an audio encoder given as the video encoder
    ("libx265", ("libx265", ".webm")),  # a video encoder the container cannot hold
    ("nosuch", ("nosuch",)),
])
def test_bad_video_codec_is_one_line_usage_error(tiny_model, tmp_path, capsys, codec,
                                                 words):
    src = make_clip(tmp_path / "in.mp4")
    out = tmp_path / "out.webm"
    rc, err = run([src, out, "--codec", codec], capsys)
    assert rc == ExitCode.USAGE, err
    assert len(err.splitlines()) == 1 and "internal error" not in err
    assert all(w in err for w in words), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


# --- --audio auto|copy|ENCODER ----------------------------------------------------------

@pytest.fixture
def ac3_clip(tmp_path) -> Path:
    """1 s of video with an AC-3 tone from 0.2 s (as DVDs and TV recordings carry)."""
    src = make_clip(tmp_path / "ac3.mkv", acodec="ac3", segments=((0.2, 1.0),))
    assert audio_info(src)["codec"] == "ac3"
    return src


@pytest.mark.parametrize("out, args, codec", [
    ("out.mp4", [], "aac"),                     # plays in browsers; AC-3 does not
    ("out.mp4", ["--audio", "copy"], "ac3"),    # valid MP4, as asked
    ("out.mkv", [], "ac3"),                     # Matroska players play anything
    ("out.mkv", ["--audio", "aac"], "aac"),     # an encoder, as asked
    ("out.mp4", ["--audio", "opus"], "opus"),   # a codec name for its encoder (libopus)
])
def test_audio_mode_picks_copy_or_reencode(tiny_model, tmp_path, capsys, ac3_clip, out,
                                           args, codec):
    dst = tmp_path / out
    rc, err = run([ac3_clip, dst, *args], capsys)
    assert rc == ExitCode.OK, err
    a = audio_info(dst)
    assert a["codec"] == codec
    # copied or re-encoded, the tone starts where it did (AAC/Opus: within 3 ms)
    assert onsets(a) == pytest.approx([0.2], abs=0.003)
    if codec == "ac3":  # copied: the very packets of the input
        with av.open(str(ac3_clip)) as i, av.open(str(dst)) as o:
            assert [bytes(p) for p in i.demux(audio=0) if p.size] == \
                [bytes(p) for p in o.demux(audio=0) if p.size]


def test_aac_in_mp4_is_copied_by_auto(tiny_model, tmp_path, capsys):
    src = make_clip(tmp_path / "in.mp4", acodec="aac")
    dst = tmp_path / "out.mp4"
    rc, err = run([src, dst], capsys)
    assert rc == ExitCode.OK, err
    with av.open(str(src)) as i, av.open(str(dst)) as o:
        assert [bytes(p) for p in i.demux(audio=0) if p.size] == \
            [bytes(p) for p in o.demux(audio=0) if p.size]


def test_aac_copied_into_matroska_leaves_the_video_at_its_times(tiny_model, tmp_path,
                                                                 capsys):
    """MP4's AAC starts with a priming packet before 0, which Matroska cannot store: its
    muxer moved every stream 23 ms late, the video too. The priming packet is left out;
    the video keeps its times and the audio decodes to the same samples' count."""
    src = make_clip(tmp_path / "in.mp4", acodec="aac")
    with av.open(str(src)) as c:
        packets = [(p.pts, p.duration) for p in c.demux(audio=0) if p.size]
    assert packets[0][0] + packets[0][1] <= 0          # the case is real
    dst = tmp_path / "out.mkv"
    rc, err = run([src, dst], capsys)
    assert rc == ExitCode.OK, err
    with av.open(str(dst)) as c:
        v = c.streams.video[0]
        times = [float(f.pts * f.time_base) for f in c.decode(v)]
    assert times[0] == pytest.approx(0.0, abs=0.001)
    assert times == pytest.approx([i / 30 for i in range(30)], abs=0.001)
    with av.open(str(src)) as i, av.open(str(dst)) as o:
        assert [bytes(p) for p in i.demux(audio=0) if p.size][1:] == \
            [bytes(p) for p in o.demux(audio=0) if p.size]
    assert audio_info(dst)["start"] == pytest.approx(0.0, abs=0.001)


@pytest.mark.parametrize("out, args", [
    ("out.mp4", []),                    # browsers play MP3: auto copies it
    ("out.mp4", ["--audio", "copy"]),
    ("out.avi", []),                    # AVI's own audio codec
])
def test_mp3_is_copied_though_ffmpeg_decodes_it_as_mp3float(tiny_model, tmp_path, capsys,
                                                            out, args):
    # the stream's decoder is "mp3float": the container knows the codec as "mp3"
    src = make_clip(tmp_path / "in.mkv", acodec="libmp3lame")
    assert audio_info(src)["codec"] == "mp3float"
    dst = tmp_path / out
    rc, err = run([src, dst, *args], capsys)
    assert rc == ExitCode.OK, err
    with av.open(str(src)) as i, av.open(str(dst)) as o:
        assert o.streams.audio[0].codec_context.codec.canonical_name == "mp3"
        assert [bytes(p) for p in i.demux(audio=0) if p.size] == \
            [bytes(p) for p in o.demux(audio=0) if p.size]


@pytest.mark.parametrize("out, args, words", [
    ("out.webm", ["--audio", "copy"], "--audio copy: webm files cannot hold ac3"),
    ("out.avi", ["--audio", "opus"], "--audio libopus: avi files cannot hold opus"),
    ("out.mp4", ["--audio", "nosuch"], "no encoder 'nosuch'"),
    ("out.mp4", ["--audio", "libx264"], "not an audio one"),
])
def test_audio_mode_that_cannot_be_followed_is_one_line(tiny_model, tmp_path, capsys,
                                                        ac3_clip, out, args, words):
    rc, err = run([ac3_clip, tmp_path / out, *args], capsys)
    assert rc == ExitCode.USAGE, err
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ac3.mkv"]
