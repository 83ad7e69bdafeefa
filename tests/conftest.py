"""Shared test helpers: run the real entry points as a user would, in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Small, fast settings for real end-to-end runs on 2 CPU cores.
FAST = ["progress=false", "eval.n_episodes=3", "diagnostics.freq=0"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_py(*overrides: str, timeout: float = 600, multirun: bool = False) -> subprocess.CompletedProcess:
    """`python run.py OVERRIDES` from the project root, output captured."""
    cmd = [sys.executable, "run.py", *(["-m"] if multirun else []), *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_env())


def rlexp_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m rlexp ARGS` from the project root."""
    cmd = [sys.executable, "-m", "rlexp", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=_env())


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\n"
                                  f"STDERR:\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short real PPO dense-Reach run shared by artifact, eval and video tests."""
    run_dir = tmp_path_factory.mktemp("ppo_run")
    ok(run_py("+experiment=ch03_ppo_reach_dense", "total_steps=4096", "algo.n_steps=256", "algo.batch_size=256",
              "checkpoint_freq=2048", f"hydra.run.dir={run_dir}", *FAST))
    return run_dir
