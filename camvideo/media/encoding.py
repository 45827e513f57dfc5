"""Encoder settings: what each video encoder is opened with (used by
:class:`camvideo.media.sink.FileSink`; measured by ``benchmarks/bench_encoder.py``)."""
from __future__ import annotations

from ..errors import OptionError

X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
#: The default x264 settings: ``superfast`` with macroblock-tree rate control and a short
#: lookahead (which ``superfast`` turns off). On the pipeline's output (720p heatmap
#: overlays, CRF 20) this is about ``veryfast``'s size and quality (+9 % bytes, -0.1 dB
#: PSNR) at about 55 % of its CPU time: benchmarks/README.md, "Encoder settings".
DEFAULT_PRESET = "superfast"
#: The default video encoder (WebM output, which cannot hold H.264, uses libvpx-vp9).
DEFAULT_CODEC = "libx264"
DEFAULT_X264_PARAMS = "mbtree=1:rc-lookahead=10"
#: NVENC's presets (FFmpeg's ``-preset`` for ``*_nvenc``): p1 (fastest) .. p7, and the
#: older names.
NVENC_PRESETS = ("p1", "p2", "p3", "p4", "p5", "p6", "p7", "default", "slow", "medium",
                 "fast", "hp", "hq", "bd", "ll", "llhq", "llhp", "lossless", "losslesshp")
DEFAULT_NVENC_PRESET = "p4"


def encoder_options(codec: str, crf: int, preset: str | None = None,
                    x264_params: str | None = None) -> dict[str, str]:
    """The options ``codec`` is opened with.

    Args:
        codec: encoder name.
        crf: quality (``cq`` for NVENC; ignored by encoders without one).
        preset: x264/x265 preset (None: :data:`DEFAULT_PRESET`, with
            :data:`DEFAULT_X264_PARAMS` unless ``x264_params`` is given), or NVENC's
            (None: :data:`DEFAULT_NVENC_PRESET`).
        x264_params: extra libx264 options (``key=value:key=value``); None: the default
            ones with the default preset, none with a preset given.
    """
    if codec in ("libx264", "libx265"):
        opts = {"crf": str(crf), "preset": preset or DEFAULT_PRESET}
        if codec == "libx265":  # x265 writes its [info] lines to stderr itself, past -q
            opts["x265-params"] = "log-level=error"
        if codec == "libx264":
            params = x264_params if x264_params is not None else \
                (DEFAULT_X264_PARAMS if preset is None else "")
            if params:
                opts["x264-params"] = params
        return opts
    if codec.startswith(("libvpx", "libaom")):
        return {"crf": str(crf), "b": "0"}
    if "nvenc" in codec:
        return {"cq": str(crf), "preset": preset or DEFAULT_NVENC_PRESET}
    return {}


def check_preset(codec: str, preset: str | None) -> None:
    """Refuse a ``preset`` the encoder does not have (x264/x265: :data:`X264_PRESETS`;
    NVENC: :data:`NVENC_PRESETS`).

    Raises:
        OptionError: naming the option (``preset``) and the known presets.
    """
    if preset is None:
        return
    known = X264_PRESETS if codec in ("libx264", "libx265") else \
        NVENC_PRESETS if "nvenc" in codec else None
    if known is not None and preset not in known:
        raise OptionError(f"preset must be one of {', '.join(known)} for {codec}; "
                          f"got {preset!r}", option="preset")


def settings_for(codec: str, preset: str | None,
                 x264_params: str | None) -> tuple[str | None, str | None]:
    """The ``preset`` and ``x264_params`` that apply when ``codec`` opens in place of the
    encoder they were given for (a fallback): an NVENC preset (``p5``) means nothing to
    libx264 and the other way round, so the fallback gets its own default instead."""
    if codec in ("libx264", "libx265"):
        return (preset if preset in X264_PRESETS else None,
                x264_params if codec == "libx264" else None)
    if "nvenc" in codec:
        return (preset if preset in NVENC_PRESETS else None), None
    return None, None
