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


def encoder_options(codec: str, crf: int, preset: str | None = None,
                    x264_params: str | None = None) -> dict[str, str]:
    """The options ``codec`` is opened with.

    Args:
        codec: encoder name.
        crf: quality (``cq`` for NVENC; ignored by encoders without one).
        preset: x264/x265 preset; None: :data:`DEFAULT_PRESET`, with
            :data:`DEFAULT_X264_PARAMS` unless ``x264_params`` is given.
        x264_params: extra libx264 options (``key=value:key=value``); None: the default
            ones with the default preset, none with a preset given.
    """
    if codec in ("libx264", "libx265"):
        opts = {"crf": str(crf), "preset": preset or DEFAULT_PRESET}
        if codec == "libx264":
            params = x264_params if x264_params is not None else \
                (DEFAULT_X264_PARAMS if preset is None else "")
            if params:
                opts["x264-params"] = params
        return opts
    if codec.startswith(("libvpx", "libaom")):
        return {"crf": str(crf), "b": "0"}
    if "nvenc" in codec:
        return {"cq": str(crf), "preset": "p4"}
    return {}


def check_preset(codec: str, preset: str | None) -> None:
    """Refuse an x264/x265 ``preset`` that is not one of :data:`X264_PRESETS`.

    Raises:
        OptionError: naming the option (``preset``) and the known presets.
    """
    if preset is not None and codec in ("libx264", "libx265") and preset not in X264_PRESETS:
        raise OptionError(f"preset must be one of {', '.join(X264_PRESETS)}; "
                          f"got {preset!r}", option="preset")
