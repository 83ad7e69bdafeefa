"""Turn a composed config into a ready-to-train SB3 model: env, encoder, replay buffer, algorithm.

Every piece comes from a `_target_` entry. Checks that need the env (HER needs goals, the encoder must
read the observation) run here, before any training, and fail with a ConfigError.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from rlexp.components import current_target, with_current_target
from rlexp.config import CONF_DIR
from rlexp.errors import ConfigError, unwrap_config_errors

if TYPE_CHECKING:
    from rlexp.spec import RunSpec


def _group_options(group: str) -> str:
    return ", ".join(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml")))


def resolve_class(node: DictConfig, group: str) -> type | None:
    """The class a `_target_` names, or a ConfigError listing the group's presets."""
    target = node.get("_target_")
    if target is None:
        return None
    try:
        return get_class(current_target(target))
    except Exception as exc:  # hydra wraps ImportError/AttributeError in its own types
        raise ConfigError(
            f"{group}._target_={target!r} cannot be imported ({exc.__class__.__name__}). "
            f"Presets in rlexp/conf/{group}/: {_group_options(group)}"
        ) from None


def class_kwargs(node: DictConfig) -> dict[str, Any]:
    """A class spec's keyword arguments: every key but `_target_`."""
    data = OmegaConf.to_container(node, resolve=True)
    assert isinstance(data, dict)
    data.pop("_target_", None)
    return data


def algo_class(cfg: DictConfig) -> type[BaseAlgorithm]:
    cls = resolve_class(cfg.algo, "algo")
    if cls is None or not issubclass(cls, BaseAlgorithm):
        raise ConfigError(f"algo._target_ must name an SB3 algorithm class, got {cfg.algo.get('_target_')!r}")
    from rlexp.training import overlap

    overlap.check(cfg, cls)  # overlap=true: off-policy, train_freq=1, dummy envs
    return cls


def is_fast(cfg: DictConfig) -> bool:
    """The run-only key `fast` (default true; configs recorded before it existed read as true)."""
    return bool(cfg.get("fast", True))


def make_train_env(cfg: DictConfig, **extra: Any) -> VecEnv:
    """`extra`: arguments a run adds that are not config (training: where Monitor files go)."""
    node = with_current_target(cfg.env)
    if is_fast(cfg) and node.get("_target_") == FACTORY:
        extra["fast_obs"] = True  # Fetch obs and action by index (rlexp.components.fetch_index), bitwise the same
    if cfg.get("overlap"):  # all envs in one worker process (rlexp.training.overlap)
        from rlexp.training.overlap import OverlapVecEnv, reserve_core

        reserve_core(cfg.get("threads"))
        with unwrap_config_errors():
            return OverlapVecEnv(OmegaConf.to_container(node, resolve=True), extra)
    with unwrap_config_errors():
        # not recursive: env.wrappers are specs that make_env instantiates with env=...
        return instantiate(node, _convert_="all", _recursive_=False, **extra)


# fast=true swaps these exact classes (not subclasses, which may change what they override) for their fast
# versions at build time; the recorded config keeps naming the SB3 class, so hashes and run names are the same.
FACTORY = "rlexp.components.envs.make_vec_env"
FAST_CLASSES = {
    "stable_baselines3.sac.sac.SAC": "rlexp.components.fast_sac.FastSAC",
    "stable_baselines3.her.her_replay_buffer.HerReplayBuffer": "rlexp.components.fast_her.FastHerReplayBuffer",
}


def fast_class(cls: type) -> type:
    """The fast version of an SB3 class (rlexp.components.fast_sac, fast_her), or the class itself."""
    name = FAST_CLASSES.get(f"{cls.__module__}.{cls.__qualname__}")
    return get_class(name) if name else cls


def fast_target(node: DictConfig) -> DictConfig:
    """An algo node with `_target_` naming the fast class where there is one (the recorded config keeps SB3's)."""
    name = FAST_CLASSES.get(f"{(cls := get_class(node._target_)).__module__}.{cls.__qualname__}")
    return OmegaConf.merge(node, {"_target_": name}) if name else node


