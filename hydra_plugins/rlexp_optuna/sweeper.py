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


Pending = tuple[int, dict[str, Any], list[int] | None]  # a trial to launch: number, sampled values, its seeds


def _seeds(value: Any) -> list[int] | None:
    """hydra.sweeper.seeds as distinct ints; None (or empty) for one run per trial."""
    if value is None:
        return None
    items = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, int) and not isinstance(s, bool) for s in items):
        raise ConfigError(f"hydra.sweeper.seeds={items!r}: give a list of integer seeds, e.g. [0,1,2]")
    if len(set(items)) != len(items):
        raise ConfigError(f"hydra.sweeper.seeds={list(items)}: each seed once")
    return list(items) or None


class RlexpOptunaSweeper(Sweeper):
    def __init__(self, direction: str = "maximize", study_name: str | None = None, storage: str | None = None,
                 n_trials: int = 20, n_jobs: int = 2, sampler: Any = None, pruner: Any = None,
                 params: Any = None, seeds: Any = None) -> None:
        self.direction = str(direction)
        self.study_name = study_name
        self.storage = storage
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.sampler_cfg = sampler
        self.pruner_cfg = pruner
        self.params = params
        self.seeds_cfg = seeds
        self.seeds: list[int] | None = None
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
        self.seeds = _seeds(self.seeds_cfg)
        if self.seeds and any(p.key == "seed" for p in space):
            raise ConfigError("hydra.sweeper.seeds: the seed is also searched (seed=...); search it or list seeds")
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
                   params: dict[str, Any], seeds: list[int] | None = None, seed: int | None = None) -> list[str]:
        by_key = {p.key: p for p in space}
        sampled = [(by_key.get(k) or search_space.Param("", k, None)).override(v) for k, v in params.items()]
        if seeds:
            sampled += [f"seed={seed}", f"trial.seeds=[{','.join(str(s) for s in seeds)}]"]
        keys = {s.split("=", 1)[0].lstrip("+~") for s in sampled}
        kept = [o for o in fixed if o.split("=", 1)[0].lstrip("+~") not in keys]
        return [*kept, *sampled, f"trial.number={number}", f"trial.study={_quoted(name)}",
                f"trial.storage={_quoted(spec)}"]

    def _jobs(self, batch: list[Pending]) -> list[tuple[int, list[int] | None, int | None]]:
        """(trial number, its seeds, this job's seed) for each job of a batch, in launch order: a trial's seeds
        one after another (one job a trial without seeds)."""
        return [(number, seeds, seed) for number, _, seeds in batch for seed in (seeds or [None])]

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
        pending: list[Pending] = []

        def pruned(t: Any) -> bool:  # its (first seed's) run stopped pruned: pruned.json in its run directory
            seeds = hpo.trial_seeds(t.user_attrs.get(hpo.SEEDS_ATTR))
            lead = hpo.trial_dir(t.number, seeds, seeds[0] if seeds else None)
            return (sweep_dir / lead / "pruned.json").is_file()

        if running and stale_known:
            for t in running:  # pruned, but the study was not told (its job and the command died together)
                if pruned(t):
                    study.tell(t.number, state=optuna.trial.TrialState.PRUNED, skip_if_finished=True)
            running = [t for t in running if not pruned(t)]
            # a trial keeps the seeds it was asked with, whatever hydra.sweeper.seeds says now
            pending = [(t.number, dict(t.params), hpo.trial_seeds(t.user_attrs.get(hpo.SEEDS_ATTR)))
                       for t in running]
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
                if self.seeds:
                    trial.set_user_attr(hpo.SEEDS_ATTR, self.seeds)
                batch.append((trial.number, dict(trial.params), self.seeds))
            if not batch:
                break
            params = {number: p for number, p, _ in batch}
            jobs = self._jobs(batch)
            overrides = [self._overrides(fixed, space, name, spec, n, params[n], seeds, seed)
                         for n, seeds, seed in jobs]
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except Refused:  # the sequential launcher: a refused job ends its launch, not the search
                pending[:0] = self._after_refusal(study, batch)
                self.job_idx += len(jobs)
                continue
            by_trial: dict[int, list[tuple[int | None, JobReturn, int]]] = {}
            for i, ((number, _, seed), ret) in enumerate(zip(jobs, returns, strict=True)):
                by_trial.setdefault(number, []).append((seed, ret, self.job_idx + i))
            for number, seeds, _ in [(n, s, None) for n, _, s in batch]:
                if seeds:
                    self._tell_seeds(study, number, seeds, by_trial[number], name, spec)
                else:
                    (_, ret, job_num), = by_trial[number]
                    self._tell(study, number, ret, job_num)
            self.job_idx += len(returns)
            all_returns.extend(returns)
        self._results(study, spec, sweep_dir)
        return all_returns

    def _after_refusal(self, study: Any, batch: list[Pending]) -> list[Pending]:
        """A job of the batch was refused (bad input, exit 2) inside the launching process: that trial failed;
        the ones before it told the study themselves; the ones after it never started (or not all of their seeds)
        and go again (a seed that finished is skipped then)."""
        import optuna

        sweep = SweepDir(str(self.config.hydra.sweep.dir))  # type: ignore[union-attr]
        events: dict[int, list[Any]] = {}
        for i, (number, _, _) in enumerate(self._jobs(batch)):
            events.setdefault(number, []).append(sweep.event(self.job_idx + i))
        again = []
        for number, params, seeds in batch:
            if study.get_trials(deepcopy=False)[number].state != optuna.trial.TrialState.RUNNING:
                continue
            refused = [e for e in events[number] if e is not None and e.event == "refused"]
            if refused:
                log.warning("trial %d refused: %s", number, refused[0].error)
                study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
            elif any(e is None for e in events[number]):
                again.append((number, params, seeds))
        return again

    def _tell_seeds(self, study: Any, number: int, seeds: list[int], rets: list[tuple[int | None, JobReturn, int]],
                    name: str, spec: str) -> None:
        """Record a trial of several seeds from its jobs' returns: failed if one failed, pruned if one was pruned,
        left running if one is (busy, interrupted: the same command re-launches it), else their objectives' mean,
        stored and told as each seed's job does (rlexp.hpo.TrialLink.tell), so it is told once."""
        import optuna

        states = optuna.trial.TrialState
        results: dict[int, Summary | None] = {}
        for seed, ret, job_num in rets:
            try:
                value = ret.return_value
            except Exception:  # noqa: BLE001 - whatever the job raised: the trial failed
                value = None
            if ret.status == JobStatus.FAILED:
                event = SweepDir(str(self.config.hydra.sweep.dir)).event(job_num)  # type: ignore[union-attr]
                if event is not None and event.event in ("interrupted", "busy"):
                    log.warning("trial %d seed %s %s: it stays running and the same command re-launches it",
                                number, seed, event.event)
                    return
                value = None
            results[int(seed)] = value if isinstance(value, Summary) else None  # type: ignore[arg-type]
        summaries = list(results.values())
        if any(v is None or v.status == Status.FAILED for v in summaries):
            log.warning("trial %d failed: a seed's run failed (%s)", number,
                        ", ".join(f"seed {s}: {v.status.value if v else 'failed'}" for s, v in results.items()))
            study.tell(number, state=states.FAIL, skip_if_finished=True)
        elif any(v.status == Status.PRUNED for v in summaries if v is not None):
            study.tell(number, state=states.PRUNED, skip_if_finished=True)
        elif any(v.status in (Status.BUSY, Status.INTERRUPTED) for v in summaries if v is not None):
            log.warning("trial %d: a seed's run did not finish; it stays running", number)
        elif all(v is not None and v.status in (Status.DONE, Status.SKIPPED) and v.objective is not None
                 for v in summaries):
            for seed, v in results.items():
                hpo.TrialLink(number, name, spec, str(self.config.get("objective")), seeds, seed).tell(  # type: ignore[union-attr]
                    "complete", float(v.objective))  # type: ignore[union-attr,arg-type]
        else:
            study.tell(number, state=states.FAIL, skip_if_finished=True)

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
            seeds = hpo.trial_seeds(best.user_attrs.get(hpo.SEEDS_ATTR))
            run_dir = hpo.trial_dir(best.number, seeds, "*") if seeds else hpo.trial_dir(best.number)
            lines.append(f"  best: trial {best.number} ({run_dir}), value {best.value:.6g}"
                         + (f" (mean of seeds {', '.join(map(str, seeds))})" if seeds else "") + ": "
                         + " ".join(f"{k}={v}" for k, v in best.params.items()))
        lines.append(f"  trials: python -m rlexp status {where_}")
        lines.append(f"  dashboard: optuna-dashboard {hpo.dashboard_arg(spec)}")
        print("\n".join(lines), flush=True)

