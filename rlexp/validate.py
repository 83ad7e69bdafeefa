"""Every check of a run's config, in the order a run meets them; each failure is one ConfigError line (exit 2).

0. Composition (Hydra's own errors: unknown experiment, option or key) is explained by
   rlexp.config.composition_error; `check_sweep` composes every job of a `-m` sweep and runs 1 and 2 on it.
1. `check_values`: plain values (types, ranges, seeds), before torch and SB3 are imported.
2. `algo_class`: what the classes allow (SB3 imported, nothing built): `check_overlap`, `check_arguments` (every
   algo/buffer/encoder/policy_kwargs key is an argument of its class), `check_buffer_class`.
3. `check_env` (`check_buffer`, `check_her_warmup`, `check_replay_memory`, `check_encoder`): what needs the env's
   spaces, on a throwaway env before a run writes anything; the builder runs them again on the real env.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from rlexp import trackers
from rlexp.components import current_target
from rlexp.config import TASKS, did_you_mean, elsewhere, group_options, option_of, parse_seeds
from rlexp.errors import ConfigError, unwrap_config_errors

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.vec_env import VecEnv


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_values(cfg: DictConfig) -> None:
    """Cheap checks on plain values, before torch and SB3 are imported (a refusal takes ~1 s, not ~4)."""
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task {cfg.task!r}; valid tasks: {', '.join(TASKS)}")
    trackers.check(cfg)  # an unknown logger, or a tracker whose package is missing (with its pip command)
    for key in ("total_steps", "n_envs"):
        if not _positive_int(cfg[key]):
            raise ConfigError(f"{key} must be a positive integer, got {cfg[key]!r}")
    threads = cfg.get("threads")
    if threads is not None and threads != "auto" and not _positive_int(threads):
        raise ConfigError(f"threads must be a positive integer or auto (the cores allotted to the run), "
                          f"got {threads!r}")
    seed = cfg.seed
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    device = str(cfg.device)
    if device != "auto" and device != "cpu" and not device.startswith(("cuda", "mps")):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"device={device} but torch sees no CUDA GPU here (torch {torch.__version__}); "
                              "use device=cpu or device=auto")
    if cfg.env.get("vec_env", "dummy") not in ("dummy", "subproc"):
        raise ConfigError(f"env.vec_env must be 'dummy' or 'subproc', got {cfg.env.vec_env!r}")
    if not isinstance(cfg.get("fast", True), bool):
        raise ConfigError(f"fast must be true or false, got {cfg.fast!r}")
    if cfg.get("checkpoint_replay", "latest") not in ("latest", "all"):
        raise ConfigError(f"checkpoint_replay must be latest or all, got {cfg.checkpoint_replay!r}")
    for key in ("progress_percent", "progress_minutes"):
        value = cfg.get(key, 0)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{key} must be a number >= 0 (0 turns these progress lines off), got {value!r}")
    if cfg.get("checkpoint_final", "full") not in ("full", "noreplay"):
        raise ConfigError(f"checkpoint_final must be full or noreplay, got {cfg.checkpoint_final!r}")
    if not isinstance(cfg.checkpoint_freq, int) or cfg.checkpoint_freq < 0:
        raise ConfigError(f"checkpoint_freq must be an integer >= 0 (0 disables), got {cfg.checkpoint_freq!r}")
    n_eps = cfg.eval.n_episodes
    if not isinstance(n_eps, int) or n_eps <= 0:
        raise ConfigError(f"eval.n_episodes must be a positive integer, got {n_eps!r}")
    seeds = parse_seeds(cfg.eval.seeds, n_eps)
    freq, k = cfg.eval.get("freq", 0), cfg.eval.get("freq_episodes")
    if not isinstance(freq, int) or isinstance(freq, bool) or freq < 0:
        raise ConfigError(f"eval.freq must be an integer >= 0 (env steps between evaluations; 0 disables), "
                          f"got {freq!r}")
    if k is not None and (not _positive_int(k) or k > len(seeds)):
        raise ConfigError(f"eval.freq_episodes must be null (all {len(seeds)} evaluation seeds) or 1..{len(seeds)} "
                          f"(the first seeds of eval.seeds), got {k!r}")
    if cfg.diagnostics.freq < 0 or cfg.diagnostics.n_samples <= 0:
        raise ConfigError("diagnostics.freq must be >= 0 and diagnostics.n_samples > 0")
    lr = cfg.algo.get("learning_rate")
    if isinstance(lr, int | float) and not isinstance(lr, bool) and lr <= 0:
        raise ConfigError(f"algo.learning_rate must be > 0, got {lr!r}")
    for key in ("gamma", "tau"):
        value = cfg.algo.get(key)
        if value is not None and (not isinstance(value, int | float) or not 0 < value <= 1):
            raise ConfigError(f"algo.{key} must be in (0, 1], got {value!r}")
    k = cfg.buffer.get("n_sampled_goal")
    if k is not None and (not _positive_int(k)):
        raise ConfigError(f"buffer.n_sampled_goal must be a positive integer (HER relabels k goals per "
                          f"transition), got {k!r}; use buffer=replay for no relabelling")
    for key in ("learning_starts", "batch_size", "buffer_size", "n_steps"):
        if key in cfg.algo and (cfg.algo[key] is None or cfg.algo[key] < 0 or (key != "learning_starts"
                                                                              and cfg.algo[key] == 0)):
            raise ConfigError(f"algo.{key} must be positive, got {cfg.algo[key]!r}")


def _group_options(group: str) -> str:
    return ", ".join(group_options(group))


def resolve_class(node: DictConfig, group: str) -> type | None:
    """The class a `_target_` names, or a ConfigError listing the group's presets."""
    target = node.get("_target_")
    if target is None:
        return None
    try:
        from hydra.utils import get_class

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


