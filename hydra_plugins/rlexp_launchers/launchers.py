"""Launchers for rlexp sweeps: say what every job did, and close two gaps of hydra-submitit-launcher 1.2.0.

* Live status: each launcher writes the planned jobs into the sweep directory before the first one starts
  and each job records its start and its end there (rlexp/sweepdir.py), where `python -m rlexp status DIR`
  reads them; the launching process prints one line per job as it ends and a closing table (console.py).
* Requeue with state (Hydra issue #2042): the stock launcher's `checkpoint()` resubmits the job, but the job
  never gets to save anything. rlexp's training already turns SIGUSR2/SIGTERM into "checkpoint, then stop"
  (StopFlag) and run.py then exits with code 3. Here that exit is handed to submitit's own USR2 handler,
  which dumps a resubmission of the same job and requeues it (SLURM: `scontrol requeue`; local: exit 144,
  restarted by submitit's controller). The requeued job lands in the same run directory and train()
  resumes from its own last checkpoint; a finished run is skipped by config hash.
* Bounded local parallelism: submitit's local executor starts every job of an array at once; `local`
  keeps at most `max_parallel` jobs running.
* Submit and return (Hydra issue #2479): `slurm` with `wait=false` submits the arrays and exits.
* Sweeps of any size (submitit issue 1624): `slurm` submits a sweep as arrays within the cluster's MaxArraySize,
  with `array_parallelism` a limit on all of them together (arrays.py).

The submitit launchers put the project root on PYTHONPATH so jobs started from any working directory can
unpickle rlexp. Their configs (`hydra/launcher=sequential|local|slurm|submitit_*`) live in config.py.
"""

import logging
import os
import re
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import DictConfig, OmegaConf, open_dict

from hydra_plugins.rlexp_launchers.arrays import SLURM_DEFAULT_MAX_ARRAY_SIZE, cluster_max_array_size, split
from hydra_plugins.rlexp_launchers.console import SweepConsole, event_of, event_of_exit
from rlexp.status import Exit
from rlexp.sweepdir import JobEvent, PlannedJob, SweepDir, error_line, where

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


def _project_on_pythonpath() -> None:
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *parts])


# SLURM job states after which a job never runs again ("JOB STATE CODES" in squeue(1) and sacct(1)). PREEMPTED is
# left out, as submitit leaves it out: a preempted job may be requeued.
SLURM_FINAL = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                         "TIMEOUT"})


def final_states_watcher() -> Any:
    """submitit's sacct watcher whose `is_done` means a final SLURM state.

    submitit 1.5's own `is_done` counts every state outside READY, PENDING, RUNNING, UNKNOWN, REQUEUED,
    COMPLETING and PREEMPTED as finished, and then stops asking sacct about the job. A job passing through
    REQUEUE_HOLD or SPECIAL_EXIT (both seen here during a requeue), CONFIGURING (a node booting), SUSPENDED,
    STOPPED or SIGNALING was collected as failed while it ran on, and the sweep ended without it."""
    from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

    class FinalStatesWatcher(SlurmInfoWatcher):
        def is_done(self, job_id: str, mode: str = "standard") -> bool:
            state = self.get_state(job_id, mode=mode).split()  # "CANCELLED by 0" -> CANCELLED
            return bool(state) and state[0].upper() in SLURM_FINAL

    return FinalStatesWatcher(delay_s=SlurmJob.watcher._delay_s)


def usr_signal() -> signal.Signals:
    """The signal submitit requeues on (SUBMITIT_PREEMPT_SIGNAL, default USR2)."""
    import submitit

    return signal.Signals[f"SIG{submitit.JobEnvironment.USR_SIG}"]


