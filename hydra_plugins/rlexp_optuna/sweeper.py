"""rlexp's Optuna sweeper: an Optuna study (ask/tell) whose trials are rlexp runs, launched by any rlexp launcher.

The structure follows Hydra's BasicSweeper (`setup` instantiates the configured launcher; `sweep` hands it batches
of override lists and reads back each job's return): every batch of `n_jobs` trials is asked from the study
(`study.ask` with the search space of hydra.sweeper.params and the command line, rlexp_optuna/space.py), launched
as one launch, and told back from the job's Summary. What it adds for RL:

- A trial's job knows its trial (run-only keys `trial.number`, `trial.study`, `trial.storage`): it reports each
  periodic evaluation (eval.freq) to it, stops when the study's pruner says so (status `pruned`), and tells the
  study its own result (rlexp.hpo.TrialLink). Jobs on other nodes need only the storage.
- `n_trials` is the study's total. Re-running the command continues toward it, re-launches the trials a stopped
  command left RUNNING (same number, same values, same run directory `trial-NNNN`: the run resumes from its
  checkpoint, and the run-directory lock stops a second trainer), and never re-runs a finished or pruned trial.
  Stale RUNNING trials are known as stale because one command at a time holds the study file's lock
  (rlexp.hpo.StudyLock); for a server storage (a URL) they are left alone.
- The sampler is seeded; its seed moves on by the number of trials the study holds, so the same command on the
  same study asks the same points and the next command new ones.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.rlexp_optuna import space as search_space
from rlexp import hpo
from rlexp.errors import ConfigError
from rlexp.status import Exit, Refused, Status, Summary
from rlexp.sweepdir import SweepDir, where

log = logging.getLogger("rlexp")
RESULTS = "optimization_results.yaml"


def _quoted(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RlexpOptunaSweeper(Sweeper):
    def __init__(self, direction: str = "maximize", study_name: str | None = None, storage: str | None = None,
                 n_trials: int = 20, n_jobs: int = 2, sampler: Any = None, pruner: Any = None,
                 params: Any = None) -> None:
        self.direction = str(direction)
        self.study_name = study_name
        self.storage = storage
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.params = params
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    # -- before anything is written: every mistake is one line, exit 2 ------------------------------------------
    def _check(self, arguments: list[str]) -> tuple[list[search_space.Param], list[str], str, str, dict]:
        assert self.config is not None
        try:
            import optuna  # noqa: F401
        except ImportError:
            raise ConfigError('an Optuna search needs the hpo extra: pip install "rlexp[hpo]"') from None
        hpo.check(self.config.get("objective"))
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={self.direction!r}: choose maximize or minimize")
        if getattr(self.launcher, "wait", True) is False:
            raise ConfigError("hydra.launcher.wait=false: a search tells each batch's results to its study before it "
                              "asks the next, so it waits for its jobs; drop wait=false")
        if self.n_trials < 1 or self.n_jobs < 1:
            raise ConfigError(f"hydra.sweeper.n_trials ({self.n_trials}) and n_jobs ({self.n_jobs}) must be >= 1")
        params = OmegaConf.to_container(self.params, resolve=True) if OmegaConf.is_config(self.params) else \
            dict(self.params or {})
        space, fixed = search_space.parse([f"{k}={v}" for k, v in params.items()], list(arguments))
        if not space:
            raise ConfigError("nothing to search: hydra.sweeper.params and the command line set no choice, "
                              "interval or range")
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        slurm = "slurm" in type(self.launcher).__name__.lower()
        spec = hpo.storage_spec(self.storage, sweep_dir, slurm=slurm)
        pruner = OmegaConf.to_container(self.pruner_cfg, resolve=True) if OmegaConf.is_config(self.pruner_cfg) \
            else dict(self.pruner_cfg or {})
        hpo.make_pruner(pruner)
        name = self.study_name or sweep_dir.name
        return space, fixed, spec, name, pruner

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        try:
            space, fixed, spec, name, pruner = self._check(arguments)
        except ConfigError as exc:
            reason = " ".join(str(exc).splitlines())
            print(f"error: {reason}", file=sys.stderr)
            raise Refused(reason) from None
        file = hpo.study_file(spec)
        lock = None
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            lock = hpo.StudyLock(file)
            if not lock.acquire():
                print(f"skipped: study {where(file)} is in use: {lock.holder()}", file=sys.stderr)
                sys.exit(Exit.BUSY)
        try:
            return self._sweep(space, fixed, spec, name, pruner, stale_known=lock is not None)
        finally:
            if lock is not None:
                lock.release()

    def _study(self, spec: str, name: str, pruner: dict) -> Any:
        import optuna
        from hydra.utils import instantiate

        study = optuna.create_study(study_name=name, storage=hpo.open_storage(spec), direction=self.direction,
                                    pruner=hpo.make_pruner(pruner), load_if_exists=True)
        held = len(study.get_trials(deepcopy=False))
        sampler_cfg = OmegaConf.create(OmegaConf.to_container(self.sampler_cfg, resolve=True)) \
            if self.sampler_cfg is not None else None
        if sampler_cfg is not None:
            if held and sampler_cfg.get("seed") is not None:
                sampler_cfg.seed = int(sampler_cfg.seed) + held
            study.sampler = instantiate(sampler_cfg)
        if list(study.directions) != [optuna.study.StudyDirection[self.direction.upper()]]:
            raise ConfigError(f"study {name} in {spec} is {study.direction.name.lower()}d, not {self.direction}d")
        study.set_user_attr(hpo.PRUNER_ATTR, pruner)  # what every trial's job builds its pruner from
        study.set_user_attr("rlexp.objective", str(self.config.get("objective")))  # type: ignore[union-attr]
        if held:
            log.info("study %s holds %d of %d trials: continuing it (sampler seed %s)", name, held, self.n_trials,
                     sampler_cfg.get("seed") if sampler_cfg is not None else None)
        return study

    def _overrides(self, fixed: list[str], space: list[search_space.Param], name: str, spec: str, number: int,
                   params: dict[str, Any]) -> list[str]:
        by_key = {p.key: p for p in space}
        sampled = [(by_key.get(k) or search_space.Param("", k, None)).override(v) for k, v in params.items()]
        keys = {s.split("=", 1)[0].lstrip("+~") for s in sampled}
        kept = [o for o in fixed if o.split("=", 1)[0].lstrip("+~") not in keys]
        return [*kept, *sampled, f"trial.number={number}", f"trial.study={_quoted(name)}",
                f"trial.storage={_quoted(spec)}"]

    def _sweep(self, space: list[search_space.Param], fixed: list[str], spec: str, name: str, pruner: dict,
               stale_known: bool) -> list[JobReturn]:
        import optuna

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        try:
            study = self._study(spec, name, pruner)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise Refused(str(exc)) from None
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        pending: list[tuple[int, dict[str, Any]]] = []
        if running and stale_known:
            for t in running:  # pruned, but the study was not told (its job and the command died together)
                if (sweep_dir / hpo.trial_dir(t.number) / "pruned.json").is_file():
                    study.tell(t.number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            running = [t for t in running if not (sweep_dir / hpo.trial_dir(t.number) / "pruned.json").is_file()]
            pending = [(t.number, dict(t.params)) for t in running]
            if pending:
                log.warning("re-launching trial%s %s, left running by a command that stopped (their runs resume)",
                            "s" * (len(running) > 1), ", ".join(str(t.number) for t in running))
        elif running:
            log.warning("trials %s are running (a server storage: maybe in another command); left alone",
                        ", ".join(str(t.number) for t in running))
        # Job numbers go on from the sweep directory's earlier commands: each job's record (.rlexp/jobs/N.json) is
        # then this command's, which is what tells a stopped or refused trial from one that never started.
        jobs = SweepDir(sweep_dir).jobs_dir
        self.job_idx = 1 + max((int(p.stem) for p in jobs.glob("*.json") if p.stem.isdigit()), default=-1)
        distributions = {p.key: p.distribution for p in space}
        all_returns: list[JobReturn] = []
        while True:
            batch = [pending.pop(0) for _ in range(min(self.n_jobs, len(pending)))]
            while len(batch) < self.n_jobs and len(study.get_trials(deepcopy=False)) < self.n_trials:
                trial = study.ask(distributions)
                batch.append((trial.number, dict(trial.params)))
            if not batch:
                break
            overrides = [self._overrides(fixed, space, name, spec, n, p) for n, p in batch]
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except Refused:  # the sequential launcher: a refused job ends its launch, not the search
                pending[:0] = self._after_refusal(study, batch)
                self.job_idx += len(batch)
                continue
            for i, ((number, _), ret) in enumerate(zip(batch, returns, strict=True)):
                self._tell(study, number, ret, self.job_idx + i)
            self.job_idx += len(returns)
            all_returns.extend(returns)
        self._results(study, spec, sweep_dir)
        return all_returns

    def _after_refusal(self, study: Any, batch: list[tuple[int, dict[str, Any]]]) -> list[tuple[int, dict[str, Any]]]:
        """A job of the batch was refused (bad input, exit 2) inside the launching process: that trial failed;
        the ones before it told the study themselves; the ones after it never started and go again."""
        import optuna

        sweep = SweepDir(str(self.config.hydra.sweep.dir))  # type: ignore[union-attr]
        again = []
        for i, (number, params) in enumerate(batch):
            if study.get_trials(deepcopy=False)[number].state != optuna.trial.TrialState.RUNNING:
                continue
            event = sweep.event(self.job_idx + i)
            if event is not None and event.event == "refused":
                log.warning("trial %d refused: %s", number, event.error)
                study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            elif event is None:
                again.append((number, params))
        return again

    def _tell(self, study: Any, number: int, ret: JobReturn, job_num: int) -> None:
        """Record a trial's result from its job's return (its job told the study already when it could)."""
        import optuna

        states = optuna.trial.TrialState
        try:
            value = ret.return_value  # a failed job's exception is raised here
        except Exception as exc:  # noqa: BLE001 - whatever the job raised: the trial failed
            value = exc
        if ret.status == JobStatus.FAILED:
            event = SweepDir(str(self.config.hydra.sweep.dir)).event(job_num)  # type: ignore[union-attr]
            if event is not None and event.event in ("interrupted", "busy"):
                log.warning("trial %d %s: it stays running and the same command re-launches it", number, event.event)
                return
            log.warning("trial %d failed: %s", number, str(value).strip().splitlines()[-1:] or value)
            study.tell(number, state=states.FAIL, skip_if_finished=True)
            return
        if isinstance(value, Summary):
            if value.status == Status.PRUNED:
                study.tell(number, state=states.PRUNED, skip_if_finished=True)
            elif value.status in (Status.DONE, Status.SKIPPED) and value.objective is not None:
                study.tell(number, float(value.objective), skip_if_finished=True)
            elif value.status in (Status.BUSY, Status.INTERRUPTED):
                log.warning("trial %d: %s (%s); it stays running", number, value.status.value, value.holder or "")
            else:
                study.tell(number, state=states.FAIL, skip_if_finished=True)
            return
        try:
            study.tell(number, float(value), skip_if_finished=True)
        except (TypeError, ValueError):
            log.warning("trial %d returned %r, not a number: failed", number, value)
            study.tell(number, state=states.FAIL, skip_if_finished=True)

    def _results(self, study: Any, spec: str, sweep_dir: Path) -> None:
        """optimization_results.yaml and the closing lines: trial counts, the best trial, where to look."""
        import optuna

        trials = study.get_trials(deepcopy=False)
        counts: dict[str, int] = {}
        for t in trials:
            counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
        done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        best = study.best_trial if done else None
        results = {"name": "optuna", "study": study.study_name, "storage": spec, "n_trials": len(trials),
                   "states": counts, "best_trial": best.number if best else None,
                   "best_params": dict(best.params) if best else None, "best_value": best.value if best else None}
        OmegaConf.save(OmegaConf.create(results), sweep_dir / RESULTS)
        where_ = where(sweep_dir)
        lines = [f"study {study.study_name}: {len(trials)}/{self.n_trials} trials ("
                 + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"]
        if best is not None:
            lines.append(f"  best: trial {best.number} ({hpo.trial_dir(best.number)}), value {best.value:.6g}: "
                         + " ".join(f"{k}={v}" for k, v in best.params.items()))
        lines.append(f"  trials: python -m rlexp status {where_}")
        lines.append(f"  dashboard: optuna-dashboard {hpo.dashboard_arg(spec)}")
        print("\n".join(lines), flush=True)

