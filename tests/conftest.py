"""Shared pytest configuration: markers, a tiny stand-in model, and session-scoped clips
made by camvideo.testing.synth.

Markers (registered here, not in setup.cfg):

- ``slow``: skipped unless ``--runslow`` is given.
- ``cuda``: skipped when ``torch.cuda.is_available()`` is false.

``tiny_model`` (or :func:`use_tiny_model`, to slow it down) replaces model loading with a
tiny random convolution, for tests about media and live handling rather than the network.

Clip fixtures return :class:`camvideo.testing.clip.Clip` objects written once per session
under ``tmp_path_factory``; each is at most 2 s long and 320 px wide so the suite stays
fast.
"""
from __future__ import annotations

import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from batch_tools import GOOD
from camvideo.testing import synth
from camvideo.model.cammodel import CamModel
from camvideo.model.registry import from_modules
from camvideo.testing.clip import Clip

#: Start of a ``python -c`` script that runs the CLI in a child process with a tiny
#: random network in place of the default model (for process-level tests: signals,
#: resource limits); the script goes on with ``sys.exit(main([...]))``.
TINY_MODEL_CLI_PRELUDE = (
    "import sys, torch\n"
    "import camvideo.api as api\n"
    "from camvideo.model.registry import from_modules\n"
    "torch.manual_seed(0)\n"
    "m = from_modules(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 32, stride=32)),"
    " torch.nn.Linear(8, 5), labels=list('abcde'))\n"
    "api.load_model = lambda *a, **k: m\n"
    "from camvideo.commands.main import main\n")


class Sleep(torch.nn.Module):
    """Makes a forward pass take ``seconds`` longer (an artificially slow model). It
    refuses to be traced (a traced graph would lose the sleep), so the pipeline runs it
    eagerly (camvideo.model.trace falls back)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_tracing():
            raise RuntimeError("a sleep cannot be traced")
        time.sleep(self.seconds)
        return x


def use_tiny_model(monkeypatch: pytest.MonkeyPatch, sleep: float = 0.0) -> CamModel:
    """Replace model loading with a tiny random network (stride 32, 5 classes), each
    forward pass ``sleep`` seconds longer when given; returns the model."""
    torch.manual_seed(0)
    layers = [torch.nn.Conv2d(3, 8, 32, stride=32), torch.nn.ReLU()]
    if sleep:
        layers.append(Sleep(sleep))
    model = from_modules(torch.nn.Sequential(*layers), torch.nn.Linear(8, 5),
                         labels=list("abcde"))
    monkeypatch.setattr("camvideo.api.load_model", lambda *a, **k: model)
    return model


#: Irregular frame gaps (seconds) for the variable-frame-rate clip, cycled.
VFR_GAPS = (1 / 30, 1 / 15, 1 / 24, 1 / 30, 1 / 60, 1 / 10)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False,
                     help="run tests marked slow")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: slow test, run only with --runslow")
    config.addinivalue_line("markers", "cuda: needs a CUDA device, skipped without one")
    # A shell without job control starts background jobs (`pytest &`, a CI step run in
    # the background) with SIGINT ignored, and child processes inherit that: the Ctrl-C
    # tests would then time out. Ctrl-C is Python's default here, as in a terminal.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--runslow")
    cuda = None
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow: needs --runslow"))
        if "cuda" in item.keywords:
            if cuda is None:
                try:
                    import torch
                    cuda = torch.cuda.is_available()
                except ImportError:
                    cuda = False
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="CUDA not available"))


@pytest.fixture(scope="session")
def lite0() -> CamModel:
    """The default model (EfficientNet-Lite0, bundled ImageNet weights), loaded once for
    the session. Engines fold and fuse it in place on first use (camvideo.model.rewrite);
    a test that needs it untouched loads its own."""
    from camvideo.model.registry import load_model

    return load_model()


@pytest.fixture
def tiny_model(monkeypatch: pytest.MonkeyPatch) -> CamModel:
    """The default model is a tiny random network here (see :func:`use_tiny_model`)."""
    return use_tiny_model(monkeypatch)


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session directory holding the generated clips."""
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="session")
def vfr_gaps() -> tuple[float, ...]:
    """The frame gaps (seconds) that ``vfr_clip`` cycles through."""
    return VFR_GAPS


@pytest.fixture(scope="session")
def pan_clip(clip_dir: Path) -> Clip:
    """The cat panning across a 320x180 gradient: 45 frames at 30 fps (1.5 s), stereo
    AAC tone for the whole clip, H.264 in MP4."""
    return synth.make_clip("pan", clip_dir / "pan.mp4", size=(320, 180), n=45, fps=30,
                           audio=True)


