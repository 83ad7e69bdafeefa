"""The frame-once pixel HER buffer returns exactly SB3's HerReplayBuffer batches, in far less memory."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import HerReplayBuffer

from rlexp.components.buffers import PixelHerReplayBuffer, dict_buffer_nbytes
from rlexp.errors import ConfigError

N_STACK, C, H, W = 4, 3, 6, 5


def space() -> gym.spaces.Dict:
    return gym.spaces.Dict(
        {
            "pixels": gym.spaces.Box(0, 255, (N_STACK * C, H, W), np.uint8),
            "proprioception": gym.spaces.Box(-np.inf, np.inf, (2,), np.float64),
            "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
            "desired_goal": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
        }
    )


class RewardEnv:
    """What HER needs from the VecEnv: env_method('compute_reward', ...)."""

    def env_method(
        self, name: str, achieved: np.ndarray, desired: np.ndarray, infos: object, indices: object
    ) -> list:
        assert name == "compute_reward"
        return [-(np.linalg.norm(achieved - desired, axis=-1) > 0.5).astype(np.float32)]


class FakeEpisodes:
    """Per-env episodes of random length whose pixel stacks follow the wrapper's rule (reset refill)."""

    def __init__(self, n_envs: int, rng: np.random.Generator, lengths: tuple[int, int] = (3, 9)) -> None:
        self.n_envs, self.rng, self.lengths = n_envs, rng, lengths
        self.state = [self._new_episode() for _ in range(n_envs)]

    def _new_episode(self) -> dict:
        length = int(self.rng.integers(*self.lengths))
        frames = self.rng.integers(0, 256, (length + 1, C, H, W), dtype=np.uint8)
        goal = self.rng.normal(size=3)
        ag = self.rng.normal(size=(length + 1, 3)) * 0.5
        prop = self.rng.normal(size=(length + 1, 2))
        return {"t": 0, "len": length, "frames": frames, "goal": goal, "ag": ag, "prop": prop}

    @staticmethod
    def _obs(ep: dict, i: int) -> dict[str, np.ndarray]:
        idx = [max(0, j) for j in range(i - N_STACK + 1, i + 1)]
        return {
            "pixels": ep["frames"][idx].reshape(N_STACK * C, H, W),
            "proprioception": ep["prop"][i],
            "achieved_goal": ep["ag"][i],
            "desired_goal": ep["goal"],
        }

    def step(self) -> tuple[dict, dict, np.ndarray, np.ndarray, np.ndarray]:
        obs, nxt, dones = [], [], []
        for e in range(self.n_envs):
            ep = self.state[e]
            obs.append(self._obs(ep, ep["t"]))
            nxt.append(self._obs(ep, ep["t"] + 1))  # on the last step: the terminal observation
            ep["t"] += 1
            done = ep["t"] == ep["len"]
            dones.append(done)
            if done:
                self.state[e] = self._new_episode()
        stack = lambda items: {k: np.stack([o[k] for o in items]) for k in items[0]}  # noqa: E731
        actions = self.rng.uniform(-1, 1, (self.n_envs, 4)).astype(np.float32)
        rewards = self.rng.normal(size=self.n_envs).astype(np.float32)
        return stack(obs), stack(nxt), actions, rewards, np.array(dones)


def fill(buffers: list, n_envs: int, steps: int, seed: int) -> None:
    episodes = FakeEpisodes(n_envs, np.random.default_rng(seed))
    for _ in range(steps):
        obs, nxt, act, rew, done = episodes.step()
        infos = [{"TimeLimit.truncated": bool(d)} for d in done]
        for buf in buffers:
            buf.add(
                {k: v.copy() for k, v in obs.items()},
                {k: v.copy() for k, v in nxt.items()},
                act,
                rew,
                done,
                infos,
            )


def make_pair(buffer_size: int, n_envs: int, strategy: str, n_sampled_goal: int = 4, **kw: object) -> tuple:
    args = (buffer_size, space(), gym.spaces.Box(-1, 1, (4,), np.float32))
    common = {
        "env": RewardEnv(),
        "device": "cpu",
        "n_envs": n_envs,
        "n_sampled_goal": n_sampled_goal,
        "goal_selection_strategy": strategy,
    }
    return HerReplayBuffer(*args, **common), PixelHerReplayBuffer(*args, **common, **kw)


def assert_same(a: object, b: object) -> None:
    for part in ("observations", "next_observations"):
        da, db = getattr(a, part), getattr(b, part)
        assert list(da) == list(db) or set(da) == set(db)
        for key in da:
            assert da[key].dtype == db[key].dtype, (part, key)
            assert th.equal(da[key], db[key]), (part, key)
    for part in ("actions", "rewards", "dones"):
        assert th.equal(getattr(a, part), getattr(b, part)), part


