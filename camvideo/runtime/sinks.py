"""Where results go: one small protocol, :class:`Sink` (``write`` a result, ``close``,
``abort``), implemented by the video file (:class:`VideoFileSink`), the JSON Lines sidecar
(:class:`JsonLinesSink`), and ``camvideo live``'s window and browser preview
(:mod:`camvideo.live.window`, :mod:`camvideo.live.preview`).

Front-ends are a :class:`~camvideo.runtime.stream.Stream` and a list of sinks::

    with stream as s:
        for result in s:
            for sink in sinks:
                sink.write(result)
    for sink in sinks:
        sink.close()          # or sink.abort() on any failure: nothing half written
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

from .. import pixels
from ..errors import OutputError
from ..media.frames import VideoInfo
from ..media.sink import FileSink
from ..options import FrameResult

__all__ = ["JsonLinesSink", "Sink", "TracksSink", "VideoFileSink", "json_record"]


@runtime_checkable
class Sink(Protocol):
    """Takes a stream's results in order; :meth:`close` finishes (a file is renamed into
    place), :meth:`abort` discards what was written. Both may be called more than once,
    and :meth:`abort` after :meth:`close` (a later output failed)."""

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class VideoFileSink:
    """The annotated frames (``result.image``: a stream made with ``render=True``) encoded
    to a file with the source's timing, and its audio (:class:`camvideo.media.sink.
    FileSink`); the encoder opens on the first result, at its size.

    Args:
        output: the video file (container from its extension).
        info: the source's :class:`~camvideo.media.frames.VideoInfo` (time base, rate).
        codec, crf, preset, x264_params: encoder settings (see FileSink).
        audio_from: where the audio comes from (a file, or a live source's audio; see
            FileSink; None: no audio); ``audio``: ``auto``, ``copy`` or an encoder.
        comment: the container's comment tag.
    """

    def __init__(self, output: str | os.PathLike, info: VideoInfo, *, codec: str = "libx264",
                 crf: int = 20, preset: str | None = None, x264_params: str | None = None,
                 audio_from: Any = None, audio: str = "auto",
                 comment: str | None = None) -> None:
        self.output = Path(output)
        self._info = info
        self._settings = dict(codec=codec, crf=crf, preset=preset, x264_params=x264_params,
                              audio_from=audio_from, audio=audio, comment=comment)
        self._file: FileSink | None = None
        self._closed = False

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return self._file.frames if self._file is not None else 0

    @property
    def encoder(self) -> str:
        """The video encoder that opened ("" before the first result)."""
        return self._file.encoder if self._file is not None else ""

    def write(self, result: FrameResult) -> None:
        if result.image is None:
            raise ValueError("VideoFileSink needs rendered results (stream(render=True))")
        if self._file is None:
            h, w = pixels.size(result.image, result.fmt)
            self._file = FileSink(self.output, self._info, (w, h), **self._settings)
        self._file.write(result.image, result.pts if result.pts is not None else
                         result.index, result.time)

    def close(self) -> None:
        """Finish the file (nothing is written when no result came)."""
        if self._file is not None and not self._closed:
            self._file.close()
        self._closed = True

    def abort(self) -> None:
        if self._file is not None:
            self._file.abort()
            if self._closed:  # placed, then a later output failed: no half result
                self.output.unlink(missing_ok=True)
        self._closed = True


def json_record(r: FrameResult, cams: bool = False) -> dict:
    """The sidecar's record of one result (README, "sidecar"); ``cams``: with the drawn
    map at feature resolution, rounded to 4 decimals. With shown classes
    (:attr:`FrameResult.classes`), ``"classes"`` lists each one's class, label, score,
    peak, box and track ID."""
    rec = {"frame": r.index, "time": round(r.time, 6), "class": r.cls, "label": r.label,
           "score": round(r.score, 6), "topk": [[i, lab, round(p, 6)] for i, lab, p in r.topk],
           "peak": list(r.peak), "bbox": list(r.bbox) if r.bbox else None}
    if r.classes:
        rec["classes"] = [{"class": c.cls, "label": c.label, "score": round(c.score, 6),
                           "peak": list(c.peak), "bbox": list(c.bbox) if c.bbox else None,
                           "track": c.track} for c in r.classes]
    if cams:
        m = r.map.float().cpu().numpy() if hasattr(r.map, "cpu") else r.map  # a tensor
        rec["cam"] = m.round(4).tolist()
    return rec


class _PlacedTextFile:
    """A text file written to a temp file beside its path and renamed into place on
    :meth:`close` (:meth:`abort` removes it, also after :meth:`close`: no sidecar without
    its video). Subclasses write with :meth:`_write` and may add a tail in
    :meth:`_finish`.

    Raises:
        OutputError: the file cannot be written (folder, permissions, disk full).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        self._placed = False
        try:
            self._fh: IO[str] = open(self.tmp, "w", encoding="utf-8")
        except OSError as e:
            raise self._error(e) from None

    def _error(self, e: OSError) -> OutputError:
        return OutputError(f"cannot write {self.path}: {e.strerror or e}")

    def _write(self, text: str) -> None:
        try:
            self._fh.write(text)
        except OSError as e:
            raise self._error(e) from None

    def _finish(self) -> None:
        """What is written last, at :meth:`close` (nothing here)."""

    def close(self) -> None:
        if self._placed:
            return
        self._finish()
        try:
            self._fh.close()
            os.replace(self.tmp, self.path)
        except OSError as e:
            raise self._error(e) from None
        self._placed = True

    def abort(self) -> None:
        try:
            self._fh.close()
        except OSError:
            pass  # a full disk again: the file goes anyway
        self.tmp.unlink(missing_ok=True)
        if self._placed:  # closed, then the video failed: no sidecar without its video
            self.path.unlink(missing_ok=True)


class JsonLinesSink(_PlacedTextFile):
    """JSON Lines sidecar, one object per result (:func:`json_record`), written to a temp
    file and renamed into place on :meth:`close` (:meth:`abort` removes it, also after
    :meth:`close`).

    Raises:
        OutputError: the file cannot be written (folder, permissions, disk full).
    """

    def __init__(self, path: str | os.PathLike, cams: bool = False) -> None:
        super().__init__(path)
        self.cams = cams

    def write(self, result: FrameResult) -> None:
        self._write(json.dumps(json_record(result, self.cams)) + "\n")


class TracksSink(_PlacedTextFile):
    """The tracked boxes of a stream (:attr:`FrameResult.classes` with track IDs) as
    MOTChallenge rows, ``frame,id,x,y,w,h,conf,-1,-1,-1`` (frames from 1; ``x, y`` the
    box's top-left pixel counted from 1, as MOTChallenge's files count them (the sidecar's
    ``bbox`` counts from 0); ``w, h`` its size in output-frame pixels; ``conf`` the
    class's probability), or for a ``.json`` path one JSON document:
    ``{"tracks": [{"id", "class", "label", "start", "end", "boxes": [[frame, time, x, y,
    w, h, score], ...]}, ...]}`` (frames from 0, as the sidecar; a track's class is the
    one of its last box). Written to a temp file and renamed into place on :meth:`close`.

    Raises:
        OutputError: the file cannot be written.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path)
        self.json = self.path.suffix.lower() == ".json"
        self._tracks: dict[int, dict] = {}

    def write(self, result: FrameResult) -> None:
        for c in result.classes:
            if c.track is None or c.bbox is None:
                continue
            x0, y0, x1, y1 = c.bbox
            if self.json:
                t = self._tracks.setdefault(c.track, {"id": c.track, "boxes": []})
                t["class"], t["label"] = c.cls, c.label
                t["boxes"].append([result.index, round(result.time, 6), x0, y0, x1 - x0,
                                   y1 - y0, round(c.score, 6)])
            else:
                self._write(f"{result.index + 1},{c.track},{x0 + 1},{y0 + 1},{x1 - x0},"
                            f"{y1 - y0},{c.score:.6f},-1,-1,-1\n")

    def _finish(self) -> None:
        if not self.json:
            return
        tracks = [{"id": t["id"], "class": t["class"], "label": t["label"],
                   "start": t["boxes"][0][0], "end": t["boxes"][-1][0], "boxes": t["boxes"]}
                  for t in sorted(self._tracks.values(), key=lambda t: t["id"])]
        self._write(json.dumps({"tracks": tracks}) + "\n")
