"""The package's rooms and their dependencies: import-linter's contracts (setup.cfg,
``[importlinter]``) hold, and break when a module imports against them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def lint(package_parent: Path) -> subprocess.CompletedProcess:
    """lint-imports with setup.cfg's contracts, on the ``camvideo`` under
    ``package_parent``."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([*LINT, "--no-cache", str(ROOT / "setup.cfg")], cwd=package_parent,
                          env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    proc = lint(ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "4 kept, 0 broken" in proc.stdout, proc.stdout[-2000:]


@pytest.mark.parametrize("module, line, broken", [
    # the library imports the command line
    ("media/sink.py", "from ..commands import args", "Nothing in the library imports"),
    # media imports the model registry (a lazy import counts)
    ("media/files.py", "def _f():\n    from ..model import registry", "Dependencies point"),
    # a cycle between two modules of one package
    ("model/weights.py", "def _g():\n    from . import registry", "No import cycles"),
])
def test_a_deliberate_violation_breaks_a_contract(tmp_path, module, line, broken):
    shutil.copytree(ROOT / "camvideo", tmp_path / "camvideo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = tmp_path / "camvideo" / module
    target.write_text(target.read_text() + "\n\n" + line + "\n")
    proc = lint(tmp_path)
    assert proc.returncode != 0, proc.stdout[-2000:]
    assert f"{broken}" in proc.stdout and "BROKEN" in proc.stdout, proc.stdout[-3000:]


def test_importing_camvideo_and_its_options_loads_no_torch():
    """``import camvideo`` and the shared defaults (what the command line reads) stay
    light: no torch, OpenCV or PyAV."""
    code = ("import sys, camvideo, camvideo.options, camvideo.errors; "
            "print(sorted(m for m in ('torch', 'cv2', 'av') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip()
    assert out == "[]"