def _requeue_via_submitit() -> None:
    """Run submitit's timeout/preemption handler now that our checkpoint is on disk.

    It calls the launcher's `checkpoint()` (a resubmission with the same arguments), counts timeouts
    against `max_num_timeout`, requeues and exits; if it may not requeue it raises UncompletedJobError,
    which marks the job failed. Outside a submitit job (no handler installed) it does nothing.
    """
    import submitit
    from submitit.core.job_environment import SignalHandler

    env = submitit.JobEnvironment()
    sig = usr_signal()
    handler = signal.getsignal(sig)
    if getattr(handler, "__func__", None) is SignalHandler.checkpoint_and_try_requeue:
        log.warning(
            "run stopped after checkpointing on %s; asking submitit to requeue job %s",
            signal.Signals(sig).name,
            env.job_id,
        )
        handler(sig, None)


class _SignalLog:
    """Which signals reached a Python handler while the job ran, whoever's handler it was.

    Training's StopFlag replaces submitit's handlers, so the signal that stopped a run is only visible
    here, through the interpreter's wakeup fd (one byte per signal). It tells a time limit (USR2, requeue)
    from `scancel` (TERM, do not requeue).
    """

    def __enter__(self) -> "_SignalLog":
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        try:
            self._old = signal.set_wakeup_fd(self._w, warn_on_full_buffer=False)
        except ValueError:  # not the main thread: no signals to see
            self._old = None
        return self

    def received(self) -> set[int]:
        try:
            return set(os.read(self._r, 4096))
        except BlockingIOError:
            return set()

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.set_wakeup_fd(self._old)
        os.close(self._r)
        os.close(self._w)


def _record(sweep: SweepDir, event: JobEvent) -> None:
    """Write a job's record; a full or read-only disk costs the status command a fact, never the job."""
    try:
        sweep.record(event)
    except OSError as exc:
        log.warning("could not record job #%d in %s: %s", event.num, sweep.state, exc)


