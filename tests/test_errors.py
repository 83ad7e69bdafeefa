"""Bad input: a clear message and a non-zero exit before any training, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import run_py

CASES = [
    # (overrides, exit code, message)
    (["+experiment=ch99_nope"], 1, "Available options in 'experiment'"),
    (["algo=nope"], 1, "Available options in 'algo'"),
    (["env=nope"], 1, "Available options in 'env'"),
    (["env.id=FetchPusj-v4"], 2, "Did you mean: FetchPush-v4"),
    (["+experiment=ch03_ppo_reach_dense", "buffer=her"], 2, "HER cannot be used with PPO"),
    (["+experiment=ch03_ppo_reach_dense", "buffer=replay"], 2, "PPO is on-policy"),
    (["+experiment=ch05_her_reach", "env.id=Pendulum-v1"], 2, "HER needs a goal-conditioned env"),
    (["encoder=nature_cnn"], 2, "encoder NatureCNN cannot read the observation space"),
    (["total_steps=0"], 2, "total_steps must be a positive integer"),
    (["total_steps=-5"], 2, "total_steps must be a positive integer"),
    (["n_envs=0"], 2, "n_envs must be a positive integer"),
    (["eval.n_episodes=0"], 2, "eval.n_episodes must be a positive integer"),
    (["checkpoint_freq=-1"], 2, "checkpoint_freq must be"),
    (["algo.batch_size=0"], 2, "algo.batch_size must be positive"),
    (["task=fly"], 2, "unknown task 'fly'"),
    (["algo._target_=stable_baselines3.NOPE"], 2, "cannot be imported"),
]


@pytest.mark.parametrize("overrides,code,message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_fails_fast(tmp_path: Path, overrides: list[str], code: int, message: str) -> None:
    proc = run_py(*overrides, "progress=false", f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "tb").exists() and not (tmp_path / "checkpoints").exists()  # nothing trained
