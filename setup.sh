#!/usr/bin/env bash
# Create .venv (Python 3.11) with rlexp and its dependencies (ranges: pyproject.toml). Idempotent: re-running is cheap.
#   PYTHON=python3.11 bash setup.sh     # choose the interpreter
#   RLEXP_TORCH="torch==2.13.0"         # the torch installed when .venv has none in rlexp's range; default: the CPU
#                                       # wheel (a bare `torch` pulls a multi-GB CUDA build). Set, it is installed.
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
# A torch already in .venv that pyproject.toml's torch requirement accepts is kept (pip keeps it too).
torch_in_range() {
    .venv/bin/python - 2>/dev/null <<'PY'
import tomllib
from importlib.metadata import version

from pip._vendor.packaging.requirements import Requirement

reqs = [Requirement(r) for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]]
(torch,) = [r for r in reqs if r.name == "torch"]
raise SystemExit(not torch.specifier.contains(version("torch"), prereleases=True))
PY
}
if [ -n "${RLEXP_TORCH:-}" ] || ! torch_in_range; then
    .venv/bin/python -m pip install -q "$TORCH"
fi
# rlexp's own Optuna sweeper replaced hydra-optuna-sweeper (it pins optuna < 3): a .venv made before loses it.
if .venv/bin/python -m pip show -q hydra-optuna-sweeper 2>/dev/null; then
    .venv/bin/python -m pip uninstall -q -y hydra-optuna-sweeper
fi
.venv/bin/python -m pip install -q -e ".[dev]"
# Headless rendering needs EGL (Mesa on CPU machines). Report, don't fail: training works without it.
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
    echo "setup.sh: libEGL.so.1 not found; rendering (videos, pixel envs) needs it: apt-get install libegl1 libgl1" >&2
fi
echo "setup.sh: ready ($(.venv/bin/python -c 'import rlexp, torch; print("torch", torch.__version__)'))"