def algo_class(cfg: DictConfig) -> type:
    """The SB3 class `algo._target_` names, and what depends on it checked: overlap, every constructor argument,
    a replay buffer with an on-policy algorithm."""
    from stable_baselines3.common.base_class import BaseAlgorithm

    cls = resolve_class(cfg.algo, "algo")
    if cls is None or not issubclass(cls, BaseAlgorithm):
        raise ConfigError(f"algo._target_ must name an SB3 algorithm class, got {cfg.algo.get('_target_')!r}")
    check_overlap(cfg, cls)
    check_arguments(cfg, cls)
    check_buffer_class(cfg, cls)
    return cls


# Constructor arguments that rlexp (the builder) or SB3 pass themselves, and where their value comes from.
ALGO_SET_BY_RLEXP = {"env": "env", "seed": "seed", "device": "device", "verbose": "its logger",
                     "replay_buffer_class": "buffer", "replay_buffer_kwargs": "buffer"}
BUFFER_SET_BY_SB3 = {k: "the algorithm" for k in ("buffer_size", "observation_space", "action_space", "env", "device",
                                                    "n_envs")}
ENCODER_SET_BY_SB3 = {"observation_space": "the env"}
POLICY_SET_BY_SB3 = {"observation_space": "the env", "action_space": "the env", "lr_schedule": "algo.learning_rate",
                     "features_extractor_class": "encoder", "features_extractor_kwargs": "encoder"}


