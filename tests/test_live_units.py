"""`camvideo live`'s building blocks in-process, without a network stream: source and
bind parsing, the CLI parser, the latest-frame slot (:class:`camvideo.media.streams.LiveSource`)
and its watchdog, opening a stream (interruptible, ``av.open`` faked), the --stats file,
the preview server's client threads on close, and the window, its keys and the HUD
(OpenCV's window calls faked).

The end-to-end runs (real streams, --serve in a browser, SIGTERM) are in test_live.py.
"""
from __future__ import annotations

import _thread
import socket
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from camvideo.testing import synth
from camvideo.errors import OptionError, OutputError, SourceLostError
from camvideo.live.session import run_live
from camvideo.commands.live import build_parser
from camvideo.live.window import Controls, draw_hud
from camvideo.live.preview import PreviewServer, parse_bind
from camvideo.media.sources import SourceSpec, open_live, parse_source
from camvideo.media.streams import LiveSource


# --------------------------------------------------------------------------- parsing


def test_parse_source():
    if sys.platform.startswith("linux"):
        assert parse_source("0") == SourceSpec("camera", "/dev/video0", "v4l2",
                                               "camera 0 (/dev/video0)")
    assert parse_source("/dev/video2") == SourceSpec("camera", "/dev/video2", "v4l2",
                                                     "camera /dev/video2")
    assert parse_source("video=Cam").format == "dshow"
    s = parse_source("rtsp://user:secret@cam.local:554/live")
    assert s.kind == "url" and "secret" not in s.label and s.target.endswith("/live")
    assert parse_source("clip.mp4").kind == "file"
    with pytest.raises(OptionError):
        parse_source(" ")


def test_parse_bind():
    assert parse_bind("8080") == ("127.0.0.1", 8080)
    assert parse_bind(":0") == ("127.0.0.1", 0)
    assert parse_bind("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_bind("[::1]:81") == ("::1", 81)
    for bad in ("host:http", "70000"):
        with pytest.raises(OptionError):
            parse_bind(bad)


def test_parser_reuses_the_shared_groups_and_is_causal_only():
    p = build_parser()
    ns = p.parse_args([])
    assert ns.source == "0" and ns.stride == 1 and ns.batch_size is None
    assert ns.window == "auto" and not hasattr(ns, "smooth_mode")
    with pytest.raises(SystemExit):
        p.parse_args(["--smooth-mode", "centered"])


# --------------------------------------------------------------------------- sources


def _source(items, delay: float, **kw) -> LiveSource:
    def produce():
        for i in items:
            time.sleep(delay)
            yield i

    img = np.zeros((8, 8, 3), np.uint8)
    return LiveSource("test", produce(), lambda i: (img + i % 200, 0), lambda: None, **kw)


def test_latest_frame_policy_drops_what_a_slow_reader_missed():
    src = _source(range(200), 0.002).start()
    got = []
    while (f := src.read()) is not None:
        got.append(int(f.image[0, 0, 0]))
        time.sleep(0.03)  # a slow consumer
    src.stop()
    assert len(got) < 60 and got == sorted(set(got))
    assert src.dropped == src.captured - len(got) > 100
    assert got[-1] in (198, 199)


def test_without_drop_every_frame_is_delivered():
    src = _source(range(50), 0.0, drop=False).start()
    got = []
    while (f := src.read()) is not None:
        got.append(int(f.image[0, 0, 0]))
    src.stop()
    assert got == list(range(50)) and src.dropped == 0


def test_watchdog_gives_up_on_a_source_that_hangs():
    hang = threading.Event()

    def produce():
        yield 0
        hang.wait(30)

    src = LiveSource("cam", produce(), lambda i: (np.zeros((4, 4, 3), np.uint8), 0),
                     lambda: None, read_timeout=0.5).start()
    assert src.read() is not None
    t0 = time.monotonic()
    with pytest.raises(SourceLostError, match="stalled"):
        src.read()
    assert time.monotonic() - t0 < 3
    hang.set()
    src.stop()


@pytest.mark.parametrize("failure", ["ends", "errors"])
def test_camera_that_disappears_is_a_source_lost_error(failure):
    import errno

    def produce():
        yield 0
        yield 1
        if failure == "errors":
            raise OSError(errno.ENODEV, "No such device")

    src = LiveSource("camera 0 (/dev/video0)", produce(),
                     lambda i: (np.zeros((4, 4, 3), np.uint8), 0), lambda: None,
                     kind="camera", drop=False).start()
    assert src.read() is not None and src.read() is not None
    with pytest.raises(SourceLostError, match="camera 0 .*(disappeared|No such device)"):
        src.read()
    src.stop()


@pytest.mark.parametrize("url, endless", [
    ("tcp://127.0.0.1:5000", True), ("udp://@239.0.0.1:1234", True),
    ("rtsp://user:pw@cam/live", True), ("RTSPS://cam/live", True), ("rtmp://srv/app", True),
    ("srt://127.0.0.1:9000", True), ("rtp://127.0.0.1:5004", True),
    ("http://127.0.0.1/clip.ts", False), ("https://host/live.m3u8", False),
    ("file:///tmp/clip.mp4", False), ("clip.mp4", False)])
def test_only_live_protocols_and_cameras_are_endless(url, endless):
    assert parse_source(url).endless is endless
    assert parse_source("/dev/video3").endless


@pytest.mark.parametrize("endless", [True, False])
def test_end_of_a_live_protocol_stream_is_a_lost_source(endless):
    """A tcp:// (rtsp, udp...) stream does not end by itself: its end is a lost source, so
    a watchdog can restart the command; an http:// URL may be a finite file: a plain end."""
    src = LiveSource("tcp://127.0.0.1:5000", iter([0, 1]),
                     lambda i: (np.zeros((4, 4, 3), np.uint8), 0), lambda: None,
                     kind="url", endless=endless, drop=False).start()
    assert src.read() is not None and src.read() is not None
    if endless:
        with pytest.raises(SourceLostError, match=r"^tcp://127\.0\.0\.1:5000: stream ended"):
            src.read()
    else:
        assert src.read() is None
    src.stop()


class _FakeContainer:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_ctrl_c_while_opening_a_stream_is_prompt_and_leaks_nothing(monkeypatch):
    """``av.open`` blocks in C (PyAV's interrupt callback only watches the clock), so a
    Ctrl-C on the thread calling it waits for the open timeout. Faked here by an open that
    blocks in a lock for 10 s: open_live must raise KeyboardInterrupt at once, and close
    the container that the abandoned open returns later."""
    import camvideo.media.streams as streams

    entered, release = threading.Event(), threading.Event()
    made: list[_FakeContainer] = []

    def blocking_open(*args, **kwargs):
        entered.set()
        release.wait(10)  # one C-level wait: signals do not interrupt it
        made.append(_FakeContainer())
        return made[-1]

    monkeypatch.setattr(streams.av, "open", blocking_open)

    def ctrl_c() -> None:
        if entered.wait(10):
            time.sleep(0.2)
            _thread.interrupt_main()  # SIGINT's effect on the main thread

    threading.Thread(target=ctrl_c, daemon=True).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        open_live("tcp://127.0.0.1:9", open_timeout=30)
    elapsed = time.monotonic() - t0
    release.set()
    deadline = time.monotonic() + 10
    while not (made and made[0].closed) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert elapsed < 5, f"Ctrl-C took {elapsed:.1f} s to end the open"
    assert made and made[0].closed, "the abandoned open's container was leaked"


# --------------------------------------------------------------------------- --stats


def test_stats_into_a_missing_folder_is_refused_before_the_source_is_opened(tmp_path):
    with socket.socket() as s:  # a closed port: opening it would fail with exit 7
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OutputError, match="^stats folder does not exist"):
        run_live(f"tcp://127.0.0.1:{port}", window="off",
                 stats=str(tmp_path / "missing" / "stats.json"))


