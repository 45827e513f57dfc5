"""`camvideo live`'s building blocks in-process, without a network stream: source and
bind parsing, the CLI parser, the latest-frame slot (:class:`camvideo.streams.LiveSource`)
and its watchdog, and the window, its keys and the HUD (OpenCV's window calls faked).

The end-to-end runs (real streams, --serve in a browser, SIGTERM) are in test_live.py.
"""
from __future__ import annotations

import sys
import threading
import time

import cv2
import numpy as np
import pytest

from camvideo.errors import OptionError, SourceLostError
from camvideo.live import run_live
from camvideo.live_cli import build_parser
from camvideo.liveview import Controls, draw_hud
from camvideo.serve import parse_bind
from camvideo.streams import LiveSource, SourceSpec, parse_source


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
    import camvideo.liveview as lv

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
    import camvideo.liveview as lv

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(lv.sys, "platform", "linux")
    assert not lv.display_available()
    with pytest.raises(OptionError, match="no display"):
        run_live("0", window="on")
