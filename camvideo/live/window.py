"""The local side of ``camvideo live``: the window, its keys, and the HUD.

All OpenCV window calls (``namedWindow``, ``imshow``, ``waitKey``, ``destroyWindow``)
happen on one thread, :class:`WindowThread`, which always shows the newest frame it was
given and polls the keyboard every ~15 ms, so keys work even while frames are slow.
Keys (:class:`Controls`): ``q``/Esc quit, space pause (the window and the preview freeze;
a recording goes on), ``c`` cycle the shown map through the current top classes and back
to automatic, ``s`` save the shown frame as a PNG.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

log = logging.getLogger(__name__)

#: ``--window`` choices: ``auto`` shows a window when :func:`display_available`.
WINDOW_MODES = ("auto", "on", "off")


def display_available() -> bool:
    """True when a window can be shown: OpenCV has a GUI backend, and on Linux/BSD a
    display server is named (``DISPLAY`` or ``WAYLAND_DISPLAY``)."""
    gui = ""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            gui = line.split(":", 1)[1].strip().upper()
            break
    if not gui or gui == "NONE":
        return False
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def draw_hud(image: np.ndarray, lines: list[str]) -> None:
    """Draw ``lines`` bottom-left on a dark box, in place (``(H, W, 3)`` uint8 RGB)."""
    h = image.shape[0]
    scale = max(0.35, h / 720 * 0.6)
    thick = max(1, round(scale * 2))
    font = cv2.FONT_HERSHEY_SIMPLEX
    sizes = [cv2.getTextSize(t, font, scale, thick)[0] for t in lines]
    pad = max(3, round(6 * scale))
    line_h = max(s[1] for s in sizes) + pad
    box_w = max(s[0] for s in sizes) + 2 * pad
    box_h = line_h * len(lines) + pad
    y0 = max(0, h - box_h)
    roi = image[y0:h, 0:min(box_w, image.shape[1])]
    roi[:] = (roi.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken: text stays legible
    for i, text in enumerate(lines):
        y = y0 + line_h * (i + 1)
        cv2.putText(image, text, (pad, y), font, scale, (255, 255, 255), thick, cv2.LINE_AA)


class Controls:
    """What the window's keys do (called on the window thread).

    Args:
        stop: set by ``q``.
        smoother: the engine's smoother (``c`` sets its ``fixed_class``).
        snapshot_dir: where ``s`` writes PNGs.
        notify: one-line messages for the user.
    """

    def __init__(self, stop: threading.Event, smoother: Any, snapshot_dir: str | os.PathLike,
                 notify: Callable[[str], None]) -> None:
        self.stop = stop
        self.smoother = smoother
        self.base_class = getattr(smoother, "fixed_class", None)  # --class, or None
        self.snapshot_dir = Path(snapshot_dir)
        self.notify = notify
        self.paused = False
        self.pick = 0          # 0: automatic (or --class); i: the i-th top class
        self.last_note: Any = None  #: the newest frame's result (its ``topk``)

    def key(self, key: int, shown: np.ndarray | None) -> None:
        """Act on a key code from ``cv2.waitKey`` (-1: none)."""
        if key < 0:
            return
        ch = chr(key & 0xFF).lower()
        if ch == "q" or key & 0xFF == 27:
            self.stop.set()
        elif ch == " ":
            self.paused = not self.paused
            self.notify("paused" if self.paused else "resumed")
        elif ch == "c":
            self.cycle()
        elif ch == "s" and shown is not None:
            self.snapshot(shown)

    def cycle(self) -> None:
        """Next of the current frame's top classes, then back to automatic."""
        topk = list(getattr(self.last_note, "topk", None) or [])
        if not topk:
            self.notify("no top classes to cycle through (topk 0?)")
            return
        self.pick = (self.pick + 1) % (len(topk) + 1)
        if self.pick == 0:
            self.smoother.fixed_class = self.base_class
            self.notify("showing the top class (automatic)")
        else:
            cls, label, p = topk[self.pick - 1]
            self.smoother.fixed_class = int(cls)
            self.notify(f"showing class {label!r} ({p:.0%})")

    def snapshot(self, image: np.ndarray) -> Path | None:
        """Save ``image`` (RGB) as ``camvideo-YYYYmmdd-HHMMSS-mmm.png``."""
        now = time.time()
        name = time.strftime("camvideo-%Y%m%d-%H%M%S", time.localtime(now))
        path = self.snapshot_dir / f"{name}-{int(now * 1000) % 1000:03d}.png"
        try:
            ok = cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        except cv2.error as e:
            ok = False
            log.debug("snapshot: %s", e)
        if not ok:
            self.notify(f"could not save a snapshot in {self.snapshot_dir}")
            return None
        self.notify(f"snapshot saved: {path}")
        return path


class WindowThread(threading.Thread):
    """Owns the OpenCV window (see the module docs); closing it quits like ``q``."""

    def __init__(self, title: str, controls: Controls) -> None:
        super().__init__(name="camvideo-window", daemon=True)
        self.title = title
        self.controls = controls
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._halt = threading.Event()

    def show(self, image: np.ndarray) -> None:
        """Make ``image`` (RGB, not modified afterwards) the next one shown."""
        with self._cond:
            self._image = image
            self._cond.notify()

    def write(self, result: Any) -> None:
        """The :class:`~camvideo.runtime.sinks.Sink` side: show a rendered result."""
        self.show(result.annotated())

    def close(self) -> None:
        self._halt.set()
        with self._cond:
            self._cond.notify()
        if self.is_alive():
            self.join(2.0)

    abort = close

    def run(self) -> None:
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
        except cv2.error as e:
            log.warning("cannot open a window (%s); going on without one",
                        str(e).strip().splitlines()[-1])
            return
        shown: np.ndarray | None = None
        bgr: np.ndarray | None = None
        try:
            while not self._halt.is_set():
                with self._cond:
                    image, self._image = self._image, None
                if image is not None:
                    shown, bgr = image, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
                    cv2.imshow(self.title, bgr)
                self.controls.key(cv2.waitKey(15), shown)
                if bgr is not None and \
                        cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                    self.controls.stop.set()  # the user closed the window
                    break
        finally:
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass
