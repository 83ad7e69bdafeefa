"""Submitit launchers that close two gaps of hydra-submitit-launcher 1.2.0.

* Requeue with state (Hydra issue #2042): the stock launcher's `checkpoint()` resubmits the job, but the job
  never gets to save anything. rlexp's training already turns SIGUSR2/SIGTERM into "checkpoint, then stop"
  (StopFlag) and run.py then exits with code 3. Here that exit is handed to submitit's own USR2 handler,
  which dumps a resubmission of the same job and requeues it (SLURM: `scontrol requeue`; local: exit 144,
  restarted by submitit's controller). The requeued job lands in the same run directory and train()
  resumes from its own last checkpoint; a finished run is skipped by config hash.
* Bounded local parallelism: submitit's local executor starts every job of an array at once; `local`
  keeps at most `max_parallel` jobs running.

Both put the project root on PYTHONPATH so jobs started from any working directory can unpickle rlexp.
Their configs (`hydra/launcher=local|slurm|submitit_*`) and registration live in config.py.
"""

import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf

from rlexp.status import Exit

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


def _project_on_pythonpath() -> None:
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *parts])


def _requeue_via_submitit() -> None:
    """Run submitit's timeout/preemption handler now that our checkpoint is on disk.

    It calls the launcher's `checkpoint()` (a resubmission with the same arguments), counts timeouts
    against `max_num_timeout`, requeues and exits; if it may not requeue it raises UncompletedJobError,
    which marks the job failed. Outside a submitit job (no handler installed) it does nothing.
    """
    import submitit
    from submitit.core.job_environment import SignalHandler

    env = submitit.JobEnvironment()
    sig = env._usr_sig()
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


class _RequeueOnInterrupt:
    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        import submitit

        with _SignalLog() as signals:
            try:
                return super().__call__(*args, **kwargs)  # type: ignore[misc]
            except SystemExit as exc:
                usr_sig = submitit.JobEnvironment()._usr_sig()
                if exc.code == Exit.INTERRUPTED and int(usr_sig) in signals.received():
                    _requeue_via_submitit()
                raise


class RlexpSlurmLauncher(_RequeueOnInterrupt, SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        _project_on_pythonpath()
        return super().launch(job_overrides, initial_job_idx)


class RlexpLocalLauncher(_RequeueOnInterrupt, LocalLauncher):
    def __init__(self, max_parallel: int = 2, **params: Any) -> None:
        super().__init__(**params)
        if int(max_parallel) < 1:
            raise ValueError(f"hydra.launcher.max_parallel must be >= 1, got {max_parallel}")
        self.max_parallel = int(max_parallel)

    def _executor(self) -> Any:
        import submitit

        params = dict(self.params)
        folder = params.pop("submitit_folder")
        max_num_timeout = params.pop("max_num_timeout", 3)
        executor = submitit.AutoExecutor(
            folder=folder, cluster="local", local_max_num_timeout=max_num_timeout
        )
        base = set(OmegaConf.structured(LocalQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"local_{k}": v for k, v in params.items() if k != "_target_"}
        )
        return executor

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        """Like the stock launcher, but a rolling window of at most max_parallel jobs."""
        assert self.config is not None
        _project_on_pythonpath()
        # Jobs share this machine's cores: without a bound each would start one torch thread per core.
        os.environ.setdefault("OMP_NUM_THREADS", str(self.params.get("cpus_per_task") or 1))
        executor = self._executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        log.info(
            "local sweep of %d jobs, at most %d at once, in %s",
            len(job_overrides),
            self.max_parallel,
            sweep_dir,
        )
        queue = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            queue.append(
                (idx, (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
            )
        running: list[tuple[int, Any]] = []
        results: dict[int, JobReturn] = {}
        while queue or running:
            while queue and len(running) < self.max_parallel:
                idx, args = queue.pop(0)
                running.append((idx, executor.submit(self, *args)))
            time.sleep(0.5)
            for idx, job in [r for r in running if r[1].done()]:
                running.remove((idx, job))
                try:
                    results[idx] = job.results()[0]
                except Exception as exc:  # keep the other jobs going; Hydra raises it at the end
                    log.error("job #%d failed: %s", idx, exc)
                    ret = JobReturn()
                    ret.status, ret.return_value = JobStatus.FAILED, exc
                    results[idx] = ret
        return [results[i] for i in sorted(results)]