@pytest.fixture(scope="session")
def silent_clip(clip_dir: Path) -> Clip:
    """Slow zoom on the cat, 320x180, 30 frames at 25 fps, no audio stream."""
    return synth.make_clip("zoom", clip_dir / "silent.mp4", size=(320, 180), n=30, fps=25)


@pytest.fixture(scope="session")
def vfr_clip(clip_dir: Path) -> Clip:
    """Variable frame rate pan (gaps cycle through :data:`VFR_GAPS`), 36 frames (~1.8 s),
    320x180, tone track, MP4 with a 1/90000 time base."""
    n = 36
    times = [0.0]
    for i in range(n - 1):
        times.append(times[-1] + VFR_GAPS[i % len(VFR_GAPS)])
    return synth.make_clip("pan", clip_dir / "vfr.mp4", size=(320, 180), n=n, fps=30,
                           times=times, audio=True)


@pytest.fixture(scope="session")
def odd_clip(clip_dir: Path) -> Clip:
    """Odd-sized (319x179) pan, 24 frames at 24 fps, H.264 yuv444p, no audio."""
    return synth.make_clip("pan", clip_dir / "odd.mp4", size=(319, 179), n=24, fps=24)


@pytest.fixture(scope="session")
def cuts_clip(clip_dir: Path) -> Clip:
    """Three shots (cat, coffee mug, pagoda) of 16 frames each, 320x180 at 30 fps, hard
    cuts at frames 16 and 32, keyframe every 8 frames, no audio."""
    return synth.make_clip("cuts", clip_dir / "cuts.mp4", size=(320, 180), n=48, fps=30,
                           gop=8)


# ---------------------------------------------------------------------------------------
# camvideo batch: input trees (tests/test_batch.py, tests/test_batch_ray.py)


@pytest.fixture(scope="module")
def source_tree(tmp_path_factory) -> Path:
    """IN_DIR: four good clips in nested folders, a truncated MP4, an empty file, a text
    file named .avi, an ignored .txt, a hidden clip, and a link to a clip outside."""
    base = tmp_path_factory.mktemp("batch_src")
    root = base / "in"
    for rel, (kind, n) in GOOD.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        synth.make_clip(kind, root / rel, size=(160, 96), n=n, fps=24)
    data = (root / "a.mp4").read_bytes()
    (root / "sub/trunc.mp4").write_bytes(data[: len(data) // 2])  # no index: unreadable
    (root / "empty.mp4").write_bytes(b"")
    (root / "notes.avi").write_text("not a video\n")
    (root / "readme.txt").write_text("ignored\n")
    shutil.copy(root / "a.mp4", root / ".hidden.mp4")
    shutil.copy(root / "a.mp4", base / "outside.mp4")
    (root / "link.mp4").symlink_to(base / "outside.mp4")
    return root


@pytest.fixture
def tree(source_tree, tmp_path) -> Path:
    """A fresh copy of :func:`source_tree` (links kept as links)."""
    dst = tmp_path / "in"
    shutil.copytree(source_tree, dst, symlinks=True)
    return dst


@pytest.fixture
def long_tree(tmp_path) -> Path:
    """Six clips of 30 frames: enough work that Ctrl-C lands mid-batch."""
    src = tmp_path / "long"
    for i in range(6):
        (src / f"s{i % 2}").mkdir(parents=True, exist_ok=True)
        synth.make_clip("pan", src / f"s{i % 2}" / f"v{i}.mp4", size=(160, 96), n=30,
                        fps=24)
    return src


# ---------------------------------------------------------------------------------------
# Several classes at once (tests/test_multiclass.py, test_tracks.py, test_report.py)


@pytest.fixture(scope="session")
def pair_clip(clip_dir: Path) -> Clip:
    """The cat and the coffee cup side by side, each moving (synth.pair_frames): 384x192,
    90 frames at 30 fps (3 s); ``objects`` holds both boxes per frame."""
    return synth.make_clip("pair", clip_dir / "pair.mp4", size=(384, 192), n=90, fps=30)


@pytest.fixture(scope="session")
def pair_run(pair_clip: Clip, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``camvideo pair.mp4 out.mp4 --classes 2 --bbox --timeline`` with every result file
    (``--json``, ``--tracks`` MOT and ``.json``, ``--report``), run once per session
    through the command line (the default model), with the default, calibrated box
    threshold (``auto``)."""
    from camvideo.commands.main import main

    d = tmp_path_factory.mktemp("pair_run")
    paths = {"video": d / "out.mp4", "json": d / "out.jsonl", "mot": d / "tracks.txt",
             "report": d / "report.html"}
    rc = main([str(pair_clip.path), str(paths["video"]), "--classes", "2", "--bbox",
               "--timeline", "--json", str(paths["json"]),
               "--tracks", str(paths["mot"]), "--report", str(paths["report"]), "-q",
               "--precision", "fp32"])
    assert rc == 0
    return paths
