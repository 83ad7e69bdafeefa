"""The pixel wrapper on real FetchPush-v4 (native 84x84 render), and the step-3 loss-signature command."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rlexp  # noqa: F401  - MUJOCO_GL=egl before mujoco loads
from rlexp.components.envs import PUSH_PROPRIO, PixelObservation, register_robotics
from rlexp.errors import ConfigError

from helpers import ok, rlexp_cli


def push(**kw: object) -> gym.Env:
    register_robotics()
    make = {"render_mode": "rgb_array", "width": 84, "height": 84}
    make.update(kw.pop("make", {}))  # type: ignore[arg-type]
    return PixelObservation(gym.make("FetchPush-v4", **make), **kw)


@pytest.fixture(scope="module")
def env() -> gym.Env:
    e = push()
    yield e
    e.close()


def test_observation_space_and_values(env: gym.Env) -> None:
    space = env.observation_space
    assert list(space.spaces) == ["achieved_goal", "desired_goal", "pixels", "proprioception"]
    assert space["pixels"].shape == (12, 84, 84) and space["pixels"].dtype == np.uint8
    assert space["proprioception"].shape == (10,)
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (12, 84, 84) and obs["pixels"].dtype == np.uint8
    assert 10 < obs["pixels"].mean() < 245  # neither black nor blown out
    raw = env.unwrapped._get_obs()
    np.testing.assert_allclose(obs["proprioception"], raw["observation"][list(PUSH_PROPRIO)])
    np.testing.assert_allclose(obs["achieved_goal"], raw["achieved_goal"])
    np.testing.assert_allclose(obs["desired_goal"], raw["desired_goal"])
    assert env.last_raw_obs is not None and "observation" in env.last_raw_obs


def test_reset_refills_stack_and_steps_shift_it(env: gym.Env) -> None:
    obs, _ = env.reset(seed=1)
    frames = obs["pixels"].reshape(4, 3, 84, 84)
    assert all(np.array_equal(frames[0], f) for f in frames[1:])  # refilled with the first frame
    action = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
    prev = frames
    for _ in range(3):
        obs, *_ = env.step(action)
        cur = obs["pixels"].reshape(4, 3, 84, 84)
        assert np.array_equal(cur[:3], prev[1:])  # oldest dropped, newest appended
        prev = cur
    assert not np.array_equal(prev[-1], frames[0])  # the arm moved
    obs, _ = env.reset(seed=2)
    frames = obs["pixels"].reshape(4, 3, 84, 84)
    assert all(np.array_equal(frames[0], f) for f in frames[1:])  # no frames leak from the last episode


def test_goal_modes_and_ground_truth() -> None:
    e = push(goal_mode="none", proprio_indices=None, frame_stack=1)
    try:
        assert list(e.observation_space.spaces) == ["pixels"]
        obs, _ = e.reset(seed=0)
        assert obs["pixels"].shape == (3, 84, 84)
        assert set(e.last_raw_obs) == {
            "observation",
            "achieved_goal",
            "desired_goal",
        }  # eval distance stays reachable
        assert e.compute_reward(e.last_raw_obs["achieved_goal"], e.last_raw_obs["desired_goal"], {}) in (
            0.0,
            -1.0,
        )
    finally:
        e.close()
    e = push(goal_mode="desired")
    try:
        assert (
            "desired_goal" in e.observation_space.spaces and "achieved_goal" not in e.observation_space.spaces
        )
    finally:
        e.close()


def test_bad_wrapper_configs() -> None:
    register_robotics()
    with pytest.raises(ConfigError, match="render_mode=rgb_array"):
        PixelObservation(gym.make("FetchPush-v4"))
    with pytest.raises(ConfigError, match="width/height"):
        push(make={"width": 480, "height": 480})
    with pytest.raises(ConfigError, match="goal_mode"):
        push(goal_mode="all")
    with pytest.raises(ConfigError, match="out of range"):
        push(proprio_indices=[0, 25])
    with pytest.raises(ConfigError, match="expected one of push"):
        push(proprio_indices="pusj")


def test_proprio_preset_by_name() -> None:
    e = push(proprio_indices="push")
    try:
        assert e.proprio_indices.tolist() == list(PUSH_PROPRIO)
    finally:
        e.close()


def test_resize_path_when_asked() -> None:
    e = push(make={"width": 120, "height": 120}, resize=True, frame_stack=2)
    try:
        obs, _ = e.reset(seed=0)
        assert obs["pixels"].shape == (6, 84, 84)
    finally:
        e.close()


def test_loss_signature_command(tmp_path) -> None:  # noqa: ANN001
    """Synthetic curves shaped like the book's seed-0 table: plateau, breakout ~2.2M, mastery ~3M."""
    from torch.utils.tensorboard import SummaryWriter

    steps = np.arange(0, 4_500_001, 20_000)
    success = np.interp(
        steps, [0, 2.0e6, 2.2e6, 2.5e6, 3.0e6, 3.5e6, 4.5e6], [0.04, 0.06, 0.08, 0.45, 0.88, 0.96, 0.96]
    )
    critic = np.interp(
        steps,
        [0, 1.0e6, 2.0e6, 2.2e6, 2.5e6, 3.0e6, 3.5e6, 4.5e6],
        [0.09, 0.07, 0.04, 0.25, 0.46, 0.35, 0.45, 0.2],
    )
    actor = np.interp(
        steps, [0, 2.0e6, 2.2e6, 2.5e6, 3.0e6, 3.5e6, 4.0e6, 4.5e6], [0, 0, 0.8, 1.6, 1.1, 0.02, -0.5, -0.8]
    )
    writer = SummaryWriter(str(tmp_path / "tb" / "run_1"))
    for i, s in enumerate(steps):
        writer.add_scalar("rollout/success_rate", success[i], int(s))
        writer.add_scalar("train/critic_loss", critic[i], int(s))
        writer.add_scalar("train/actor_loss", actor[i], int(s))
    writer.close()
    out = ok(
        rlexp_cli("losses", str(tmp_path), "--window", "3", "--json", str(tmp_path / "sig.json"), timeout=120)
    )
    import json

    sig = json.loads((tmp_path / "sig.json").read_text())
    assert 2.0e6 <= sig["breakout_step"] <= 2.3e6 and 2.9e6 <= sig["mastery_step"] <= 3.25e6
    plateau, breakout, mastery = sig["phases"]
    assert plateau["critic_loss"]["trend"] == "falling" and abs(plateau["actor_loss"]["mean"]) < 0.3
    assert breakout["critic_loss"]["mean"] > 3 * plateau["critic_loss"]["end"]  # rises out of phase 1
    assert mastery["actor_loss"]["end"] < 0
    assert "GREEN" in out.stdout and (tmp_path / "loss_signature.png").stat().st_size > 0