def check_arguments(cfg: DictConfig, algo_cls: type) -> None:
    """Every key of algo, buffer, encoder and algo.policy_kwargs is an argument its class takes (by its
    signature), so `+algo.lerning_rate=...` is refused with the fix here, not as a TypeError once the env is built."""
    _check_kwargs("algo", class_kwargs(cfg.algo), algo_cls, ALGO_SET_BY_RLEXP, cfg.algo)
    buffer_cls = resolve_class(cfg.buffer, "buffer")
    if buffer_cls is not None:
        _check_kwargs("buffer", class_kwargs(cfg.buffer), buffer_cls, BUFFER_SET_BY_SB3, cfg.buffer)
    enc_cls = resolve_class(cfg.encoder, "encoder")
    if enc_cls is not None:
        _check_kwargs("encoder", class_kwargs(cfg.encoder), enc_cls, ENCODER_SET_BY_SB3, cfg.encoder)
    policy_kwargs = cfg.algo.get("policy_kwargs")
    policy_cls = _policy_class(cfg, algo_cls)
    if policy_kwargs and policy_cls is not None:
        _check_kwargs("algo.policy_kwargs", dict(policy_kwargs), policy_cls, POLICY_SET_BY_SB3, None)


def _policy_class(cfg: DictConfig, algo_cls: type) -> type | None:
    """The policy class the algorithm will build: routing=critic's, else `algo.policy` (an alias or a class)."""
    from rlexp.components.policies import routing_kwargs

    policy = routing_kwargs(cfg.get("routing"), algo_cls).get("policy", cfg.algo.get("policy"))
    if isinstance(policy, type):
        return policy
    if isinstance(policy, str):
        aliases = getattr(algo_cls, "policy_aliases", {})
        if policy in aliases:
            return aliases[policy]
        try:
            from hydra.utils import get_class

            return get_class(policy)
        except Exception:  # noqa: BLE001 - SB3 reports an unknown policy itself
            return None
    return None


def accepted_arguments(cls: type) -> set[str] | None:
    """The keyword arguments `cls(...)` takes, following `**kwargs` up the MRO; None when it takes any."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            return None
        params = list(inspect.signature(init).parameters.values())
        names |= {p.name for p in params[1:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def _check_kwargs(where: str, kwargs: Mapping[str, Any], cls: type, reserved: Mapping[str, str],
                  node: DictConfig | None) -> None:
    accepted = accepted_arguments(cls)
    for key in kwargs:
        if key in reserved:
            raise ConfigError(f"{where}.{key} is passed to {cls.__name__} by rlexp (from {reserved[key]}); "
                              f"remove it from {where}")
        if accepted is None or key in accepted:
            continue
        msg = f"{where}.{key} is not an argument of {cls.__name__}"
        hint = elsewhere(where, key, option_of(where, node)) if node is not None else None
        choices = sorted(k for k in accepted - set(reserved) if not k.startswith("_"))
        close = did_you_mean(key, choices)
        if hint:
            msg += f"; {hint}"
        elif close:
            msg += f"; did you mean {where}.{close}?"
        else:
            msg += f" ({cls.__module__}.{cls.__qualname__} takes {', '.join(choices)})"
        raise ConfigError(msg)


def check_buffer_class(cfg: DictConfig, algo_cls: type) -> None:
    """A replay buffer (HER included) needs an off-policy algorithm."""
    from stable_baselines3 import HerReplayBuffer
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    buffer_cls = resolve_class(cfg.buffer, "buffer")
    if buffer_cls is not None and issubclass(algo_cls, OnPolicyAlgorithm):
        name = algo_cls.__name__
        what = "HER" if issubclass(buffer_cls, HerReplayBuffer) else f"a replay buffer ({buffer_cls.__name__})"
        raise ConfigError(
            f"{what} cannot be used with {name}: {name} is on-policy and learns from fresh rollouts only. "
            "Use buffer=default with PPO, or an off-policy algo (algo=sac, algo=td3) for HER."
        )


def check_overlap(cfg: DictConfig, algo_cls: type) -> None:
    """`overlap=true` (rlexp/fast/overlap.py) where it cannot apply; before anything is built."""
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    value = cfg.get("overlap", False)
    if not isinstance(value, bool):
        raise ConfigError(f"overlap must be true or false, got {value!r}")
    if not value:
        return
    name = algo_cls.__name__
    if not issubclass(algo_cls, OffPolicyAlgorithm):
        raise ConfigError(f"overlap=true applies to off-policy algorithms (SAC, TD3, ...); {name} collects whole "
                          "rollouts before each update, so there is no env step to overlap: use overlap=false")
    freq = cfg.algo.get("train_freq", 1)
    if freq not in (1, [1, "step"], (1, "step")) and not (OmegaConf.is_list(freq) and list(freq) == [1, "step"]):
        raise ConfigError(f"overlap=true needs algo.train_freq=1 (one env step per update), got {freq!r}")
    if cfg.algo.get("use_sde"):
        raise ConfigError("overlap=true does not support algo.use_sde=true")
    if cfg.env.get("vec_env", "dummy") != "dummy":
        raise ConfigError(f"overlap=true already steps all envs in one worker process; use env.vec_env=dummy, "
                          f"got {cfg.env.vec_env!r}")


# ---------------------------------------------------------------- 3. what needs the env's spaces
def check_env(cfg: DictConfig, algo_cls: type) -> None:
    """Stage 3 on one throwaway env (no Monitor, nothing written), before a run takes its directory: a refusal
    that needs the env leaves no trace. Nearly free: the training env made next skips the imports this one paid.
    Only for rlexp's env factory; another one is checked by the builder on the env it makes."""
    if current_target(str(cfg.env.get("_target_"))) != "rlexp.components.envs.make_vec_env":
        return
    from rlexp.components.envs import make_env_from_cfg

    try:
        with unwrap_config_errors():
            env = make_env_from_cfg(cfg.env)
    except TypeError as exc:  # an argument gymnasium.make or a wrapper does not take (env.kwargs, env.wrappers)
        raise ConfigError(f"env {cfg.env.id!r} cannot be made: {exc}") from None
    try:
        check_buffer(cfg, algo_cls, env)
        check_encoder(cfg, env)
    finally:
        env.close()


