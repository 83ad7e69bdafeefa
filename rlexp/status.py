"""How a command ended: the status of a run and the exit code that goes with it.

Shared by run.py (its exit code), the tasks (their summaries), the launchers (a stopped job is requeued) and
rlexp's Optuna sweeper (a Summary converts to its objective with float(), rlexp.hpo).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Any


class Exit(IntEnum):
    OK = 0
    FAILED = 1
    BAD_INPUT = 2  # one line on stderr, nothing written
    INTERRUPTED = 3  # stopped by a signal after checkpointing: resume it
    BUSY = 4  # another process trains in that run directory
    PRUNED = 5  # an Optuna trial stopped by its study's pruner after checkpointing (rlexp.hpo)


class Refused(SystemExit):
    """Bad input: exit code 2 with `reason`, the one line printed on stderr (a sweep records it for the job)."""

    def __init__(self, reason: str) -> None:
        super().__init__(Exit.BAD_INPUT)
        self.reason = reason


ALREADY_FINISHED = "already_finished"  # Summary.extra: resume= of a finished run asked for nothing more


class Status(StrEnum):
    DONE = "done"
    SKIPPED = "skipped"  # already finished for this config
    INTERRUPTED = "interrupted"
    BUSY = "busy"
    FAILED = "failed"
    PRUNED = "pruned"  # a search trial its pruner stopped: checkpointed, never resumed by the search

    @property
    def exit_code(self) -> Exit:
        return {Status.INTERRUPTED: Exit.INTERRUPTED, Status.BUSY: Exit.BUSY,
                Status.FAILED: Exit.FAILED, Status.PRUNED: Exit.PRUNED}.get(self, Exit.OK)


@dataclass
class Summary:
    """What a task reports: its status, where it wrote, and for training the headline numbers."""

    status: Status
    run_dir: str
    step: int | None = None
    steps_per_sec: float | None = None
    success_rate: float | None = None
    return_mean: float | None = None
    return_std: float | None = None
    final_distance_mean: float | None = None
    checkpoint: str | None = None  # interrupted: the checkpoint to resume from
    saved: bool = False  # interrupted: the stop's own checkpoint was written
    signal: str | None = None
    during: str | None = None  # interrupted during "evaluation"
    holder: str | None = None  # busy: who holds the run directory
    error: str | None = None  # failed: what went wrong (a full disk)
    extra: dict[str, Any] = field(default_factory=dict)  # task-specific fields (env_anatomy's checks)
    objective: float | None = None  # the config's `objective` of a finished run (rlexp.hpo), set by the app

    def __float__(self) -> float:
        """The run's objective (float(job return)); raises for a run without a result (busy, stopped, failed)."""
        if self.objective is None:
            raise TypeError(f"{self.status} run in {self.run_dir} has no objective value")
        return float(self.objective)
