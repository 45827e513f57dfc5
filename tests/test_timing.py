"""Exact timing: every output frame keeps its input frame's presentation time, also where
the input's timestamps are out of order (packed B-frames in AVI), duplicated, or start
again (files joined end to end). Inputs are made here with PyAV
(:func:`camvideo.testing.clip.write_bframes_avi` for the AVI files); times are compared
to within 1 ms, frame by frame.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from camvideo.commands.main import main
from camvideo.errors import ExitCode
from camvideo.media.files import FileSource
from camvideo.testing import synth
from camvideo.testing.clip import decoded_times, write_bframes_avi

MS = 0.001


def annotate(src: Path, out: Path, capsys) -> None:
    rc = main([str(src), str(out), "-q", "--size", "64"])
    assert rc == ExitCode.OK, capsys.readouterr().err


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return synth.pan_frames("chelsea", (160, 96), 48)[0]


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_packed_bframes_in_avi_keep_every_frames_time(tiny_model, tmp_path, capsys, frames,
                                                      ext):
    clip = write_bframes_avi(tmp_path / "packed.avi", frames, fps=24, packed=True)
    plain = write_bframes_avi(tmp_path / "plain.avi", frames, fps=24, packed=False)
    # the case is real: FFmpeg's own timestamps of the packed file are swapped in pairs,
    # those of the same frames unpacked are in order, and they are the Clip's times
    raw = decoded_times(clip.path)
    assert raw != sorted(raw) and sorted(raw) == pytest.approx(clip.times, abs=MS)
    assert decoded_times(plain.path) == pytest.approx(clip.times, abs=MS)
    out = tmp_path / f"out{ext}"
    annotate(clip.path, out, capsys)
    got = decoded_times(out)
    assert len(got) == 48
    assert np.abs(np.array(got) - clip.times).max() <= MS, got
    # (before: each out-of-order timestamp bumped the next, 47 of 48 frames one late)


def test_plain_bframes_in_avi_keep_every_frames_time(tiny_model, tmp_path, capsys, frames):
    clip = write_bframes_avi(tmp_path / "plain.avi", frames, fps=24, packed=False)
    out = tmp_path / "out.mp4"
    annotate(clip.path, out, capsys)
    assert np.abs(np.array(decoded_times(out)) - clip.times).max() <= MS


def test_packed_frames_come_in_order_with_their_pictures(frames, tmp_path):
    """Timestamps are sorted, pictures are not touched: frame i is the i-th picture."""
    clip = write_bframes_avi(tmp_path / "packed.avi", frames, fps=24, packed=True)
    src = FileSource(clip.path)
    got = list(src)
    src.close()
    assert [f.index for f in got] == list(range(48))
    for f, want in zip(got, frames):
        assert np.abs(f.image.astype(int) - want).mean() < 8  # MPEG-4 at its defaults
    assert src.bumped == 0 and src.warnings == []


def dup_mkv(path: Path, frames: list[np.ndarray], ms: list[int]) -> Path:
    """Intra-only (MJPEG) frames in Matroska at the given millisecond timestamps
    (Matroska takes repeated ones)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = 160, 96, "yuvj420p"
        s.time_base = Fraction(1, 1000)
        for i, t in enumerate(ms):
            vf = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            vf = vf.reformat(format="yuvj420p")
            vf.pts, vf.time_base = i, Fraction(1, 25)
            for p in s.encode(vf):
                p.pts = p.dts = t
                p.time_base = Fraction(1, 1000)
                c.mux(p)
    return path


def test_duplicate_timestamps_stay_within_a_millisecond(tiny_model, tmp_path, capsys,
                                                        frames):
    ms = [0, 40, 80, 80, 160, 200, 240, 240, 240, 360, 400, 440]
    src = dup_mkv(tmp_path / "dup.mkv", frames, ms)
    assert [round(t * 1000) for t in decoded_times(src)] == ms  # what FFmpeg reads
    out = tmp_path / "out.mp4"
    annotate(src, out, capsys)
    got = decoded_times(out)
    assert len(got) == len(ms) and all(b > a for a, b in zip(got, got[1:]))
    assert np.abs(np.array(got) - np.array(ms) / 1000).max() <= MS, got
    # the frames after a duplicate are not moved at all
    assert [got[i] for i in (4, 9, 10, 11)] == pytest.approx([0.16, 0.36, 0.4, 0.44],
                                                              abs=1e-6)


