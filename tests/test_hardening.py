"""Hardening: a corpus of bad and unusual inputs, each with an asserted outcome.

Every case ends either in a valid output (decodable, every decodable frame annotated) or in
exactly one line on stderr with a non-zero exit code — never a traceback, a hang or a file
left half written. The network is a tiny convolution here (the ``tiny_model`` fixture of
conftest.py): these tests are about media handling, not about the network.
"""
from __future__ import annotations

import logging
import resource
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from camvideo.testing import synth
from conftest import TINY_MODEL_CLI_PRELUDE
from camvideo.commands.main import main
from camvideo.errors import ExitCode
from camvideo.media.files import FileSource
from camvideo.testing.clip import Clip, write_clip


def decoded(path: Path) -> list[float]:
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


def decodable(path: Path) -> list[float]:
    """What FFmpeg itself gets from a damaged file: the times of every frame of every
    packet it can decode, up to where the file breaks off, the decoder flushed."""
    out: list[float] = []
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        try:
            for p in c.demux(s):
                try:
                    out += [float(f.pts * f.time_base) for f in p.decode()]
                except av.FFmpegError:
                    pass
        except av.FFmpegError:  # broke off: flush what the decoder holds
            out += [float(f.pts * f.time_base) for f in s.codec_context.decode(None)]
    return out


def no_leftovers(folder: Path) -> bool:
    return not [p for p in folder.iterdir() if "partial" in p.name]


def encode(path: Path, *, codec="libx264", pix="yuv420p", size=(160, 96), n=12, fps=12,
           fmt=None, options=None) -> Path:
    frames, _ = synth.pan_frames("chelsea", size, n)
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], pix
        if options:
            s.codec_context.options = options
        for i, im in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(im), format="rgb24")
            vf = vf.reformat(format=pix)
            vf.pts = i
            for p in s.encode(vf):
                out.mux(p)
        for p in s.encode(None):
            out.mux(p)
    return path


@pytest.fixture(scope="module")
def good_mp4(tmp_path_factory) -> Clip:
    frames, _ = synth.pan_frames("chelsea", (160, 96), 24)
    return write_clip(tmp_path_factory.mktemp("good") / "good.mp4", frames, fps=24,
                      audio=True)


@pytest.fixture(scope="module")
def good_mkv(tmp_path_factory) -> Clip:
    frames, _ = synth.pan_frames("chelsea", (160, 96), 24)
    return write_clip(tmp_path_factory.mktemp("good") / "good.mkv", frames, fps=24,
                      audio=True)


def run_cli(args: list, capsys) -> tuple[int, str]:
    rc = main([str(a) for a in args] + ["-q", "--smooth", "0"])
    return rc, capsys.readouterr().err


def assert_refused(rc: int, err: str, code: ExitCode, words: str, out: Path) -> None:
    assert rc == code, err
    assert err.count("\n") == 1 and err.startswith("camvideo: error: ") and words in err
    assert "Traceback" not in err
    assert not out.exists() and no_leftovers(out.parent)


# ------------------------------------------------------------------ refused inputs

def _random(d: Path) -> Path:
    p = d / "random.mp4"
    p.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return p


def _text(d: Path) -> Path:
    p = d / "notes.txt"
    p.write_text("this is not a video\n" * 100)
    return p


def _zero(d: Path) -> Path:
    p = d / "zero.mp4"
    p.write_bytes(b"")
    return p


def _audio_only(d: Path) -> Path:
    p = d / "audio.m4a"
    with av.open(str(p), "w") as out:
        a = out.add_stream("aac", rate=48000, layout="stereo")
        for k in range(0, 48000, 1024):
            fr = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp",
                                            layout="stereo")
            fr.sample_rate, fr.pts = 48000, k
            for pkt in a.encode(fr):
                out.mux(pkt)
        for pkt in a.encode(None):
            out.mux(pkt)
    return p


@pytest.mark.parametrize("make, words", [
    (_zero, "empty (0 bytes)"),
    (_random, "not a readable video"),
    (_text, "not a video"),
    (_audio_only, "no video stream"),
])
def test_refused_inputs(tmp_path, capsys, tiny_model, make, words):
    out = tmp_path / "out.mp4"
    rc, err = run_cli([make(tmp_path), out], capsys)
    assert_refused(rc, err, ExitCode.INPUT, words, out)


