"""``camvideo live ...``: arguments (:func:`build_parser`) and the exit code.

The run itself is :func:`camvideo.live.session.run_live`; this module only parses the command
line, turns ``--source-option KEY=VALUE`` items into FFmpeg input options, and prints the
one-line notices (preview URL, snapshots) unless ``--quiet``.
"""
from __future__ import annotations

import sys
from typing import Sequence

from . import args as cliargs
from ..errors import ExitCode, OptionError
from ..live.window import WINDOW_MODES
from ..media.streams import DEFAULT_OPEN_TIMEOUT, DEFAULT_READ_TIMEOUT

_D = cliargs.Options()
DEFAULT_RECONNECT = 10  #: ``--reconnect`` without N


def build_parser() -> cliargs.Parser:
    """Arguments of ``camvideo live`` (the logic is in :func:`camvideo.live.session.run_live`)."""
    p = cliargs.Parser(
        prog="camvideo live",
        description="Real-time CAM overlay on a webcam, capture device or network stream. "
                    "Frames the network cannot keep up with are dropped (the newest is "
                    "always shown), so latency stays bounded. Window keys: q quit, space "
                    "pause, c cycle through the top classes, s save a snapshot PNG.")
    p.add_argument("source", nargs="?", default="0",
                   help="webcam index [0], device (/dev/video0), URL PyAV opens (rtsp://, "
                        "udp://, tcp://, http://...) or a video file")
    g = p.add_argument_group("source")
    g.add_argument("--realtime", action="store_true",
                   help="play a file at its own pace, as if it were a camera (default: "
                        "every frame as fast as the model goes)")
    g.add_argument("--timeout", type=cliargs._unit(0.1, 3600.0), default=DEFAULT_READ_TIMEOUT,
                   metavar="SECONDS", help="a source that sends nothing for this long "
                   f"counts as stalled [{DEFAULT_READ_TIMEOUT:g}]")
    g.add_argument("--open-timeout", type=cliargs._unit(0.1, 3600.0),
                   default=DEFAULT_OPEN_TIMEOUT, metavar="SECONDS",
                   help="time to connect, find the video stream and get its first "
                        "picture (a stream joined between keyframes waits for the next) "
                        f"[{DEFAULT_OPEN_TIMEOUT:g}]")
    g.add_argument("--reconnect", type=cliargs._unit(1, 1000, int), nargs="?",
                   const=DEFAULT_RECONNECT, default=0, metavar="N",
                   help="reopen a camera or stream that is lost or ends, up to N attempts "
                        f"with back-off; the recording goes on [off; N: {DEFAULT_RECONNECT}]")
    g.add_argument("--source-option", action="append", default=[], metavar="KEY=VALUE",
                   help="FFmpeg input option, repeatable (video_size=1280x720, framerate=30, "
                        "input_format=mjpeg, rtsp_transport=tcp)")
    cliargs.add_model_args(p)
    cliargs.add_render_args(p)
    cliargs.add_smooth_args(p, ("causal",))
    o = p.add_argument_group("output")
    o.add_argument("-o", "--output", metavar="FILE",
                   help="record the annotated stream (.mp4, .mkv, .mov, .webm, .avi)")
    o.add_argument("-y", "--overwrite", action="store_true", help="replace an existing FILE")
    o.add_argument("--codec", default=_D.codec, help=f"recording encoder [{_D.codec}]")
    o.add_argument("--crf", type=cliargs._unit(0, 63, int), default=_D.crf,
                   help=f"recording quality, lower is better [{_D.crf}]")
    cliargs.add_encoder_args(o)
    o.add_argument("--no-audio", dest="audio", action="store_false",
                   help="record without the source's audio")
    cliargs.add_audio_arg(o)
    o.add_argument("--serve", metavar="[HOST:]PORT",
                   help="serve a page with the live stream (MJPEG) on HOST:PORT "
                        "[host 127.0.0.1]")
    o.add_argument("--window", choices=WINDOW_MODES, default="auto",
                   help="show a window: auto = when a display is available [auto]")
    o.add_argument("--hud", action="store_true",
                   help="overlay fps, latency and drops (recorded too)")
    o.add_argument("--duration", type=cliargs._unit(0.01, 1e7), metavar="SECONDS",
                   help="stop after this long")
    o.add_argument("--snapshot-dir", default=".", metavar="DIR",
                   help="where the s key saves PNG snapshots [.]")
    o.add_argument("--stats", metavar="FILE",
                   help="write a JSON summary with every frame's capture→annotated latency "
                        "(also when the source is lost)")
    cliargs.add_device_args(p)
    for action in p._actions:
        if action.dest == "batch_size":
            action.help = ("frames per device batch [1 for cameras and streams: the lowest "
                           "latency; a file played without --realtime: as in files]")
    cliargs.add_terminal_args(p)
    return p


def _parse_options(items: Sequence[str]) -> dict[str, str]:
    """``--source-option KEY=VALUE`` items as a dict (the last of a repeated key wins)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"--source-option wants KEY=VALUE, got {item!r}")
        out[key.strip()] = value
    return out


def _bare_reconnect(argv: Sequence[str]) -> list[str]:
    """``--reconnect`` followed by no number takes the default here, so that a SOURCE
    after it (``--reconnect udp://...``) is not read as its N."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg == "--reconnect" and (i + 1 == len(out) or not out[i + 1].isdigit()):
            out[i] = f"--reconnect={DEFAULT_RECONNECT}"
    return out


def run_cli(argv: Sequence[str]) -> int:
    """``camvideo live ...``: parse, run, exit code (errors are raised to cli.main)."""
    from .terminal import setup_logging
    from ..live.session import run_live

    ns = build_parser().parse_args(_bare_reconnect(argv))
    setup_logging(ns.verbose)
    quiet = ns.quiet

    def notify(msg: str) -> None:
        if not quiet:
            print(f"camvideo: {msg}", file=sys.stderr, flush=True)

    run_live(ns.source, output=ns.output, serve=ns.serve, window=ns.window,
             duration=ns.duration, hud=ns.hud, realtime=ns.realtime, timeout=ns.timeout,
             open_timeout=ns.open_timeout, source_options=_parse_options(ns.source_option),
             snapshot_dir=ns.snapshot_dir, stats=ns.stats, notify=notify,
             reconnect=ns.reconnect, options=cliargs.options_from(ns))
    return ExitCode.OK
