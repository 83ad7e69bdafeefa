"""Shared test helpers (the only module tests import helpers from): run the real entry points in subprocesses.

On sys.path through pyproject's [tool.pytest.ini_options] pythonpath, so every test, also in subfolders,
imports them as `from helpers import ...`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Small, fast settings for real end-to-end runs on 2 CPU cores.
FAST = ["progress=false", "eval.n_episodes=3", "diagnostics.freq=0"]
# Tiny PPO dense-Reach runs (add total_steps=N): a checkpoint every 128 steps, so a stop has one to
# resume from.
PPO_TINY = [
    "+experiment=ch03_ppo_reach_dense",
    "n_envs=2",
    "algo.n_steps=64",
    "algo.batch_size=64",
    "checkpoint_freq=128",
    "progress=false",
    "eval.n_episodes=2",
    "diagnostics.freq=0",
]


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


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:  # noqa: ANN001
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"process exited ({proc.returncode}) before {what}:\n{proc.stdout.read()[-4000:]}"
            )
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoints(run_dir: Path) -> list[Path]:
    """Periodic checkpoints of a run, oldest first (by step, not by name)."""
    from rlexp.rundir import RunDir

    return [c.zip for c in RunDir(run_dir).checkpoints()]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard scalars of a run's single event directory: {tag: [(step, value), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = sorted((run_dir / "tb").iterdir())
    assert [d.name for d in event_dirs] == ["run_1"], "one TensorBoard run per run directory"
    acc = EventAccumulator(str(event_dirs[0]), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


class PixelsOnly(gym.ObservationWrapper):
    """The `pixels` image of a PixelObservation env as a plain Box observation (what NatureCNN reads).

    For configs: env.wrappers=[{_target_:helpers.PixelsOnly}].
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = env.observation_space["pixels"]

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return observation["pixels"]
