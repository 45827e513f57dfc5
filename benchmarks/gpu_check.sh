#!/usr/bin/env bash
# The GPU check, one command on a fresh GPU machine (see benchmarks/README.md, "GPU check"):
#
#     bash benchmarks/gpu_check.sh
#
# Installs camvideo from this checkout with its test extras when it is not importable yet,
# then runs benchmarks/gpu_check.py: tests/test_cuda.py and the GPU speed figures, one
# table at the end. On a machine without a usable CUDA GPU it ends with one line saying
# so ("gpu_check: no GPU: ...") and exit code 2, before installing or measuring anything
# that needs one. PYTHON picks the interpreter (default: python3).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if ! "$PY" -c "import camvideo.api, pytest, skimage, sklearn" >/dev/null 2>&1; then
    echo "gpu_check: installing camvideo and its test extras (pip install -e '.[test]')"
    "$PY" -m pip install -q -e '.[test]'
fi
exec "$PY" benchmarks/gpu_check.py "$@"
