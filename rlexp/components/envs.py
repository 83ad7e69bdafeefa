"""Environment factories: the `_target_` of every `conf/env/*.yaml`."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import gymnasium as gym
from hydra.utils import instantiate
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from rlexp.errors import ConfigError, unwrap_config_errors

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")


def register_robotics() -> None:
    """Make gymnasium-robotics ids (FetchReach-v4, ...) known to gymnasium.make."""
    try:  # its import prints a notice about Adroit envs on stderr: irrelevant to Fetch, drop it
        import farama_notifications

        farama_notifications.notifications.pop("gymnasium_robotics", None)
    except ImportError:
        pass
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
        from rlexp.components.pixels import PixelObservation

        env = PixelObservation(env, **dict(pixels))
    for spec in wrappers or ():
        with unwrap_config_errors():
            env = instantiate(spec, env=env)
    return env


def make_env(
    id: str,  # noqa: A002 - matches the config key users write
    kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Any] = (),
    render_mode: str | None = None,
    pixels: Mapping[str, Any] | None = None,
    **extra: Any,
) -> gym.Env:
    """One env as evaluation sees it: gymnasium.make + pixel observations + the configured wrappers, no Monitor."""
    check_env_id(id)
    make_kwargs = dict(kwargs or {})
    if render_mode is not None:
        make_kwargs["render_mode"] = render_mode
    make_kwargs.update(extra)
    return _wrap(gym.make(id, **make_kwargs), wrappers, pixels)


def make_env_from_cfg(env_cfg: Any, **extra: Any) -> gym.Env:
    """One env from an `env:` config node (kwargs, pixels and wrappers included), e.g. for evaluation.

    Also reads configs of older runs, where the pixel wrapper was an entry of `wrappers` and `pixels` absent.
    """
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(env_cfg, resolve=True) if OmegaConf.is_config(env_cfg) else dict(env_cfg)
    return make_env(node["id"], node.get("kwargs"), node.get("wrappers") or (), pixels=node.get("pixels"), **extra)


def env_factory(
    id: str,  # noqa: A002
    kwargs: dict[str, Any] | None = None,
    wrappers: Sequence[Any] = (),
    pixels: Mapping[str, Any] | None = None,
) -> Callable[[], gym.Env]:
    def _make() -> gym.Env:
        return make_env(id, kwargs, wrappers, pixels=pixels)

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
) -> VecEnv:
    """Vectorised training env (Monitor records is_success so SB3 logs rollout/success_rate)."""
    check_env_id(id)
    if vec_env not in ("dummy", "subproc"):
        raise ConfigError(f"env.vec_env must be 'dummy' or 'subproc', got {vec_env!r}")
    return sb3_make_vec_env(
        env_factory(id, kwargs, wrappers, pixels),
        n_envs=n_envs,
        seed=seed,
        vec_env_cls=SubprocVecEnv if vec_env == "subproc" else DummyVecEnv,
        monitor_kwargs={"info_keywords": tuple(monitor_keywords)},
    )


def is_goal_env(observation_space: gym.Space) -> bool:
    return isinstance(observation_space, gym.spaces.Dict) and all(
        k in observation_space.spaces for k in ("achieved_goal", "desired_goal")
    )