def check_buffer(cfg: DictConfig, algo_cls: type, env: VecEnv | gym.Env) -> tuple[type | None, dict[str, Any]]:
    """The replay buffer class and its arguments, checked against the env: HER needs goals and finished episodes
    before its first update; the buffer must fit in free RAM."""
    buffer_cls = resolve_class(cfg.buffer, "buffer")
    from stable_baselines3 import HerReplayBuffer
    from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

    if buffer_cls is None:
        if not issubclass(algo_cls, OnPolicyAlgorithm):
            check_replay_memory(cfg, None, {}, env)
        return None, {}
    check_buffer_class(cfg, algo_cls)
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


def check_her_warmup(cfg: DictConfig, env: VecEnv | gym.Env) -> None:
    """HER samples only finished episodes: the first update must come after every env finished one."""
    spec = env.get_attr("spec", [0])[0] if hasattr(env, "get_attr") else env.spec
    horizon = getattr(spec, "max_episode_steps", None)
    n, starts = int(cfg.n_envs), int(cfg.algo.get("learning_starts", 0) or 0)
    if horizon and (starts // n + 1) * n < horizon * n:
        raise ConfigError(
            f"algo.learning_starts={starts} is too small for HER: with {n} envs and {horizon}-step episodes the "
            f"first episodes end at step {horizon * n}, and HER cannot sample before that. Use "
            f"algo.learning_starts >= {(horizon - 1) * n}")


def replay_bytes(buffer_cls: type | None, kwargs: dict[str, Any], env: VecEnv | gym.Env, buffer_size: int) -> int:
    """Bytes the replay buffer allocates (SB3 preallocates all of it), counted from the spaces."""
    from gymnasium import spaces
    from stable_baselines3 import HerReplayBuffer

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


def check_replay_memory(cfg: DictConfig, buffer_cls: type | None, kwargs: dict[str, Any],
                        env: VecEnv | gym.Env) -> None:
    """SB3 allocates the whole buffer up front and only warns; a buffer larger than free RAM swaps the machine."""
    size = cfg.algo.get("buffer_size")
    if not size:
        return
    import psutil

    need, free = replay_bytes(buffer_cls, kwargs, env, int(size)), psutil.virtual_memory().available
    if need > free:
        raise ConfigError(f"algo.buffer_size={size} needs ~{need / 1e9:.1f} GB of RAM for the replay buffer but "
                          f"{free / 1e9:.1f} GB is available; lower algo.buffer_size")


def check_encoder(cfg: DictConfig, env: VecEnv | gym.Env) -> tuple[type, dict[str, Any]]:
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


# ---------------------------------------------------------------- a sweep, before its first job
LAUNCHER_COUNTS = {"hydra.launcher.max_parallel": 1, "hydra.launcher.array_parallelism": 1,
                   "hydra.launcher.max_array_size": 0}  # launcher key -> its smallest value


def check_launcher_counts(parsed: Sequence[Any]) -> None:
    """The launchers' job counts given on the command line: whole numbers at or above their minimum (null, where a
    key allows it, left to the launcher), refused here rather than by the launcher once the sweep has begun."""
    for o in parsed:
        minimum = LAUNCHER_COUNTS.get(o.key_or_group)
        if minimum is None or o.is_sweep_override():
            continue
        value = o.value()
        if value is None and o.key_or_group.endswith("max_array_size"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{o.input_line}: expected a whole number >= {minimum}")


def check_sweep(overrides: Sequence[str]) -> int:
    """`python run.py -m OVERRIDES`: every job composes and passes stages 1 and 2, so a bad value anywhere in
    the sweep is refused (one line, exit 2) before the first job starts. Returns the number of jobs checked.

    Under Hydra's basic sweeper every job of the expansion is checked: each distinct set of group choices and
    +/~ overrides is composed once, and the jobs' plain `key=value` overrides are set on a copy of it, as Hydra
    sets them. Another sweeper (Optuna) draws its values itself: only the sweep's own config is checked."""
    import copy

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Override

    from rlexp.config import compose, is_group, sweep_jobs

    parser = OverridesParser.create()
    check_launcher_counts(parser.parse_overrides(list(overrides)))
    _, jobs = sweep_jobs(overrides)
    if jobs is None:
        jobs = [[o.input_line for o in parser.parse_overrides(list(overrides)) if not o.is_sweep_override()]]

    def plain(o: Override) -> bool:
        return not (o.is_add() or o.is_force_add() or o.is_delete() or o.is_hydra_override()
                    or o.package is not None or "/" in o.key_or_group or is_group(o.key_or_group))

    swept = {o.key_or_group for o in parser.parse_overrides(list(overrides)) if o.is_sweep_override()}
    composed: dict[tuple[str, ...], DictConfig] = {}
    configs: list[tuple[DictConfig, str]] = []
    for job in jobs:  # all of them compose first: a misspelt option is told before SB3 is imported
        parsed = parser.parse_overrides(job)
        fixed = tuple(o.input_line for o in parsed if not plain(o))
        if fixed not in composed:
            composed[fixed] = compose(*fixed)
        job_cfg = copy.deepcopy(composed[fixed])
        try:
            for o in parsed:
                if plain(o):
                    OmegaConf.update(job_cfg, o.key_or_group, o.value(), merge=True)
        except Exception:  # noqa: BLE001 - a key the config lacks: composing says which, with the fix
            job_cfg = compose(*job)
        which = " ".join(o.input_line for o in parsed if o.key_or_group in swept)
        configs.append((job_cfg, f" (sweep job {which})" if which and len(jobs) > 1 else ""))
    for check in (check_values, algo_class):
        for job_cfg, which in configs:
            try:
                check(job_cfg)
            except ConfigError as exc:
                raise ConfigError(f"{exc}{which}") from None
    return len(jobs)
