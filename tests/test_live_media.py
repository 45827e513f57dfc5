"""`camvideo live` on sources as they are in the field: a stream joined between two
keyframes far apart, a sender that stops and starts again (``--reconnect``), and live
recordings that keep the source's audio in step with the video.

Streams are MPEG-TS (H.264, AAC) sent over loopback by a child process (`SENDER`) at
real-time pace. Its pictures carry their frame number as 10 black or white bars, so a
recorded frame says which one it was (recorded with ``--alpha 0 -k 0``: the frames as
they came in); its audio is a tone during the first quarter of every second (onsets on
whole seconds of the sender's clock). Every test is bounded in time and stops by itself.
The building blocks (the reader's signals, gaps and cuts) are tested in-process at the
end.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from camvideo.commands.main import main
from camvideo.errors import ExitCode, SourceLostError
from camvideo.media.streams import DATA, LiveSource, Reopened, Status
from stream_tools import free_port, mpegts_bytes, ts_server

W, H, FPS, RATE = 160, 96, 30, 48000
BITS = 10

#: Child process: ``URL SECONDS GOP AUDIO``: send SECONDS of numbered frames (keyframe
#: every GOP frames, no others) and, with AUDIO 1, a mono AAC tone during the first 0.25 s
#: of every second, as MPEG-TS at real-time pace; prints ``key N`` for each keyframe.
SENDER = r"""
import sys, time, av, numpy as np
from fractions import Fraction
url, seconds, gop, audio = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
W, H, FPS, RATE, BITS = 160, 96, 30, 48000, 10
def picture(i):
    img = np.full((H, W, 3), 16, np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            img[:, b * 16:(b + 1) * 16] = 235
    return img
def tone(n, k):
    t = (n + np.arange(k)) / RATE
    x = np.where(t % 1.0 < 0.25, 0.3 * np.sin(2 * np.pi * 440 * t), 0.0)
    f = av.AudioFrame.from_ndarray(x.astype(np.float32)[None], format="fltp", layout="mono")
    f.sample_rate, f.pts, f.time_base = RATE, n, Fraction(1, RATE)
    return f
deadline = time.monotonic() + 20
while True:  # TCP: the listener may not be up yet
    try:
        out = av.open(url, "w", format="mpegts")
        break
    except (av.FFmpegError, OSError):
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
vs = out.add_stream("libx264", rate=FPS)
vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
vs.codec_context.options = {"tune": "zerolatency", "preset": "ultrafast", "g": str(gop),
                            "x264-params": f"scenecut=0:min-keyint={gop}", "crf": "16"}
aus = out.add_stream("aac", rate=RATE, layout="mono") if audio else None
t0, i, n = time.monotonic(), 0, 0
while i / FPS < seconds:
    vf = av.VideoFrame.from_ndarray(picture(i), format="rgb24")
    vf.pts = i
    for p in vs.encode(vf):
        if p.is_keyframe:
            print(f"key {i}", flush=True)
        out.mux(p)
    while aus is not None and n + 1024 <= (i + 1) * RATE // FPS:
        out.mux(aus.encode(tone(n, 1024)))
        n += 1024
    i += 1
    wait = t0 + i / FPS - time.monotonic()
    if wait > 0:
        time.sleep(wait)
out.close()
"""


# --------------------------------------------------------------------------- helpers


def picture(i: int) -> np.ndarray:
    """Frame ``i``: its number in binary as 10 bars of 16 px, white for a 1."""
    img = np.full((H, W, 3), 16, np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            img[:, b * 16:(b + 1) * 16] = 235
    return img


def number(img: np.ndarray) -> int:
    """The frame number a (decoded) :func:`picture` shows."""
    bands = img[8:-8].reshape(H - 16, BITS, 16, 3)[:, :, 3:13].mean(axis=(0, 2, 3))
    return int(sum(1 << b for b in range(BITS) if bands[b] > 128))


class Sender:
    """A running `SENDER`; :meth:`wait_key` waits for its first keyframe."""

    def __init__(self, url: str, seconds: float, gop: int = 15, audio: bool = False):
        self.proc = subprocess.Popen([sys.executable, "-c", SENDER, url, str(seconds),
                                      str(gop), "1" if audio else "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)

    def wait_key(self, limit: float = 30.0) -> None:
        """Wait (up to ``limit`` s) until it sent its first keyframe."""
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(limit)
        assert box and box[0].startswith("key 0"), (box, self.proc.poll())

    def wait(self, limit: float) -> None:
        self.proc.wait(limit)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@contextlib.contextmanager
def sending(url: str, seconds: float, gop: int = 15, audio: bool = False):
    s = Sender(url, seconds, gop, audio)
    try:
        yield s
    finally:
        s.stop()


def live(args: list, capsys) -> tuple[int, str, float]:
    t0 = time.monotonic()
    rc = main(["live", *[str(a) for a in args]])
    return rc, capsys.readouterr().err, time.monotonic() - t0


RAW = ["--window", "off", "--alpha", "0", "-k", "0", "--size", "64", "--smooth", "0"]


def recorded(path: Path) -> tuple[list[float], list[int]]:
    """Each recorded frame's time (s) and the sender's frame number it shows."""
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return ([float(f.pts * f.time_base) for f in frames],
            [number(f.to_ndarray(format="rgb24")) for f in frames])


def onsets(path: Path, threshold: float = 0.05, quiet: float = 0.3) -> list[float]:
    """Times (s) in ``path``'s first audio stream where the tone starts after at least
    ``quiet`` s of silence."""
    times, peaks = [], []
    with av.open(str(path)) as c:
        for f in c.decode(c.streams.audio[0]):
            x = np.abs(f.to_ndarray().astype(np.float64))
            if x.dtype.kind == "i":
                x = x / 32768.0
            peak = x.max(0) if f.format.is_planar else \
                x.reshape(-1, f.layout.nb_channels).max(1)
            times.append(float(f.pts * f.time_base) + np.arange(f.samples) / f.sample_rate)
            peaks.append(peak)
    t, p = np.concatenate(times), np.concatenate(peaks)
    loud = t[p > threshold]
    return [float(x) for k, x in enumerate(loud) if k == 0 or x - loud[k - 1] > quiet]


# --------------------------------------------------------------------------- keyframes


def test_long_gop_stream_joined_mid_gop_records_from_its_first_keyframe(tiny_model,
                                                                       tmp_path, capsys):
    """Keyframes 5 s apart (150 frames): joined 1 s after one, nothing is decodable for
    4 s while packets keep coming. The source waits (it said so) instead of calling the
    stream stalled (--timeout 2), and the recording starts with the next keyframe."""
    port = free_port()
    url = f"udp://127.0.0.1:{port}"
    out, st = tmp_path / "rec.mp4", tmp_path / "stats.json"
    with sending(url, seconds=14, gop=150) as sender:
        sender.wait_key()
        time.sleep(1.0)  # mid-GOP
        rc, err, elapsed = live([url, "-o", out, "--duration", 2, "--timeout", 2,
                                 "--stats", st, *RAW], capsys)
    assert rc == ExitCode.OK, err
    assert "waiting for a keyframe" in err, err
    times, numbers = recorded(out)
    # from that keyframe on (not the next one, 5 s later): the frames that probing held
    # back come in a burst, and the newest is taken, as always live
    assert 150 <= numbers[0] < 180, numbers[:5]
    assert numbers == sorted(numbers) and numbers[-1] - numbers[0] < 70
    assert len(numbers) >= 30  # 2 s at 30 fps; on a loaded machine a few are dropped
    assert all(b > a for a, b in zip(times, times[1:]))
    assert times[0] == pytest.approx(0.0, abs=0.01) and 1.6 <= times[-1] < 2.0
    # the frames keep their spacing: time follows the frame number (1/30 s each)
    gaps = np.diff(times) / np.diff(numbers)
    assert np.allclose(gaps, 1 / FPS, atol=0.002), gaps
    assert json.loads(st.read_text())["shown"] == len(numbers)
    assert elapsed < 15


def test_keyframes_further_apart_than_the_open_timeout_is_exit_7(tiny_model, tmp_path,
                                                                 capsys):
    port = free_port()
    url = f"udp://127.0.0.1:{port}"
    with sending(url, seconds=20, gop=600) as sender:  # one keyframe in 20 s
        sender.wait_key()
        time.sleep(0.5)
        rc, err, elapsed = live([url, "--open-timeout", 3, "--timeout", 2, *RAW], capsys)
    assert rc == ExitCode.SOURCE_LOST
    lines = [ln for ln in err.strip().splitlines() if "error" in ln]
    assert len(lines) == 1 and "no picture within 3 s of connecting: data arrives, but " \
        "no keyframe" in lines[0], err
    assert "Traceback" not in err and elapsed < 8


# --------------------------------------------------------------------------- reconnect


def test_sender_that_restarts_is_followed_into_one_recording(tiny_model, tmp_path, capsys):
    """The sender stops after 3 s and starts again 3 s later. With --reconnect the
    source is reopened and the recording goes on: one file with a gap of about 3 s
    (wall clock), frames numbered anew after it, exit 0 at --duration; --stats records
    the gap, and the audio goes on too, in step with each part's video."""
    port = free_port()
    url = f"udp://127.0.0.1:{port}"
    out, st = tmp_path / "rec.mp4", tmp_path / "stats.json"
    restarted = threading.Event()

    def senders() -> None:
        with sending(url, seconds=3.0, audio=True) as first:
            first.wait(30)
        time.sleep(3.0)
        with sending(url, seconds=10.0, audio=True) as second:
            restarted.set()
            second.wait(30)

    thread = threading.Thread(target=senders, daemon=True)
    thread.start()
    rc, err, elapsed = live([url, "--reconnect", "-o", out, "--duration", 8.5,
                             "--timeout", 1, "--stats", st, *RAW], capsys)
    thread.join(30)
    assert rc == ExitCode.OK, err
    assert restarted.is_set()
    times, numbers = recorded(out)
    k = next(i for i in range(1, len(numbers)) if numbers[i] < numbers[i - 1])
    before, after = numbers[:k], numbers[k:]
    assert before == sorted(before) and after == sorted(after)
    assert len(before) >= 30 and len(after) >= 10  # ~3 s and the rest of the 8.5 s
    hole = times[k] - times[k - 1]
    assert 3.0 <= hole <= 5.5, hole  # the sender was away 3 s (plus its start-up)
    assert all(b > a for a, b in zip(times, times[1:])) and times[-1] < 8.5
    stats = json.loads(st.read_text())
    assert stats["shown"] == len(numbers)
    assert len(stats["gaps"]) == 1, stats["gaps"]
    gap = stats["gaps"][0]
    assert gap["start"] == pytest.approx(times[k - 1], abs=0.002)
    assert gap["end"] == pytest.approx(times[k], abs=0.002)
    assert "stalled" in gap["reason"] and gap["attempts"] >= 1
    first = video_offset(times[:k], numbers[:k], exact=0.0015)
    second = video_offset(times[k:], numbers[k:], exact=0.0015)
    assert_in_step(out, [(times[0], times[k - 1], first), (times[k], times[-1], second)])
    assert elapsed < 20


def test_reconnect_attempts_that_run_out_are_exit_7(tiny_model, tmp_path, capsys):
    out = tmp_path / "rec.mkv"
    with ts_server(mpegts_bytes([picture(i) for i in range(round(2.0 * FPS))], 2.0, FPS),
                   2.0) as port:
        rc, err, elapsed = live([f"tcp://127.0.0.1:{port}", "--reconnect", "2", "-o", out,
                                 "--open-timeout", 15, *RAW], capsys)
    assert rc == ExitCode.SOURCE_LOST
    lines = [ln for ln in err.strip().splitlines() if "error" in ln]
    assert len(lines) == 1, err
    assert "stream ended" in lines[0] and "not back after 2 reconnection attempts" in \
        lines[0] and f"recording kept: {out}" in lines[0], err
    times, numbers = recorded(out)
    assert len(numbers) >= 15 and numbers == sorted(numbers)  # of the 2 s sent
    assert elapsed < 20


# --------------------------------------------------------------------------- audio


def av_clip(path: Path, seconds: float = 3.0, acodec: str = "aac") -> Path:
    """Numbered frames at 30 fps with a tone in the first 0.25 s of every second."""
    with av.open(str(path), "w") as c:
        vs = c.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = W, H, "yuv420p"
        aus = c.add_stream(acodec, rate=RATE, layout="mono")
        fmt = aus.codec_context.format.name
        n = 0
        for i in range(round(seconds * FPS)):
            vf = av.VideoFrame.from_ndarray(picture(i), format="rgb24")
            vf.pts = i
            c.mux(vs.encode(vf))
            while n + 1024 <= (i + 1) * RATE // FPS:
                t = (n + np.arange(1024)) / RATE
                x = np.where(t % 1.0 < 0.25, 0.3 * np.sin(2 * np.pi * 440 * t), 0.0)
                data = x.astype(np.float32)[None]
                if fmt.startswith("s16"):
                    data = (data * 32767).astype(np.int16)
                af = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
                af.sample_rate, af.pts, af.time_base = RATE, n, Fraction(1, RATE)
                c.mux(aus.encode(af))
                n += 1024
        c.mux(vs.encode(None))
        c.mux(aus.encode(None))
    return path


def assert_in_step(out: Path, parts: list[tuple[float, float, float]]) -> None:
    """In each part ``(start, end, offset)`` of the recording (seconds), every tone
    onset of its audio lies within one audio frame of where the video puts that moment
    (a whole second of the sender's clock, plus ``offset``), and every whole second the
    part spans has its onset (those in its first and last 0.3 s aside: a tone cut by a
    start or an end is no onset)."""
    within = [(a + 0.3, b - 0.3) for a, b, _ in parts]
    want = [s + off for (a, b, off), (lo, hi) in zip(parts, within) for s in range(100)
            if lo < s + off < hi]
    # an onset counts where the whole second it marks does (not where it lies: one at a
    # part's edge, a few samples late, would fall on the other side of it than its second)
    got = [g for g in onsets(out) if any(lo < round(g - off) + off < hi
                                         for (_, _, off), (lo, hi) in zip(parts, within))]
    assert len(want) >= 2 and len(got) == len(want), (got, want)
    assert np.abs(np.array(got) - want).max() <= AUDIO_FRAME, (got, want)


def video_offset(times: list[float], numbers: list[int], exact: float) -> float:
    """The recording time minus the sender's time of its frames (all frames agree
    within ``exact`` s)."""
    offsets = np.array(times) - np.array(numbers) / FPS
    assert np.ptp(offsets) <= exact, offsets
    return float(np.median(offsets))


AUDIO_FRAME = 1024 / RATE  #: one AAC frame, 21.3 ms


@pytest.mark.parametrize("ext, acodec, codec", [(".mp4", "aac", "aac"),
                                                (".mp4", "ac3", "aac"),
                                                (".mkv", "ac3", "ac3")])
def test_live_recording_of_a_clip_keeps_its_audio_in_step(tiny_model, tmp_path, capsys,
                                                          ext, acodec, codec):
    """`camvideo live CLIP --realtime -o rec`: the clip's audio goes into the recording
    (copied, or AC-3 re-encoded for .mp4), every tone onset within one audio frame of
    where the video puts that moment."""
    src = av_clip(tmp_path / f"clip{'.mkv' if acodec == 'ac3' else '.mp4'}", acodec=acodec)
    out = tmp_path / f"rec{ext}"
    rc, err, _ = live([src, "--realtime", "-o", out, *RAW], capsys)
    assert rc == ExitCode.OK, err
    times, numbers = recorded(out)
    assert len(numbers) >= 60
    offset = video_offset(times, numbers, exact=0.0015)  # the file's own timing
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == codec
    assert_in_step(out, [(0.0, times[-1], offset)])
    if numbers[0] == 0:  # played from its first frame: the first onset, at 0 s, too
        assert onsets(out)[0] == pytest.approx(0.0, abs=AUDIO_FRAME)


def test_no_audio_drops_it_and_duration_ends_the_audio_with_the_video(tiny_model,
                                                                      tmp_path, capsys):
    src = av_clip(tmp_path / "clip.mp4", seconds=4.0)
    out = tmp_path / "rec.mp4"
    rc, err, _ = live([src, "--realtime", "-o", out, "--no-audio", *RAW], capsys)
    assert rc == ExitCode.OK, err
    with av.open(str(out)) as c:
        assert not c.streams.audio
    out2 = tmp_path / "rec2.mp4"
    rc, err, _ = live([src, "--realtime", "-o", out2, "--duration", 1.5, *RAW], capsys)
    assert rc == ExitCode.OK, err
    times, _ = recorded(out2)
    with av.open(str(out2)) as c:
        a = c.streams.audio[0]
        ends = [float((p.pts + p.duration) * a.time_base) for p in c.demux(a) if p.size]
    assert times[-1] < 1.5 and abs(max(ends) - times[-1]) <= 1 / FPS + AUDIO_FRAME


def test_stream_audio_is_recorded_in_step_with_the_video(tiny_model, tmp_path, capsys):
    """A stream's AAC goes into the recording, on the capture clock: every tone onset
    within one audio frame of where the recorded video puts that moment of the
    sender's clock."""
    port = free_port()
    url = f"udp://127.0.0.1:{port}"
    out = tmp_path / "rec.mp4"
    with sending(url, seconds=12, audio=True) as sender:
        sender.wait_key()
        rc, err, _ = live([url, "-o", out, "--duration", 4.2, *RAW], capsys)
    assert rc == ExitCode.OK, err
    times, numbers = recorded(out)
    # 4.2 s of a 30-fps stream is 126 frames; live drops stale ones while it is behind
    # (a loaded 2-core CI machine once kept 99 of them: the sender's frame 0, then 21 on)
    assert times[-1] - times[0] >= 3.9 and len(numbers) >= 60
    offset = video_offset(times, numbers, exact=0.0015)  # the stream's own clock
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "aac"
    assert_in_step(out, [(0.0, times[-1], offset)])


# --------------------------------------------------------------------------- in-process


def _img(obj: object) -> tuple[np.ndarray, int]:
    return np.zeros((4, 4, 3), np.uint8), 0


def test_packets_keep_a_source_alive_and_reopening_marks_a_cut():
    """DATA (packets without a picture) keeps the watchdog quiet well past the read
    timeout; a Reopened source's next frame is a cut, and the gap is recorded."""
    def produce():
        yield "a"
        for _ in range(40):  # 2 s of packets without a picture
            time.sleep(0.05)
            yield DATA
        yield Status("reconnecting (attempt 1 of 3)", bounded=True)
        time.sleep(1.5)  # 1.5 s of nothing, but the reader bounds it
        yield Reopened("stream ended", time.monotonic(), 1)
        yield "b"
        yield "c"

    src = LiveSource("s", produce(), _img, lambda: None, read_timeout=0.4,
                     drop=False).start()
    a = src.read()
    b = src.read()
    c = src.read()
    assert src.read() is None
    src.stop()
    assert (a.cut, b.cut, c.cut) == (False, True, False)
    assert src.packets == 40 and src.status is None
    assert [(g.reason, g.attempts) for g in src.gaps] == [("stream ended", 1)]
    assert src.gaps[0].start == a.time and src.gaps[0].end == b.time
    assert b.time - a.time >= 3.4  # wall-clock spacing across the gap


def test_a_silent_source_still_stalls():
    hang = threading.Event()

    def produce():
        yield "a"
        yield Status("waiting for a keyframe")  # not bounded: the watchdog stays on
        hang.wait(30)

    src = LiveSource("s", produce(), _img, lambda: None, read_timeout=0.4).start()
    assert src.read() is not None
    t0 = time.monotonic()
    with pytest.raises(SourceLostError, match="stalled"):
        src.read()
    assert time.monotonic() - t0 < 3 and src.status == "waiting for a keyframe"
    hang.set()
    src.stop()


def test_a_bare_reconnect_takes_its_default_and_leaves_the_source_alone():
    from camvideo.commands.live import DEFAULT_RECONNECT, _bare_reconnect, build_parser

    p = build_parser()
    for argv, n, source in [(["--reconnect", "udp://h:1"], DEFAULT_RECONNECT, "udp://h:1"),
                            (["udp://h:1", "--reconnect"], DEFAULT_RECONNECT, "udp://h:1"),
                            (["--reconnect", "3", "udp://h:1"], 3, "udp://h:1"),
                            (["udp://h:1"], 0, "udp://h:1")]:
        ns = p.parse_args(_bare_reconnect(argv))
        assert (ns.reconnect, ns.source) == (n, source), argv
    with pytest.raises(SystemExit):
        p.parse_args(_bare_reconnect(["--reconnect", "0"]))


@pytest.mark.parametrize("stride", [1, 3])
def test_the_engine_hands_a_frames_cut_to_the_smoother(tiny_model, stride):
    """Frame.cut reaches the smoother (which resets there, tests/test_smoothing.py), and
    with --stride the network runs on that frame rather than carrying the last map
    across the gap."""
    from camvideo.api import build_engine
    from camvideo.media.frames import Frame
    from camvideo.options import Options

    engine = build_engine(Options(size=64, stride=stride), tiny_model, trace=False)
    starts: list[bool] = []
    push = engine.smoother.push

    def spy(*args, **kwargs):
        starts.extend(kwargs.get("starts") or args[5])
        return push(*args, **kwargs)

    engine.smoother.push = spy
    frames = [Frame(i, picture(7), i * 33, i / 30, cut=i == 4) for i in range(6)]
    rendered = engine.process(frames[:3]) + engine.process(frames[3:]) + engine.flush()
    assert len(rendered) == 6 and starts == [False] * 4 + [True, False]
    # stride 3: the network on frames 0 and 3 by the count, and on 4 for its cut
    assert engine.network_frames == (6 if stride == 1 else 3)


def test_frames_follow_the_source_clock_unless_it_misbehaves():
    """Capture times come with jitter (here: frames decoded in a burst); the source's
    clock does not, and is followed from the first frame. A clock that stands still is
    not: capture times from there."""
    clock = [0.0, 0.1, 0.2, 0.3, 0.4, 0.4, 0.4]  # the last two stand still

    def produce():
        time.sleep(0.25)
        yield 0
        yield 1  # a burst: decoded at once
        yield 2
        time.sleep(0.15)
        yield 3
        for i in (4, 5, 6):
            time.sleep(0.1)
            yield i

    src = LiveSource("s", produce(), _img, lambda: None, drop=False,
                     source_time=lambda i: clock[i]).start()
    times = [f.time for f in iter(src.read, None)]
    src.stop()
    assert times[:5] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=1e-9)
    # frames 5 and 6 were captured 0.35 s and 0.45 s after frame 0 (or later, on a
    # loaded machine), and time must go on after 0.4
    assert 0.4 < times[5] < times[6] and 0.44 <= times[6] < 1.0
