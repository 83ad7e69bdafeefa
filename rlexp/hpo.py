"""Hyperparameter search: the number a run reports, where a study lives, and a trial's side of it.

The search itself (asking Optuna for trials, launching them, re-launching stale ones) is rlexp's Optuna sweeper
(hydra_plugins/rlexp_optuna). This module holds what both the sweeper and a trial's job need:

- The objective: the config key `objective`, computed from eval metrics (a Summary's fields, eval.json's
  aggregate, a periodic evaluation's row). Every objective is higher-is-better, so a study maximises:
  `success_rate` (default): final-evaluation success rate, ties broken by mean return, as one float
  `success_rate + return_mean / 1e6` (Fetch returns lie in [-50, 0], so the return term stays below 5e-5, less
  than one episode's step of the success rate for any evaluation shorter than 20,000 episodes); `return`: mean
  return; `neg_final_distance`: minus the mean final distance to the goal (metres). A run with no result (busy,
  interrupted, failed) has no objective: float(summary) raises, never a made-up value.
- Storage: `sqlite` (a SQLite file in the sweep directory, one machine), `journal` (Optuna's journal file, safe
  on a shared filesystem where SQLite's locking is not: SLURM), or any Optuna storage URL.
- The trial link (`TrialLink`): a run started with `trial.number`/`trial.study`/`trial.storage` (run-only keys,
  set by the sweeper on each job) reports every periodic evaluation to that trial, asks the study's pruner
  whether to stop, and tells the study its final result itself, so a trial whose launcher died is still counted
  when its job ends.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from rlexp.errors import ConfigError
from rlexp.rundir import RunLock

log = logging.getLogger("rlexp")

TIE_BREAK = 1e6  # success_rate + return_mean / TIE_BREAK
SQLITE = "sqlite:///"
JOURNAL = "journal:"  # journal:PATH, Optuna's JournalStorage on a JournalFileBackend at PATH
STORAGE_FILES = {"sqlite": "optuna.db", "journal": "optuna.journal"}  # in the sweep directory
SEEDS_ATTR = "rlexp.seeds"  # trial user attribute: the trial's seeds (several seeds per trial), set when asked
PRUNER_ATTR = "rlexp.pruner"  # study user attribute: the pruner config every trial's job builds its pruner from
PRUNERS_PACKAGE = "optuna.pruners."  # the only classes a study's pruner config may name

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


def trial_dir(number: Any, seeds: Any = None, seed: Any = None) -> str:
    """A trial's run directory name in the sweep directory: `trial-0007` for trial 7 (sorted as numbered), and
    `trial-0007-seed-1` for its seed 1 when the search runs several seeds per trial (`seeds` the trial's list).

    By trial number, not by sampled values: a trial re-launched after its launcher died lands in its own folder
    and resumes its checkpoint; two trials that sample the same values each train (and report) on their own.
    """
    if seeds:
        return f"trial-{int(number):04d}-seed-{seed}"
    return f"trial-{int(number):04d}"


def trial_seeds(seeds: Any) -> list[int] | None:
    """A trial's seeds as a list of ints (None: one run with the config's seed)."""
    return [int(s) for s in seeds] if seeds else None


def seeds_mean(values: Mapping[Any, Any], seeds: list[int]) -> float | None:
    """The trial's value: the mean of its seeds' objectives in seed order, None until every seed has one."""
    got = [values.get(seed_attr(s)) for s in seeds]
    return None if any(v is None for v in got) else sum(float(v) for v in got) / len(got)


def seed_attr(seed: int) -> str:
    """The trial user attribute holding one seed's objective (several seeds per trial)."""
    return f"rlexp.seed.{int(seed)}"


# `hydra.sweep.subdir: ${rlexp.trial_dir:${trial.number},${trial.seeds},${seed}}` in
# rlexp/conf/hparams_search/*.yaml; registered on import, which rlexp.app (the task function every launcher and
# job process loads) does.
OmegaConf.register_new_resolver("rlexp.trial_dir", trial_dir, replace=True)