class _Sweep:
    """Launcher-side steps shared by our launchers: the sweep directory, its plan, the console."""

    config: DictConfig | None
    hydra_context: Any
    _EXECUTOR = "none"

    def _sweep_dir(self) -> SweepDir:
        """Create the sweep directory; `hydra.sweep.mode` (octal, e.g. 775) sets its permissions, as in Hydra's
        stock launchers."""
        assert self.config is not None
        root = Path(str(self.config.hydra.sweep.dir))
        root.mkdir(parents=True, exist_ok=True)
        if self.config.hydra.sweep.get("mode") is not None:
            os.chmod(root, mode=int(str(self.config.hydra.sweep.mode), 8))
        self.sweep_root = str(root.resolve())  # travels with the pickled launcher to the jobs
        return SweepDir(root)

    def _plan(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[PlannedJob]:
        """The jobs with the run directory each will write to (hydra.sweep.subdir resolved per job)."""
        return [PlannedJob(num=initial_job_idx + i, subdir=self._subdir(list(o), initial_job_idx + i),
                           overrides=list(o)) for i, o in enumerate(job_overrides)]

    def _subdir(self, overrides: list[str], idx: int) -> str | None:
        """Job idx's `hydra.sweep.subdir`. A subdir made of `hydra.job.*` keys only (the default, and rlexp's
        `${hydra.job.override_dirname}`) is resolved as Hydra will, from the overrides alone (~1 ms); anything
        else composes the job's config (~0.3 s a job). None if it cannot be resolved (the job will say why)."""
        from hydra._internal.config_loader_impl import get_overrides_dirname
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.override_parser.overrides_parser import OverridesParser

        assert self.config is not None and self.hydra_context is not None
        raw = OmegaConf.to_container(self.config.hydra.sweep, resolve=False).get("subdir")
        if isinstance(raw, str) and all(r.startswith("hydra.job.") for r in re.findall(r"\$\{([^}]*)\}", raw)):
            try:
                job = OmegaConf.to_container(self.config.hydra.job, resolve=False)
                od = self.config.hydra.job.config.override_dirname
                parsed = [o for o in OverridesParser.create().parse_overrides(overrides) if not o.is_hydra_override()]
                job.update(num=idx, id=f"job_id_for_{idx}", override_dirname=get_overrides_dirname(
                    overrides=parsed, exclude_keys=list(od.exclude_keys), item_sep=od.item_sep, kv_sep=od.kv_sep))
                return str(OmegaConf.create({"hydra": {"job": job, "sweep": {"subdir": raw}}}).hydra.sweep.subdir)
            except Exception as exc:  # an interpolation outside hydra.job: compose below
                log.debug("job #%d: subdir from the overrides failed: %s", idx, exc)
        saved = HydraConfig.instance().cfg
        try:
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            with open_dict(cfg.hydra.job):
                cfg.hydra.job.num, cfg.hydra.job.id = idx, f"job_id_for_{idx}"
            HydraConfig.instance().set_config(cfg)
            return str(OmegaConf.select(cfg, "hydra.sweep.subdir"))
        except Exception as exc:
            log.debug("job #%d: no run directory name: %s", idx, exc)
            return None
        finally:
            if saved is not None:
                HydraConfig.instance().set_config(saved)

    def _write_plan(self, sweep: SweepDir, jobs: list[PlannedJob], **info: Any) -> None:
        try:
            sweep.write_plan(jobs, launcher=type(self).__name__, **info)
        except OSError as exc:
            log.warning("could not write the job list into %s: %s", sweep.state, exc)

    def _executor(self) -> Any:
        """submitit's executor for this launcher's cluster, from the launcher's params (as the stock launcher)."""
        import submitit

        params = dict(self.params)  # type: ignore[attr-defined]
        folder = params.pop("submitit_folder")
        max_num_timeout = params.pop("max_num_timeout", 0)
        executor = submitit.AutoExecutor(
            folder=folder, cluster=self._EXECUTOR, **{f"{self._EXECUTOR}_max_num_timeout": max_num_timeout}
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items() if k != "_target_"}
        )
        return executor

    def _job_args(self, job: PlannedJob) -> tuple:
        return (job.overrides, "hydra.sweep.dir", job.num, f"job_id_for_{job.num}", Singleton.get_state())

    def _wait_all(self, sweep: SweepDir, jobs: list[tuple[PlannedJob, Any]], console: SweepConsole,
                  submit_more: Any = None) -> dict[int, JobReturn]:
        """Poll submitted jobs; print each one's line as it ends. `submit_more()` tops up a rolling window."""
        running = [(job, sub, time.time()) for job, sub in jobs]
        results: dict[int, JobReturn] = {}
        while True:
            if submit_more is not None:
                submit_more(running)
            if not running:
                break
            time.sleep(0.5)
            for entry in [r for r in running if self._finished(sweep, r[0], r[1])]:
                running.remove(entry)
                results[entry[0].num] = _collect(sweep, console, *entry)
        return results

    def _finished(self, sweep: SweepDir, job: PlannedJob, sub: Any) -> bool:
        return bool(sub.done())

    def _close(self, sweep: SweepDir) -> None:
        """Remove the empty `.submitit/%j` folder submitit makes from the unexpanded folder pattern."""
        assert self.config is not None
        pattern = Path(str(self.params.get("submitit_folder", "")))  # type: ignore[attr-defined]
        for folder in (pattern, *pattern.parents):
            if "%" in folder.name and folder.is_dir():
                try:
                    folder.rmdir()
                except OSError:  # not empty: someone's files, leave them
                    pass


def _collect(sweep: SweepDir, console: SweepConsole, job: PlannedJob, sub: Any, t0: float) -> JobReturn:
    """The JobReturn of a finished submitit job, its line printed and, if the job could not, its record."""
    wall = time.time() - t0
    try:
        ret = sub.results()[0]
        event = event_of(ret, job.num, wall, job.subdir)
        event.job_id = sub.job_id
    except Exception as exc:  # no result: killed, cancelled, or exited (run.py's exit codes)
        ret = JobReturn(overrides=job.overrides)
        ret.status, ret.return_value = JobStatus.FAILED, exc
        prev = sweep.event(job.num)
        if prev is not None and prev.event in ("interrupted", "busy", "refused") and prev.job_id == sub.job_id:
            event = prev  # the job said why it stopped
            event.wall_s = wall
        else:
            try:
                text = sub.stderr() or ""
            except Exception:
                text = ""
            line = error_line(text) or error_line(str(exc)) or f"{type(exc).__name__}"
            event = JobEvent(num=job.num, event="failed", subdir=job.subdir, wall_s=wall, error=line,
                             job_id=sub.job_id)
            _record(sweep, event)
    console.job_ended(event)
    return ret


