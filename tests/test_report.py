"""The HTML report (camvideo.report, ``--report``, ``camvideo batch --report-html``): a
self-contained page that headless Chromium shows with its timeline plot, and a batch's
index page."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from camvideo.batch.runner import run_batch
from camvideo.render import PALETTE
from camvideo.report import read_summary
from camvideo.testing import synth

CHROMIUM = "/usr/bin/chromium"
CATS = {"Egyptian cat", "tabby", "tiger cat", "lynx", "Persian cat"}
CUPS = {"cup", "espresso", "coffee mug", "teapot", "potter's wheel"}


def screenshot(page: Path, out: Path, profile: Path, size: str = "1100,900") -> np.ndarray:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", f"--window-size={size}",
           "--hide-scrollbars", f"--screenshot={out}", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    image = cv2.imread(str(out))
    assert image is not None, f"chromium wrote no screenshot: {proc.stderr[-800:]}"
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def test_the_page_is_self_contained_and_says_what_happened(pair_clip, pair_run):
    text = pair_run["report"].read_text(encoding="utf-8")
    # nothing fetched from elsewhere: no external scripts, styles or images
    assert not re.search(r'(src|href)="(https?:)?//', text)
    assert "<script src" not in text and "<link" not in text
    assert text.count('src="data:image/jpeg;base64,') >= 1          # thumbnails inline
    assert '<svg id="timeline"' in text and text.count('class="series"') == 5
    s = read_summary(pair_run["report"])
    assert s["frames"] == pair_clip.frames and abs(s["duration"] - 3.0) < 0.05
    shown = {r["label"] for r in s["screen_time"]}
    assert shown & CATS and shown & CUPS                     # the two objects' classes
    # two classes were shown on every frame: their screen times add up to twice the clip
    assert sum(r["seconds"] for r in s["screen_time"]) == pytest.approx(6.0, abs=0.1)
    assert 'href="out.mp4"' in text                          # the video, linked
    assert "<td>classes</td><td>2</td>" in text               # the settings


@pytest.mark.skipif(not os.path.exists(CHROMIUM),
                    reason=f"{CHROMIUM} missing (Debian package chromium; .ci/run installs it)")
def test_headless_chromium_shows_the_timeline_plot(pair_run, tmp_path):
    shot = screenshot(pair_run["report"], tmp_path / "shot.png", tmp_path / "profile")
    # the plot area: the rows and columns mostly of its background colour (#f4f4f4;
    # grid lines and the classes' lines cross it)
    bg = (np.abs(shot.astype(int) - 0xF4) <= 1).all(axis=-1)
    rows = np.nonzero(bg.sum(axis=1) >= 600)[0]
    assert len(rows) > 0, "no plot background in the screenshot"
    y, h = rows.min(), rows.max() - rows.min() + 1
    cols = np.nonzero(bg[y:y + h].sum(axis=0) >= 0.3 * h)[0]
    x, w = cols.min(), cols.max() - cols.min() + 1
    assert w >= 700 and h >= 200, (w, h)                     # the 904 x 250 plot
    plot = shot[y:y + h, x:x + w]
    # its lines: the plotted classes' palette colours, drawn across its width
    for slot in (0, 1):
        line = (np.abs(plot.astype(int) - PALETTE[slot].astype(int)) <= 3).all(axis=-1)
        assert line.sum() > 200, f"no line of colour {slot}"
        xs = np.nonzero(line)[1]
        assert xs.min() < 0.1 * w and xs.max() > 0.9 * w     # the whole video


def test_batch_writes_a_page_per_video_and_an_index(tmp_path, tiny_model):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    synth.make_clip("pan", src / "a.mp4", size=(160, 96), n=20, fps=24)
    synth.make_clip("cuts", src / "sub" / "b.mov", size=(160, 96), n=24, fps=24)
    (src / "bad.mp4").write_bytes(b"not a video")
    pages = tmp_path / "pages"
    summary = run_batch(src, tmp_path / "out", report_html=pages, jobs=1, size=64)
    assert summary.counts["done"] == 2 and summary.counts["failed"] == 1
    for rel, frames in (("a.mp4", 20), ("sub/b.mov", 24)):
        page = pages / f"{rel}.html"
        assert read_summary(page)["frames"] == frames
    assert read_summary(pages / "sub/b.mov.html")["shots"] == 3
    index = (pages / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'<a href="([^"]+)">', index)
    assert sorted(links) == ["a.mp4.html", "sub/b.mov.html"]
    assert all((pages / link).is_file() for link in links)
    assert "bad.mp4" in index and "failed" in index
    # resuming: the pages of the videos already done stay linked
    again = run_batch(src, tmp_path / "out", report_html=pages, jobs=1, size=64)
    assert again.counts["skipped"] == 2
    assert sorted(re.findall(r'<a href="([^"]+)">',
                             (pages / "index.html").read_text())) == sorted(links)


def test_report_and_tracks_flags(tmp_path, pan_clip, tiny_model):
    from camvideo.commands.main import main

    out = tmp_path / "o.mp4"
    assert main([str(pan_clip.path), str(out), "--report", str(pan_clip.path), "-q"]) != 0
    assert not out.exists()
    assert main([str(pan_clip.path), str(out), "--tracks", str(tmp_path / "no/t.txt"),
                 "-q"]) != 0
    assert main([str(pan_clip.path), str(out), "--tracks", str(tmp_path / "t.txt"),
                 "--report", str(tmp_path / "r.html"), "-q"]) == 0
    rows = (tmp_path / "t.txt").read_text().splitlines()
    assert len(rows) == pan_clip.frames                      # one class: one box a frame
    assert {r.split(",")[1] for r in rows} == {"1"}          # one track, no cut
    assert read_summary(tmp_path / "r.html")["frames"] == pan_clip.frames