def test_files_joined_end_to_end_continue_at_their_rate(tiny_model, tmp_path, capsys,
                                                        frames):
    """Two MPEG-TS files joined byte for byte: the second's timestamps start again. Its
    frames follow the first's at the frame rate (before: 1 tick apart, all squeezed
    into one frame's time)."""
    seg = tmp_path / "seg.ts"
    with av.open(str(seg), "w") as c:
        s = c.add_stream("libx264", rate=24)
        s.width, s.height, s.pix_fmt = 160, 96, "yuv420p"
        for i, im in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(im, format="rgb24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(seg.read_bytes() * 2)
    raw = decoded_times(joined)
    assert len(raw) == 96 and raw[48] < raw[47] - 1.5  # the jump back
    out = tmp_path / "out.mp4"
    annotate(joined, out, capsys)
    got = np.array(decoded_times(out))
    assert len(got) == 96
    assert np.abs(np.diff(got) - 1 / 24).max() <= MS
    assert np.abs(got[:48] - raw[:48]).max() <= MS  # the first part as it was


def _ts_piece(path: Path, frames: list[np.ndarray], fps: int) -> Path:
    """An MPEG-TS file: ``frames`` at ``fps`` with an AAC tone as long as the video."""
    rate = 48000
    with av.open(str(path), "w", format="mpegts") as c:
        vs = c.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 160, 96, "yuv420p"
        aus = c.add_stream("aac", rate=rate, layout="mono")
        n = 0
        for i, im in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(im, format="rgb24")
            vf.pts = i
            c.mux(vs.encode(vf))
            while n < (i + 1) * rate // fps:
                t = np.arange(n, n + 1024) / rate
                af = av.AudioFrame.from_ndarray(
                    (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                    format="fltp", layout="mono")
                af.sample_rate, af.pts, af.time_base = rate, n, Fraction(1, rate)
                c.mux(aus.encode(af))
                n += 1024
        c.mux(vs.encode(None))
        c.mux(aus.encode(None))
    return path


def audio_packets(path: Path) -> list[tuple[float, float]]:
    """``(start, duration)`` in seconds of each packet of the first audio stream."""
    with av.open(str(path)) as c:
        a = c.streams.audio[0]
        return [(float(p.pts * a.time_base), float(p.duration * a.time_base))
                for p in c.demux(a) if p.size]


@pytest.mark.parametrize("seconds", [0.5, 2.0])
def test_joined_files_audio_follows_on_with_the_video(tiny_model, tmp_path, capsys, frames,
                                                      seconds):
    """Three MPEG-TS pieces with audio joined byte for byte (also pieces shorter than a
    second: a restart is the timestamps coming back to the first one, not only a long
    jump back). The video follows on at its rate and each piece's audio is moved on with
    its video (before: the audio after the first join was dropped as 'damaged', and
    0.5-s pieces' frames were squeezed one tick apart)."""
    n = round(24 * seconds)
    piece = _ts_piece(tmp_path / "piece.ts", frames[:n], 24)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(piece.read_bytes() * 3)
    out = tmp_path / "out.mp4"
    rc = main([str(joined), str(out), "-q", "--size", "64"])
    err = capsys.readouterr().err
    assert rc == ExitCode.OK, err
    assert "damaged" not in err and err.count("jump back") == 2, err
    got = np.array(decoded_times(out))
    assert len(got) == 3 * n
    assert np.abs(np.diff(got) - 1 / 24).max() <= MS

    part, raw = audio_packets(piece), decoded_times(piece)
    # each part moves on by the video's length, its audio with its video (where a
    # part's audio starts before the one before ended, those packets are left out)
    length = raw[-1] + 1 / 24 - raw[0]
    starts = np.array([t for t, _ in part])
    got_audio = audio_packets(out)
    assert len(part) * 3 - 6 <= len(got_audio) <= len(part) * 3
    assert all(b[0] > a[0] for a, b in zip(got_audio, got_audio[1:]))
    moved = [min(range(3), key=lambda k: np.abs(starts + k * length - t).min())
             for t, _ in got_audio]
    assert moved == sorted(moved) and set(moved) == {0, 1, 2}
    for (t, _), k in zip(got_audio, moved):   # a packet of the part, moved by k parts
        assert np.abs(starts + k * length - t).min() <= MS, (t, k)
    assert got_audio[-1][0] == pytest.approx(starts[-1] + 2 * length, abs=MS)
