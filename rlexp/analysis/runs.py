"""Finding, loading and grouping run directories.

A run is a directory with model.meta.json, .hydra/config.yaml or eval.json; it is finished when it has
eval.json. Runs are grouped by their resolved config minus the seed and the run-only keys
(`rlexp.config.RUN_ONLY_KEYS`), so the seeds of one config form one group, as in the book's sweep
analysis (book ch5).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlexp import artifacts
from rlexp.config import HASH_IF_NOT_DEFAULT, RUN_ONLY_KEYS, flatten
from rlexp.errors import ConfigError
from rlexp.rundir import HYDRA, TRACKER_DIRS, RunDir
from rlexp.sweepdir import STATE, SUBMITIT

# Keys that identify a repetition (seed): not part of a "config".
SEED_KEYS = ("seed", "env.seed")


@functools.lru_cache(maxsize=65536)  # asked for every key of every run: a few hundred distinct keys
def is_run_only(key: str) -> bool:
    """A seed key or a run-only key (or below one): left out of the grouping."""
    return key in SEED_KEYS or any(key == p or key.startswith(p + ".") for p in RUN_ONLY_KEYS)


@dataclass
class LoadedRun:
    """One run directory as the analysis sees it (not `rlexp.training.train.Run`, which trains)."""

    path: Path
    config: dict[str, Any]  # flattened resolved config
    experiment: str | None
    eval: dict[str, Any] | None = None  # eval.json aggregate, None if the run has not finished
    checkpoint_step: int | None = None
    pruned_step: int | None = None  # an Optuna trial its pruner stopped at this step (pruned.json)
    n_episodes: int | None = None  # eval episodes behind `eval`
    steps: int | None = None  # env steps trained (model.meta.json), None before the run saved its model
    warnings: list[str] = field(default_factory=list)

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def group_items(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, repr(v)) for k, v in self.config.items() if not is_run_only(k)
                            and not (k in HASH_IF_NOT_DEFAULT and v == HASH_IF_NOT_DEFAULT[k])))


def is_run_dir(path: Path) -> bool:
    return RunDir(path).is_run()


def default_out(paths: list[str], out: Path | None) -> Path:
    """--out, else the first path if it is not a run directory (a multirun folder), else the cwd."""
    first = Path(paths[0])
    return out or (first if not is_run_dir(first) else Path.cwd())


# A sweep directory's own records (a folder per job each) and the trackers' stores (MLflow keeps copies of
# model.meta.json as artifacts): a walk does not look into them, nor into run directories.
NO_RUNS_BELOW = frozenset({STATE, SUBMITIT, *TRACKER_DIRS})


def _runs_below(root: Path) -> list[Path]:
    """Run directories below `root`. A run directory is not looked into (its checkpoints, TensorBoard and
    monitor folders hold many files and no runs), nor are the sweep's own records: a sweep of N runs costs one
    listing of the sweep folder and a few stats per run, whatever the runs hold."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
            if (st.st_dev, st.st_ino) in seen:  # a symlink loop
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as listing:
                entries = [e for e in listing if e.name not in NO_RUNS_BELOW and e.is_dir()]
        except OSError:  # removed or unreadable while walked
            continue
        for entry in entries:
            path = Path(entry.path)
            if is_run_dir(path):
                found.append(path.resolve())
            else:
                stack.append(path)
    return found


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories at or below each path (a multirun folder, a run folder, or several of either)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise ConfigError(f"{path}: no such file or directory")
        if not path.is_dir():
            raise ConfigError(f"{path}: expected a run or multirun directory")
        if is_run_dir(path):
            found.append(path.resolve())
            continue
        found.extend(_runs_below(path))
    unique = sorted(set(found))
    if not unique:
        raise ConfigError(
            f"no runs found under {', '.join(map(str, paths))} "
            "(looked for directories with .hydra/config.yaml, model.meta.json or eval.json)"
        )
    return unique


def hydra_record(run_dir: Path) -> Any:
    """The Hydra node a run's command recorded in .hydra/hydra.yaml (choices, overrides, cwd), None without one."""
    hydra_file = run_dir / HYDRA / "hydra.yaml"
    if not hydra_file.is_file():
        return None
    from omegaconf import OmegaConf

    return OmegaConf.load(hydra_file)