@pytest.mark.parametrize("frac", [0.05, 0.5, 0.9])
def test_truncated_mp4_without_index_is_refused(good_mp4, tmp_path, capsys, tiny_model,
                                                frac):
    """An MP4 cut before its index (moov at the end) cannot be decoded at all."""
    data = good_mp4.path.read_bytes()
    src = tmp_path / "cut.mp4"
    src.write_bytes(data[: int(len(data) * frac)])
    out = tmp_path / "out.mp4"
    rc, err = run_cli([src, out], capsys)
    assert_refused(rc, err, ExitCode.INPUT, "not a readable video", out)


@pytest.mark.parametrize("frac", [0.3, 0.6, 0.9])
def test_truncated_matroska_gives_the_frames_that_are_there(good_mkv, tmp_path, capsys,
                                                            tiny_model, frac):
    data = good_mkv.path.read_bytes()
    src = tmp_path / "cut.mkv"
    src.write_bytes(data[: int(len(data) * frac)])
    out = tmp_path / "out.mp4"
    rc, err = run_cli([src, out], capsys)
    assert rc == 0, err
    times = decoded(out)
    there = decodable(src)
    assert 0 < len(times) == len(there) < good_mkv.frames   # all that FFmpeg can decode
    # the frames that survive keep their own timestamps (a B-frame whose reference was
    # cut off may be missing, so they are a subset of the original times, not a prefix)
    original = np.array(good_mkv.times)
    assert all(np.abs(original - t).min() < 2e-3 for t in times)
    assert np.allclose(times, sorted(there), atol=2e-3)
    assert "truncated" in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("name, fps, n", [("a.mkv", 30, 90), ("b.mkv", Fraction(30000, 1001), 150),
                                         ("c.webm", 30, 60), ("d.mkv", 25, 50)])
def test_complete_files_are_not_called_truncated(tmp_path, caplog, name, fps, n):
    """Matroska counts no frames and ticks in ms: 1/30 s is not a whole number of ticks,
    which must not make a complete file look short."""
    frames, _ = synth.pan_frames("chelsea", (64, 48), n)
    clip = write_clip(tmp_path / name, frames, fps=fps)
    with caplog.at_level(logging.WARNING, logger="camvideo"), FileSource(clip.path) as src:
        got = sum(1 for _ in src)
    assert src.info.frames == 0 and got == n
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]
    cut = tmp_path / f"cut{clip.path.suffix}"  # while a cut one still is
    cut.write_bytes(clip.path.read_bytes()[: int(clip.path.stat().st_size * 0.6)])
    with caplog.at_level(logging.WARNING, logger="camvideo"), FileSource(cut) as src:
        sum(1 for _ in src)
    assert [r for r in caplog.records if "truncated" in r.getMessage()]


def test_matroska_starting_late_is_not_called_truncated(tmp_path, caplog):
    """Matroska's per-track DURATION is where the track ends, counted from 0: a video
    starting at 5 s must not look 5 s short (it did: 'video ends at 1.16 s of 6.20 s')."""
    frames, _ = synth.pan_frames("chelsea", (64, 48), 30)
    clip = write_clip(tmp_path / "late.mkv", frames, fps=25,
                      times=[5 + i / 25 for i in range(30)])
    with caplog.at_level(logging.WARNING, logger="camvideo"), FileSource(clip.path) as src:
        got = [f.time for f in src]
    assert len(got) == 30 and got[0] == pytest.approx(5.0, abs=1e-3)
    assert src.info.duration == pytest.approx(1.2, abs=0.05)
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]


