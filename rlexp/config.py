"""Composing, validating and hashing configs outside of `@hydra.main` (tests, notebooks, the CLI)."""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlexp.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent / "conf"
# The one list of run-only keys: they change how a run is executed or shown, not which experiment it is
# (EXECUTION_KEYS below may change float rounding; the others change nothing). Left out of the config hash,
# of the analysis grouping and of Hydra's multirun directory names (rlexp/conf/config.yaml repeats it for Hydra;
# tests/test_configs.py keeps the two equal). `diagnostics` is not here: its sampling draws from NumPy's RNG.
# The periodic evaluation (eval.freq, eval.freq_episodes) is: it acts on its own env and puts back every random
# state it draws from, so model.zip and eval.json are bitwise the same with it on or off (tests/test_logs.py).
# The trial.* keys tie a run to the Optuna trial it reports to (set by the search for its jobs, rlexp.hpo).
RUN_ONLY_KEYS = ("resume", "progress", "progress_percent", "progress_minutes", "threads", "device", "checkpoint_freq",
                 "checkpoint_replay", "checkpoint_final", "tensorboard", "fast", "objective", "eval.freq",
                 "eval.freq_episodes", "logger", "trial.number", "trial.study", "trial.storage", "trial.seeds")
# Keys that change how a run executes and with it float rounding, so results are bitwise equal only with equal
# values: recorded in model.meta.json and every checkpoint unit as `execution` (rlexp/execution.py), shown by
# `rlexp diff`; a resume with other values says it is no longer bitwise. threads, device and fast are run-only
# (results equal within float rounding); overlap is in the config hash (it changes which weights act).
EXECUTION_KEYS = ("threads", "device", "fast", "overlap")
HASH_EXCLUDE = (*RUN_ONLY_KEYS, "hydra")
# Keys added after runs were recorded without them: hashed only when set away from this default, so every
# earlier run keeps its hash (and is still found, skipped and resumed).
HASH_IF_NOT_DEFAULT = {"overlap": False}
# The options of the rlexp/conf/task/ group; rlexp.tasks.REGISTRY implements each one (tests keep them equal).
TASKS = tuple(sorted(p.stem for p in (CONF_DIR / "task").glob("*.yaml")))


def compose(*overrides: str, hydra: bool = False) -> DictConfig:
    """Compose rlexp/conf/config.yaml with overrides, as `python run.py OVERRIDES` would (`hydra`: keep Hydra's
    own node). A mistake raises the ConfigError run.py prints (composition_error), not Hydra's many lines."""
    from hydra.errors import HydraException

    try:
        return _compose(list(overrides), hydra)
    except HydraException as exc:
        raise composition_error(exc, overrides) from None