def algo_name(model: BaseAlgorithm) -> str:
    """The algorithm's name as its config names it: `SAC` for FastSAC (and for any mixin built on it)."""
    for cls in type(model).__mro__:
        if f"{cls.__module__}.{cls.__qualname__}" in FAST_CLASSES or not cls.__module__.startswith("rlexp."):
            return cls.__name__
    return type(model).__name__


def check_buffer(cfg: DictConfig, algo_cls: type, env: VecEnv) -> tuple[type | None, dict[str, Any]]:
    buffer_cls = resolve_class(cfg.buffer, "buffer")
    if buffer_cls is None:
        if not issubclass(algo_cls, OnPolicyAlgorithm):
            check_replay_memory(cfg, None, {}, env)
        return None, {}
    name = algo_cls.__name__
    if issubclass(algo_cls, OnPolicyAlgorithm):
        what = "HER" if issubclass(buffer_cls, HerReplayBuffer) else f"a replay buffer ({buffer_cls.__name__})"
        raise ConfigError(
            f"{what} cannot be used with {name}: {name} is on-policy and learns from fresh rollouts only. "
            "Use buffer=default with PPO, or an off-policy algo (algo=sac, algo=td3) for HER."
        )
    if issubclass(buffer_cls, HerReplayBuffer):
        from rlexp.components.envs import is_goal_env

        if not is_goal_env(env.observation_space):
            raise ConfigError(
                f"HER needs a goal-conditioned env (Dict observation with achieved_goal and desired_goal); "
                f"env {cfg.env.id!r} has observation space {env.observation_space}"
            )
        check_her_warmup(cfg, env)
    kwargs = class_kwargs(cfg.buffer)
    check_replay_memory(cfg, buffer_cls, kwargs, env)
    return buffer_cls, kwargs


