"""Encoder settings: the defaults camvideo opens x264 with, --preset and --x264-params,
checked in the files written (x264 records its settings in the stream)."""
from __future__ import annotations

import re
from pathlib import Path

import av
import pytest

import camvideo
from camvideo.commands.main import main
from camvideo.media.encoding import DEFAULT_PRESET, DEFAULT_X264_PARAMS, encoder_options
from camvideo.errors import ExitCode, OptionError
from camvideo.testing import synth
from camvideo.testing.clip import write_clip


def x264_settings(path: Path) -> dict[str, str]:
    """The ``options:`` of the x264 SEI message in an H.264 file, as a dict."""
    m = re.search(rb"x264 - core \d+.*? options: ([^\x00]*)", path.read_bytes())
    assert m, f"no x264 settings in {path}"
    return dict(kv.split("=", 1) for kv in m.group(1).decode().split() if "=" in kv)


def test_default_options_are_superfast_with_mbtree():
    assert DEFAULT_PRESET == "superfast"
    assert encoder_options("libx264", 20) == {
        "crf": "20", "preset": "superfast", "x264-params": DEFAULT_X264_PARAMS}
    # a preset given: x264's own preset, nothing added unless asked
    assert encoder_options("libx264", 18, "veryfast") == {"crf": "18", "preset": "veryfast"}
    assert encoder_options("libx264", 20, "slow", "bframes=0") == {
        "crf": "20", "preset": "slow", "x264-params": "bframes=0"}
    assert encoder_options("libx264", 20, None, "") == {"crf": "20", "preset": "superfast"}
    assert encoder_options("libx265", 20) == {"crf": "20", "preset": "superfast",
                                              "x265-params": "log-level=error"}
    assert encoder_options("libvpx-vp9", 30) == {"crf": "30", "b": "0"}
    assert encoder_options("h264_nvenc", 20) == {"cq": "20", "preset": "p4"}
    assert encoder_options("mpeg4", 20) == {}


def test_x265_says_nothing_on_stderr(pan_clip, tiny_model, tmp_path, capfd):
    """x265 writes its own log to the process's stderr (23 ``x265 [info]`` lines, and a
    warning below 720p), past -q; only errors are let through."""
    out = tmp_path / "h.mp4"
    assert main([str(pan_clip.path), str(out), "--codec", "libx265", "-q"]) == ExitCode.OK
    assert capfd.readouterr().err == ""
    assert out.stat().st_size > 0


def test_default_encode_uses_superfast_with_mbtree(pan_clip, tiny_model, tmp_path):
    out = tmp_path / "out.mp4"
    camvideo.annotate(pan_clip.path, out, model=tiny_model, audio=False)
    s = x264_settings(out)
    # superfast: diamond search, subme 1; plus mb-tree with a 10-frame lookahead
    assert (s["me"], s["subme"], s["mbtree"], s["rc_lookahead"]) == ("dia", "1", "1", "10")
    assert s["rc"] == "crf" and float(s["crf"]) == 20


def test_preset_and_x264_params_reach_the_encoder(pan_clip, tiny_model, tmp_path):
    out = tmp_path / "vf.mp4"
    camvideo.annotate(pan_clip.path, out, model=tiny_model, audio=False, preset="veryfast",
                      crf=23)
    s = x264_settings(out)
    assert (s["me"], s["subme"], float(s["crf"])) == ("hex", "2", 23)
    out2 = tmp_path / "vf0.mp4"
    camvideo.annotate(pan_clip.path, out2, model=tiny_model, audio=False, preset="veryfast",
                      x264_params="bframes=0:ref=2")
    s2 = x264_settings(out2)
    assert (s2["subme"], s2["bframes"], s2["ref"]) == ("2", "0", "2")


