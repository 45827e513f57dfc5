"""`camvideo live` end to end: real network streams over loopback, a slow model, lost and
stalled sources, shutdown (the --serve page in a real browser: test_live_preview.py).

Streams are MPEG-TS (H.264, zerolatency) sent by PyAV at real-time pace from a child
process (`SENDER`) over UDP, or by a TCP server thread (`stream_tools.ts_server`) that closes the
stream mid-way. The network is a tiny
convolution (conftest.py's ``tiny_model``, or ``use_tiny_model`` slowed down where the
point is timing with a slow model). The building blocks (source parsing, the latest-frame
slot, the window and HUD) are tested on their own in test_live_units.py.
"""
from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from camvideo.testing import synth
from conftest import TINY_MODEL_CLI_PRELUDE, use_tiny_model
from camvideo.commands.main import main
from camvideo.errors import ExitCode
from camvideo.live.session import run_live
from camvideo.render import colormap_lut
from camvideo.testing.clip import Clip
from stream_tools import free_port, mpegts_bytes, ts_server

#: Child process: send a clip's frames in a loop as MPEG-TS at real-time pace for
#: SECONDS, then stay connected but silent for HOLD seconds (a stall), then close.
SENDER = r"""
import sys, time, av
url, clip, seconds, hold = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
fps = 30
with av.open(clip) as c:
    frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
h, w = frames[0].shape[:2]
deadline = time.monotonic() + 20
while True:  # TCP: camvideo may not be listening yet
    try:
        out = av.open(url, "w", format="mpegts")
        break
    except (av.FFmpegError, OSError):
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
s = out.add_stream("libx264", rate=fps)
s.width, s.height, s.pix_fmt = w, h, "yuv420p"
s.codec_context.options = {"tune": "zerolatency", "preset": "ultrafast", "g": "15",
                           "crf": "16"}
t0, i = time.monotonic(), 0
while i / fps < seconds:
    vf = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
    vf.pts = i
    for p in s.encode(vf):
        out.mux(p)
    i += 1
    wait = t0 + i / fps - time.monotonic()
    if wait > 0:
        time.sleep(wait)
time.sleep(hold)
for p in s.encode(None):
    out.mux(p)
out.close()
"""


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Clip:
    """The cat panning, 192x108, 30 frames at 30 fps (the sender loops it)."""
    return synth.make_clip("pan", tmp_path_factory.mktemp("live") / "pan.mp4",
                           size=(192, 108), n=30, fps=30)