def test_stats_that_cannot_be_written_is_an_output_error(tiny_model, tmp_path,
                                                         monkeypatch):
    """The folder goes away during the session: one OutputError, not an internal error."""
    import shutil

    import camvideo.live.session as live

    clip = synth.make_clip("pan", tmp_path / "c.mp4", size=(96, 64), n=6, fps=30)
    folder = tmp_path / "stats"
    folder.mkdir()
    real = live._summary

    def summary_then_folder_gone(*args, **kwargs):
        shutil.rmtree(folder)
        return real(*args, **kwargs)

    monkeypatch.setattr(live, "_summary", summary_then_folder_gone)
    with pytest.raises(OutputError, match="cannot write stats "):
        run_live(str(clip.path), window="off", size=64, stats=str(folder / "s.json"))


# --------------------------------------------------------------------------- --serve


def _serve_threads(before: set) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


@pytest.mark.parametrize("client", ["stalled", "silent"])
def test_no_client_thread_outlives_close(client):
    """A viewer that asked for the stream and stopped reading (its thread blocked in a
    send), or one that connected and never sent a request (blocked in a read): close()
    must end their threads too, not only the listener."""
    before = set(threading.enumerate())
    server = PreviewServer("127.0.0.1", 0).start()
    host, port = server._httpd.server_address[:2]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        sock.connect((host, port))
        if client == "stalled":
            sock.sendall(b"GET /stream.mjpg HTTP/1.0\r\n\r\n")
            rng = np.random.default_rng(0)
            noise = [rng.integers(0, 256, (720, 1280, 3), np.uint8) for _ in range(4)]
            for i in range(200):  # ~0.5 MB JPEGs: the socket buffers fill up at once
                server.publish(noise[i % 4])
                time.sleep(0.005)
        deadline = time.monotonic() + 20
        while len(_serve_threads(before)) < 2:  # the server's and the client's threads
            assert time.monotonic() < deadline, "the client was never served"
            time.sleep(0.05)
        time.sleep(0.3)
        server.close()
        deadline = time.monotonic() + 2.0  # the handlers' own timeout is 10 s
        while _serve_threads(before) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _serve_threads(before), \
            f"threads alive after close(): {_serve_threads(before)}"
    finally:
        sock.close()
        server.close()


