"""End to end: `camvideo IN OUT` on generated clips of real photos, read back with PyAV.

Timing, size, audio and frame counts are compared with the input; the sidecar's values
with the ground truth the clip generator knows (object boxes); bad input gets one line
and an exit code, and leaves nothing behind.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

import camvideo
from camvideo.commands.main import main
from camvideo.errors import ExitCode
from camvideo.model.registry import load_model


def probe(path: Path) -> dict:
    """Frame count, size, rate, per-frame times and audio duration of a file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        times = [float(f.pts * f.time_base) for f in c.decode(v)]
    with av.open(str(path)) as c:
        audio = []
        for s in c.streams.audio:
            last = None
            for p in c.demux(s):
                if p.pts is not None:
                    last = float((p.pts + p.duration) * p.time_base)
            audio.append((s.codec_context.name, last))
        v = c.streams.video[0]
        return {"frames": len(times), "size": (v.width, v.height), "times": times,
                "rate": Fraction(v.average_rate), "audio": audio}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "partial" in p.name)


def run(args: list, capsys) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    return rc, err


# --------------------------------------------------------------------- timing and audio

def test_output_keeps_frames_size_rate_timestamps_and_audio(pan_clip, lite0, tmp_path):
    out = tmp_path / "out.mp4"
    summary = camvideo.annotate(pan_clip.path, out, model=lite0)
    src, dst = probe(pan_clip.path), probe(out)
    assert summary.frames == dst["frames"] == src["frames"] == pan_clip.frames == 45
    assert dst["size"] == src["size"] == (320, 180)
    assert dst["rate"] == src["rate"] == 30
    assert np.allclose(dst["times"], pan_clip.times, atol=1e-3)
    (codec, a_end), = dst["audio"]
    assert codec == "aac"  # copied, not re-encoded
    assert abs(a_end - src["audio"][0][1]) < 1 / 30
    assert abs(a_end - pan_clip.duration) <= 1 / 30 + 0.03  # AAC frames are 21 ms
    assert leftovers(tmp_path) == []


def test_variable_frame_rate_timestamps_kept(vfr_clip, lite0, tmp_path):
    out = tmp_path / "vfr.mp4"
    camvideo.annotate(vfr_clip.path, out, model=lite0)
    dst = probe(out)
    assert dst["frames"] == vfr_clip.frames
    assert np.allclose(dst["times"], vfr_clip.times, atol=1e-3)
    gaps = np.diff(dst["times"])
    assert gaps.max() / gaps.min() > 5  # 1/10 vs 1/60: still variable
    assert abs(dst["audio"][0][1] - vfr_clip.duration) <= 0.1


def test_odd_size_kept(odd_clip, lite0, tmp_path, caplog):
    out = tmp_path / "odd.mp4"
    with caplog.at_level(logging.WARNING, logger="camvideo"):
        camvideo.annotate(odd_clip.path, out, model=lite0)
    # kept in 4:4:4, which not every player plays: said so
    assert [r for r in caplog.records if "319x179 is odd" in r.getMessage()]
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv444p"
    dst = probe(out)
    assert dst["size"] == (319, 179) and dst["frames"] == odd_clip.frames
    assert np.allclose(dst["times"], odd_clip.times, atol=1e-3)


def test_rotation_metadata_is_applied(lite0, tmp_path):
    from camvideo.testing import synth
    frames, _ = synth.pan_frames("chelsea", (160, 96), 8)
    clip = synth.write_clip(tmp_path / "rot.mp4", frames, fps=10, rotation=90)
    out = tmp_path / "rot_out.mp4"
    camvideo.annotate(clip.path, out, model=lite0, smooth=0)
    dst = probe(out)
    assert dst["size"] == (96, 160)  # displayed upright: width and height swapped
    assert dst["frames"] == 8


def test_no_audio_and_side_layout(pan_clip, lite0, tmp_path):
    out = tmp_path / "side.mkv"
    camvideo.annotate(pan_clip.path, out, model=lite0, audio=False, layout="side")
    dst = probe(out)
    assert dst["audio"] == [] and dst["size"] == (640, 180)
    with av.open(str(out)) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    with av.open(str(pan_clip.path)) as c:
        orig = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    left, right = frame[:, :320], frame[:, 320:]
    assert np.abs(left - orig).mean() < 4          # left half: the original
    assert np.abs(right - orig).mean() > 20        # right half: the heatmap over it