class _JobSide:
    """In the job's own process (submitit): record its start and end; requeue a run stopped for a time limit."""

    config: DictConfig | None

    def __call__(self, sweep_overrides: list[str], job_dir_key: str, job_num: int, job_id: str,
                 singleton_state: dict) -> JobReturn:
        import submitit

        assert self.config is not None
        env_id = submitit.JobEnvironment().job_id
        sweep = SweepDir(self.sweep_root)  # type: ignore[attr-defined]  # set by launch()
        plan = sweep.read_plan()
        subdir = next((j.subdir for j in plan[0] if j.num == job_num), None) if plan else None
        _record(sweep, JobEvent(num=job_num, event="started", subdir=subdir, job_id=env_id))
        t0 = time.time()
        with _SignalLog() as signals:
            try:
                ret = super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)  # type: ignore[misc]
            except SystemExit as exc:
                event = event_of_exit(job_num, exc, time.time() - t0, subdir)
                event.job_id = env_id
                _record(sweep, event)
                usr_sig = usr_signal()
                if exc.code == Exit.INTERRUPTED and int(usr_sig) in signals.received():
                    _requeue_via_submitit()
                raise
        event = event_of(ret, job_num, time.time() - t0, subdir)
        event.job_id = env_id
        _record(sweep, event)
        return ret


