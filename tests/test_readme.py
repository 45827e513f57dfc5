"""The README's set-up commands are the ones that work: two shell commands, the first
running the main job on a sample in samples/, the second the test command .ci/run runs."""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", section, flags=re.S)


def test_two_setup_commands_and_ci_runs_the_second():
    install_run, install_test = setup_commands()
    assert install_run.startswith("pip install -e . && camvideo samples/")
    assert install_test == "pip install -e '.[test]' && pytest"
    ci = (ROOT / ".ci" / "run").read_text()
    assert install_test in ci.splitlines()


def test_main_job_command_runs_on_the_sample(tmp_path):
    install_run, _ = setup_commands()
    job = shlex.split(install_run.split("&&", 1)[1])
    assert job[0] == "camvideo"
    sample = ROOT / job[1]
    assert sample.is_file() and sample.stat().st_size < 1_000_000
    out = tmp_path / job[2]
    proc = subprocess.run([sys.executable, "-m", "camvideo", str(sample), str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with av.open(str(sample)) as a, av.open(str(out)) as b:
        assert b.streams.video[0].frames == a.streams.video[0].frames
        assert len(b.streams.audio) == len(a.streams.audio) == 1


def test_the_stream_example_runs(lite0, monkeypatch):
    """The README's first Python example, on the bundled sample: the mean map of a clip
    and the times a class is on screen."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    code = re.findall(r"```python\n(.+?)\n```", section, flags=re.S)[0]
    sample = ROOT / "samples" / "cat_and_mug.mp4"
    assert code.count('"clip.mp4"') == 2
    monkeypatch.setattr("camvideo.api.load_model", lambda *a, **k: lite0)
    scope: dict = {}
    exec(code.replace('"clip.mp4"', repr(str(sample))), scope)  # noqa: S102
    with av.open(str(sample)) as c:
        frames = c.streams.video[0].frames
    assert len(scope["maps"]) == frames
    assert scope["mean_map"].shape == scope["maps"][0].shape
    assert 0 < float(scope["mean_map"].max()) <= 1
    # the sample shows the cat, then the espresso cup from 2.2 s on
    assert scope["on_screen"] and min(scope["on_screen"]) >= 2.0