def test_a_full_disk_under_the_sidecar_is_one_line_and_leaves_nothing(
        good_mp4, tmp_path, capsys, tiny_model, monkeypatch):
    """The JSON sidecar's writes fail with ENOSPC (it writes to /dev/full): a clear
    output error, and neither the video nor the sidecar nor a temp file is left."""
    from camvideo.runtime.sinks import JsonLinesSink

    real = JsonLinesSink.__init__

    def on_full_disk(self, path, cams=False):
        real(self, path, cams)
        self._fh.close()
        self._fh = open("/dev/full", "w", buffering=1)  # every line: No space left

    monkeypatch.setattr(JsonLinesSink, "__init__", on_full_disk)
    out, side = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    rc, err = run_cli([good_mp4.path, out, "--json", side], capsys)
    assert_refused(rc, err, ExitCode.OUTPUT, f"cannot write {side}: No space left", out)
    assert not side.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_corrupted_packets_in_the_middle(good_mp4, tmp_path, capsys, tiny_model):
    """Three packets in the middle whose NAL length prefix is garbage: the decoder
    refuses them; they are skipped and counted, and every other frame comes through
    with its own timestamp."""
    data = bytearray(good_mp4.path.read_bytes())
    with av.open(str(good_mp4.path)) as c:
        packets = [p for p in c.demux(video=0) if p.size]
    broken = packets[10:13]
    for p in broken:
        data[p.pos:p.pos + 4] = b"\xff\xff\xff\xff"
    src = tmp_path / "corrupt.mp4"
    src.write_bytes(bytes(data))
    out = tmp_path / "out.mp4"
    rc, err = run_cli([src, out], capsys)
    assert rc == 0, err
    times = decoded(out)
    assert len(times) == good_mp4.frames - 3 and "Traceback" not in err
    with FileSource(src) as fs:  # (after the CLI: its log handler writes to this test's stderr)
        assert sum(1 for _ in fs) == good_mp4.frames - 3 and fs.skipped == 3
    gone = {round(float(p.pts * p.time_base), 3) for p in broken}
    assert np.allclose(times, [t for t in good_mp4.times if round(t, 3) not in gone],
                       atol=2e-3)


# ------------------------------------------------------------------ unusual but valid

@pytest.mark.parametrize("name, kw, size", [
    ("tiny.mp4", dict(size=(16, 16)), (16, 16)),
    ("dot.mp4", dict(size=(2, 2)), (2, 2)),          # no room for the labels
    ("sliver.mp4", dict(size=(2, 64)), (2, 64)),
    ("large.mp4", dict(size=(4000, 3000), n=3), (4000, 3000)),
    ("odd.mp4", dict(size=(161, 95), pix="yuv444p"), (161, 95)),
    ("tenbit.mkv", dict(pix="yuv420p10le"), (160, 96)),
    ("yuv444.mp4", dict(pix="yuv444p"), (160, 96)),
    ("gray.mkv", dict(pix="gray"), (160, 96)),
    ("paletted.gif", dict(codec="gif", pix="rgb8"), (160, 96)),
    ("longgop.mp4", dict(n=60, options={"x264-params": "keyint=600:min-keyint=600:scenecut=0"}),
     (160, 96)),
    ("no_timestamps.h264", dict(fmt="h264"), (160, 96)),
])
def test_unusual_inputs_give_valid_outputs(tmp_path, capsys, tiny_model, name, kw, size):
    n = kw.get("n", 12)
    src = encode(tmp_path / name, **kw)
    out = tmp_path / "out.mp4"
    rc, err = run_cli([src, out], capsys)
    assert rc == 0, err
    times = decoded(out)
    assert len(times) == n
    assert all(b > a for a, b in zip(times, times[1:]))  # strictly increasing
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == size
    assert no_leftovers(tmp_path)


@pytest.mark.parametrize("extra", [[], ["--stride", "3"], ["--smooth-mode", "centered"]])
def test_the_smallest_model_input_with_motion(tmp_path, capsys, tiny_model, extra):
    """``--size 32`` on a square video: a 1x1 feature grid, 8x8 frames for the motion
    estimate (too small for dense optical flow), with smoothing and motion on."""
    src = encode(tmp_path / "square.mp4", size=(96, 96), n=9)
    out = tmp_path / "out.mp4"
    rc = main([str(src), str(out), "-q", "--size", "32", *extra])
    assert rc == 0, capsys.readouterr().err
    assert len(decoded(out)) == 9


def test_packets_without_timestamps_get_the_streams_own_rate(tmp_path, capsys, tiny_model):
    """A raw .h264 file has no timestamps; its SPS says 12 fps (the demuxer's own figure
    is its default, 25): the frames come out 1/12 s apart."""
    src = encode(tmp_path / "raw.h264", fmt="h264", n=10, fps=12)
    out = tmp_path / "out.mp4"
    assert run_cli([src, out], capsys)[0] == 0
    times = decoded(out)
    assert len(times) == 10
    assert np.allclose(np.diff(times), 1 / 12, atol=1e-3)


