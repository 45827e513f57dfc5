"""benchmarks/gpu_check.sh on a machine without a usable GPU: it installs nothing here
(camvideo is importable), measures nothing, and ends with one clear "no GPU" line and
exit code 2 (CUDA hidden with CUDA_VISIBLE_DEVICES, so this holds on GPU machines too)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_without_a_gpu_ends_with_one_no_gpu_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable,
           "PYTHONPATH": str(ROOT)}
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = res.stdout.strip().splitlines()
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(lines) == 1, lines  # nothing installed, nothing measured
    assert lines[0].startswith("gpu_check: no GPU: ") and "nothing was measured" in lines[0]
    assert "finds no usable CUDA GPU" in lines[0] or "without CUDA" in lines[0]
    assert res.stderr == ""
