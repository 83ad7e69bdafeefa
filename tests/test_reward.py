"""The book's critical invariant on real env steps: reward == unwrapped.compute_reward, relabelled goals too."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.vec_env import DummyVecEnv

from rlexp.components.envs import make_env, make_vec_env
from rlexp.tasks import reward_check


@pytest.mark.parametrize("env_id", ["FetchReach-v4", "FetchReachDense-v4", "FetchPush-v4", "FetchPickAndPlace-v4"])
def test_step_reward_matches_compute_reward(env_id: str) -> None:
    cfg = OmegaConf.create({"seed": 1, "anatomy": {"reward_check_steps": 120, "n_random_goals": 3, "atol": 1e-6,
                                                   "max_mismatches": 5}})
    env = make_env(env_id)
    try:
        result = reward_check(env, cfg)
    finally:
        env.close()
    assert result["ok"], result["mismatches"]
    assert result["n_checks"] == 120 * 6


def test_reward_check_detects_a_broken_reward() -> None:
    import gymnasium as gym

    cfg = OmegaConf.create({"seed": 0, "anatomy": {"reward_check_steps": 50, "n_random_goals": 1, "atol": 1e-6,
                                                   "max_mismatches": 3}})
    env = gym.wrappers.TransformReward(make_env("FetchReachDense-v4"), lambda r: r * 2.0)
    result = reward_check(env, cfg)
    assert not result["ok"] and len(result["mismatches"]) >= 3


@pytest.mark.parametrize("env_id", ["FetchReach-v4", "FetchPush-v4"])
def test_her_relabelled_rewards_match_compute_reward(env_id: str) -> None:
    """Fill SB3's HER buffer with real episodes, sample relabelled transitions, recompute every reward."""
    venv = make_vec_env(env_id, n_envs=2, seed=0)
    buf = HerReplayBuffer(2000, venv.observation_space, venv.action_space, env=venv, n_envs=2,
                          n_sampled_goal=4, goal_selection_strategy="future")
    rng = np.random.default_rng(0)
    obs = venv.reset()
    for _ in range(150):  # 3 episodes per env
        actions = rng.uniform(-1, 1, size=(2, 4)).astype(np.float32)
        next_obs, rewards, dones, infos = venv.step(actions)
        stored_next = {k: v.copy() for k, v in next_obs.items()}
        for i, done in enumerate(dones):
            if done:  # VecEnv auto-resets: the true last observation is in infos
                for k in stored_next:
                    stored_next[k][i] = infos[i]["terminal_observation"][k]
        buf.add(obs, stored_next, actions, rewards, dones, infos)
        obs = next_obs
    batch = buf.sample(512)
    ag = batch.next_observations["achieved_goal"].numpy()
    dg = batch.next_observations["desired_goal"].numpy()
    base = venv.envs[0].unwrapped
    expected = base.compute_reward(ag, dg, [{}] * len(ag))
    np.testing.assert_allclose(batch.rewards.numpy().ravel(), expected, atol=1e-6)
    # Relabelled goals really occur, and some of them turn failures into successes.
    assert (batch.rewards.numpy() == 0).mean() > 0.05
    assert isinstance(venv, DummyVecEnv)
    venv.close()
