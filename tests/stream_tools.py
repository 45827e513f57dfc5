"""Helpers for tests of live streams: free ports, MPEG-TS bytes and a paced TCP server on
loopback."""
from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator, Sequence

import av
import numpy as np


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A loopback port nothing listens on now (UDP by default)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mpegts_bytes(frames: Sequence[np.ndarray], seconds: float, fps: int = 30) -> bytes:
    """``seconds`` of ``frames`` looped, as an MPEG-TS byte stream (H.264, zerolatency)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        s = out.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.codec_context.options = {"tune": "zerolatency", "preset": "ultrafast", "g": "15"}
        for i in range(round(seconds * fps)):
            vf = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="rgb24")
            vf.pts = i
            out.mux(s.encode(vf))
        out.mux(s.encode(None))
    return buf.getvalue()


@contextlib.contextmanager
def ts_server(data: bytes, seconds: float, cut: float | None = None) -> Iterator[int]:
    """A TCP listener on loopback (yields its port): its first client gets ``data``
    (``seconds`` of MPEG-TS) at real-time pace, whole or up to ``cut`` seconds in (as a
    camera or encoder going away would), then the connection closes. The listener
    closes once that client is in: reconnecting is refused."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    done = threading.Event()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        finally:
            listener.close()
        with conn:
            t0, sent = time.monotonic(), 0
            while sent < len(data) and not done.is_set():
                elapsed = time.monotonic() - t0
                if cut is not None and elapsed >= cut:
                    break
                upto = min(len(data), int(len(data) * elapsed / seconds) // 188 * 188)
                if upto > sent:
                    try:
                        conn.sendall(data[sent:upto])
                    except OSError:
                        return
                    sent = upto
                time.sleep(0.01)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        done.set()
        listener.close()
        thread.join(10)