def _compose(overrides: list[str], hydra: bool = False) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides, return_hydra_config=hydra)


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_jobs(overrides: Sequence[str]) -> tuple[DictConfig, list[list[str]] | None]:
    """What `python run.py -m OVERRIDES` composes: the sweep's config (Hydra's node included) and each job's
    overrides, expanded exactly as Hydra's basic sweeper does: `hydra.sweeper.params` of the composed config
    first, then the command line (a key given on both keeps the command line's values). Jobs is None under
    another sweeper (Optuna draws its values itself)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(list(overrides))
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        cfg = compose(*fixed, hydra=True)
        if cfg.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            return cfg, None
        node = cfg.hydra.sweeper.get("params")
        params = OmegaConf.to_container(node) if node is not None else {}
        jobs = BasicSweeper.split_arguments(
            parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + list(overrides)), None)[0]
    except HydraException as exc:
        raise composition_error(exc, overrides) from None
    return cfg, [list(job) for job in jobs]


def experiment_names() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def group_options(group: str) -> list[str]:
    """The options of a config group of rlexp/conf/ (`algo` -> crossq, ppo, sac, td3, tqc)."""
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def is_group(name: str) -> bool:
    return (CONF_DIR / name).is_dir() and not name.startswith("_")


def did_you_mean(word: str, choices: Sequence[str]) -> str | None:
    """The closest choice to a misspelt word (difflib's ratio >= 0.6), if any."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return close[0] if close else None


def options_with_key(group: str, path: str) -> list[str]:
    """The options of `group` whose file sets `path` (`tau` -> sac, td3, tqc): where a key that this config's
    option lacks would be valid."""
    found = []
    for name in group_options(group):
        if OmegaConf.select(OmegaConf.load(CONF_DIR / group / f"{name}.yaml"), path, default=_ABSENT) is not _ABSENT:
            found.append(name)
    return found


def option_of(group: str, node: Any) -> str | None:
    """Which option of `group` a composed node came from, told by its `_target_` (or env `id`)."""
    if not isinstance(node, DictConfig):
        return None
    for field in ("_target_", "id"):
        if field in node:
            value = node.get(field)
            for name in group_options(group):
                if OmegaConf.load(CONF_DIR / group / f"{name}.yaml").get(field, _ABSENT) == value:
                    return name
    return None


def elsewhere(group: str, path: str, current: str | None, this: str = "this config") -> str | None:
    """'`tau` is a key of algo=sac/td3/tqc; this config uses algo=ppo' when other options of the group set it."""
    others = [o for o in options_with_key(group, path) if o != current]
    if not others or current is None:
        return None
    return f"`{path}` is a key of {group}={'/'.join(others)}; {this} uses {group}={current}"


_ABSENT = object()


# ---------------------------------------------------------------- Hydra's composition errors as one line
def composition_error(exc: Exception, overrides: Sequence[str]) -> ConfigError:
    """Hydra's composition error (many lines, a stack-trace hint, exit 1) as the one line run.py prints with
    exit 2: the fix, a did-you-mean for experiments, group options and keys, and never Hydra's hint to append
    (`+key=...`) a key the config does not have, which only moves the mistake to the class constructor."""
    from hydra.errors import MissingConfigException, OverrideParseException

    overrides = list(overrides)
    text = str(exc)
    if isinstance(exc, OverrideParseException):
        reason = text.splitlines()[1] if len(text.splitlines()) > 1 else text
        return ConfigError(f"cannot read override {exc.override!r} ({reason}); overrides are key=value, "
                           "group=option or +experiment=NAME")
    if isinstance(exc, MissingConfigException) and exc.missing_cfg_file and "/" in exc.missing_cfg_file:
        group, _, name = exc.missing_cfg_file.rpartition("/")
        return ConfigError(_unknown_option(group, name, list(exc.options or group_options(group)), overrides))
    quoted = re.search(r"'([^']+)'", text)
    subject = quoted.group(1) if quoted else ""
    line = _override_of(subject, overrides)
    if "No match in the defaults list" in text and is_group(subject):
        value = line.split("=", 1)[1] if line else "NAME"
        fix = f"{subject} is added with +{subject}=NAME"
        if value in group_options(subject):
            return ConfigError(f"{fix}: +{subject}={value}")
        return ConfigError(f"{fix}; {_unknown_option(subject, value, group_options(subject), ['+' + (line or '')])}")
    if text.startswith("Could not override") and exc.__cause__ is not None:
        return ConfigError(_unknown_key(subject, line, overrides))
    if text.startswith("Could not append to config"):
        return ConfigError(f"{subject} is already in the config: set it without the +, {subject}="
                           f"{line.split('=', 1)[1] if line else 'VALUE'}")
    if text.startswith(("Ambiguous value for argument", "Sweep parameters")):
        return ConfigError(f"{subject} is a sweep: add -m to run one job per value (a list is key=[a,b], a string "
                           "with a comma key='a,b')")
    first = text.split("\n\n")[0]
    cause = f" ({str(exc.__cause__).splitlines()[0]})" if exc.__cause__ is not None and str(exc.__cause__) else ""
    return ConfigError(" ".join(first.split()) + cause)


def _override_of(key: str, overrides: list[str]) -> str | None:
    """The command-line override that sets `key` (with its +/++/~ prefix), if one does."""
    for line in overrides:
        if line.split("=", 1)[0].lstrip("+~") == key:
            return line
    return None


def _unknown_option(group: str, name: str, options: list[str], overrides: list[str]) -> str:
    line = _override_of(group, overrides) or ""
    prefix = line[: len(line) - len(line.lstrip("+"))]
    what = "experiment" if group == "experiment" else f"{group} option"
    close = did_you_mean(name, options)
    hint = f"; did you mean {prefix}{group}={close}?" if close else ""
    return f"no {what} {name!r}{hint} ({'experiments' if group == 'experiment' else 'options'}: {', '.join(options)})"


def _unknown_key(key: str, line: str | None, overrides: list[str]) -> str:
    """`algo.lerning_rate=...` that the composed config has no place for: the closest key, the options of the
    group that do have it, or what the parent node is."""
    from hydra.errors import HydraException

    value = line.split("=", 1)[1] if line and "=" in line else "VALUE"
    rest = [o for o in overrides if o != line]
    try:
        cfg = _compose(rest, hydra=True)
    except HydraException:
        return f"{key}: the config has no such key"
    choices = cfg.hydra.runtime.choices
    with_experiment = choices.get("experiment") is not None
    parts = key.split(".")
    node: Any = cfg
    depth = 0
    while depth < len(parts) - 1 and isinstance(node, DictConfig) and parts[depth] in node:
        node = node.get(parts[depth])
        depth += 1
    parent, missing = ".".join(parts[:depth]), parts[depth]
    where = f"{parent}." if parent else ""
    group = parts[0] if depth >= 1 and is_group(parts[0]) else None
    if group == "logger" and depth == 1 and missing in group_options("logger"):  # a list group: no single choice
        chosen = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
        return (f"logger.{missing}.* sets the {missing} logger, which this config does not use (logger="
                f"[{','.join(chosen)}]); add it: logger=[{','.join([*chosen, missing])}]")
    if group is not None:
        path = ".".join(parts[1: depth + 1])
        hint = elsewhere(group, path, choices.get(group), "this experiment" if with_experiment else "this config")
        if hint:
            return hint
    if node is None:
        return f"{parent} is null in this config, so it has no `{missing}`"
    if not isinstance(node, DictConfig):
        return f"{parent} is a value ({node!r}), not a set of keys: set it with {parent}=VALUE"
    keys = [str(k) for k in node.keys() if node is not cfg or k != "hydra"]
    close = did_you_mean(missing, keys)
    owner = parent or "the config"
    if close:
        tail = f"={value}" if depth == len(parts) - 1 else ""
        return f"{owner} has no key `{missing}`; did you mean {where}{close}{tail}?"
    if parent.endswith("kwargs"):  # keyword arguments of a class: open by design, checked by rlexp.validate
        return (f"{parent} holds keyword arguments and sets no `{missing}`: a new one is added with a leading +, "
                "and its name is checked against the class's arguments before anything is built")
    return f"{owner} has no key `{missing}` (its keys: {', '.join(keys)})"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}; lists stay values (shown as a whole when they differ)."""
    if isinstance(data, dict):
        if not data and prefix:
            return {prefix: {}}
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


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
            if parents and not node:  # a node of run-only keys only (`trial`): gone, as in runs recorded before it
                parent = data
                for part in parents[:-1]:
                    parent = parent[part]
                del parent[parents[-1]]
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
        turned = None  # "5-1": the range the user meant
        try:
            if "-" in spec and "," not in spec:
                lo, hi = (int(x) for x in spec.split("-", 1))
                turned = f"{hi}-{lo}" if hi < lo else None
                seeds = list(range(lo, hi + 1))
            else:
                seeds = [int(x) for x in spec.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"eval seeds {spec!r}: expected 'A-B', 'a,b,c' or an integer") from None
        if turned:
            raise ConfigError(f"eval seeds {spec}: the end is before the start; did you mean {turned}?")
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
        from hydra.utils import get_class  # raises for anything but a class (get_object: hydra-core >= 1.3.2)

        obj = get_class(target)
    except Exception:  # noqa: BLE001 - not importable: refused
        return False
    return isinstance(obj, type) and issubclass(obj, _trusted_kinds())