def test_rotation_and_vfr_together(tmp_path, capsys, tiny_model):
    frames, _ = synth.pan_frames("chelsea", (160, 96), 10)
    times = [0, 0.05, 0.2, 0.25, 0.5, 0.55, 0.6, 1.0, 1.05, 1.3]
    clip = write_clip(tmp_path / "rot.mp4", frames, times=times, rotation=270)
    out = tmp_path / "out.mp4"
    assert run_cli([clip.path, out], capsys)[0] == 0
    assert np.allclose(decoded(out), times, atol=1e-3)
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (96, 160)


# ------------------------------------------------------------------ output safety

def test_never_overwrites_the_input_even_through_a_symlink(good_mp4, tmp_path, capsys,
                                                           tiny_model):
    before = good_mp4.path.read_bytes()
    link = tmp_path / "same.mp4"
    link.symlink_to(good_mp4.path)
    for target in (good_mp4.path, link):
        rc, err = run_cli([good_mp4.path, target, "-y"], capsys)
        assert rc == ExitCode.OUTPUT and "is the input" in err
    rc, err = run_cli([link, good_mp4.path, "-y"], capsys)
    assert rc == ExitCode.OUTPUT and "is the input" in err
    assert good_mp4.path.read_bytes() == before


def test_full_disk_leaves_no_partial_file(good_mp4, tmp_path):
    """The file size limit (RLIMIT_FSIZE) makes writes fail as a full disk does."""
    out = tmp_path / "out.mp4"
    code = (TINY_MODEL_CLI_PRELUDE +
            f"sys.exit(main([{str(good_mp4.path)!r}, {str(out)!r}, '-q', '--crf', '0']))\n")

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, preexec_fn=limit)
    assert proc.returncode == ExitCode.OUTPUT, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "Traceback" not in proc.stderr
    assert not out.exists() and no_leftovers(tmp_path)


def test_interrupt_leaves_nothing(good_mp4, tmp_path, tiny_model, monkeypatch, capsys):
    import camvideo.media.sink as sink
    calls = {"n": 0}
    real_write = sink.FileSink.write

    def write_then_interrupt(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real_write(self, *a, **k)

    monkeypatch.setattr(sink.FileSink, "write", write_then_interrupt)
    out, side = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    rc, err = run_cli([good_mp4.path, out, "--json", side], capsys)
    assert rc == ExitCode.INTERRUPTED and "interrupted" in err
    assert not out.exists() and not side.exists() and no_leftovers(tmp_path)


def test_resolution_change_mid_stream(tmp_path, capsys, tiny_model):
    """Frames whose size changes mid-stream are scaled to the first frame's size (two
    MPEG-TS segments of different sizes, concatenated as a stream splice does)."""
    parts = []
    for k, size in enumerate([(160, 96), (96, 64)]):
        seg = tmp_path / f"seg{k}.ts"
        with av.open(str(seg), "w", format="mpegts") as out:
            s = out.add_stream("mpeg2video", rate=10)
            s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
            for i in range(4):
                im = np.full((size[1], size[0], 3), 30 * (4 * k + i), np.uint8)
                vf = av.VideoFrame.from_ndarray(im, format="rgb24").reformat(format="yuv420p")
                vf.pts = 4 * k + i
                vf.time_base = Fraction(1, 10)
                for p in s.encode(vf):
                    out.mux(p)
            for p in s.encode(None):
                out.mux(p)
        parts.append(seg.read_bytes())
    src = tmp_path / "spliced.ts"
    src.write_bytes(b"".join(parts))
    out = tmp_path / "out.mp4"
    rc, err = run_cli([src, out], capsys)
    assert rc == 0, err
    # every frame FFmpeg decodes from the splice is annotated (the decoder itself drops
    # the one frame left in its reorder buffer at the splice point)
    assert len(decoded(out)) == len(decoded(src)) >= 7
    assert {w for w in _widths(src)} == {160, 96}
    with av.open(str(out)) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (160, 96)


def _widths(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [f.width for f in c.decode(video=0)]
