"""Hyperparameter search with hydra-optuna-sweeper: the number a run reports, where a study lives, what a re-run does.

Optuna's sweeper reads each job's result as `float(return_value)`. The app returns the run's Summary, which
carries the objective chosen by the config key `objective` (rlexp.status.Summary.__float__), so every other
sweeper and launcher still gets the whole Summary. Every objective is higher-is-better, so a study is always
`direction: maximize`:

- `success_rate` (default): final-evaluation success rate, ties broken by mean return, as one float
  `success_rate + return_mean / 1e6`. Fetch returns lie in [-50, 0], so the return term stays below 5e-5,
  less than one episode's step of the success rate for any evaluation shorter than 20,000 episodes.
- `return`: final-evaluation mean return.
- `neg_final_distance`: minus the mean final distance to the goal (metres).

A run with no result (busy, interrupted, failed) has no objective: float() raises, which the sweeper records
as a failed trial, never as a value. A run skipped because its directory already holds this config reports
the objective of its eval.json, so a re-sampled point gives the study its earlier result.

Re-running a search command continues its study (ContinueStudy, a Hydra callback of the presets).
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from rlexp.errors import ConfigError
from rlexp.rundir import RunLock
from rlexp.status import Exit

log = logging.getLogger("rlexp")

TIE_BREAK = 1e6  # success_rate + return_mean / TIE_BREAK
SQLITE = "sqlite:///"

OBJECTIVES: dict[str, Callable[[Mapping[str, Any]], float]] = {
    "success_rate": lambda m: float(m["success_rate"]) + float(m["return_mean"]) / TIE_BREAK,
    "return": lambda m: float(m["return_mean"]),
    "neg_final_distance": lambda m: -float(m["final_distance_mean"]),
}


def check(name: Any) -> str:
    """The objective's name, or ConfigError naming the valid ones (before any training)."""
    if name not in OBJECTIVES:
        raise ConfigError(f"unknown objective {name!r}; choose one of: {', '.join(OBJECTIVES)}")
    return str(name)


def objective(name: str, metrics: Mapping[str, Any]) -> float | None:
    """The objective from eval metrics (a Summary's fields or eval.json's aggregate); None if they are missing."""
    try:
        return OBJECTIVES[check(name)](metrics)
    except (KeyError, TypeError):
        return None


def sqlite_storage(path: str) -> str:
    """An Optuna storage URL for a SQLite file at `path`, its folder created.

    The preset puts the study in the sweep directory (`${hydra.sweep.dir}/optuna.db`), which Hydra creates
    only when it launches the first batch, after the sweeper has opened the study.
    """
    db = Path(path).expanduser().resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def trial_dir(override_dirname: str) -> str:
    """A trial's folder name, `trial-` + a digest of its overrides (Hydra's sorted override_dirname).

    Eight sampled values make the usual override-named folder longer than a file name may be (255 bytes).
    The digest is as deterministic: a trial that samples a finished point again lands in that run's folder
    and is skipped with its result. The overrides themselves are in the folder's .hydra/overrides.yaml.
    """
    return "trial-" + hashlib.sha256(override_dirname.encode()).hexdigest()[:12]


# `hydra.sweep.subdir: ${rlexp.trial_dir:${hydra.job.override_dirname}}` in rlexp/conf/hparams_search/*.yaml;
# registered on import, which rlexp.app (the task function every launcher and job process loads) does.
OmegaConf.register_new_resolver("rlexp.trial_dir", trial_dir, replace=True)


def _storage_url(storage: Any) -> str | None:
    if OmegaConf.is_config(storage):
        from hydra.utils import instantiate

        return str(instantiate(storage))
    return None if storage is None else str(storage)


class StudyLock(RunLock):
    """One sweep process per study file (`<db>.lock` and the lease `<db>.lease/`, as for run directories):
    trials that a study holds as running while nobody holds the lock were left by a command that stopped."""

    def __init__(self, db: Path) -> None:
        super().__init__(db.with_name(db.name + ".lock"), db.with_name(db.name + ".lease"))


class ContinueStudy(Callback):
    """What re-running a search command does to its study (a Hydra callback of the hparams_search presets).

    - New trials: hydra-optuna-sweeper re-creates its sampler from the configured seed on every command, so a
      continued study would be proposed its first trials again (while TPE still samples at random). The seed
      is shifted by the number of trials the study already holds: the same command on the same study proposes
      the same trials (reproducible), the next command new ones.
    - Stopped trials: a trial whose command was stopped (Ctrl-C, SIGTERM: its run checkpointed, exit 3) stays
      "running" in the study. It is marked failed and asked again first, with the same values, so its run
      folder resumes from the checkpoint and the study gets its result; once only (a retried trial that is
      left running again is only marked failed).
    - One command per study file: a second one exits with code 4 (BUSY) while the first runs, as for a run
      directory, so "running" trials are known to be stale. SQLite studies only; other storages are left as
      they are.
    - `objective` is checked once, before the study is touched (exit 2 with one line, as every bad input).
    """

    def __init__(self) -> None:
        self.lock: StudyLock | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check(config.get("objective"))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(Exit.BAD_INPUT)
        sweeper = config.hydra.sweeper
        url, name = _storage_url(sweeper.get("storage")), sweeper.get("study_name")
        if url is None or name is None:
            return  # an in-memory or unnamed study: nothing to continue
        if url.startswith(SQLITE):
            self.lock = StudyLock(Path(url[len(SQLITE):]))
            if not self.lock.acquire():
                print(f"skipped: study {url} is in use: {self.lock.holder()}", file=sys.stderr)
                sys.exit(Exit.BUSY)
            _retry_stopped(url, name)
        done = trials_so_far(url, name)
        seed = OmegaConf.select(sweeper, "sampler.seed")
        if done and seed is not None:
            with read_write(sweeper):
                sweeper.sampler.seed = int(seed) + done
            log.info("study %s holds %d trials: continuing it, sampler seed %d + %d", name, done, seed, done)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.lock is not None:
            self.lock.release()


def _load(storage: str, study_name: str) -> Any:
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return None


def trials_so_far(storage: str, study_name: str) -> int:
    """How many trials (any state) the study already holds; 0 if there is no such study yet."""
    study = _load(storage, study_name)
    return 0 if study is None else len(study.get_trials(deepcopy=False))


def _retry_stopped(storage: str, study_name: str) -> None:
    """Trials left running by a stopped command: failed, and asked again (once) with the same values."""
    import optuna

    study = _load(storage, study_name)
    if study is None:
        return
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study._storage.set_trial_state(trial._trial_id, optuna.trial.TrialState.FAIL)
        if "fixed_params" in trial.system_attrs:  # already a retry
            log.warning("trial %d of study %s stopped again: marked failed", trial.number, study_name)
            continue
        study.enqueue_trial(trial.params)
        log.info("trial %d of study %s was stopped: asked again first, its run resumes", trial.number, study_name)
