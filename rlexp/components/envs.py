"""Environments of the `env` group: the factories every `rlexp/conf/env/*.yaml` targets, and the pixel wrapper.

Pixel observations for Fetch (PixelObservation: rendered frames, stacked, plus proprioception and the goal
vectors HER needs) are configured through `env.pixels`; make_env wraps every env with it, so training and
evaluation build exactly the same observation.
"""

from __future__ import annotations

import difflib
import warnings
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from hydra.utils import instantiate
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from rlexp.components import with_current_target
from rlexp.errors import ConfigError, unwrap_config_errors

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")


def register_robotics() -> None:
    """Make gymnasium-robotics ids (FetchReach-v4, ...) known to gymnasium.make."""
    try:  # its import prints a notice about Adroit envs on stderr: irrelevant to Fetch, drop it
        import farama_notifications

        farama_notifications.notifications.pop("gymnasium_robotics", None)
    except ImportError:
        pass
    with warnings.catch_warnings():  # gymnasium-robotics 1.4.0 re-registers gymnasium's MuJoCo ids, one warning each
        warnings.filterwarnings("ignore", message=".*Overriding environment")
        import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)


def check_env_id(env_id: str) -> None:
    """Raise a ConfigError naming the closest valid ids when env_id is not registered."""
    register_robotics()
    if env_id in gym.registry:
        return
    fetch = sorted(k for k in gym.registry if k.startswith("Fetch"))
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown env id {env_id!r}.{hint} Fetch envs: {', '.join(fetch)}")


def _wrap(env: gym.Env, wrappers: Sequence[Any], pixels: Mapping[str, Any] | None = None) -> gym.Env:
    """Pixel observations first (they need the raw goal-env Dict), then the configured wrappers in order."""
    if pixels is not None:
        env = PixelObservation(env, **dict(pixels))
    for spec in wrappers or ():
        with unwrap_config_errors():
            env = instantiate(with_current_target(spec), env=env)
    return env


def make_env(
    id: str,  # noqa: A002 - matches the config key users write
    kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Any] = (),
    render_mode: str | None = None,
    pixels: Mapping[str, Any] | None = None,
    fast_obs: bool = False,
    **extra: Any,
) -> gym.Env:
    """One env as evaluation sees it: gymnasium.make + pixel observations + the configured wrappers, no Monitor.
    `fast_obs` (the run-only key `fast`, rlexp.fast.Speedups): a Fetch env steps by index (rlexp.fast.fetch_index;
    bitwise the same episodes)."""
    check_env_id(id)
    make_kwargs = dict(kwargs or {})
    if render_mode is not None:
        make_kwargs["render_mode"] = render_mode
    make_kwargs.update(extra)
    env = _wrap(gym.make(id, **make_kwargs), wrappers, pixels)
    if fast_obs:
        from rlexp.fast.fetch_index import install

        install(env)
    return env


def make_env_from_cfg(env_cfg: Any, fast_obs: bool = False, **extra: Any) -> gym.Env:
    """One env from an `env:` config node (kwargs, pixels and wrappers included), e.g. for evaluation.

    Also reads configs of older runs, where the pixel wrapper was an entry of `wrappers` and `pixels` absent.
    """
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(env_cfg, resolve=True) if OmegaConf.is_config(env_cfg) else dict(env_cfg)
    return make_env(node["id"], node.get("kwargs"), node.get("wrappers") or (), pixels=node.get("pixels"),
                    fast_obs=fast_obs, **extra)


def env_factory(
    id: str,  # noqa: A002
    kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Any] = (),
    pixels: Mapping[str, Any] | None = None,
    fast_obs: bool = False,
) -> Callable[[], gym.Env]:
    def _make() -> gym.Env:
        return make_env(id, kwargs, wrappers, pixels=pixels, fast_obs=fast_obs)

    return _make