@pytest.mark.parametrize(
    ("buffer_size", "n_envs", "steps", "strategy"),
    [
        (200, 1, 60, "future"),  # no wrap: plain episodes
        (23, 1, 80, "future"),  # wraps several times: episodes cut by overwriting, boundaries across the end
        (17, 3, 70, "future"),  # vectorised envs with unaligned episode ends, wrapping
        (19, 2, 55, "final"),
        (19, 2, 55, "episode"),
    ],
)
def test_batches_identical_to_sb3_her(buffer_size: int, n_envs: int, steps: int, strategy: str) -> None:
    sb3, ours = make_pair(buffer_size, n_envs, strategy)
    fill([sb3, ours], n_envs, steps, seed=buffer_size + n_envs)
    for seed in range(5):
        np.random.seed(seed)
        a = sb3.sample(64)
        np.random.seed(seed)
        b = ours.sample(64)
        assert_same(a, b)


def test_first_episode_entered_mid_way() -> None:
    """A fresh buffer after resume starts inside an episode: its stacks hold frames from before the buffer."""
    sb3, ours = make_pair(40, 2, "future")
    episodes = FakeEpisodes(2, np.random.default_rng(7), lengths=(8, 12))
    for ep in episodes.state:
        ep["t"] = 5  # the env is already 5 steps into its episode
    for _ in range(30):
        obs, nxt, act, rew, done = episodes.step()
        for buf in (sb3, ours):
            buf.add(
                {k: v.copy() for k, v in obs.items()},
                {k: v.copy() for k, v in nxt.items()},
                act,
                rew,
                done,
                [{}] * 2,
            )
    for seed in range(3):
        np.random.seed(seed)
        a = sb3.sample(64)
        np.random.seed(seed)
        assert_same(a, ours.sample(64))


def test_drq_after_relabelling_keeps_everything_but_pixels() -> None:
    sb3, ours = make_pair(23, 2, "future", drq_pad=2)
    fill([sb3, ours], 2, 50, seed=1)
    np.random.seed(0)
    a = sb3.sample(64)
    np.random.seed(0)
    b = ours.sample(64)
    for part in ("observations", "next_observations"):
        for key in ("proprioception", "achieved_goal", "desired_goal"):
            assert th.equal(getattr(a, part)[key], getattr(b, part)[key])
        assert getattr(b, part)["pixels"].shape == getattr(a, part)["pixels"].shape
        assert not th.equal(getattr(a, part)["pixels"], getattr(b, part)["pixels"])
    assert th.equal(a.rewards, b.rewards)  # HER rewards computed from the (unchanged) goals


def test_memory_per_transition_at_84x84() -> None:
    """Full 84x84x3 x 4-frame buffer of 50-step episodes: <= 25 KB per transition vs SB3's ~169 KB."""
    obs_space = gym.spaces.Dict(
        {
            "pixels": gym.spaces.Box(0, 255, (12, 84, 84), np.uint8),
            "proprioception": gym.spaces.Box(-np.inf, np.inf, (10,), np.float64),
            "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
            "desired_goal": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
        }
    )
    size, n_envs = 400, 2
    buf = PixelHerReplayBuffer(
        size, obs_space, gym.spaces.Box(-1, 1, (4,), np.float32), env=RewardEnv(), device="cpu", n_envs=n_envs
    )
    obs = {k: np.zeros((n_envs, *s.shape), s.dtype) for k, s in obs_space.spaces.items()}
    for t in range(size // n_envs):
        done = np.full(n_envs, (t + 1) % 50 == 0)
        buf.add(
            obs, obs, np.zeros((n_envs, 4), np.float32), np.zeros(n_envs, np.float32), done, [{}] * n_envs
        )
    per = buf.nbytes() / size
    assert per <= 25_000, per
    sb3 = HerReplayBuffer(
        size, obs_space, gym.spaces.Box(-1, 1, (4,), np.float32), env=RewardEnv(), device="cpu", n_envs=n_envs
    )
    assert dict_buffer_nbytes(sb3) / size > 169_000


def test_bad_pixel_buffer_config() -> None:
    with pytest.raises(ConfigError, match="no 'pixels' key"):
        PixelHerReplayBuffer(
            10,
            gym.spaces.Dict(
                {"achieved_goal": gym.spaces.Box(-1, 1, (3,)), "desired_goal": gym.spaces.Box(-1, 1, (3,))}
            ),
            gym.spaces.Box(-1, 1, (4,)),
            env=RewardEnv(),
            device="cpu",
        )
    with pytest.raises(ConfigError, match="frame_stack"):
        PixelHerReplayBuffer(
            10, space(), gym.spaces.Box(-1, 1, (4,)), env=RewardEnv(), device="cpu", frame_stack=5
        )
