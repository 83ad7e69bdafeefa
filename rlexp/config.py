"""Composing, validating and hashing configs outside of `@hydra.main` (tests, notebooks, the CLI)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlexp.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"
# The one list of run-only keys: they change how a run is executed or shown, not which experiment it is
# (device, threads and fast may change float rounding; the others change nothing). Left out of the config hash,
# of the analysis grouping and of Hydra's multirun directory names (rlexp/conf/config.yaml repeats it for Hydra;
# tests/test_configs.py keeps the two equal). `diagnostics` is not here: its sampling draws from NumPy's RNG.
# The periodic evaluation (eval.freq, eval.freq_episodes) is: it acts on its own env and puts back every random
# state it draws from, so model.zip and eval.json are bitwise the same with it on or off (tests/test_logs.py).
RUN_ONLY_KEYS = ("resume", "progress", "threads", "device", "checkpoint_freq", "checkpoint_replay", "tensorboard",
                 "fast", "objective", "eval.freq", "eval.freq_episodes")
HASH_EXCLUDE = (*RUN_ONLY_KEYS, "hydra")
# Keys added after runs were recorded without them: hashed only when set away from this default, so every
# earlier run keeps its hash (and is still found, skipped and resumed).
HASH_IF_NOT_DEFAULT = {"overlap": False}
# The options of the rlexp/conf/task/ group; rlexp.tasks.REGISTRY implements each one (tests keep them equal).
TASKS = tuple(sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml")))


def compose(*overrides: str) -> DictConfig:
    """Compose rlexp/conf/config.yaml with overrides, as `python run.py OVERRIDES` would."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides))


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def to_container(cfg: DictConfig) -> dict[str, Any]:
    """Resolved plain dict without Hydra's own node."""
    data = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(data, dict)
    data.pop("hydra", None)
    return data


def config_hash(cfg: DictConfig | dict[str, Any], lineage: bool = False) -> str:
    """Stable short hash of what a run computes: same hash, same experiment (run-only keys excluded).

    `lineage=True` leaves total_steps out too: a run extended to more steps is the same run continued.
    """
    data = to_container(cfg) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg, default=str))
    for key in (*HASH_EXCLUDE, "total_steps") if lineage else HASH_EXCLUDE:
        *parents, last = key.split(".")
        node = data
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    for key, default in HASH_IF_NOT_DEFAULT.items():
        if key in data and data[key] == default:
            del data[key]
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def parse_seeds(spec: Any, n_episodes: int | None) -> list[int]:
    """Evaluation seeds: None -> 0..n-1; "0-99", "0,1,2", an int (the first of n) or a list are accepted.

    An explicit list or range must give exactly n_episodes seeds (n_episodes None: as many as it gives).
    """
    if spec is None:
        return list(range(n_episodes or 0))
    if isinstance(spec, int):
        return list(range(spec, spec + (n_episodes or 1)))
    if isinstance(spec, str):
        spec = spec.strip()
        try:
            if "-" in spec and "," not in spec:
                lo, hi = (int(x) for x in spec.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds = list(range(lo, hi + 1))
            else:
                seeds = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"eval seeds {spec!r}: expected 'A-B', 'a,b,c' or an integer") from None
    else:
        seeds = [int(x) for x in spec]
    if not seeds:
        raise ConfigError("eval seeds: empty list")
    if n_episodes is not None and len(seeds) != n_episodes:
        raise ConfigError(f"eval seeds {spec!r} give {len(seeds)} seeds for {n_episodes} episodes; "
                          "give as many seeds as episodes (or leave one of the two out)")
    return seeds


# What a recorded config (a meta file beside a model someone hands you) may name as `_target_`: classes of
# these kinds from these packages, and the env factory. Building anything else could run arbitrary code.
TRUSTED_PACKAGES = ("rlexp.", "stable_baselines3.", "sb3_contrib.", "gymnasium.", "gymnasium_robotics.")
TRUSTED_FUNCTIONS = ("rlexp.components.envs.make_vec_env",)


def _trusted_kinds() -> tuple[type, ...]:
    import gymnasium as gym
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.buffers import ReplayBuffer
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    return BaseAlgorithm, ReplayBuffer, BaseFeaturesExtractor, gym.Wrapper


def check_recorded_targets(data: Any, source: Path | str) -> None:
    """Refuse a recorded config whose `_target_`s name anything but rlexp/SB3/gymnasium algorithms, buffers,
    encoders, wrappers or the env factory: instantiating it would call whatever it names."""
    if isinstance(data, dict):
        target = data.get("_target_")
        if target is not None and not _trusted_target(target):
            raise ConfigError(f"{source} names _target_ {target!r}, which is not an algorithm, replay buffer, "
                              "encoder, env wrapper or env factory from rlexp, stable_baselines3, sb3_contrib or "
                              "gymnasium: refusing to build it")
        for value in data.values():
            check_recorded_targets(value, source)
    elif isinstance(data, list):
        for value in data:
            check_recorded_targets(value, source)


def _trusted_target(target: Any) -> bool:
    from rlexp.components import current_target

    if not isinstance(target, str):
        return False
    target = current_target(target)
    if target in TRUSTED_FUNCTIONS:
        return True
    if not target.startswith(TRUSTED_PACKAGES):
        return False
    try:
        from hydra.utils import get_object

        obj = get_object(target)
    except Exception:  # noqa: BLE001 - not importable: refused
        return False
    return isinstance(obj, type) and issubclass(obj, _trusted_kinds())
