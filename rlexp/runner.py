"""Dispatch a composed config to its task (rlexp.tasks.REGISTRY) and print the one-line summary."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from rlexp.diskfull import CONSOLE_ONLY
from rlexp.execution import set_threads
from rlexp.spec import RunSpec
from rlexp.status import ALREADY_FINISHED, Summary

log = logging.getLogger("rlexp")


def run_task(cfg: DictConfig, run_dir: Path) -> Summary:
    spec = RunSpec.of(cfg)  # validates: a bad value is refused before torch and the envs are imported (~2-3 s)
    from rlexp import tasks

    task = tasks.get(cfg.task)
    set_threads(cfg.get("threads"))
    summary = task.run(spec, run_dir)
    quiet = bool(summary.extra.get(ALREADY_FINISHED))  # the command wrote nothing: no run.log for it either
    log.info(task.summary_line(summary), extra={CONSOLE_ONLY: True} if quiet else None)
    return summary