def test_audio_reencoded_when_container_refuses_codec(pan_clip, lite0, tmp_path):
    out = tmp_path / "out.webm"  # WebM takes Opus/Vorbis, not AAC
    camvideo.annotate(pan_clip.path, out, model=lite0, codec="libvpx-vp9", smooth=0)
    dst = probe(out)
    assert dst["frames"] == pan_clip.frames
    assert dst["audio"][0][0] == "opus"
    assert abs(dst["audio"][0][1] - pan_clip.duration) < 0.1


# --------------------------------------------------------------------- what is drawn

@pytest.mark.parametrize("threshold, expected", [(None, 0.3), ("0.2", 0.2), ("auto", 0.3)])
def test_sidecar_box_is_the_maps_box_at_frame_size(pan_clip, lite0, tmp_path, threshold,
                                                   expected):
    """The box is the drawn map's, upsampled to the frame, at the calibrated threshold by
    default (``auto``) or the one given (the paper's 0.2)."""
    from camvideo.cam import BBOX_THRESHOLDS, map_bbox
    from camvideo.commands.args import main_parser
    assert BBOX_THRESHOLDS["efficientnet_lite0"] == 0.3
    argv = [str(pan_clip.path), str(tmp_path / "o.mp4")]
    argv += ["--bbox-threshold", threshold] if threshold else []
    opts = vars(main_parser().parse_args(argv))
    assert opts["bbox_threshold"] == ("auto" if threshold in (None, "auto") else 0.2)
    side = tmp_path / "o.jsonl"
    camvideo.annotate(pan_clip.path, tmp_path / "o.mp4", model=lite0, json=str(side),
                      json_cams=True, bbox=True, bbox_threshold=opts["bbox_threshold"])
    recs = [json.loads(line) for line in side.read_text().splitlines()]
    near = 0
    for r in recs:
        want = map_bbox(np.array(r["cam"], np.float32), (320, 180), expected)
        near += max(abs(a - b) for a, b in zip(r["bbox"], want)) <= 1  # cam rounded to 1e-4
    assert near == len(recs)


def test_json_sidecar_records(pan_clip, lite0, tmp_path):
    out, side = tmp_path / "o.mp4", tmp_path / "o.jsonl"
    camvideo.annotate(pan_clip.path, out, model=lite0, json=str(side), json_cams=True,
                      bbox=True, topk=5)
    recs = [json.loads(line) for line in side.read_text().splitlines()]
    assert [r["frame"] for r in recs] == list(range(pan_clip.frames))
    assert np.allclose([r["time"] for r in recs], pan_clip.times, atol=1e-3)
    for r in recs:
        assert set(r) == {"frame", "time", "class", "label", "score", "topk", "peak",
                          "bbox", "cam"}
        assert len(r["topk"]) == 5 and r["label"] == lite0.labels[r["class"]]
        probs = [p for _, _, p in r["topk"]]
        assert probs == sorted(probs, reverse=True) and 0 < probs[0] <= 1
        x, y = r["peak"]
        assert 0 <= x < 320 and 0 <= y < 180
        x0, y0, x1, y1 = r["bbox"]
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 180
        cam = np.array(r["cam"])
        assert cam.shape == (7, 12)  # 16:9 at 224: aspect kept, not a squashed 7x7
        # normalised against a range smoothed over time: in [0, 1], not each 0..1
        assert cam.min() >= 0 and cam.max() <= 1 and cam.max() > 0.5


def test_peak_lies_on_the_moving_object(lite0, tmp_path):
    from camvideo.testing import synth
    clip = synth.make_clip("pan", tmp_path / "pan.mp4", size=(640, 360), n=60, fps=30)
    side = tmp_path / "pan.jsonl"
    camvideo.annotate(clip.path, tmp_path / "pan_out.mp4", model=lite0, json=str(side))
    recs = [json.loads(line) for line in side.read_text().splitlines()]
    hits = 0
    for r, box in zip(recs, clip.boxes):
        x, y = r["peak"]
        hits += box[0] <= x < box[2] and box[1] <= y < box[3]
    assert hits / len(recs) >= 0.9
    assert sum(r["class"] in {281, 282, 283, 284, 285} for r in recs) / len(recs) >= 0.9