def storage_spec(storage: Any, sweep_dir: str | Path, slurm: bool = False) -> str:
    """The storage a study lives in, as passed to every trial's job (`trial.storage`).

    None: `journal` under the SLURM launcher (jobs on other nodes share the file over NFS, where SQLite's locks
    are unsafe), `sqlite` otherwise; `sqlite`/`journal`: that file in the sweep directory; anything else is an
    Optuna storage URL (postgresql://..., sqlite:///...) or journal:PATH, used as given.
    """
    kind = ("journal" if slurm else "sqlite") if storage is None else str(storage)
    if kind in STORAGE_FILES:
        path = (Path(sweep_dir) / STORAGE_FILES[kind]).expanduser().absolute()
        return f"{SQLITE}{path}" if kind == "sqlite" else f"{JOURNAL}{path}"
    if "://" not in kind and not kind.startswith(JOURNAL):
        raise ConfigError(f"hydra.sweeper.storage={kind!r}: choose sqlite, journal, journal:PATH or an Optuna "
                          "storage URL (sqlite:///PATH, postgresql://...)")
    return kind


def study_file(spec: str) -> Path | None:
    """The file a storage spec keeps its study in (SQLite or journal), None for a server's URL."""
    if spec.startswith(SQLITE):
        return Path(spec[len(SQLITE):])
    if spec.startswith(JOURNAL):
        return Path(spec[len(JOURNAL):])
    return None


def open_storage(spec: str) -> Any:
    """Optuna's storage object for a spec: the journal file's JournalStorage, else the URL's RDBStorage.

    The journal file is locked with Optuna's symlink lock (its default: atomic on NFS)."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    file = study_file(spec)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
    if spec.startswith(JOURNAL):
        return JournalStorage(JournalFileBackend(str(file)))
    # A generous SQLite timeout: several trial jobs write intermediate values into the same file.
    kwargs = {"connect_args": {"timeout": 60}} if spec.startswith(SQLITE) else {}
    return optuna.storages.RDBStorage(spec, engine_kwargs=kwargs)


def dashboard_arg(spec: str) -> str:
    """What `optuna-dashboard` takes to open this study: the URL, or the journal file's path."""
    return spec[len(JOURNAL):] if spec.startswith(JOURNAL) else spec


def make_pruner(config: Mapping[str, Any] | None) -> Any:
    """An Optuna pruner from its config (`_target_` an optuna.pruners class, the rest its arguments);
    NopPruner for none. Only optuna.pruners classes: a study file names it, and a file is never code."""
    import optuna
    from hydra.utils import get_class

    if not config or config.get("_target_") in (None, "null"):
        return optuna.pruners.NopPruner()
    target = str(config["_target_"])
    if not target.startswith(PRUNERS_PACKAGE):
        raise ConfigError(f"hydra.sweeper.pruner: {target} is not an Optuna pruner (optuna.pruners.*)")
    kwargs = {k: v for k, v in config.items() if k != "_target_"}
    try:
        return get_class(target)(**kwargs)
    except (TypeError, ValueError, ImportError) as exc:
        raise ConfigError(f"hydra.sweeper.pruner: {target}({kwargs}): {exc}") from None


class StudyLock(RunLock):
    """One search command per study file (`<file>.rlexp.lock` and the lease `<file>.lease/`, as for run
    directories): trials the study holds as running while nobody holds the lock were left by a command that
    stopped. Not `<file>.lock`: that is the journal file's own lock (Optuna's symlink lock), which waits for a
    present one, then removes it as stale."""

    def __init__(self, file: Path) -> None:
        super().__init__(file.with_name(file.name + ".rlexp.lock"), file.with_name(file.name + ".lease"))
        self._legacy = file.with_name(file.name + ".lock")

    def acquire(self, shared: bool = False) -> bool:
        got = super().acquire(shared)
        if got and not shared:
            _drop_legacy_lock(self._legacy)
        return got


