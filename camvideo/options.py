"""Every setting of a run as one validated object (:class:`Options`), with the defaults
every front-end shares, and the types a run returns: one :class:`FrameResult` per frame
from :func:`camvideo.stream`, a :class:`Summary` from :func:`camvideo.annotate`.

This module imports nothing heavy (no torch, OpenCV or PyAV): the command line reads its
defaults from here before it loads anything else.
"""
from __future__ import annotations

import dataclasses
import difflib
import numbers
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .errors import OptionError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_SIZE = 224           #: model input short side of image networks, pixels
DEFAULT_TAU = 0.3            #: smoothing time constant, seconds
DEFAULT_MARGIN = 0.1         #: probability lead another class needs to take over at once
DEFAULT_RATIO = 2.0          #: or this many times the shown class's probability (0: off)
LAYOUTS = ("overlay", "side")
SMOOTH_MODES = ("causal", "centered")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")

DEFAULT_TIMELINE = 10.0      #: seconds the ``--timeline`` strip shows
MAX_CLASSES = 7              #: most classes shown at once (the palette's colours)

__all__ = ["COLORMAPS", "DEFAULT_MARGIN", "DEFAULT_MODEL", "DEFAULT_RATIO", "DEFAULT_SIZE",
           "DEFAULT_TAU", "DEFAULT_TIMELINE", "LAYOUTS", "MAX_CLASSES", "PRECISIONS",
           "SMOOTH_MODES", "ClassResult", "FrameResult", "Options", "Summary", "parse_classes"]


#: OpenCV's colormaps (``cv2.COLORMAP_<NAME>``), by lower-case name: listed here so that
#: ``--help`` needs no OpenCV (tests/test_render.py checks the list against cv2's).
COLORMAPS = ("autumn", "bone", "cividis", "cool", "deepgreen", "hot", "hsv", "inferno",
             "jet", "magma", "ocean", "parula", "pink", "plasma", "rainbow", "spring",
             "summer", "turbo", "twilight", "twilight_shifted", "viridis", "winter")


def parse_classes(text: str) -> int | tuple[str, ...]:
    """``--classes``' value: a count (``"3"``) or class names or indexes separated by
    commas (``"tabby,cup"``, ``"281,967"``), blanks around each stripped.

    Raises:
        OptionError: empty, or an empty name between commas.
    """
    text = str(text).strip()
    if text.isdigit():
        return int(text)
    names = tuple(t.strip() for t in text.split(","))
    if not text or any(not t for t in names):
        raise OptionError(f"classes must be a count or names separated by commas, got "
                          f"{text!r}", option="classes")
    return names


#: What each kind of field takes (its annotation's parts); bool is no number here.
_KINDS: dict[str, tuple[type, ...]] = {
    "bool": (bool,), "int": (numbers.Integral,), "float": (numbers.Real,),
    "str": (str,), "None": (type(None),)}
#: Fields that name files: a path object will do.
_PATHS = frozenset({"weights", "labels", "json", "tracks", "html_report"})
#: Names a caller may try for a field: the command line's flags that differ.
_ALIASES = {"class": "cls", "report": "html_report", "audio_encoder": "audio_codec"}


def _check_type(name: str, annotation: str, value: object) -> None:
    """Refuse a value of the wrong kind (``overwrite="no"`` would count as true, and
    ``alpha="0.5"`` fail with a TypeError deep inside)."""
    parts = [p.strip() for p in annotation.split("|")]
    kinds = tuple(k for p in parts for k in _KINDS.get(p, (object,)))
    if name in _PATHS:
        kinds += (os.PathLike,)
    ok = isinstance(value, bool) if "bool" in parts else \
        isinstance(value, kinds) and not isinstance(value, bool)
    if not ok:
        want = " or ".join("a path" if p == "str" and name in _PATHS else
                           {"bool": "True/False", "int": "a whole number",
                            "float": "a number", "str": "a string"}.get(p, p)
                           for p in parts)
        raise OptionError(f"{name} must be {want}, got {value!r}", option=name)


def _check(ok: bool, option: str, message: str,
           hint: tuple[str, object] | None = None) -> None:
    if not ok:
        raise OptionError(f"{option} {message}", option=option, hint=hint)


