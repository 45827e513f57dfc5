"""What ``camvideo live SOURCE`` names: a camera (index, device path, DirectShow name), a
URL or a file (:func:`parse_source`), and whether its stream can end by itself
(:attr:`SourceSpec.endless`: a camera or a live-protocol URL cannot; its end means the
source was lost)."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from .errors import OptionError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

#: URL schemes of live protocols: the end of such a stream is a lost source, not an end.
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp"})


@dataclass(frozen=True)
class SourceSpec:
    """What ``camvideo live SOURCE`` names.

    Attributes:
        kind: ``camera`` (index or device path), ``url`` (anything PyAV opens by URL) or
            ``file``.
        target: what ``av.open`` gets (``/dev/video0``, the URL, the path).
        format: FFmpeg input format (``v4l2``, ``avfoundation``, ``dshow``) or None.
        label: how messages name it (``camera 0 (/dev/video0)``).
    """

    kind: str
    target: str
    format: str | None
    label: str

    @property
    def endless(self) -> bool:
        """A camera or a live-protocol URL (:data:`LIVE_SCHEMES`): its stream ending
        means the source was lost."""
        if self.kind == "camera":
            return True
        return self.kind == "url" and \
            self.target.split(":", 1)[0].lower() in LIVE_SCHEMES


def parse_source(text: str) -> SourceSpec:
    """A webcam index (``0``), a device path (``/dev/video0``), ``video=NAME`` (Windows
    DirectShow), a URL (``rtsp://``, ``udp://``, ``tcp://``, ``http://``...) or a file.

    Raises:
        OptionError: empty, or a camera index where no capture API is known.
    """
    text = (text or "").strip()
    if not text:
        raise OptionError("empty source; give a camera index, a device, a URL or a file")
    if text.isdigit():
        if sys.platform.startswith("linux"):
            dev = f"/dev/video{int(text)}"
            return SourceSpec("camera", dev, "v4l2", f"camera {int(text)} ({dev})")
        if sys.platform == "darwin":
            return SourceSpec("camera", text, "avfoundation", f"camera {text}")
        raise OptionError("camera indexes work on Linux and macOS; on Windows give the "
                          "camera's name as video=NAME")
    if text.startswith("video="):
        return SourceSpec("camera", text, "dshow", f"camera {text[6:]}")
    if text.startswith("/dev/"):
        return SourceSpec("camera", text, "v4l2", f"camera {text}")
    if _URL.match(text):
        return SourceSpec("url", text, None, _redact(text))
    return SourceSpec("file", text, None, text)


def _redact(url: str) -> str:
    """The URL without a password (``rtsp://user:secret@host`` → ``rtsp://user:***@host``)."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/:@]*):[^/@]*@", r"\1:***@", url)
