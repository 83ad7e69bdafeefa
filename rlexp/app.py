"""The training app: `rlexp-train +experiment=NAME [overrides]` (installed) = `python run.py ...` (checkout).

The configs ship inside the package (rlexp/conf/, found by Hydra as `pkg://rlexp.conf`), so an installed
wheel composes the same experiments as a checkout. Add -m for sweeps, --help for the groups and options.

Every job returns its rlexp.status.Summary. It carries the run's objective (config key `objective`,
rlexp.hpo), and float(summary) is that objective: hydra-optuna-sweeper, which reads float(job return), drives
`-m hparams_search=...` searches, while launchers and other sweepers keep the whole Summary (status, metrics,
run directory). A run without a result has no objective, and float() raises: Optuna records a failed trial.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

import rlexp  # noqa: F401  - sets MUJOCO_GL before any env is created
from rlexp import hpo
from rlexp.errors import ConfigError
from rlexp.status import Exit, Status, Summary

log = logging.getLogger("rlexp")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Summary:
    """Run the composed task; exit with its status's code (rlexp.status.Exit) outside of sweeps."""
    from rlexp.runner import run_task

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        objective = hpo.check(cfg.objective)
        summary = run_task(cfg, run_dir)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(Exit.BAD_INPUT)
    if summary.status in (Status.DONE, Status.SKIPPED):  # a skipped run reports its eval.json's numbers
        summary.objective = hpo.objective(objective, vars(summary))
    code = summary.status.exit_code
    if code == Exit.BUSY and HydraConfig.get().mode == RunMode.MULTIRUN:
        return summary  # a sweep goes on with its other jobs; a single command says it did not run
    if code != Exit.OK:
        sys.exit(code)
    return summary


if __name__ == "__main__":
    main()
