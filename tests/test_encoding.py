"""Encoder settings: the defaults camvideo opens x264 with, --preset and --x264-params,
checked in the files written (x264 records its settings in the stream)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import camvideo
from camvideo.commands.main import main
from camvideo.media.encoding import DEFAULT_PRESET, DEFAULT_X264_PARAMS, encoder_options
from camvideo.errors import ExitCode, OptionError


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
    assert encoder_options("libx265", 20) == {"crf": "20", "preset": "superfast"}
    assert encoder_options("libvpx-vp9", 30) == {"crf": "30", "b": "0"}
    assert encoder_options("h264_nvenc", 20) == {"cq": "20", "preset": "p4"}
    assert encoder_options("mpeg4", 20) == {}


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