def source_of(run_dir: Path) -> Path | None:
    """The run directory a fork was started from: model.meta.json's `forked_from`, else (a fork still in its
    first checkpoint interval) the `resume=` of the command recorded in .hydra/, relative to its working
    directory. None for a run started fresh (a resume in place keeps its own .hydra/)."""
    meta = RunDir(run_dir).meta
    if meta.is_file():
        forked = artifacts.read_json(meta).get("forked_from")
        if forked:
            return Path(forked)
    node = hydra_record(run_dir)
    if node is None:
        return None
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    lines = [o for o in OmegaConf.select(node, "hydra.overrides.task", default=[]) or []
             if o.split("=", 1)[0].lstrip("+") == "resume"]
    resume = OverridesParser.create().parse_override(lines[-1]).value() if lines else None  # quotes removed
    if not resume:
        return None
    path = Path(str(resume)).expanduser()
    if not path.is_absolute():
        path = Path(str(OmegaConf.select(node, "hydra.runtime.cwd", default=".") or ".")) / path
    return RunDir.of_checkpoint_zip(path).root if path.suffix == ".zip" else path.resolve()


def _yaml(path: Path) -> Any:
    """A YAML file as plain data, with libyaml's loader where there is one (no OmegaConf node tree: this runs once
    per run of a sweep)."""
    import yaml

    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


_EXPERIMENT = re.compile(r"^\+{0,2}experiment=(\S+)$")


def _own_experiment(run_dir: Path) -> str | None:
    """The experiment its own command named: its `+experiment=NAME` override (.hydra/overrides.yaml, a few
    lines: a command-line choice is the final one), else `hydra.runtime.choices.experiment` of .hydra/hydra.yaml
    (5 KB of YAML, slow to read for every run of a large sweep)."""
    overrides = run_dir / HYDRA / "overrides.yaml"
    if overrides.is_file():
        listed = _yaml(overrides)
        for line in listed if isinstance(listed, list) else []:
            if isinstance(line, str) and (m := _EXPERIMENT.match(line.strip())):
                return m.group(1)
    hydra_file = run_dir / HYDRA / "hydra.yaml"
    if hydra_file.is_file():
        node: Any = _yaml(hydra_file)
        for key in ("hydra", "runtime", "choices", "experiment"):
            node = node.get(key) if isinstance(node, dict) else None
        if node:
            return str(node)
    return None


def experiment_of(run_dir: Path) -> str | None:
    """The experiment a run was made from: its command's `+experiment=`, else that of the run it was forked
    from (a fork's command names only `resume=`; it trains its source's recorded config), followed back."""
    seen: set[Path] = set()
    current: Path | None = Path(run_dir).resolve()
    while current is not None and current not in seen:
        seen.add(current)
        found = _own_experiment(current)
        if found:
            return found
        current = source_of(current)
    return None


