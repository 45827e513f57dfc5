"""Argument definitions of every command, kept apart from the program logic (main.py).

Groups are shared: ``camvideo IN OUT``, ``camvideo live`` and ``camvideo batch`` take the
same model, render, smoothing and device options, with the same names and defaults as
:class:`camvideo.options.Options`.
"""
from __future__ import annotations

import argparse
from typing import Callable, NoReturn, Sequence

from .. import __version__
from ..media.encoding import DEFAULT_PRESET, DEFAULT_X264_PARAMS, X264_PRESETS
from ..errors import OptionError, setting
from ..options import (COLORMAPS, DEFAULT_MODEL, DEFAULT_SIZE, DEFAULT_TIMELINE, LAYOUTS,
                       MAX_CLASSES, PRECISIONS, Options, parse_classes)

_D = Options()


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``camvideo: error: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _unit(lo: float, hi: float, kind=float):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{text} is outside {lo}..{hi}")
        return v
    return parse


def _ratio(text: str) -> float:
    """``--switch-ratio``: 0 (off) or a ratio in (1, 1000]."""
    v = _unit(0.0, 1000.0)(text)
    if 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"{text} must be 0 (off) or more than 1")
    return v


def _auto_or(parse):
    def parse_auto(text: str):
        return "auto" if text.strip().lower() == "auto" else parse(text)
    return parse_auto


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", default=DEFAULT_MODEL,
                   help="model name (`camvideo models` lists them; timm:NAME for timm) "
                        f"[{DEFAULT_MODEL}]")
    g.add_argument("--weights", metavar="FILE", help="state_dict or checkpoint file "
                   "(loaded with weights_only=True)")
    g.add_argument("--labels", metavar="FILE", help="class names, one per line")
    g.add_argument("-c", "--class", dest="cls", metavar="NAME|INDEX",
                   help="show this class's map (default: the top-1 class)")
    g.add_argument("--size", type=_unit(32, 2048, int), default=_D.size, metavar="S",
                   help=f"model input short side, aspect ratio kept [{DEFAULT_SIZE}; video "
                        "networks: their weights' own, 112 for r3d_18]")
    g.add_argument("--clip-hop", type=_unit(1, 1000, int), default=_D.clip_hop, metavar="N",
                   help="video networks: frames from one clip's start to the next's, "
                        "1..the clip length [half the clip]")
    g.add_argument("--fine-maps", action="store_true",
                   help="maps twice as fine (the last downsampling undone, later layers "
                        "dilated: 14x24 instead of 7x12 at 224 px; image networks; "
                        "slower: benchmarks/README.md)")


def _classes(text: str) -> int | tuple[str, ...]:
    try:
        value = parse_classes(text)
    except OptionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    n = value if isinstance(value, int) else len(value)
    if not 1 <= n <= MAX_CLASSES:
        raise argparse.ArgumentTypeError(f"{text!r}: 1..{MAX_CLASSES} classes")
    return value


def add_render_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("render")
    g.add_argument("-k", "--topk", type=_unit(0, 20, int), default=_D.topk, metavar="K",
                   help=f"labels drawn [{_D.topk}]")
    g.add_argument("--colormap", default=_D.colormap, type=str.lower,
                   choices=COLORMAPS, metavar="NAME",
                   help=f"OpenCV colormap: {', '.join(COLORMAPS)} [{_D.colormap}]")
    g.add_argument("--alpha", type=_unit(0.0, 1.0), default=_D.alpha,
                   help=f"heatmap opacity, 0..1 [{_D.alpha}]")
    g.add_argument("--bbox", action="store_true",
                   help="draw the paper's box (largest region >= threshold x max)")
    g.add_argument("--bbox-threshold", type=_auto_or(_unit(0.01, 1.0)),
                   default=_D.bbox_threshold, metavar="T",
                   help="box threshold, fraction of the map's max; auto: the model's "
                        f"calibrated one, 0.2: the paper's [{_D.bbox_threshold}]")
    g.add_argument("--layout", choices=LAYOUTS, default=_D.layout,
                   help="heatmap over the frame, or original and overlay side by side")
    g.add_argument("--classes", type=_classes, metavar="N|NAME,NAME",
                   help=f"show several classes at once, each in its own colour: N distinct "
                        f"objects' classes (not synonyms), or these classes (1..{MAX_CLASSES})")
    g.add_argument("--timeline", type=_unit(1.0, 600.0), nargs="?", const=DEFAULT_TIMELINE,
                   default=0.0, metavar="SECONDS",
                   help="a strip along the bottom with the shown classes' probabilities "
                        f"over the last seconds [{DEFAULT_TIMELINE:g} s when given]")


