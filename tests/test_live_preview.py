"""``camvideo live --serve``: the preview page in a real headless browser (Debian's
chromium, which .ci/run installs) shows the annotated stream, and it moves."""
from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from camvideo.testing import synth
from camvideo.live.session import run_live
from camvideo.live.preview import parse_bind

CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _screenshot(url: str, path: Path, profile: Path) -> np.ndarray:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--window-size=400,300",
           "--hide-scrollbars", f"--screenshot={path}", url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=40, check=False)
    image = cv2.imread(str(path))
    assert image is not None, f"chromium wrote no screenshot: {proc.stderr[-800:]}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _mjpeg_frames(url: str, n: int) -> list[np.ndarray]:
    """The first ``n`` JPEG parts of a multipart/x-mixed-replace response."""
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers.get_content_type() == "multipart/x-mixed-replace"
        out, buf = [], b""
        while len(out) < n:
            buf += r.read1(65536)
            start = buf.find(b"\xff\xd8")
            end = buf.find(b"\xff\xd9", start + 2)
            if start >= 0 and end > 0:
                img = cv2.imdecode(np.frombuffer(buf[start:end + 2], np.uint8),
                                   cv2.IMREAD_COLOR)
                out.append(img)
                buf = buf[end + 2:]
    return out


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason=f"{CHROMIUM} missing (Debian package chromium; .ci/run installs it)")
def test_serve_page_shows_a_changing_stream_in_headless_chromium(tiny_model, tmp_path):
    long = synth.make_clip("pan", tmp_path / "long.mp4", size=(320, 180), n=450, fps=30)
    port = free_port()
    stop = threading.Event()
    result: dict = {}

    def run() -> None:
        try:
            result["summary"] = run_live(str(long.path), realtime=True, window="off",
                                         serve=f"127.0.0.1:{port}", duration=15,
                                         size=96, stop=stop)
        except BaseException as e:  # noqa: BLE001
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_http(url, 15)
        page = urllib.request.urlopen(url, timeout=5).read().decode()
        assert '<img id="live" src="/stream.mjpg"' in page
        a = _screenshot(url, tmp_path / "a.png", tmp_path / "profile-a")
        time.sleep(1.0)
        b = _screenshot(url, tmp_path / "b.png", tmp_path / "profile-b")
        f1, f2 = _mjpeg_frames(url + "stream.mjpg", 2)
    finally:
        stop.set()
        t.join(30)
    assert "error" not in result, result.get("error")
    # The page's image is the annotated stream: jet's deep blue (the map's low end, a
    # fifth of the page when shown) is there; the raw clip has none of it...
    for shot in (a, b):
        blue = (shot[..., 2] > 120) & (shot[..., 0] < 60)
        assert blue.mean() > 0.05, "no heatmap in the page"
    # ...and it moves: the two screenshots a second apart differ where the image is.
    changed = np.abs(a.astype(np.int16) - b).max(-1) > 30
    assert changed.mean() > 0.01, "the page's image did not change over time"
    assert f1 is not None and f2 is not None and f1.shape == (180, 320, 3)
    assert parse_bind(f"127.0.0.1:{port}") == ("127.0.0.1", port)