def run_config(run_dir: Path, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolved config of a run: model.meta.json's record (`meta`, if already read), else the .hydra/config.yaml
    Hydra saved."""
    if meta is None and RunDir(run_dir).meta.is_file():
        meta = artifacts.read_json(RunDir(run_dir).meta)
    if meta is not None:
        return meta["config"]
    cfg_file = run_dir / HYDRA / "config.yaml"
    if cfg_file.is_file():
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=True)
        assert isinstance(data, dict)
        data.pop("hydra", None)
        return data
    raise ConfigError(f"{run_dir}: no model.meta.json or .hydra/config.yaml to read its config from")


def load_run(run_dir: Path, config: bool = True) -> LoadedRun:
    """One run as the analysis sees it; `config=False`: an unfinished run's config is not read (report lists
    those runs only by folder and checkpoint, and composing a config without meta record takes ~50 ms)."""
    rd = RunDir(run_dir)
    if not config and not rd.eval.is_file():
        latest = rd.latest_checkpoint()
        return _pruned(rd, LoadedRun(run_dir, {}, None, checkpoint_step=latest.step if latest is not None else None))
    meta = artifacts.read_json(rd.meta) if rd.meta.is_file() else None
    run = LoadedRun(run_dir, flatten(run_config(run_dir, meta)), experiment_of(run_dir))
    run.steps = (meta or {}).get("total_steps")
    if rd.eval.is_file():
        result = artifacts.read_json(rd.eval)
        run.eval = result["aggregate"]
        run.n_episodes = result.get("n_episodes")
        meta_hash = (meta or {}).get("config_hash")
        if result.get("config_hash") and meta_hash and result["config_hash"] != meta_hash:
            run.warnings.append(
                f"{run_dir}: eval.json config_hash {result['config_hash']} != model.meta.json {meta_hash}"
            )
    latest = rd.latest_checkpoint()
    run.checkpoint_step = latest.step if latest is not None else None
    return _pruned(rd, run)


def _pruned(rd: RunDir, run: LoadedRun) -> LoadedRun:
    """A run its Optuna search stopped (pruned.json) says where: it is not missing, and is not run again."""
    if rd.pruned.is_file():
        pruned = artifacts.read_json(rd.pruned)
        run.pruned_step = pruned.get("stopped_at") or pruned.get("step") or run.checkpoint_step
    return run


def load_runs(paths: Iterable[str | Path], unfinished_config: bool = True) -> list[LoadedRun]:
    """The runs at or below paths. A run whose experiment cannot be traced (a fork whose source was moved away)
    takes the experiment of a run with the same config, so it is labelled and grouped with it."""
    runs = [load_run(p, unfinished_config) for p in find_run_dirs(list(paths))]
    known = {r.group_items: r.experiment for r in runs if r.experiment is not None and r.config}
    for run in runs:
        if run.experiment is None and run.config:
            run.experiment = known.get(run.group_items)
    return runs


@dataclass
class Group:
    """The seeds of one config."""

    label: str
    factors: dict[str, Any]  # swept factor -> value for this config
    runs: list[LoadedRun]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiment: str | None = None  # set when the runs come from several experiments


def level(value: Any) -> str:
    """A factor value as a level name ("null" for None)."""
    return "null" if value is None else str(value)


def swept_factors(runs: list[LoadedRun]) -> list[str]:
    """Config keys (seed and run-only keys aside) whose value differs between runs.

    With several experiments, keys that only follow the experiment are folded into its name.
    """
    keys = sorted({k for r in runs for k in r.config if not is_run_only(k)})
    varying = [k for k in keys if len({repr(r.config.get(k, "<absent>")) for r in runs}) > 1]
    experiments = {r.experiment for r in runs}
    if len(experiments) > 1:
        varying = [
            k
            for k in varying
            if any(
                len({repr(r.config.get(k, "<absent>")) for r in runs if r.experiment == e}) > 1
                for e in experiments
            )
        ]
    return varying


def group_runs(runs: list[LoadedRun]) -> tuple[list[Group], list[str]]:
    factors = swept_factors(runs)
    several_experiments = len({r.experiment for r in runs}) > 1
    by_key: dict[tuple, list[LoadedRun]] = {}
    for run in runs:
        by_key.setdefault((run.experiment if several_experiments else None, run.group_items), []).append(run)
    groups = []
    for (experiment, _), members in by_key.items():
        values = {k: members[0].config.get(k) for k in factors}
        parts = ([str(experiment)] if several_experiments else []) + [f"{k}={level(v)}" for k, v in values.items()]
        groups.append(
            Group(
                ", ".join(parts) or (members[0].experiment or "all runs"),
                values,
                sorted(members, key=lambda r: str(r.seed)),
                experiment=str(experiment) if several_experiments else None,
            )
        )
    groups.sort(key=lambda g: g.label)
    return groups, factors


def evaluations(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run's periodic evaluations (evaluations.csv, `eval.freq`): one dict per row, [] when it has none."""
    from rlexp.training.logs import read_evaluations

    return read_evaluations(RunDir(run_dir).evaluations)


def first_reaching(rows: list[dict[str, Any]], success_rate: float = 0.9) -> dict[str, Any] | None:
    """The first evaluation whose success rate reaches `success_rate` (its `step` and `train_time_s`: env
    steps and training wall time to that level), or None if none does."""
    return next((r for r in rows if r["success_rate"] >= success_rate), None)