def add_smooth_args(p: argparse.ArgumentParser, modes: tuple[str, ...]) -> None:
    g = p.add_argument_group("temporal smoothing")
    g.add_argument("--smooth", type=_unit(0.0, 60.0), default=_D.smooth, metavar="SECONDS",
                   help=f"time constant of the smoothing, 0 = off [{_D.smooth}]")
    if len(modes) > 1:
        g.add_argument("--smooth-mode", choices=modes, default=modes[0],
                       help="causal, or centered (looks a few frames ahead) [causal]")
    g.add_argument("--switch-margin", type=_unit(0.0, 0.99), default=_D.switch_margin,
                   metavar="P", help="the shown class changes when another beats it by "
                                     "this probability, or after it trailed for 1 s "
                                     f"[{_D.switch_margin}]")
    g.add_argument("--switch-ratio", type=_ratio, default=_D.switch_ratio, metavar="R",
                   help="the shown class also changes when another is R times as "
                        f"probable; 0 = off [{_D.switch_ratio:g}]")
    g.add_argument("--no-cut-reset", dest="cut_reset", action="store_false",
                   help="do not reset the smoothing at scene cuts")
    g.add_argument("--no-motion", dest="motion", action="store_false",
                   help="do not move the smoothed maps with the image motion")


def add_encoder_args(g: argparse._ActionsContainer) -> None:
    """``--preset`` and ``--x264-params`` (shared with ``camvideo live --output``)."""
    g.add_argument("--preset", default=None, choices=X264_PRESETS, metavar="NAME",
                   help=f"x264/x265 preset [{DEFAULT_PRESET}, with x264 options "
                        f"{DEFAULT_X264_PARAMS}: about veryfast's size and quality at "
                        f"about half its CPU time]")
    g.add_argument("--x264-params", metavar="K=V:K=V",
                   help="extra libx264 options, as ffmpeg's -x264-params [with the "
                        f"default preset: {DEFAULT_X264_PARAMS}; with --preset: none]")


def add_audio_arg(g: argparse._ActionsContainer) -> None:
    """``--audio auto|copy|ENCODER`` (shared with ``camvideo live``)."""
    from ..media.audio import parse_audio_mode

    def mode(text: str) -> str:
        try:
            return parse_audio_mode(text)
        except ValueError as e:  # "audio_codec must be ..." -> "argument --audio: must be"
            msg, option = str(e), getattr(e, "option", None)
            if option and msg.startswith(option):
                msg = msg[len(option):].lstrip(" :")
            raise argparse.ArgumentTypeError(msg) from None

    g.add_argument("--audio", dest="audio_codec", type=mode, default=_D.audio_codec,
                   metavar="auto|copy|ENCODER",
                   help="auto: copy audio the container plays widely (AAC, MP3, Opus in "
                        ".mp4; anything in .mkv), re-encode the rest (AAC; Opus for "
                        ".webm; MP3 for .avi); copy: copy whatever the container holds; "
                        f"or an encoder: aac, opus, mp3, ac3, flac... [{_D.audio_codec}]")


def add_output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--codec", default=_D.codec,
                   help=f"video encoder (h264_nvenc falls back to libx264) [{_D.codec}]")
    g.add_argument("--crf", type=_unit(0, 63, int), default=_D.crf,
                   help=f"quality, lower is better [{_D.crf}]")
    add_encoder_args(g)
    g.add_argument("--no-audio", dest="audio", action="store_false",
                   help="drop the audio")
    add_audio_arg(g)
    g.add_argument("--json", metavar="PATH",
                   help="JSON Lines sidecar, one record per frame")
    g.add_argument("--json-cams", action="store_true",
                   help="also put the rendered map (feature resolution) in the sidecar")
    g.add_argument("-y", "--overwrite", action="store_true",
                   help="replace an existing output")


