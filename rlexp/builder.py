"""Turn a validated run spec into a ready-to-train SB3 model: env, encoder, replay buffer, algorithm.

Every piece comes from a `_target_` entry and is instantiated as SB3's own class. Accelerations (`fast`,
`overlap`) are applied at one place, `rlexp.fast.Speedups`: `make_train_env` and the algorithm class below.
Checks that need the env run right after it is made (rlexp.validate) and fail with a ConfigError.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecEnv

from rlexp import validate
from rlexp.components import with_current_target
from rlexp.errors import unwrap_config_errors
from rlexp.fast import Speedups
from rlexp.spec import RunSpec


def make_train_env(cfg: DictConfig, **extra: Any) -> VecEnv:
    """The training VecEnv. `extra`: factory arguments that are not config (training: where Monitor files go)."""
    speed = Speedups.of(cfg)
    node = with_current_target(cfg.env)
    extra.update(speed.env_kwargs(node))
    with unwrap_config_errors():
        env = speed.make_train_env(OmegaConf.to_container(node, resolve=True), extra, cfg.get("threads"))
        if env is not None:
            return env
        # not recursive: env.wrappers are specs that make_env instantiates with env=...
        return instantiate(node, _convert_="all", _recursive_=False, **extra)


def algo_kwargs(cfg: DictConfig, env: VecEnv, algo_cls: type[BaseAlgorithm]) -> dict[str, Any]:
    """Everything the algorithm constructor gets beyond rlexp/conf/algo: env, seed, encoder, buffer.

    No TensorBoard path: training attaches its logger to the run directory itself (rlexp.training.train).
    """
    buffer_cls, buffer_kwargs = validate.check_buffer(cfg, algo_cls, env)
    enc_cls, enc_kwargs = validate.check_encoder(cfg, env)
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
    spec = RunSpec.of(cfg)
    cfg = spec.cfg
    env = make_train_env(cfg, **(env_extra or {}))
    try:
        kwargs = algo_kwargs(cfg, env, spec.algo_cls)
        cls = Speedups.of(cfg).algo_class(spec.algo_cls)  # the one place speed changes the class
        with unwrap_config_errors():  # e.g. a replay buffer that rejects the observation space
            partial = instantiate(with_current_target(cfg.algo), **kwargs, _convert_="all", _partial_=True)
            return cls(*partial.args, **partial.keywords)
    except BaseException:
        env.close()
        raise