class RlexpSlurmLauncher(_JobSide, _Sweep, SlurmLauncher):
    _EXECUTOR = "slurm"
    # How long a job may stay outside a final state after writing its result (COMPLETING, sacct lagging), or
    # go without its own end record after SLURM reports it final without a result (a cancelled job checkpoints
    # within SLURM's KillWait), before the sweep collects it anyway.
    SETTLE_S = 120.0

    def __init__(self, wait: bool = True, max_array_size: int | None = None, **params: Any) -> None:
        super().__init__(**params)
        self.wait = bool(wait)
        if max_array_size is not None and int(max_array_size) < 0:
            raise ValueError(f"hydra.launcher.max_array_size must be >= 0 (null: the cluster's), got {max_array_size}")
        if int(params.get("array_parallelism") or 1) < 1:
            raise ValueError(f"hydra.launcher.array_parallelism must be >= 1, got {params['array_parallelism']}")
        self.max_array_size = None if max_array_size is None else int(max_array_size)
        self._seen: dict[str, float] = {}  # job id -> when it first looked done to submitit (monotonic)
        self._last_forced = float("-inf")

    def _finished(self, sweep: SweepDir, job: PlannedJob, sub: Any) -> bool:
        """Done once SLURM says so and the job has said its last word, not as soon as submitit's `done()` is.
        `done()` is true once the result file exists, while the job may still be COMPLETING: a sweep that
        returned then left a `scancel` or `sacct` right after it meeting a job still running. And a cancelled
        job is final in sacct at once, while it still writes its stop checkpoint and its "interrupted" record.
        sacct is asked afresh at most every 2 s while a job waits here."""
        from submitit.slurm.slurm import SlurmInfoWatcher

        if not sub.done():
            return False
        if not isinstance(getattr(sub, "watcher", None), SlurmInfoWatcher):
            return True
        now = time.monotonic()
        first = self._seen.setdefault(str(sub.job_id), now)
        if now - self._last_forced >= 2.0:
            self._last_forced = now
            sub.watcher.update()
        if sub.paths.result_pickle.exists():
            if sub.watcher.is_done(sub.job_id, mode="cache"):
                return True
            if self._last_forced > first and not sub.watcher.get_info(sub.job_id, mode="cache"):
                return True  # a fresh sacct does not know the job (accounting off): the result is all there is
            why = f"SLURM still reports {sub.watcher.get_state(sub.job_id, mode='cache')}"
        else:  # final without a result: wait for the job's own record of how it ended
            prev = sweep.event(job.num)
            if prev is None or prev.job_id != str(sub.job_id) or prev.event != "started":
                return True
            why = "the job has not recorded how it ended"
        if now - first > self.SETTLE_S:
            log.warning("collecting job %s after %.0f s although %s", sub.job_id, self.SETTLE_S, why)
            return True
        return False

    def _array_limit(self) -> int:
        """Jobs per array: `max_array_size`, else the cluster's MaxArraySize, else SLURM's default (with a warning)."""
        if self.max_array_size is not None:
            return self.max_array_size
        found = cluster_max_array_size()
        if found is None:
            log.warning("could not read MaxArraySize from `scontrol show config`; assuming SLURM's default %d "
                        "(hydra.launcher.max_array_size=N sets it)", SLURM_DEFAULT_MAX_ARRAY_SIZE)
            return SLURM_DEFAULT_MAX_ARRAY_SIZE
        return found

    def _submit_pieces(self, sweep: SweepDir, planned: list[PlannedJob], executor: Any) -> tuple[list[Any], list[str]]:
        """Submit the sweep as arrays within MaxArraySize (arrays.py: lanes, throttles, dependencies), each
        through submitit's `map_array`; the job list is rewritten after each array, so a submission that fails
        half-way leaves the ids of what was submitted."""
        pieces = split(len(planned), self._array_limit(), int(self.params.get("array_parallelism") or 1))  # type: ignore[attr-defined]
        extra = dict(self.params.get("additional_parameters") or {})  # type: ignore[attr-defined]
        own_dep = extra.pop("dependency", None)  # the user's own dependency holds for every piece
        watcher = final_states_watcher()
        subs: list[Any] = []
        arrays: list[str] = []
        for piece in pieces:
            deps = [d for d in (f"afterany:{arrays[piece.after]}" if piece.after is not None else None, own_dep) if d]
            executor.update_parameters(slurm_array_parallelism=piece.parallelism,
                                       slurm_additional_parameters={**extra, **({"dependency": ",".join(deps)}
                                                                                if deps else {})})
            jobs = planned[piece.start:piece.stop]
            got = executor.map_array(self, *zip(*[self._job_args(j) for j in jobs], strict=True))
            for job, sub in zip(jobs, got, strict=True):
                job.job_id = sub.job_id
                sub.watcher = watcher  # on the instance: submitit's class-wide watcher stays as it is
            arrays.append(str(got[0].job_id).split("_")[0])
            subs.extend(got)
            self._write_plan(sweep, planned, slurm_array=arrays[0], slurm_arrays=arrays)
            log.info("array %s: jobs #%d-#%d, at most %d at once%s", arrays[-1], jobs[0].num, jobs[-1].num,
                     min(len(piece), piece.parallelism), f", after array {arrays[piece.after]}"
                     if piece.after is not None else "")
        return subs, arrays

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Arrays within the cluster's MaxArraySize; with wait=false return once all are submitted (Hydra #2479)."""
        assert self.config is not None
        _project_on_pythonpath()
        sweep = self._sweep_dir()
        planned = self._plan(job_overrides, initial_job_idx)
        if not planned:
            return []
        self._write_plan(sweep, planned)  # before submitting: a job may start (and record) at once
        executor = self._executor()
        log.info("SLURM sweep of %d jobs in %s", len(planned), sweep.root)
        for job in planned:
            log.info("\t#%d : %s", job.num, " ".join(filter_overrides(job.overrides)))
        try:
            subs, arrays = self._submit_pieces(sweep, planned, executor)
        finally:
            self._close(sweep)
        if not self.wait:
            what = f"SLURM array {arrays[0]}" if len(arrays) == 1 else f"{len(arrays)} SLURM arrays {', '.join(arrays)}"
            print(f"submitted {len(subs)} jobs as {what} (hydra.launcher.wait=false); follow them with:\n"
                  f"  python -m rlexp status {where(sweep.root)}", flush=True)
            return [JobReturn(overrides=j.overrides, status=JobStatus.COMPLETED, _return_value=f"submitted {s.job_id}")
                    for j, s in zip(planned, subs, strict=True)]
        console = SweepConsole(sweep, len(planned))
        try:
            results = self._wait_all(sweep, list(zip(planned, subs, strict=True)), console)
        finally:
            console.close()
        return [results[j.num] for j in planned]