def check_her_warmup(cfg: DictConfig, env: VecEnv) -> None:
    """HER samples only finished episodes: the first update must come after every env finished one."""
    spec = env.get_attr("spec", [0])[0]
    horizon = getattr(spec, "max_episode_steps", None)
    n, starts = int(cfg.n_envs), int(cfg.algo.get("learning_starts", 0) or 0)
    if horizon and (starts // n + 1) * n < horizon * n:
        raise ConfigError(
            f"algo.learning_starts={starts} is too small for HER: with {n} envs and {horizon}-step episodes the "
            f"first episodes end at step {horizon * n}, and HER cannot sample before that. Use "
            f"algo.learning_starts >= {(horizon - 1) * n}")


def replay_bytes(buffer_cls: type | None, kwargs: dict[str, Any], env: VecEnv, buffer_size: int) -> int:
    """Bytes the replay buffer allocates (SB3 preallocates all of it), counted from the spaces."""
    from gymnasium import spaces

    obs_space, act_space = env.observation_space, env.action_space

    def nbytes(space: Any) -> int:
        return int(np.prod(space.shape)) * np.dtype(space.dtype).itemsize

    parts = obs_space.spaces if isinstance(obs_space, spaces.Dict) else {"obs": obs_space}
    image_key = kwargs.get("image_key") if buffer_cls is not None and "image_key" in kwargs else None
    per = 0
    for key, space in parts.items():
        if key == image_key:  # frame store: one frame per transition (rlexp.components.buffers)
            per += nbytes(space) // max(1, int(kwargs.get("frame_stack") or space.shape[0] // 3))
        else:
            per += nbytes(space) * (1 if kwargs.get("optimize_memory_usage") else 2)
    per += nbytes(act_space) + 3 * 4  # actions; rewards, dones, timeouts (float32)
    if buffer_cls is not None and issubclass(buffer_cls, HerReplayBuffer):
        per += 2 * 8  # episode start and length
    return per * int(buffer_size)


def check_replay_memory(cfg: DictConfig, buffer_cls: type | None, kwargs: dict[str, Any], env: VecEnv) -> None:
    """SB3 allocates the whole buffer up front and only warns; a buffer larger than free RAM swaps the machine."""
    size = cfg.algo.get("buffer_size")
    if not size:
        return
    import psutil

    need, free = replay_bytes(buffer_cls, kwargs, env, int(size)), psutil.virtual_memory().available
    if need > free:
        raise ConfigError(f"algo.buffer_size={size} needs ~{need / 1e9:.1f} GB of RAM for the replay buffer but "
                          f"{free / 1e9:.1f} GB is available; lower algo.buffer_size")


def check_encoder(cfg: DictConfig, env: VecEnv) -> tuple[type, dict[str, Any]]:
    """Instantiate the extractor once on the real observation space: incompatibility fails here, not mid-run."""
    enc_cls = resolve_class(cfg.encoder, "encoder")
    if enc_cls is None:
        raise ConfigError(f"encoder._target_ is required; presets: {_group_options('encoder')}")
    kwargs = class_kwargs(cfg.encoder)
    try:
        enc_cls(env.observation_space, **kwargs)
    except Exception as exc:
        reason = " ".join(str(a) for a in exc.args) or exc.__class__.__name__
        raise ConfigError(
            f"encoder {enc_cls.__name__} cannot read the observation space of {cfg.env.id}: {reason}. "
            f"Observation space: {env.observation_space}"
        ) from None
    return enc_cls, kwargs


def algo_kwargs(cfg: DictConfig, env: VecEnv, algo_cls: type[BaseAlgorithm]) -> dict[str, Any]:
    """Everything the algorithm constructor gets beyond rlexp/conf/algo: env, seed, encoder, buffer.

    No TensorBoard path: training attaches its logger to the run directory itself (rlexp.training.train).
    """
    buffer_cls, buffer_kwargs = check_buffer(cfg, algo_cls, env)
    enc_cls, enc_kwargs = check_encoder(cfg, env)
    policy_kwargs = dict(cfg.algo.get("policy_kwargs") or {})
    policy_kwargs.update(features_extractor_class=enc_cls, features_extractor_kwargs=enc_kwargs)
    from rlexp.components.policies import routing_kwargs

    routed = routing_kwargs(cfg.get("routing"), algo_cls)  # who trains the encoder: actor | separate | critic
    policy_kwargs.update(routed.pop("policy_kwargs", {}))
    kwargs: dict[str, Any] = {
        "env": env,
        "seed": cfg.seed,
        "device": cfg.device,
        "policy_kwargs": policy_kwargs,
        "verbose": 0,
    }
    kwargs.update(routed)  # routing=critic replaces the policy class
    if buffer_cls is not None:
        if is_fast(cfg):
            buffer_cls = fast_class(buffer_cls)
        kwargs.update(replay_buffer_class=buffer_cls, replay_buffer_kwargs=buffer_kwargs)
    return kwargs


def build(cfg: DictConfig | RunSpec, env_extra: dict[str, Any] | None = None) -> BaseAlgorithm:
    """The SB3 model with its vectorised env and replay buffer, ready for `.learn`; nothing is trained.

    Args:
        cfg: a RunSpec (already validated), or a composed config (validated here, for notebooks and tests).
            `cfg.env` builds the VecEnv, `cfg.encoder` the features extractor (tried once on the real
            observation space), `cfg.buffer` the replay buffer (checked against algo and env, and against
            free RAM), `cfg.routing` who trains the encoder, `cfg.algo` the SB3 algorithm itself.
        env_extra: extra arguments of the env factory that are not config (training's Monitor files).

    Raises ConfigError before allocating anything large when a piece cannot work with the others.
    """
    from rlexp.spec import RunSpec

    spec = RunSpec.of(cfg)
    cfg = spec.cfg
    env = make_train_env(cfg, **(env_extra or {}))
    try:
        kwargs = algo_kwargs(cfg, env, spec.algo_cls)
        with unwrap_config_errors():  # e.g. a replay buffer that rejects the observation space
            algo = with_current_target(cfg.algo)
            node = fast_target(algo) if is_fast(cfg) else algo
            if not cfg.get("overlap"):
                return instantiate(node, **kwargs, _convert_="all")
            from rlexp.training.overlap import overlapped  # the configured class with OverlapMixin in front

            partial = instantiate(node, **kwargs, _convert_="all", _partial_=True)
            return overlapped(partial.func)(*partial.args, **partial.keywords)
    except BaseException:
        env.close()
        raise