def add_result_args(p: argparse.ArgumentParser) -> None:
    """Outputs of one video beside the annotated file (the main command only)."""
    g = p.add_argument_group("results")
    g.add_argument("--tracks", metavar="FILE",
                   help="the tracked boxes as MOTChallenge rows (frame,id,x,y,w,h,conf,"
                        "-1,-1,-1; frames from 1), or JSON for a .json name")
    g.add_argument("--report", dest="html_report", metavar="FILE.html",
                   help="a self-contained HTML page: the class timeline, screen times, "
                        "thumbnails at class changes and cuts, the settings")


def add_device_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("device")
    g.add_argument("--device", default=_D.device, metavar="auto|cpu|cuda[:N]",
                   help="where the network runs; auto = CUDA when present [auto]")
    g.add_argument("--precision", choices=PRECISIONS, default=_D.precision,
                   help="autocast precision; auto = fp16 on CUDA, bf16 on CPUs with native "
                        "bf16 (AVX512-BF16/AMX), else fp32; int8: the backbone quantised "
                        "for ONNX Runtime (CPU; pip install camvideo[int8]) [auto]")
    g.add_argument("--batch-size", type=_unit(1, 1024, int), default=None, metavar="N",
                   help="frames per device batch [4 on CPU, 32 on CUDA]")
    g.add_argument("--stride", type=_unit(1, 1000, int), default=_D.stride, metavar="N",
                   help="run the network on every Nth frame; the frames between carry the "
                        f"last map, moved with the image motion [{_D.stride}]")


def add_terminal_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("terminal")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more log lines")


def main_parser() -> Parser:
    p = Parser(prog="camvideo",
               description="Overlay the Class Activation Map of a CNN on every frame of a "
                           "video. Other commands: `camvideo live`, `camvideo batch`, "
                           "`camvideo models` (each with --help).")
    p.add_argument("--version", action="version", version=f"camvideo {__version__}")
    p.add_argument("input", help="input video file")
    p.add_argument("output", help="output video (.mp4, .mkv, .mov, .webm, .avi)")
    add_model_args(p)
    add_render_args(p)
    add_smooth_args(p, ("causal", "centered"))
    add_output_args(p)
    add_result_args(p)
    add_device_args(p)
    add_terminal_args(p)
    return p


def models_parser() -> Parser:
    p = Parser(prog="camvideo models", description="List the models camvideo can use.")
    add_terminal_args(p)
    return p


def options_from(ns: argparse.Namespace) -> Options:
    """The :class:`Options` of a parsed namespace (fields it lacks keep their defaults)."""
    names = set(Options.names())
    return Options(**{k: v for k, v in vars(ns).items() if k in names})


def actions_of(parser: argparse.ArgumentParser) -> dict[str, list[argparse.Action]]:
    """Option name → the flags that set it (``audio``: ``--no-audio``), for messages."""
    out: dict[str, list[argparse.Action]] = {}
    for a in parser._actions:
        if a.option_strings:
            out.setdefault(a.dest, []).append(a)
    return out


def speaker(parsers: Sequence[argparse.ArgumentParser]) -> Callable[[str, object], str]:
    """``say(name, value=None)``: a setting the library names (an
    :class:`~camvideo.options.Options` field and value) as these parsers' flag gives it
    (:func:`flag_for`), else in the library's words (:func:`camvideo.errors.setting`)."""
    actions: dict[str, list[argparse.Action]] = {}
    for parser in parsers:
        for dest, acts in actions_of(parser).items():
            actions.setdefault(dest, []).extend(acts)

    def say(name: str, value: object = None) -> str:
        return flag_for(actions.get(name, []), value) or setting(name, value)

    return say


def flag_for(actions: list[argparse.Action], value: object = None) -> str | None:
    """How to give an option ``value`` on the command line: ``-y/--overwrite`` (a switch
    for True), ``--no-audio`` (for False), ``--weights FILE``, or the flag alone for None;
    None when no flag gives it."""
    if value is None and actions:
        return max(actions[0].option_strings, key=len)
    for a in actions:
        if isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            if value is a.const:
                return "/".join(a.option_strings)
            continue
        return f"{max(a.option_strings, key=len)} {value}"
    return None
