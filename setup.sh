#!/usr/bin/env bash
# Create .venv (Python 3.11) with rlexp and its pinned dependencies. Idempotent: re-running is cheap.
#   PYTHON=python3.11 bash setup.sh     # choose the interpreter
#   RLEXP_TORCH="torch==2.13.0"         # default: the CPU wheel (a bare `torch` pulls a multi-GB CUDA build)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
TORCH="${RLEXP_TORCH:-torch==2.13.0}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "setup.sh: rlexp needs Python 3.11; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "$TORCH"
.venv/bin/python -m pip install -q -e ".[dev]"
# Headless rendering needs EGL (Mesa on CPU machines). Report, don't fail: training works without it.
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
    echo "setup.sh: libEGL.so.1 not found; rendering (videos, pixel envs) needs it: apt-get install libegl1 libgl1" >&2
fi
echo "setup.sh: ready ($(.venv/bin/python -c 'import rlexp, torch; print("torch", torch.__version__)'))"