# --------------------------------------------------------------------------- window


class _Smoother:
    fixed_class = None


def test_window_keys(tmp_path):
    stop = threading.Event()
    said: list[str] = []
    sm = _Smoother()
    c = Controls(stop, sm, tmp_path, said.append)
    c.last_note = type("Note", (), {"topk": [(3, "cat", 0.6), (1, "dog", 0.3)]})()
    c.key(ord(" "), None)
    assert c.paused
    c.key(ord(" "), None)
    assert not c.paused
    c.key(ord("c"), None)
    assert sm.fixed_class == 3
    c.key(ord("c"), None)
    assert sm.fixed_class == 1
    c.key(ord("c"), None)
    assert sm.fixed_class is None  # back to automatic
    img = np.zeros((20, 30, 3), np.uint8)
    img[..., 0] = 255
    c.key(ord("s"), img)
    pngs = list(tmp_path.glob("camvideo-*.png"))
    assert len(pngs) == 1 and cv2.imread(str(pngs[0]))[0, 0].tolist() == [0, 0, 255]
    assert not stop.is_set()
    c.key(ord("q"), None)
    assert stop.is_set()


def test_hud_draws_bottom_left_only():
    img = np.full((180, 320, 3), 128, np.uint8)
    draw_hud(img, ["29.9 fps  latency 40 ms", "dropped 3%"])
    assert (img[:90] == 128).all() and (img[90:, 200:] == 128).all()
    assert (img[150:, :100] != 128).any()


def test_window_thread_shows_frames_and_hands_keys_over(monkeypatch, tmp_path):
    """The window thread with OpenCV's window calls faked (no display here): it shows the
    newest frame, passes keys to the controls, and closing the window stops the run."""
    import camvideo.live.window as lv

    shown, keys = [], iter([-1, ord(" "), -1, ord(" "), ord("s")])
    visible = {"v": 1.0}

    def wait_key(ms):
        time.sleep(ms / 1000)
        if not shown:
            return -1
        k = next(keys, None)
        if k is None and len(shown) >= 2:
            visible["v"] = 0.0  # the user closes the window
        return -1 if k is None else k

    monkeypatch.setattr(lv.cv2, "namedWindow", lambda *a: None)
    monkeypatch.setattr(lv.cv2, "imshow", lambda title, img: shown.append(img.copy()))
    monkeypatch.setattr(lv.cv2, "waitKey", wait_key)
    monkeypatch.setattr(lv.cv2, "getWindowProperty", lambda *a: visible["v"])
    monkeypatch.setattr(lv.cv2, "destroyWindow", lambda *a: None)
    stop = threading.Event()
    said: list[str] = []
    w = lv.WindowThread("t", Controls(stop, _Smoother(), tmp_path, said.append))
    w.start()
    red = np.zeros((10, 10, 3), np.uint8)
    red[..., 0] = 255
    w.show(red)
    time.sleep(0.2)
    w.show(red.copy())
    assert stop.wait(5), "closing the window must stop the run"
    w.close()
    assert not w.is_alive()
    assert shown and shown[0][0, 0].tolist() == [0, 0, 255]  # shown as BGR
    assert said[:2] == ["paused", "resumed"] and said[2].startswith("snapshot saved")


def test_no_display_means_no_window(monkeypatch):
    import camvideo.live.window as lv

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(lv.sys, "platform", "linux")
    assert not lv.display_available()
    with pytest.raises(OptionError, match="no display"):
        run_live("0", window="on")


def test_while_no_frame_comes_the_hud_shows_the_source_s_status_and_duration_ends():
    """A stream waiting for a keyframe (or reconnecting) sends no frames: the window and
    the preview get the last frame with the source's status drawn on it (--hud), and
    --duration ends the session by the wall clock, which frames' times cannot."""
    from camvideo.live.session import _Meter, _Watch

    class Src:
        status = "waiting for a keyframe"
        drop = True

    class View:
        def __init__(self):
            self.shown = []

        def publish(self, image):
            self.shown.append(image)

    meter = _Meter(Src())
    meter.last_image = np.full((120, 160, 3), 200, np.uint8)
    now = time.monotonic()
    meter.span = [now - 2.0, now - 1.5]  # the last frame 1.5 s ago
    view, stop = View(), threading.Event()
    watch = _Watch(Src(), meter, [view], duration=None, stop=stop, period=0.05)
    watch.start()
    time.sleep(0.3)
    watch.close()
    assert view.shown and not stop.is_set()
    img = view.shown[-1]
    assert (img[-10:, :40] != 200).any() and (meter.last_image == 200).all()  # a copy
    watch = _Watch(Src(), meter, [], duration=1.0, stop=stop, period=0.05)
    watch.start()
    assert stop.wait(2.0)  # 2 s since the first frame > 1 s
    watch.close()
    unpaced = Src()
    unpaced.drop = False  # a file as fast as the model goes: its own times count
    stop2 = threading.Event()
    watch = _Watch(unpaced, meter, [], duration=1.0, stop=stop2, period=0.05)
    watch.start()
    time.sleep(0.3)
    watch.close()
    assert not stop2.is_set()
