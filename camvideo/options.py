"""Every setting of a run, as one object (:class:`Options`), with the defaults every
front-end shares, and what a run returns (:class:`Summary`).

This module imports nothing heavy (no torch, OpenCV or PyAV): the command line reads its
defaults from here.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .errors import OptionError

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_TAU = 0.3            #: smoothing time constant, seconds
DEFAULT_MARGIN = 0.1         #: probability lead another class needs to take over at once


@dataclass
class Options:
    """Every option of ``camvideo IN OUT`` (the CLI's flags, same names).

    Model: ``model``, ``weights``, ``labels``, ``cls`` (``--class``: name or index; None =
    top-1), ``size`` (input short side). Render: ``topk``, ``colormap``, ``alpha``, ``bbox``,
    ``bbox_threshold`` (a fraction of the map's maximum, or ``"auto"``: the model's
    calibrated one, :data:`camvideo.cam.BBOX_THRESHOLDS`), ``layout``. Smoothing: ``smooth`` (time constant, seconds; 0 = off),
    ``smooth_mode``, ``switch_margin``, ``cut_reset``, ``motion``. Output: ``codec``,
    ``crf``, ``preset`` (None: x264 superfast with mb-tree, see :mod:`camvideo.media.encoding`),
    ``x264_params``, ``audio``, ``json``, ``json_cams``, ``overwrite``. Device: ``device``,
    ``precision``, ``batch_size`` (None = automatic), ``stride`` (run the network on every
    Nth frame, carrying the maps between with the image motion).
    """

    model: str = DEFAULT_MODEL
    weights: str | None = None
    labels: str | None = None
    cls: str | int | None = None
    size: int = 224
    topk: int = 3
    colormap: str = "jet"
    alpha: float = 0.5
    bbox: bool = False
    bbox_threshold: float | str = "auto"
    layout: str = "overlay"
    smooth: float = DEFAULT_TAU
    smooth_mode: str = "causal"
    switch_margin: float = DEFAULT_MARGIN
    cut_reset: bool = True
    motion: bool = True
    codec: str = "libx264"
    crf: int = 20
    preset: str | None = None
    x264_params: str | None = None
    audio: bool = True
    json: str | None = None
    json_cams: bool = False
    overwrite: bool = False
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    stride: int = 1

    @classmethod
    def from_kwargs(klass, **kwargs: object) -> "Options":
        """Build from keyword options, refusing unknown names with a clear message."""
        names = {f.name for f in dataclasses.fields(klass)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise OptionError(f"unknown option(s): {', '.join(unknown)}")
        return klass(**kwargs)  # type: ignore[arg-type]

    def validate(self) -> None:
        """Range checks that need no model (the rest happen where the value is used)."""
        if not 32 <= self.size <= 2048:
            raise OptionError(f"--size must be in 32..2048, got {self.size}")
        if not 0 <= self.crf <= 63:
            raise OptionError(f"--crf must be in 0..63, got {self.crf}")
        if self.batch_size is not None and not 1 <= self.batch_size <= 1024:
            raise OptionError(f"--batch-size must be in 1..1024, got {self.batch_size}")
        if not 1 <= self.stride <= 1000:
            raise OptionError(f"--stride must be in 1..1000, got {self.stride}")
        if self.smooth < 0:
            raise OptionError(f"--smooth must be ≥ 0 seconds, got {self.smooth}")
        if not (self.bbox_threshold == "auto" or (
                not isinstance(self.bbox_threshold, (str, bool))
                and 0.0 < self.bbox_threshold <= 1.0)):
            raise OptionError(f"--bbox-threshold must be 'auto' or in (0, 1], "
                              f"got {self.bbox_threshold!r}")
        if self.json_cams and not self.json:
            raise OptionError("--json-cams needs --json PATH")


@dataclass
class Summary:
    """What a run did."""

    output: str
    frames: int
    skipped: int
    seconds: float
    json: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0
