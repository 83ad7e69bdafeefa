"""rlexp entry point: `python run.py +experiment=NAME [overrides]` (add -m for sweeps)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import rlexp  # noqa: F401  - sets MUJOCO_GL before any env is created
from rlexp.errors import ConfigError
from rlexp.status import BUSY_EXIT, CONFIG_ERROR_EXIT, FAILED_EXIT, INTERRUPTED_EXIT

log = logging.getLogger("rlexp")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> dict:
    from rlexp.runner import run_task

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = run_task(cfg, run_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(CONFIG_ERROR_EXIT)
    status = summary.get("status")
    if status == "interrupted":
        sys.exit(INTERRUPTED_EXIT)
    if status == "failed":
        sys.exit(FAILED_EXIT)
    if status == "busy" and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(BUSY_EXIT)  # a sweep goes on with its other jobs; a single command says it did not run
    return summary


if __name__ == "__main__":
    main()
