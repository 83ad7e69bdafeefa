"""Dispatch a composed config to its task and print the one-line summary."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rlexp.config import validate

log = logging.getLogger("rlexp")


def run_task(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from rlexp import tasks, train

    validate(cfg)
    if cfg.get("threads"):
        import torch

        torch.set_num_threads(int(cfg.threads))
    if cfg.task == "env_anatomy":
        summary = tasks.env_anatomy(cfg, run_dir)
        check = summary["reward_check"]
        verdict = "OK" if check["ok"] else f"FAILED ({len(check['mismatches'])} mismatches)"
        line = (f"reward check {verdict}: {check['n_checks']} checks over {check['n_steps']} steps, "
                f"{check['reward_type']} reward, threshold {check['threshold']}, atol {check['atol']} | random policy: "
                f"success {summary['random_success_rate']:.0%}, return {summary['random_return_mean']:.2f} | "
                f"artifacts: {summary['run_dir']}")
    else:
        runner = tasks.proof_of_life if cfg.task == "proof_of_life" else train.train
        summary = runner(cfg, run_dir)
        line = train.summary_line(summary)
    log.info(line)
    return summary
