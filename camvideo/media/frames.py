"""What sources yield and sinks take: :class:`Frame`, a decoded picture with its timing,
and :class:`VideoInfo`, what the pipeline needs to know of an input video."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .. import pixels


@dataclass(frozen=True)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based position in the output.
        image: the picture, rotation metadata already applied: ``(H, W, 3)`` uint8 RGB,
            or (``fmt`` I420) ``(H * 3 // 2, W)`` uint8 I420, see :mod:`camvideo.pixels`.
        pts: presentation timestamp in ``time_base`` units (strictly increasing).
        time: presentation time in seconds.
        fmt: :data:`camvideo.pixels.RGB` or :data:`camvideo.pixels.I420`.
        cut: the frame starts afresh whatever its picture: the first after a gap in a
            live source that was lost and reopened (the smoother resets as at a scene
            cut; see :mod:`camvideo.media.streams`).
    """

    index: int
    image: np.ndarray
    pts: int
    time: float
    fmt: str = pixels.RGB
    cut: bool = False

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)`` of the picture."""
        return pixels.size(self.image, self.fmt)

    def rgb(self) -> np.ndarray:
        """The picture as ``(H, W, 3)`` uint8 RGB (converted when it is I420)."""
        return pixels.to_rgb(self.image) if self.fmt == pixels.I420 else self.image


@dataclass(frozen=True)
class VideoInfo:
    """What the pipeline needs to know of an input video.

    ``width``/``height`` are the coded size: a display rotation is known only from the
    decoded frames, which :class:`FileSource` turns upright (its :meth:`~FileSource.
    display_size` gives the displayed size after the first frame); ``frames`` is the
    container's count (may be 0 when unknown); ``fps`` the average rate (for raw
    elementary streams, which carry no timestamps, the rate the bitstream itself declares
    when it declares one: the container's figure is only the demuxer's default, 25).
    """

    path: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: int
    duration: float | None
    codec: str
    audio_streams: int