def test_fixed_class_by_name(pan_clip, lite0, tmp_path):
    side = tmp_path / "c.jsonl"
    camvideo.annotate(pan_clip.path, tmp_path / "c.mp4", model=lite0, cls="coffee mug",
                      json=str(side))
    recs = [json.loads(line) for line in side.read_text().splitlines()]
    assert {r["class"] for r in recs} == {504} and {r["label"] for r in recs} == {"coffee mug"}


# --------------------------------------------------------------------- bad input

def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, code, words", [
    (lambda d: d / "missing.mp4", ExitCode.INPUT, "input not found"),
    (lambda d: _file(d / "empty.mp4", b""), ExitCode.INPUT, "empty"),
    (lambda d: _file(d / "notes.mp4", b"hello\n" * 50), ExitCode.INPUT, "not a readable video"),
    (lambda d: d, ExitCode.INPUT, "directory"),
])
def test_bad_input_one_line_and_exit_code(tmp_path, capsys, make, code, words):
    src = make(tmp_path)
    out = tmp_path / "out.mp4"
    rc, err = run([src, out], capsys)
    assert rc == code
    assert err.count("\n") == 1 and words in err and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_output_rules(pan_clip, tmp_path, capsys):
    existing = tmp_path / "exists.mp4"
    existing.write_bytes(b"keep me")
    rc, err = run([pan_clip.path, existing], capsys)
    assert rc == ExitCode.OUTPUT and "exists" in err and "--overwrite" in err
    assert existing.read_bytes() == b"keep me"
    rc, err = run([pan_clip.path, pan_clip.path, "-y"], capsys)
    assert rc == ExitCode.OUTPUT and "is the input" in err
    link = tmp_path / "link.mp4"
    link.symlink_to(pan_clip.path)
    rc, err = run([pan_clip.path, link, "-y"], capsys)
    assert rc == ExitCode.OUTPUT and "is the input" in err
    rc, err = run([pan_clip.path, tmp_path / "nope" / "o.mp4"], capsys)
    assert rc == ExitCode.OUTPUT and "output folder does not exist" in err
    assert "--output" not in err  # OUTPUT is a positional argument here, not live's -o
    rc, err = run([pan_clip.path, tmp_path / "o.xyz"], capsys)
    assert rc == ExitCode.OUTPUT and "unknown output container" in err


@pytest.mark.parametrize("args, code, words", [
    (["--alpha", "1.5"], ExitCode.USAGE, "outside 0.0..1.0"),
    (["--size", "10"], ExitCode.USAGE, "outside 32..2048"),
    (["--colormap", "rainbowz"], ExitCode.USAGE, "invalid choice"),
    (["--batch-size", "0"], ExitCode.USAGE, "outside 1..1024"),
    (["--model", "resnet5"], ExitCode.MODEL, "close matches: resnet50"),
    (["--class", "tabby kat"], ExitCode.MODEL, "close matches: tabby"),
    (["--device", "tpu"], ExitCode.USAGE, "unknown device"),
    (["--json-cams"], ExitCode.USAGE, "--json-cams needs json"),
    (["--codec", "nosuchcodec"], ExitCode.USAGE, "unknown video encoder"),
    (["--bbox-threshold", "automatic"], ExitCode.USAGE, "not a number"),
    (["--bbox-threshold", "0"], ExitCode.USAGE, "outside 0.01..1.0"),
    (["--switch-ratio", "1"], ExitCode.USAGE, "must be 0 (off) or more than 1"),
])
def test_bad_options(pan_clip, tmp_path, capsys, args, code, words):
    out = tmp_path / "o.mp4"
    rc, err = run([pan_clip.path, out, *args], capsys)
    assert rc == code, err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists() and leftovers(tmp_path) == []


def test_bf16_on_this_cpu_runs_or_is_one_line_and_exit_2(pan_clip, tmp_path, capsys):
    """``--precision bf16`` is a working run where oneDNN has bf16 convolutions, and one
    line with exit code 2 where it has not (AVX2-only CPUs), never an internal error."""
    from camvideo.model.device import cpu_caps

    out = tmp_path / "o.mp4"
    rc, err = run([pan_clip.path, out, "--precision", "bf16", "-q"], capsys)
    if cpu_caps().bf16_kernels:
        assert rc == ExitCode.OK, err
        assert probe(out)["frames"] == pan_clip.frames
    else:
        assert rc == ExitCode.USAGE and err.count("\n") == 1, err
        assert "bf16 needs a CPU" in err and "use fp32" in err and "Traceback" not in err
        assert not out.exists() and leftovers(tmp_path) == []


