"""HTTP preview of ``camvideo live`` for headless or remote machines (``--serve``).

A :class:`PreviewServer` runs a ``ThreadingHTTPServer`` on its own thread:

- ``GET /``: a small HTML page showing the stream;
- ``GET /stream.mjpg``: the annotated frames as MJPEG (``multipart/x-mixed-replace``),
  which every browser shows in a plain ``<img>``;
- ``GET /frame.jpg``: the newest frame, once.

:meth:`PreviewServer.publish` only stores a reference to the newest frame (no copy, no
encoding on the pipeline's thread); each new frame is JPEG-encoded once, by the first
client thread that wants it, and shared with the others. A slow client simply skips
frames: it always gets the newest one, never a backlog.

Each client has its own thread, whose socket waits at most :data:`CLIENT_TIMEOUT` seconds
for the client (to send its request, or to take the next frame); :meth:`PreviewServer.close`
also shuts every open client socket down, so no client thread outlives it (a viewer that
stopped reading, or one that connected and never asked for anything).
"""
from __future__ import annotations

import html
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

from ..errors import OptionError, OutputError

log = logging.getLogger(__name__)

_BOUNDARY = "camvideoframe"
CLIENT_TIMEOUT = 10.0  #: seconds a client may keep its thread waiting (request, frames)

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
 html, body {{ margin: 0; background: #111; color: #ddd; font: 14px sans-serif; }}
 header {{ padding: 6px 10px; }}
 img {{ display: block; max-width: 100vw; max-height: calc(100vh - 32px); margin: auto; }}
</style></head>
<body><header>{title} &mdash; {source}</header>
<img id="live" src="/stream.mjpg" alt="live annotated stream">
</body></html>
"""


def parse_bind(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); ``[::1]:PORT`` for IPv6.
    Port 0 picks a free one.

    Raises:
        OptionError: not of that form, or the port is out of range.
    """
    text = text.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or default_host
    try:
        num = int(port)
    except ValueError:
        raise OptionError(f"serve wants [HOST:]PORT, got {text!r}", option="serve") from None
    if not 0 <= num <= 65535:
        raise OptionError(f"serve port must be in 0..65535, got {num}", option="serve")
    return host, num


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # client sockets are shut down on close instead (see below)
    preview: "PreviewServer"

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: socket.socket, client_address: object) -> None:
        with self._clients_lock:  # tracked until shutdown_request, for close_clients()
            self._clients.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket) -> None:
        with self._clients_lock:
            self._clients.discard(request)
        super().shutdown_request(request)

    def close_clients(self) -> None:
        """Shut every open client socket down: a client thread blocked sending to a
        viewer that stopped reading, or waiting for a request, returns at once."""
        with self._clients_lock:  # held: a socket in the set is not closed yet
            for sock in self._clients:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:  # the client is already gone
                    pass

    def handle_error(self, request: object, client_address: object) -> None:
        log.debug("http %s: client error", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"
    timeout = CLIENT_TIMEOUT  # socket timeout: a stalled client frees its thread

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("http %s: %s", self.address_string(), fmt % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        try:
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", self.server.preview.page())
            elif path == "/stream.mjpg":
                self._stream()
            elif path == "/frame.jpg":
                jpeg, _ = self.server.preview.wait_jpeg(-1, timeout=5.0)
                if jpeg is None:
                    self._send(503, "text/plain", b"no frame yet\n")
                else:
                    self._send(200, "image/jpeg", jpeg)
            else:
                self._send(404, "text/plain", b"not found\n")
        except OSError:  # broken pipe, reset, timeout, or shut down by close()
            pass  # the viewer went away or stalled, or the server closed

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _stream(self) -> None:
        preview = self.server.preview
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        seq = -1
        while not preview.closed:
            jpeg, seq = preview.wait_jpeg(seq, timeout=1.0)
            if jpeg is None:
                continue
            self.wfile.write(f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                             f"Content-Length: {len(jpeg)}\r\n\r\n".encode("ascii"))
            self.wfile.write(jpeg)
            self.wfile.write(b"\r\n")
            self.wfile.flush()


class PreviewServer:
    """MJPEG preview server (see the module docs).

    Args:
        host, port: where to listen (port 0: a free one; see :attr:`url`).
        source: shown on the page.
        quality: JPEG quality, 1..100.

    Raises:
        OutputError: the address cannot be bound (in use, not an address of this host).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, source: str = "",
                 quality: int = 80) -> None:
        self.quality = int(quality)
        self.source = source
        self.closed = False
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._seq = -1          # of the newest published image
        self._jpeg: bytes | None = None
        self._jpeg_seq = -1     # of self._jpeg
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family = infos[0][0]
            server_class = type("_BoundServer", (_Server,), {"address_family": family})
            self._httpd = server_class((host, port), _Handler)
        except (OSError, socket.gaierror) as e:
            raise OutputError(f"cannot serve on {host}:{port}: "
                              f"{e.strerror or e}") from None
        self._httpd.preview = self
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.2},
                                        name="camvideo-serve", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}/"

    def start(self) -> "PreviewServer":
        self._thread.start()
        log.info("live preview at %s", self.url)
        return self

    def page(self) -> bytes:
        return _PAGE.format(title="camvideo live",
                            source=html.escape(self.source)).encode("utf-8")

    def publish(self, image: np.ndarray) -> None:
        """Make ``image`` (``(H, W, 3)`` uint8 RGB, not modified afterwards) the newest
        frame. Cheap: stores a reference."""
        with self._cond:
            self._image = image
            self._seq += 1
            self._cond.notify_all()

    def write(self, result: Any) -> None:
        """The :class:`~camvideo.runtime.sinks.Sink` side: publish a rendered result."""
        self.publish(result.annotated())

    def abort(self) -> None:
        self.close()

    def wait_jpeg(self, after: int, timeout: float) -> tuple[bytes | None, int]:
        """The newest frame as JPEG once it is newer than ``after`` (None on timeout or
        close), with its sequence number."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.closed or self._seq > after, timeout):
                return None, after
            if self.closed and self._seq <= after:
                return None, after
            if self._jpeg_seq == self._seq:
                return self._jpeg, self._seq
            image, seq = self._image, self._seq
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return None, after
        jpeg = buf.tobytes()
        with self._cond:
            if seq > self._jpeg_seq:
                self._jpeg, self._jpeg_seq = jpeg, seq
        return jpeg, seq

    def close(self) -> None:
        """Stop serving; streaming clients see the end of the stream, and every client
        socket is shut down, so no client thread outlives this (by more than a moment)."""
        with self._cond:
            if self.closed:
                return
            self.closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._httpd.shutdown()  # no request is accepted after this
        self._httpd.server_close()
        self._httpd.close_clients()

    def __enter__(self) -> "PreviewServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

