"""Dispatch a composed config to its task (rlexp.tasks.REGISTRY) and print the one-line summary."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from rlexp.spec import RunSpec
from rlexp.status import Summary

log = logging.getLogger("rlexp")


def run_task(cfg: DictConfig, run_dir: Path) -> Summary:
    spec = RunSpec.of(cfg)  # validates: a bad value is refused before torch and the envs are imported (~2-3 s)
    from rlexp import tasks

    task = tasks.get(cfg.task)
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    summary = task.run(spec, run_dir)
    log.info(task.summary_line(summary))
    return summary