def _drop_legacy_lock(path: Path) -> None:
    """Remove a study lock file that earlier rlexp versions left at `<file>.lock` (a plain file; Optuna's journal
    lock at that path is a symlink, left alone): a journal's next write would wait 30 s for it. Only when no
    process holds it."""
    if path.is_symlink() or not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink()
    except OSError:  # held by an older rlexp's search, or gone already
        pass
    finally:
        os.close(fd)


def _finished_error() -> type[Exception]:
    """Optuna's error for a value sent to a finished trial: UpdateFinishedTrialError (a RuntimeError) in newer
    releases, a plain RuntimeError in 4.0."""
    import optuna.exceptions

    return getattr(optuna.exceptions, "UpdateFinishedTrialError", RuntimeError)


def _retrying(what: str, fn: Callable[[], Any], tries: int = 5) -> Any:
    """A storage call, tried again on a transient error (a locked SQLite file, a busy journal lock)."""
    for attempt in range(tries):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - storage backends raise their own error types
            if isinstance(exc, _finished_error()) or attempt == tries - 1:
                raise
            log.debug("%s: %s; trying again", what, exc)
            time.sleep(0.5 * (attempt + 1))
    return None


class TrialLink:
    """A run's link to its Optuna trial (config keys trial.number/study/storage, set by the sweeper).

    `report` puts a periodic evaluation's objective into the trial as the intermediate value of its step and
    says whether the study's pruner stops the trial; `tell` records the run's result. The study's storage is
    the only channel: the job needs nothing from the process that launched it. A storage that cannot be reached
    costs the study a value (a warning), never the run.

    Several seeds per trial (`trial.seeds`, one job each): the first seed alone reports its evaluations and asks
    the pruner; the others stop at their next evaluation once the trial is pruned. Each seed's `tell` stores its
    objective in the trial (user attribute `rlexp.seed.S`); whichever tell finds every seed's value there tells
    the study their mean (the last to store; two at once tell the same mean, the second a no-op).
    """

    def __init__(self, number: int, study_name: str, spec: str, objective_name: str,
                 seeds: list[int] | None = None, seed: int | None = None) -> None:
        self.number, self.study_name, self.spec, self.objective = number, study_name, spec, objective_name
        self.seeds, self.seed = trial_seeds(seeds), seed
        self.lead = not self.seeds or seed == self.seeds[0]  # reports evaluations and asks the pruner
        self._study: Any = None
        self._storage: Any = None
        self._trial_id: int | None = None
        self.finished = False  # the trial was finished already (told by an earlier attempt): report nothing

    @classmethod
    def of(cls, cfg: Any) -> TrialLink | None:
        trial = cfg.get("trial") if hasattr(cfg, "get") else None
        if trial is None or trial.get("number") is None:
            return None
        if not trial.get("study") or not trial.get("storage"):
            raise ConfigError("trial.number needs trial.study and trial.storage (the sweeper sets all three)")
        seeds = trial_seeds(trial.get("seeds"))
        if seeds and int(cfg.get("seed")) not in seeds:
            raise ConfigError(f"seed={cfg.get('seed')} is not one of trial.seeds={seeds}")
        return cls(int(trial.number), str(trial.study), str(trial.storage), check(cfg.get("objective")), seeds,
                   int(cfg.get("seed")) if seeds else None)

    def study(self) -> Any:
        if self._study is None:
            import optuna

            storage = open_storage(self.spec)
            study = optuna.load_study(study_name=self.study_name, storage=storage,
                                      sampler=optuna.samplers.RandomSampler())
            pruner = make_pruner(study.user_attrs.get(PRUNER_ATTR))
            self._study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=pruner,
                                            sampler=optuna.samplers.RandomSampler())
            self._storage = storage
            self._trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(self.study_name), self.number)
        return self._study

    def catch_up(self, rows: list[Mapping[str, Any]]) -> None:
        """Report the evaluations of a resumed run's table that the trial does not hold (the run stopped between
        writing a row and reporting it). Values from the table (6 significant digits); no pruning decision."""
        if not self.lead:
            return
        try:
            self.study()
            held = self._storage.get_trial(self._trial_id).intermediate_values
        except Exception as exc:  # noqa: BLE001 - as in report
            log.warning("trial %d: could not read study %s (%s)", self.number, self.study_name, exc)
            return
        for row in rows:
            if int(row["step"]) not in held:
                self.report(int(row["step"]), row, decide=False)

    def report(self, step: int, metrics: Mapping[str, Any], decide: bool = True) -> bool:
        """Report an evaluation at `step`; True if the pruner stops this trial (the run checkpoints, stops).
        `decide=False`: only record it."""
        value = objective(self.objective, metrics)
        if value is None or self.finished:
            return False
        if not self.lead:
            return decide and self._pruned()
        try:
            study = self.study()
            storage = self._storage
            _retrying("report", lambda: storage.set_trial_intermediate_value(self._trial_id, int(step), value))
            if not decide:
                return False
            frozen = _retrying("read trial", lambda: storage.get_trial(self._trial_id))
            prune = bool(study.pruner.prune(study, frozen))
        except _finished_error():
            self.finished = True
            log.warning("trial %d of study %s is already finished: its evaluations are no longer reported",
                        self.number, self.study_name)
            return False
        except Exception as exc:  # noqa: BLE001 - a storage that fails costs the study a value, never the run
            log.warning("trial %d: could not report step %d to study %s (%s)", self.number, step, self.study_name, exc)
            return False
        if prune:
            log.warning("trial %d of study %s pruned at step %s (objective %.4g): checkpointing and stopping",
                        self.number, self.study_name, f"{step:,}", value)
        return prune

    def _pruned(self) -> bool:
        """Whether the trial is pruned (a seed other than the first: its first seed was stopped)."""
        import optuna

        try:
            self.study()
            frozen = _retrying("read trial", lambda: self._storage.get_trial(self._trial_id))
        except Exception as exc:  # noqa: BLE001 - as in report
            log.warning("trial %d: could not read study %s (%s)", self.number, self.study_name, exc)
            return False
        if frozen.state == optuna.trial.TrialState.PRUNED:
            log.warning("trial %d of study %s was pruned (its seed %d): seed %s checkpoints and stops",
                        self.number, self.study_name, self.seeds[0] if self.seeds else 0, self.seed)
            return True
        return False

    def tell(self, state: str, value: float | None = None) -> None:
        """Finish the trial: `complete` with its value, or `pruned`; a trial finished already is left as it is.
        Several seeds: `complete` stores this seed's value and tells the mean once every seed has stored one."""
        import optuna

        if state not in ("complete", "pruned"):
            raise ValueError(state)
        try:
            study = self.study()
            if state == "complete" and self.seeds:
                storage, trial_id = self._storage, self._trial_id
                _retrying("store seed", lambda: storage.set_trial_user_attr(trial_id, seed_attr(self.seed), value))
                mean = seeds_mean(_retrying("read trial", lambda: storage.get_trial(trial_id)).user_attrs,
                                  self.seeds)
                if mean is not None:
                    _retrying("tell", lambda: study.tell(self.number, mean, skip_if_finished=True))
            elif state == "complete":
                _retrying("tell", lambda: study.tell(self.number, value, skip_if_finished=True))
            else:
                _retrying("tell", lambda: study.tell(self.number, state=optuna.trial.TrialState.PRUNED,
                                                     skip_if_finished=True))
        except _finished_error():  # told already (by another seed, or by the job before its sweeper): as it is
            log.debug("trial %d of study %s is finished already", self.number, self.study_name)
        except Exception as exc:  # noqa: BLE001 - the sweeper tells it from the job's return value too
            log.warning("trial %d: could not tell study %s its result (%s)", self.number, self.study_name, exc)