class RlexpLocalLauncher(_JobSide, _Sweep, LocalLauncher):
    _EXECUTOR = "local"

    def __init__(self, max_parallel: int = 2, **params: Any) -> None:
        super().__init__(**params)
        if int(max_parallel) < 1:
            raise ValueError(f"hydra.launcher.max_parallel must be >= 1, got {max_parallel}")
        self.max_parallel = int(max_parallel)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Like the stock launcher, but a rolling window of at most max_parallel jobs."""
        assert self.config is not None
        _project_on_pythonpath()
        # Jobs share this machine's cores: without a bound each would start one torch thread per core.
        os.environ.setdefault("OMP_NUM_THREADS", str(self.params.get("cpus_per_task") or 1))
        sweep = self._sweep_dir()
        planned = self._plan(job_overrides, initial_job_idx)
        self._write_plan(sweep, planned, max_parallel=self.max_parallel)
        executor = self._executor()
        log.info("local sweep of %d jobs, at most %d at once, in %s", len(planned), self.max_parallel, sweep.root)
        for job in planned:
            log.info("\t#%d : %s", job.num, " ".join(filter_overrides(job.overrides)))
        queue = list(planned)
        console = SweepConsole(sweep, len(planned))

        def submit_more(running: list) -> None:
            submitted = False
            while queue and len(running) < self.max_parallel:
                job = queue.pop(0)
                sub = executor.submit(self, *self._job_args(job))
                job.job_id = sub.job_id
                running.append((job, sub, time.time()))
                submitted = True
            if submitted:
                self._write_plan(sweep, planned, max_parallel=self.max_parallel)

        try:
            results = self._wait_all(sweep, [], console, submit_more)
        finally:
            console.close()
            self._close(sweep)
        return [results[j.num] for j in planned]


class RlexpSequentialLauncher(_Sweep, BasicLauncher):
    """Hydra's basic launcher (jobs one after another, in this process), plus the plan, records and lines."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep = self._sweep_dir()
        planned = self._plan(job_overrides, initial_job_idx)
        self._write_plan(sweep, planned)
        log.info(f"Launching {len(planned)} jobs locally")
        console = SweepConsole(sweep, len(planned))
        runs: list[JobReturn] = []
        try:
            for job in planned:
                log.info("\t#%d : %s", job.num, " ".join(filter_overrides(job.overrides)))
                sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, job.overrides)
                with open_dict(sweep_config):
                    sweep_config.hydra.job.id = job.num
                    sweep_config.hydra.job.num = job.num
                _record(sweep, JobEvent(num=job.num, event="started", subdir=job.subdir))
                t0 = time.time()
                try:
                    ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                  config=sweep_config, job_dir_key="hydra.sweep.dir",
                                  job_subdir_key="hydra.sweep.subdir")
                except SystemExit as exc:  # run.py's exit codes: a stop (3) or bad input (2) ends the sweep
                    event = event_of_exit(job.num, exc, time.time() - t0, job.subdir)
                    _record(sweep, event)
                    console.job_ended(event)
                    raise
                event = event_of(ret, job.num, time.time() - t0, job.subdir)
                _record(sweep, event)
                console.job_ended(event)
                runs.append(ret)
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        finally:
            console.close()
        return runs
