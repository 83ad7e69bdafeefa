"""Evaluation and video work for pixel policies: ground truth stays reachable, frames are filmed large."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import pytest
from omegaconf import OmegaConf

from rlexp.config import compose
from rlexp.evaluate import run_episodes
from rlexp.tasks import RandomPolicy

from helpers import ok, rlexp_cli, run_py


def test_final_distance_without_goal_keys() -> None:
    cfg = compose("+experiment=ch09_step1_manipulation", "n_envs=1")
    OmegaConf.update(cfg, "env.pixels.goal_mode", "none")
    OmegaConf.update(cfg, "env.pixels.frame_stack", 2)
    from rlexp.components.envs import make_env_from_cfg

    env = make_env_from_cfg(cfg.env)
    assert "desired_goal" not in env.observation_space.spaces
    policy = RandomPolicy(env.action_space, 0)
    env.close()
    (episode,) = run_episodes(policy, cfg, [0])  # type: ignore[arg-type]
    assert episode["final_distance"] is not None and 0 < episode["final_distance"] < 1


@pytest.mark.slow
def test_video_of_a_pixel_policy(tmp_path: Path) -> None:
    ok(run_py("+experiment=ch09_step1_manipulation", "total_steps=60", "n_envs=1", "algo.learning_starts=50",
              "algo.batch_size=8", "algo.buffer_size=500", "eval.n_episodes=1", "checkpoint_freq=0",
              "diagnostics.freq=0", "progress=false", f"hydra.run.dir={tmp_path}", timeout=300))
    out = tmp_path / "v.mp4"
    ok(rlexp_cli("video", str(tmp_path), "--episodes", "1", "--width", "128", "--height", "96", "--out", str(out)))
    frames = iio.imread(out, index=None)
    assert frames.shape == (50 + 15, 96, 128, 3) and frames.std() > 5