def make_vec_env(
    id: str,  # noqa: A002
    n_envs: int = 1,
    seed: int | None = 0,
    vec_env: str = "dummy",
    kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Any] = (),
    pixels: Mapping[str, Any] | None = None,
    monitor_keywords: Sequence[str] = ("is_success",),
    monitor_dir: str | None = None,
    monitor_append: bool = False,
    fast_obs: bool = False,
) -> VecEnv:
    """Vectorised training env (Monitor records is_success so SB3 logs rollout/success_rate).

    `monitor_dir`: SB3's `N.monitor.csv` per sub-env there (set by training, not config); `monitor_append`
    continues existing files (a resumed run, whose files rlexp.training.logs cut back to its checkpoint).
    Each Monitor writes its file through rlexp.diskfull.MonitorWriter (SB3's format; a full disk delays rows
    instead of crashing the run or cutting a row). `fast_obs` is set by rlexp.builder from the run-only key
    `fast`, never by env configs.
    """
    check_env_id(id)
    if vec_env not in ("dummy", "subproc"):
        raise ConfigError(f"env.vec_env must be 'dummy' or 'subproc', got {vec_env!r}")
    venv = sb3_make_vec_env(
        env_factory(id, kwargs, wrappers, pixels, fast_obs),
        n_envs=n_envs,
        seed=seed,
        vec_env_cls=SubprocVecEnv if vec_env == "subproc" else DummyVecEnv,
        monitor_kwargs={"info_keywords": tuple(monitor_keywords)},
    )
    if monitor_dir is not None:
        from rlexp.diskfull import MonitorWriter

        for rank, t_start in enumerate(venv.get_attr("t_start")):  # each sub-env's Monitor
            writer = MonitorWriter(Path(monitor_dir) / f"{rank}.monitor.csv", {"t_start": t_start, "env_id": id},
                                   ("r", "l", "t", *monitor_keywords), truncate=not monitor_append)
            writer.start()
            venv.set_attr("results_writer", writer, indices=[rank])
    return venv


def is_goal_env(observation_space: gym.Space) -> bool:
    return isinstance(observation_space, gym.spaces.Dict) and all(
        k in observation_space.spaces for k in ("achieved_goal", "desired_goal")
    )


# Pixel observations (env.pixels)

# FetchPush/PickAndPlace 25-D observation: grip_pos [0:3], gripper_state [9:11], grip_velp [20:23],
# gripper_vel [23:25] -- what the robot knows about itself, nothing about the puck (book ch9, pixel wrapper lab).
# The one place these indices are written: configs name them (`proprio_indices: push`).
PUSH_PROPRIO = (0, 1, 2, 9, 10, 20, 21, 22, 23, 24)
PROPRIO_PRESETS: dict[str, tuple[int, ...]] = {"push": PUSH_PROPRIO}
GOAL_MODES = ("none", "desired", "both")


def to_chw(frame: np.ndarray, size: tuple[int, int], resize: bool) -> np.ndarray:
    """HWC uint8 render -> CHW uint8 at `size` (H, W); a copy, since MuJoCo may reuse its buffer."""
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ConfigError(f"env.render() must return an HxWx3 RGB array, got shape {frame.shape}")
    if frame.shape[:2] != size:
        if not resize:
            raise ConfigError(
                f"env renders {frame.shape[1]}x{frame.shape[0]} but the pixel wrapper wants "
                f"{size[1]}x{size[0]}: "
                "set env.kwargs width/height to the image size (native render, fast) or resize=true (slow)"
            )
        from PIL import Image

        frame = np.asarray(Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR))
    return np.ascontiguousarray(frame.transpose(2, 0, 1))