@pytest.fixture(scope="module")
def raw_frames(clip) -> list[np.ndarray]:
    with av.open(str(clip.path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@contextlib.contextmanager
def sender(url: str, clip: Clip, seconds: float, hold: float = 0.0):
    proc = subprocess.Popen([sys.executable, "-c", SENDER, url, str(clip.path),
                             str(seconds), str(hold)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def live(args: list, capsys) -> tuple[int, str, float]:
    t0 = time.monotonic()
    rc = main(["live", *[str(a) for a in args]])
    return rc, capsys.readouterr().err, time.monotonic() - t0


def decoded(path: Path) -> tuple[list[float], list[np.ndarray]]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return ([float(f.pts * f.time_base) for f in frames],
            [f.to_ndarray(format="rgb24") for f in frames])


def heat_residual(rec: np.ndarray, raw: np.ndarray, alpha: float = 0.5) -> float:
    """Median distance (RGB levels) of ``(rec - (1 - alpha) raw) / alpha`` to the nearest
    jet colour: small when ``rec`` is ``raw`` blended with a jet heatmap."""
    heat = (rec.astype(np.float32) - (1 - alpha) * raw.astype(np.float32)) / alpha
    px = heat[::6, ::6].reshape(-1, 1, 3)
    lut = colormap_lut("jet").numpy().astype(np.float32).reshape(1, 256, 3)
    return float(np.median(np.sqrt(((px - lut) ** 2).sum(-1)).min(1)))


def stats_of(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- streams


def test_udp_stream_is_annotated_and_recorded(tiny_model, clip, raw_frames, tmp_path,
                                              capsys):
    port = free_port()
    out, st = tmp_path / "rec.mp4", tmp_path / "stats.json"
    duration = 2.5
    with sender(f"udp://127.0.0.1:{port}", clip, seconds=duration + 8):
        rc, err, _ = live([f"udp://127.0.0.1:{port}", "-o", out, "--duration", duration,
                           "--window", "off", "--topk", "0", "--size", 96,
                           "--stats", st], capsys)
    assert rc == ExitCode.OK, err
    times, frames = decoded(out)
    stats = stats_of(st)
    assert len(frames) == stats["shown"] >= 20
    assert all(b > a for a, b in zip(times, times[1:])), "timestamps must increase"
    assert times[0] == pytest.approx(0.0, abs=0.01)
    assert duration - 0.4 <= times[-1] < duration  # spans the duration, capture-timed
    assert np.median(np.diff(times)) == pytest.approx(1 / 30, abs=0.012)
    # Every frame is annotated: far from every raw frame, and a jet heatmap blended over
    # one of them (measured: ~7 levels from jet; a raw frame itself is ~100 away).
    for rec in frames[::len(frames) // 6]:
        dist = min(np.abs(rec.astype(np.int16) - raw).mean() for raw in raw_frames)
        assert dist > 12, "a recorded frame equals a raw frame: not annotated"
        assert min(heat_residual(rec, raw) for raw in raw_frames) < 20
    assert min(heat_residual(raw_frames[5], raw) for raw in raw_frames) > 50  # control


def test_slow_model_drops_stale_frames_and_latency_stays_bounded(monkeypatch, clip,
                                                                tmp_path, capsys):
    use_tiny_model(monkeypatch, sleep=0.15)  # ~6 fps against a 30 fps stream
    port = free_port()
    out, st = tmp_path / "rec.mp4", tmp_path / "stats.json"
    with sender(f"udp://127.0.0.1:{port}", clip, seconds=12):
        rc, err, _ = live([f"udp://127.0.0.1:{port}", "-o", out, "--duration", 4,
                           "--window", "off", "--size", 96, "--stats", st], capsys)
    assert rc == ExitCode.OK, err
    stats = stats_of(st)
    lat = [f[2] for f in stats["frames"]]
    assert 12 <= stats["shown"] <= 40
    assert stats["dropped"] > 0.5 * stats["captured"], stats
    # Queued instead of dropped, 4 s of a 30 fps stream at ~6 fps would end ~3 s late.
    first, last = np.median(lat[1:6]), np.median(lat[-5:])
    assert last <= first + 0.15, (first, last)
    assert max(lat[1:]) < 0.6, lat
    times, frames = decoded(out)
    assert len(frames) == stats["shown"]
    assert np.median(np.diff(times)) > 0.1  # the dropped frames are simply absent
    assert all(b > a for a, b in zip(times, times[1:]))


def test_tcp_stream_closed_by_its_server_is_a_lost_source(tiny_model, raw_frames,
                                                          tmp_path, capsys):
    """A tcp:// (rtsp, udp...) stream does not end by itself: the server closing it
    mid-stream is a lost source (exit 7, so a watchdog can restart), and what was recorded
    and the --stats are kept."""
    out, st = tmp_path / "rec.mkv", tmp_path / "stats.json"
    with ts_server(mpegts_bytes(raw_frames, 6.0), seconds=6.0, cut=3.0) as port:
        rc, err, elapsed = live([f"tcp://127.0.0.1:{port}", "-o", out, "--window", "off",
                                 "--size", 96, "--open-timeout", 15, "--stats", st], capsys)
    assert rc == ExitCode.SOURCE_LOST, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stream ended" in lines[0], err
    assert f"recording kept: {out}" in lines[0]
    times, frames = decoded(out)
    # the server cut the stream 3 s in (of 6): the recording stops there, give or take
    # the decoding of what was buffered (capture times)
    assert len(frames) >= 10 and all(b > a for a, b in zip(times, times[1:]))
    assert times[-1] < 5.0
    stats = stats_of(st)
    assert stats["shown"] == len(frames) and stats["output"] == str(out)
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_ctrl_c_while_connecting_exits_130_at_once(tmp_path):
    """A server that accepts the connection but sends nothing: `av.open` waits (up to
    --open-timeout, 120 s here); Ctrl-C must end the run at once with exit code 130."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    code = (TINY_MODEL_CLI_PRELUDE +
            f"sys.exit(main(['live', 'tcp://127.0.0.1:{port}', '--window', 'off',"
            " '--open-timeout', '120']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    conns = []
    try:
        listener.settimeout(120)
        conns.append(listener.accept()[0])  # camvideo is inside av.open now
        time.sleep(1.0)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        try:
            rc = proc.wait(30)
        except subprocess.TimeoutExpired:
            rc = None
        elapsed = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        listener.close()
        for conn in conns:
            conn.close()
    err = proc.stderr.read()
    assert rc == ExitCode.INTERRUPTED, (rc, elapsed, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "interrupted" in err


@pytest.mark.parametrize("source", ["57", "/dev/video57", "tcp://127.0.0.1:{closed}"])
def test_unopenable_source_is_one_line_and_nonzero(source, tmp_path, capsys):
    source = source.format(closed=free_port(socket.SOCK_STREAM))
    rc, err, elapsed = live([source, "-o", tmp_path / "rec.mp4", "--window", "off"], capsys)
    assert rc == ExitCode.SOURCE_LOST
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("camvideo: error: cannot open"), err
    assert elapsed < 5 and not list(tmp_path.iterdir())


def test_missing_file_is_one_line(tmp_path, capsys):
    rc, err, _ = live([tmp_path / "nope.mp4", "--realtime", "--window", "off"], capsys)
    assert rc == ExitCode.INPUT and len(err.strip().splitlines()) == 1
    assert "not found" in err


def test_stalled_stream_times_out_and_keeps_the_recording(tiny_model, clip, tmp_path,
                                                         capsys):
    port = free_port()
    out = tmp_path / "rec.mp4"
    with sender(f"udp://127.0.0.1:{port}", clip, seconds=2.0, hold=30):
        rc, err, elapsed = live([f"udp://127.0.0.1:{port}", "-o", out, "--timeout", 1,
                                 "--window", "off", "--size", 96], capsys)
    assert rc == ExitCode.SOURCE_LOST
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "stalled" in lines[0] and "no data for 1 s" in lines[0], err
    assert f"recording kept: {out}" in lines[0]
    assert elapsed < 10
    times, frames = decoded(out)  # what came before the stall was recorded and kept
    assert len(frames) >= 10 and all(b > a for a, b in zip(times, times[1:]))


def test_stream_that_never_starts_times_out(tmp_path, capsys):
    port = free_port()  # nobody sends there
    rc, err, elapsed = live([f"udp://127.0.0.1:{port}", "--open-timeout", 1,
                             "--window", "off", "-o", tmp_path / "r.mp4"], capsys)
    assert rc == ExitCode.SOURCE_LOST and elapsed < 5
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "nothing received within 1 s" in lines[0], err


def test_sigterm_finalises_the_recording(clip, tmp_path):
    """A real process: SIGTERM (cli.py turns it into KeyboardInterrupt) stops the capture,
    drains and closes the recording, exit 0."""
    long = synth.make_clip("pan", tmp_path / "long.mp4", size=(192, 108), n=300, fps=30)
    out = tmp_path / "rec.mp4"
    code = (TINY_MODEL_CLI_PRELUDE +
            f"sys.exit(main(['live', {str(long.path)!r}, '--realtime', '-o', {str(out)!r},"
            " '--window', 'off', '--size', '96']))\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not [p for p in tmp_path.iterdir() if "partial" in p.name]:
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
            time.sleep(0.1)
        time.sleep(1.0)  # about a second recorded
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == ExitCode.OK, proc.stderr.read()
    times, frames = decoded(out)
    assert 15 <= len(frames) < 300 and all(b > a for a, b in zip(times, times[1:]))
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@pytest.mark.parametrize("batch", [None, 2])
def test_live_runs_the_traced_network_frame_by_frame(tiny_model, tmp_path, monkeypatch,
                                                     batch):
    """A live stream's batches take what has arrived, so they come in any size: the
    traced network runs them frame by frame (one graph), at any batch size."""
    import camvideo.api as api

    seen: list = []
    real = api.build_engine

    def spy(*a, **k):
        engine = real(*a, **k)
        seen.append((engine._traced is not None, engine._per_frame))
        return engine

    monkeypatch.setattr(api, "build_engine", spy)
    clip = synth.make_clip("pan", tmp_path / "c.mp4", size=(160, 96), n=20, fps=30)
    opts = {"batch_size": batch} if batch else {}
    summary = run_live(str(clip.path), realtime=True, window="off", size=96, **opts)
    assert seen == [(True, True)] and summary.shown > 0