@dataclass(frozen=True)
class Options:
    """Every setting of a run, validated when made (the command line's flags have the same
    names, with dashes). Immutable: :meth:`replace` makes a changed, re-validated copy.

    Model: ``model`` (registry name; a loaded model is a separate parameter of
    :func:`camvideo.stream` and :func:`camvideo.annotate`), ``weights``, ``labels``,
    ``cls`` (``--class``: name or index; None = top-1), ``size`` (input short side; None:
    the model's own, 224 for image networks and the side a video network's weights were
    trained at, 112 for ``r3d_18``), ``clip_hop`` (video networks: frames from one clip's
    start to the next's; None: half the clip), ``fine_maps`` (image networks: maps twice
    as fine, output stride 16, :mod:`camvideo.model.finemaps`).
    Several classes: ``classes`` (``--classes``: a count of distinct objects' classes to
    show at once, or a tuple of class names/indexes; None = one class, as ``cls``).
    Render: ``topk``, ``colormap``, ``alpha``, ``bbox``, ``bbox_threshold`` (a fraction of
    the map's maximum, or ``"auto"``: the model's calibrated one,
    :data:`camvideo.cam.BBOX_THRESHOLDS`), ``layout``, ``timeline`` (seconds of the
    class-probability strip along the bottom; 0 = none). Smoothing: ``smooth`` (time
    constant, seconds; 0 = off), ``smooth_mode``, ``switch_margin`` and ``switch_ratio``
    (the class hysteresis, :class:`camvideo.smoothing.Smoother`), ``cut_reset``,
    ``motion``. Output: ``codec``, ``crf``, ``preset``
    (None: x264 superfast with mb-tree, see :mod:`camvideo.media.encoding`),
    ``x264_params``, ``audio``, ``json``, ``json_cams``, ``tracks`` (MOTChallenge rows,
    or JSON for ``.json``), ``html_report`` (a self-contained HTML page), ``overwrite``.
    Device:
    ``device``, ``precision``, ``batch_size`` (None = automatic), ``stride`` (run the
    network on every Nth frame, carrying the maps between with the image motion).

    Raises:
        OptionError: a value out of range; its ``option`` names the field.
    """

    model: str = DEFAULT_MODEL
    weights: str | None = None
    labels: str | None = None
    cls: str | int | None = None
    classes: int | tuple[str | int, ...] | None = None
    size: int | None = None
    clip_hop: int | None = None
    fine_maps: bool = False
    topk: int = 3
    colormap: str = "jet"
    alpha: float = 0.5
    bbox: bool = False
    bbox_threshold: float | str = "auto"
    layout: str = "overlay"
    timeline: float = 0.0
    smooth: float = DEFAULT_TAU
    smooth_mode: str = "causal"
    switch_margin: float = DEFAULT_MARGIN
    switch_ratio: float = DEFAULT_RATIO
    cut_reset: bool = True
    motion: bool = True
    codec: str = "libx264"
    crf: int = 20
    preset: str | None = None
    x264_params: str | None = None
    audio: bool = True
    audio_codec: str = "auto"  # --audio: auto, copy or an encoder (camvideo.media.audio)
    json: str | None = None
    json_cams: bool = False
    tracks: str | None = None
    html_report: str | None = None
    overwrite: bool = False
    device: str = "auto"
    precision: str = "auto"
    batch_size: int | None = None
    stride: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.name not in ("classes", "bbox_threshold", "model"):  # checked below
                _check_type(f.name, str(f.type), getattr(self, f.name))
        _check(isinstance(self.model, str) and bool(self.model), "model",
               f"must be a model name (a loaded model is the `model` parameter), "
               f"got {self.model!r}")
        _check(self.size is None or 32 <= self.size <= 2048, "size",
               f"must be in 32..2048, got {self.size}")
        _check(self.clip_hop is None or 1 <= self.clip_hop <= 1000, "clip_hop",
               f"must be in 1..1000 frames, got {self.clip_hop}")
        _check(0 <= self.topk <= 1000, "topk", f"must be in 0..1000, got {self.topk}")
        _check(0.0 <= self.alpha <= 1.0, "alpha", f"must be in 0..1, got {self.alpha}")
        _check(self.bbox_threshold == "auto" or (
            not isinstance(self.bbox_threshold, (str, bool))
            and 0.0 < self.bbox_threshold <= 1.0), "bbox_threshold",
            f"must be 'auto' or in (0, 1], got {self.bbox_threshold!r}")
        _check(self.colormap.lower() in COLORMAPS, "colormap",
               f"must be one of {', '.join(COLORMAPS)}, got {self.colormap!r}")
        _check(self.layout in LAYOUTS, "layout",
               f"must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        _check(self.smooth >= 0, "smooth", f"must be ≥ 0 seconds, got {self.smooth}")
        _check(self.smooth_mode in SMOOTH_MODES, "smooth_mode",
               f"must be one of {', '.join(SMOOTH_MODES)}, got {self.smooth_mode!r}")
        _check(0.0 <= self.switch_margin < 1.0, "switch_margin",
               f"must be in [0, 1), got {self.switch_margin}")
        _check(self.switch_ratio == 0 or 1.0 < self.switch_ratio <= 1000.0, "switch_ratio",
               f"must be 0 (off) or in (1, 1000], got {self.switch_ratio}")
        _check(0 <= self.crf <= 63, "crf", f"must be in 0..63, got {self.crf}")
        _check(self.precision in PRECISIONS, "precision",
               f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        _check(self.batch_size is None or 1 <= self.batch_size <= 1024, "batch_size",
               f"must be in 1..1024, got {self.batch_size}")
        _check(1 <= self.stride <= 1000, "stride", f"must be in 1..1000, got {self.stride}")
        _check(not self.json_cams or bool(self.json), "json_cams",
               "needs json, the sidecar's path")
        c = self.classes
        if isinstance(c, str):
            object.__setattr__(self, "classes", c := parse_classes(c))
        elif isinstance(c, list):
            object.__setattr__(self, "classes", c := tuple(c))
        if c is not None:
            if isinstance(c, bool) or not isinstance(c, (int, tuple)):
                raise OptionError(f"classes must be a count or a tuple of class names, "
                                  f"got {c!r}", option="classes")
            n = c if isinstance(c, int) else len(c)
            _check(1 <= n <= MAX_CLASSES, "classes",
                   f"must be 1..{MAX_CLASSES} classes, got {n}")
            _check(self.cls is None, "classes",
                   "and {option} exclude each other: give the classes as a list",
                   hint=("cls", None))
        _check(0.0 <= self.timeline <= 600.0, "timeline",
               f"must be in 0..600 seconds, got {self.timeline}")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "Options":
        """A copy with ``changes`` applied (validated; unknown names are refused)."""
        unknown = sorted(set(changes) - set(self.names()))
        if unknown:
            said = [n + (f" (did you mean {m[0]}?)" if (m := [_ALIASES[n]] if n in _ALIASES
                         else difflib.get_close_matches(n, self.names(), n=1)) else "")
                    for n in unknown]
            raise OptionError(f"unknown option(s): {', '.join(said)}")
        return dataclasses.replace(self, **changes) if changes else self

    @classmethod
    def of(klass, options: "Options | None" = None, **overrides: Any) -> "Options":
        """``options`` (default: the defaults) with ``overrides`` applied: how
        :func:`camvideo.stream` and :func:`camvideo.annotate` take their settings."""
        if options is not None and not isinstance(options, Options):
            raise OptionError(f"options must be an Options object, got "
                              f"{type(options).__name__}")
        return (options or klass()).replace(**overrides)


@dataclass
class Summary:
    """What :func:`camvideo.annotate` did: ``frames`` written to ``output`` in
    ``seconds``, ``skipped`` undecodable input frames, the ``json`` sidecar if any;
    ``extra``: ``encoder`` (the video encoder that opened: the fallback when NVENC could
    not) and ``device`` (where the network ran)."""

    output: str
    frames: int
    skipped: int
    seconds: float
    json: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, eq=False)
class ClassResult:
    """One of a frame's shown classes (``classes`` option), in :attr:`FrameResult.classes`.

    Attributes:
        cls: the class index.
        label: its name.
        score: its smoothed probability, in ``[0, 1]``.
        map: ``(h, w)`` float32 in ``[0, 1]``: its map at feature resolution, normalised
            against its own range smoothed over time (numpy, or a device tensor for a
            ``tensors=True`` stream).
        peak: ``(x, y)`` of the map's maximum in output-frame pixels.
        bbox: the box of its map ``(x0, y0, x1, y1)`` in output-frame pixels (x1, y1
            exclusive), or None.
        track: the ID (from 1) of the box's track, or None when the box has none.
        slot: its place among the shown classes, which picks its colour (stable while
            the class is shown).
    """

    cls: int
    label: str
    score: float
    map: Any
    peak: tuple[int, int]
    bbox: tuple[int, int, int, int] | None
    track: int | None = None
    slot: int = 0


@dataclass(frozen=True, eq=False)
class FrameResult:
    """One frame's result from :func:`camvideo.stream`, in stream order.

    Numbers are numpy (``np.float32``) unless the stream was asked for ``tensors=True``:
    then ``probs``, ``map`` and :meth:`map_for` are torch tensors on the model's device.

    Attributes:
        index: 0-based position of the frame in the stream.
        time: presentation time, seconds.
        pts: presentation timestamp in the source's time base (None for sources without
            one).
        cls: the class whose map is drawn (the smoothed top-1 with hysteresis, or the
            ``cls`` option).
        label: its name.
        score: its smoothed probability, in ``[0, 1]``.
        topk: the ``topk`` most probable classes ``[(index, label, probability), ...]``.
        probs: ``(K,)`` float32 class probabilities, as smoothed.
        map: ``(h, w)`` float32 in ``[0, 1]``: the map that is drawn, at feature
            resolution (normalised against a range smoothed over time).
        peak: ``(x, y)`` of the map's maximum in output-frame pixels.
        bbox: the paper's box ``(x0, y0, x1, y1)`` in output-frame pixels (drawn with the
            ``bbox`` option, given either way; None when the map is nowhere positive).
        cut: the frame starts a new shot (or the stream): the smoothing restarted here.
        image: the annotated frame when the stream renders (``render=True``), as the
            pipeline holds it: ``(H, W', 3)`` uint8 RGB, or ``(H * 3 // 2, W')`` uint8
            I420 when ``fmt`` is I420 (see :meth:`annotated`); else None.
        fmt: the pixel format of ``image`` (:data:`camvideo.pixels.RGB` or ``I420``).
        rgb: the source frame as ``(H, W, 3)`` uint8 RGB when asked (``frames=True``).
        classes: the shown classes with the ``classes`` option (:class:`ClassResult`, in
            slot order; ``cls``, ``map``, ``peak`` and ``bbox`` above are then the most
            probable of them); with ``tracks`` or ``timeline`` alone, one entry: the class
            above (with its track); else empty.
    """

    index: int
    time: float
    pts: int | None
    cls: int
    label: str
    score: float
    topk: list[tuple[int, str, float]]
    probs: Any
    map: Any
    peak: tuple[int, int]
    bbox: tuple[int, int, int, int] | None
    cut: bool = False
    image: "np.ndarray | None" = None
    fmt: str = "rgb24"
    rgb: "np.ndarray | None" = None
    classes: list[ClassResult] = field(default_factory=list)
    _raw_maps: Callable[[Sequence[int]], Any] | None = field(default=None, repr=False)

    def map_for(self, classes: int | Sequence[int], normalize: bool = True) -> Any:
        """The map of any class (or classes) from the same smoothed features as the drawn
        map: one matrix product, no forward pass.

        Args:
            classes: a class index, or a sequence of them.
            normalize: min-max normalise each map to ``[0, 1]`` on this frame (the drawn
                ``map`` uses a range smoothed over time instead); False: raw CAM values
                (class-weighted sums of the features, the logit's contributions).

        Returns:
            ``(h, w)`` float32 for one class, ``(n, h, w)`` for a sequence; numpy, or a
            tensor on the model's device for a ``tensors=True`` stream.
        """
        if self._raw_maps is None:
            raise ValueError("this result carries no features (made outside a stream)")
        one = isinstance(classes, (int,)) or getattr(classes, "ndim", 1) == 0
        return self._raw_maps([int(classes)] if one else [int(c) for c in classes],
                              normalize, one)

    def annotated(self) -> "np.ndarray":
        """The annotated frame as ``(H, W', 3)`` uint8 RGB (converted when held as I420).

        Raises:
            ValueError: the stream did not render (``render=False``).
        """
        if self.image is None:
            raise ValueError("the stream did not render: pass render=True")
        if self.fmt == "rgb24":
            return self.image
        from .pixels import to_rgb

        return to_rgb(self.image)