class PixelObservation(gym.ObservationWrapper):
    """Dict obs {pixels (3*frame_stack, H, W) uint8, proprioception, desired_goal, achieved_goal}.

    The flat state vector is dropped; the raw dict obs stays reachable as `last_raw_obs` so evaluation
    can still measure the true goal distance when goal_mode hides the goals.
    """

    def __init__(
        self,
        env: gym.Env,
        image_size: int | Sequence[int] = 84,
        frame_stack: int = 4,
        goal_mode: str = "both",
        proprio_indices: str | Sequence[int] | None = PUSH_PROPRIO,
        resize: bool = False,
    ) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ConfigError(
                f"pixel observations need env.kwargs.render_mode=rgb_array, got {env.render_mode!r}"
            )
        if goal_mode not in GOAL_MODES:
            raise ConfigError(f"goal_mode must be one of {GOAL_MODES}, got {goal_mode!r}")
        if int(frame_stack) < 1:
            raise ConfigError(f"frame_stack must be >= 1, got {frame_stack}")
        size = (
            (int(image_size), int(image_size))
            if np.isscalar(image_size)
            else tuple(int(s) for s in image_size)
        )
        if len(size) != 2 or min(size) <= 0:
            raise ConfigError(f"image_size must be a positive int or [H, W], got {image_size!r}")
        base = env.observation_space
        if not isinstance(base, gym.spaces.Dict) or "observation" not in base.spaces:
            raise ConfigError(f"pixel wrapper expects a goal-env Dict observation, got {base}")
        self.size: tuple[int, int] = size  # type: ignore[assignment]
        self.frame_stack = int(frame_stack)
        self.goal_mode = goal_mode
        self.resize = bool(resize)
        unwrapped = env.unwrapped
        rendered = (getattr(unwrapped, "height", None), getattr(unwrapped, "width", None))
        if None not in rendered and rendered != self.size and not self.resize:
            raise ConfigError(
                f"env renders {rendered[1]}x{rendered[0]} but image_size is "
                f"{self.size[1]}x{self.size[0]}: set "
                "env.kwargs width/height to the image size (native render) or the wrapper's resize=true"
            )
        spaces: dict[str, gym.Space] = {
            "pixels": gym.spaces.Box(0, 255, (3 * self.frame_stack, *self.size), np.uint8)
        }
        if isinstance(proprio_indices, str):
            if proprio_indices not in PROPRIO_PRESETS:
                raise ConfigError(
                    f"proprio_indices {proprio_indices!r}: expected one of {', '.join(PROPRIO_PRESETS)}, "
                    "a list of observation indices or null"
                )
            proprio_indices = PROPRIO_PRESETS[proprio_indices]
        self.proprio_indices: np.ndarray | None = None
        if proprio_indices is not None and len(proprio_indices):
            idx = np.asarray(list(proprio_indices), dtype=np.int64)
            obs_box = base.spaces["observation"]
            dim = obs_box.shape[0]
            if idx.min() < 0 or idx.max() >= dim:
                raise ConfigError(f"proprio_indices {idx.tolist()} out of range for a {dim}-D observation")
            self.proprio_indices = idx
            spaces["proprioception"] = gym.spaces.Box(
                obs_box.low[idx], obs_box.high[idx], dtype=obs_box.dtype
            )
        if goal_mode in ("desired", "both"):
            spaces["desired_goal"] = base.spaces["desired_goal"]
        if goal_mode == "both":
            spaces["achieved_goal"] = base.spaces["achieved_goal"]
        self.observation_space = gym.spaces.Dict(spaces)
        self._frames: deque[np.ndarray] = deque(maxlen=self.frame_stack)
        self.last_raw_obs: dict[str, np.ndarray] | None = None

    def _frame(self) -> np.ndarray:
        return to_chw(self.env.render(), self.size, self.resize)

    def reset(self, **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        first = self._frame()
        self._frames.clear()
        self._frames.extend(first for _ in range(self.frame_stack))  # refill: no frames from the last episode
        return self._build(obs), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._frames.append(self._frame())
        return self._build(obs), reward, terminated, truncated, info

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._build(observation)

    def _build(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.last_raw_obs = raw
        out = {"pixels": np.concatenate(list(self._frames), axis=0)}  # oldest -> newest
        if self.proprio_indices is not None:
            out["proprioception"] = np.asarray(raw["observation"])[self.proprio_indices]
        if self.goal_mode in ("desired", "both"):
            out["desired_goal"] = np.asarray(raw["desired_goal"]).copy()
        if self.goal_mode == "both":
            out["achieved_goal"] = np.asarray(raw["achieved_goal"]).copy()
        return out

    def compute_reward(self, achieved_goal: Any, desired_goal: Any, info: Any) -> Any:
        """HER's env_method('compute_reward') reaches the goal env through this wrapper."""
        return self.env.unwrapped.compute_reward(achieved_goal, desired_goal, info)
