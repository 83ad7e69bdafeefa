"""The training app: `rlexp-train +experiment=NAME [overrides]` (installed) = `python run.py ...` (checkout).

The configs ship inside the package (rlexp/conf/, found by Hydra as `pkg://rlexp.conf`), so an installed
wheel composes the same experiments as a checkout. Add -m for sweeps, --help for the groups and options.

A mistake in the command is one `error:` line and exit code 2, and leaves nothing on disk (`main`):
- Hydra's composition errors (unknown experiment, option or key; many lines and exit 1 from Hydra itself) are
  raised to `main` (HYDRA_FULL_ERROR, set only while Hydra composes) and told by rlexp.config.composition_error;
- a sweep (-m) has every job composed and checked before the first one starts (rlexp.validate.check_sweep);
- a refused run removes the directories Hydra made for it (`NewDirs`), never one that existed before.

Every job returns its rlexp.status.Summary. It carries the run's objective (config key `objective`,
rlexp.hpo), and float(summary) is that objective; launchers and sweepers keep the whole Summary (status,
metrics, run directory). A run without a result has no objective, and float() raises. A run that is an Optuna
trial (`trial.number`, set by rlexp's Optuna sweeper under `-m hparams_search=...`) tells its study its result
itself (rlexp.hpo.TrialLink), so the study counts it even when the command that launched it is gone.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import rlexp  # noqa: F401  - sets MUJOCO_GL before any env is created
from rlexp import hpo
from rlexp.errors import ConfigError
from rlexp.status import ALREADY_FINISHED, Exit, Refused, Status, Summary

log = logging.getLogger("rlexp")
FULL_ERROR = "HYDRA_FULL_ERROR"  # Hydra raises its errors instead of printing them (and exiting with 1)
_raising = False  # main() set FULL_ERROR for this command's composition (never when the user set it)
_new_dirs: list[Path] = []  # this run's directory and the parents Hydra makes with it (NewDirs)


def main() -> None:
    """Run Hydra's app on the command line; any mistake in it is one `error:` line and exit code 2."""
    global _raising
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args()
    ours = args.config_path is None and args.config_name is None and args.config_dir is None
    try:
        if args.multirun and ours:
            from rlexp import validate

            validate.check_sweep(args.overrides)  # every job composed and checked before the first one runs
        _raising = FULL_ERROR not in os.environ and not args.multirun  # jobs of a sweep inherit the environment
        if _raising:
            os.environ[FULL_ERROR] = "1"
        try:
            app()
        except (HydraException, OmegaConfBaseException) as exc:
            if not _raising:
                raise
            from rlexp.config import composition_error

            raise composition_error(exc, args.overrides) from None
        finally:
            _composed()
    except ConfigError as exc:
        refuse(exc)


def refuse(exc: ConfigError) -> NoReturn:
    reason = " ".join(str(exc).splitlines())
    print(f"error: {reason}", file=sys.stderr)
    raise Refused(reason)


def _composed() -> None:
    """Composition is over: Hydra prints errors of the run itself again, as without rlexp (also in the processes
    the run starts)."""
    global _raising
    if _raising:
        os.environ.pop(FULL_ERROR, None)
        _raising = False


class NewDirs(Callback):
    """Which of the run directory and its parents this command makes (hydra.callbacks in rlexp/conf/config.yaml):
    Hydra makes them before the task runs, and a refused run removes them again (`_remove_new_dirs`)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Resolving hydra.run.dir here fixes ${now:...} for this config (OmegaConf caches the resolver's value),
        # so it is the directory Hydra makes next.
        try:
            run_dir = Path(str(config.hydra.run.dir)).absolute()
        except Exception:  # noqa: BLE001 - not resolvable yet: Hydra says why; nothing to take back
            _new_dirs.clear()
            return
        _new_dirs[:] = [p for p in (run_dir, *run_dir.parents) if not p.exists()]


def _remove_new_dirs(run_dir: Path) -> None:
    """Take back what Hydra made for a refused run: the directories NewDirs saw it make, innermost first, each only
    while empty; a sweep job's own directory if empty (the sweep directory keeps the job's record)."""
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    for path in [run_dir.absolute()] if multirun else _new_dirs:
        try:
            path.rmdir()
        except OSError:  # not empty (someone else's files, or a concurrent command's): leave it and its parents
            return


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def app(cfg: DictConfig) -> Summary:
    """Run the composed task; exit with its status's code (rlexp.status.Exit) outside of sweeps."""
    _composed()
    from rlexp.runner import run_task

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        objective = hpo.check(cfg.objective)
        trial = hpo.TrialLink.of(cfg)
        summary = run_task(cfg, run_dir)
    except ConfigError as exc:
        _remove_new_dirs(run_dir)
        refuse(exc)
    if summary.extra.get(ALREADY_FINISHED) and HydraConfig.get().mode == RunMode.RUN:
        _remove_new_dirs(run_dir)  # resume= of a finished run: nothing was written, Hydra's folder goes too
    if summary.status in (Status.DONE, Status.SKIPPED):  # a skipped run reports its eval.json's numbers
        summary.objective = hpo.objective(objective, vars(summary))
    if trial is not None and summary.status in (Status.DONE, Status.SKIPPED) and summary.objective is not None:
        trial.tell("complete", summary.objective)
    elif trial is not None and summary.status == Status.PRUNED:
        trial.tell("pruned")
    code = summary.status.exit_code
    if code in (Exit.BUSY, Exit.PRUNED) and HydraConfig.get().mode == RunMode.MULTIRUN:
        return summary  # a sweep goes on with its other jobs; a single command says it did not run (or stopped)
    if code != Exit.OK:
        sys.exit(code)
    return summary


if __name__ == "__main__":
    main()