def test_unknown_preset_is_refused(pan_clip, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    rc = main([str(pan_clip.path), str(out), "--preset", "turbo"])
    err = capsys.readouterr().err.strip()
    assert rc == ExitCode.USAGE and "--preset" in err and "superfast" in err
    assert len(err.splitlines()) == 1 and not out.exists()
    with pytest.raises(OptionError, match="^preset must be one of") as e:
        camvideo.annotate(pan_clip.path, out, preset="turbo")
    assert e.value.option == "preset"  # the library names the option; the CLI its flag


def test_malformed_x264_params_fail_cleanly(pan_clip, tiny_model, tmp_path, capsys):
    out = tmp_path / "out.mp4"
    rc = main([str(pan_clip.path), str(out), "-q", "--x264-params", "ref=2:0"])
    err = capsys.readouterr().err.strip()
    assert rc == ExitCode.OUTPUT, err
    assert len(err.splitlines()) == 1 and "libx264" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# NVENC and its fallback (no NVENC here: a CPU machine, or a data-centre GPU)


def _nvenc_opens() -> bool:
    import av

    try:
        with av.open("/dev/null", "w", format="mp4") as c:
            s = c.add_stream("h264_nvenc", rate=30)
            s.width, s.height, s.pix_fmt = 64, 64, "yuv420p"
            s.codec_context.open()
        return True
    except Exception:  # noqa: BLE001 - no GPU, no driver, no NVENC
        return False


needs_no_nvenc = pytest.mark.skipif(_nvenc_opens(), reason="NVENC opens on this machine")


def test_nvenc_presets_and_settings_for_a_fallback():
    from camvideo.media.encoding import check_preset, settings_for

    assert encoder_options("h264_nvenc", 20, "p6") == {"cq": "20", "preset": "p6"}
    check_preset("h264_nvenc", "p5")
    with pytest.raises(OptionError) as e:
        check_preset("h264_nvenc", "superfast")
    assert e.value.option == "preset" and "p7" in str(e.value)
    # NVENC's preset means nothing to libx264: the fallback takes its own default
    assert settings_for("libx264", "p5", None) == (None, None)
    assert settings_for("libx264", "veryfast", "ref=2") == ("veryfast", "ref=2")
    assert settings_for("libvpx-vp9", "p5", "ref=2") == (None, None)


@needs_no_nvenc
def test_nvenc_with_its_preset_falls_back_to_libx264_once_per_process(
        pan_clip, tiny_model, tmp_path, caplog, monkeypatch):
    """``--codec h264_nvenc --preset p5`` where NVENC cannot open: libx264 with its own
    default settings (it was handed preset p5 and failed: 'cannot open encoder
    libx264'); the next file goes straight to libx264 (NVENC is not retried)."""
    import logging

    from camvideo.media import sink

    monkeypatch.setattr(sink, "_UNAVAILABLE", set())
    opened = []
    real = sink.FileSink._add_video

    def spy(self, *a, **k):
        stream = real(self, *a, **k)
        opened.append(self.encoder)
        return stream

    monkeypatch.setattr(sink.FileSink, "_add_video", spy)
    with caplog.at_level(logging.INFO, logger="camvideo.media.sink"):
        for name in ("a.mp4", "b.mp4"):
            camvideo.annotate(pan_clip.path, tmp_path / name, model=tiny_model,
                              codec="h264_nvenc", preset="p5", audio=False)
    assert opened == ["libx264", "libx264"]
    s = x264_settings(tmp_path / "a.mp4")
    assert (s["me"], s["subme"], s["mbtree"]) == ("dia", "1", "1")  # the default settings
    tried = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(tried) == 1 and "default preset" in tried[0]
    assert any("did not open earlier" in r.getMessage() for r in caplog.records)


def test_one_frame_video_in_h265_is_written_every_time(tiny_model, tmp_path):
    """libx265 gives a one-frame video's only packet a garbage decoding time about half
    the time (-4.6e18 or such): the MP4 muxer refused it ('Not yet implemented',
    'Invalid argument', exit 4). Ten runs, every one written."""
    frames, _ = synth.pan_frames("chelsea", (320, 240), 1)  # (at 96x64 it never failed)
    src = write_clip(tmp_path / "one.mp4", frames, fps=25).path
    for i in range(10):
        out = tmp_path / f"h{i}.mp4"
        camvideo.annotate(src, out, model=tiny_model, codec="libx265", audio=False)
        with av.open(str(out)) as c:
            assert [float(f.pts * f.time_base) for f in c.decode(video=0)] == [0.0]