def test_bf16_with_onednn_capped_at_avx2_is_one_line_and_exit_2(pan_clip, tmp_path):
    """The same on any x86 machine as an AVX2-only CPU: oneDNN capped at AVX2 (what made
    ``--precision bf16`` an internal error in oneDNN's weight reorder)."""
    out = tmp_path / "o.mp4"
    env = {**__import__("os").environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    proc = subprocess.run([sys.executable, "-m", "camvideo", str(pan_clip.path), str(out),
                           "--precision", "bf16"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert proc.stderr.count("\n") == 1 and "oneDNN capped at AVX2" in proc.stderr
    assert "internal error" not in proc.stderr and not out.exists()
    assert leftovers(tmp_path) == []


def test_unwritable_output_folder(pan_clip, tmp_path, capsys, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = __import__("os").access
    # root ignores folder permissions, so deny write access the way a read-only mount would
    monkeypatch.setattr("camvideo.media.files.os.access",
                        lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    rc, err = run([pan_clip.path, ro / "o.mp4"], capsys)
    assert rc == ExitCode.OUTPUT and "not writable" in err and err.count("\n") == 1
    assert list(ro.iterdir()) == []
    parent_is_file = _file(tmp_path / "f.txt", b"x")
    rc, err = run([pan_clip.path, parent_is_file / "o.mp4"], capsys)
    assert rc == ExitCode.OUTPUT and "output folder is a file" in err


def test_output_that_is_a_folder_or_under_a_file(pan_clip, tmp_path, capsys):
    """An output that is a folder is said to be one, with or without a container
    extension (``OUT`` said ``unknown output container '(none)'``); one whose folder is a
    file says that (it said the folder does not exist)."""
    for folder in (tmp_path / "out", tmp_path / "dir.mp4"):
        folder.mkdir()
        rc, err = run([pan_clip.path, folder], capsys)
        assert rc == ExitCode.OUTPUT, err
        assert err == f"camvideo: error: output is a directory: {folder}\n"
        assert list(folder.iterdir()) == []
    clip = Path(pan_clip.path)
    for out, words in ((clip / "x.mp4", "a file"), (clip / "sub" / "x.mp4", "under a file")):
        rc, err = run([clip, out], capsys)
        assert rc == ExitCode.OUTPUT, err
        assert err == f"camvideo: error: output folder is {words}: {clip}\n"
    rc, err = run([clip, tmp_path / "missing" / "x.mp4"], capsys)
    assert err == f"camvideo: error: output folder does not exist: {tmp_path / 'missing'}\n"


# --------------------------------------------------------------------- process level

def test_console_script_runs_offline(pan_clip, tmp_path):
    """The installed entry point (``run``: main, then the fast exit), in a child process
    with every socket connection refused: nothing is fetched from the network, and the
    output is complete when the process ends."""
    out = tmp_path / "net.mp4"
    code = ("import socket, sys\n"
            "def refuse(*a, **k): raise OSError('network access attempted')\n"
            "socket.socket.connect = refuse\nsocket.create_connection = refuse\n"
            f"sys.argv = ['camvideo', {str(pan_clip.path)!r}, {str(out)!r}, '-q']\n"
            "from camvideo.commands.main import run\nrun()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert probe(out)["frames"] == pan_clip.frames
    assert proc.stdout == ""


FAST_EXIT = r"""
import atexit, logging, sys, threading, time
from camvideo.commands.main import exit_now
out = sys.argv[1]
atexit.register(lambda: open(out + ".atexit", "w").write("ran"))
handler = logging.FileHandler(out + ".log", delay=False)
logging.getLogger("t").addHandler(handler)
logging.getLogger("t").warning("logged")
def late():
    time.sleep(0.3)
    open(out + ".thread", "w").write("done")
threading.Thread(target=late).start()
sys.stdout.write("buffered, no newline")
exit_now(3)
"""


def test_fast_exit_keeps_what_a_normal_exit_does(tmp_path):
    """exit_now skips the interpreter's teardown but not its duties: the exit code,
    non-daemon threads finished, atexit handlers (logging's flush among them) run,
    buffered stdout written."""
    out = str(tmp_path / "x")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run([sys.executable, "-c", FAST_EXIT, out], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered, no newline"
    assert Path(out + ".thread").read_text() == "done"
    assert Path(out + ".atexit").read_text() == "ran"
    assert Path(out + ".log").read_text() == "logged\n"


def test_help_and_models_listing(capsys):
    assert main(["--help"]) == 0
    assert "--smooth" in capsys.readouterr().out
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith("efficientnet_lite0") and "resnet50" in listing


#: Child process: importing torch takes a minute (it takes ~2 s for real: the window in
#: which a Ctrl-C used to print a traceback), announced on stderr, then the CLI runs.
SLOW_TORCH_IMPORT = r"""
import importlib.abc, sys, time
class SlowTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "torch":
            sys.stderr.write("importing torch\n")
            sys.stderr.flush()
            time.sleep(60)
        return None
sys.meta_path.insert(0, SlowTorch())
from camvideo.commands.main import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command", ["main", "live", "batch"])
def test_ctrl_c_while_importing_is_one_line_and_130(command, pan_clip, tmp_path):
    """Ctrl-C during start-up (torch being imported, after the input was checked) is
    handled like any other: one line and exit code 130, no traceback."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(pan_clip.path.read_bytes())
    args = {"main": [str(pan_clip.path), str(tmp_path / "out.mp4")],
            "live": ["live", str(pan_clip.path), "--window", "off", "-o",
                     str(tmp_path / "rec.mp4")],
            "batch": ["batch", str(folder), str(tmp_path / "out")]}[command]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TORCH_IMPORT, *args],
                            stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # blocks until the slow import starts (or exit)
        assert first == "importing torch\n", first + proc.stderr.read()
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = proc.stderr.read()
    assert rc == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err and err.strip().splitlines() == [
        "camvideo: interrupted; nothing was left half written"], err


@pytest.mark.parametrize("args, code", [
    (["--help"], ExitCode.OK),
    (["models"], ExitCode.OK),
    (["live", "--help"], ExitCode.OK),
    (["batch", "--help"], ExitCode.OK),
    (["missing.mp4", "out.mp4"], ExitCode.INPUT),
    (["SAMPLE", "out.mp4", "--size", "10"], ExitCode.USAGE),
    (["SAMPLE", "out.mp4", "--colormap", "nope"], ExitCode.USAGE),
    (["SAMPLE", "no/such/folder/out.mp4"], ExitCode.OUTPUT),
    (["SAMPLE", "out.xyz"], ExitCode.OUTPUT),
    (["live", "missing.mp4"], ExitCode.INPUT),
    (["batch", "missing", "out"], ExitCode.INPUT),
])
def test_answered_without_importing_torch(args, code, pan_clip, tmp_path):
    """Help, the model list, bad options and bad inputs or outputs are answered before
    torch is imported (it takes seconds): checked in a child process."""
    args = [str(pan_clip.path) if a == "SAMPLE" else a for a in args]
    script = ("import sys\nfrom camvideo.commands.main import main\nrc = main(sys.argv[1:])\n"
              "print('torch' in sys.modules, rc)\n")
    proc = subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    torch_loaded, rc = proc.stdout.strip().splitlines()[-1].split()
    assert (torch_loaded, int(rc)) == ("False", code), proc.stderr
    if code != ExitCode.OK:
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_the_sidecar_carries_the_box_without_bbox(pan_clip, lite0, tmp_path):
    """--bbox only draws the box: the sidecar (and stream()) carry it either way, the
    same one as with --bbox."""
    side, side_b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    camvideo.annotate(pan_clip.path, tmp_path / "a.mp4", model=lite0, json=str(side))
    camvideo.annotate(pan_clip.path, tmp_path / "b.mp4", model=lite0, json=str(side_b),
                      bbox=True)
    plain = [json.loads(line)["bbox"] for line in side.read_text().splitlines()]
    drawn = [json.loads(line)["bbox"] for line in side_b.read_text().splitlines()]
    assert all(b is not None and len(b) == 4 for b in plain) and plain == drawn
