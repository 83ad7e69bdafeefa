"""TensorBoard HParams for sweeps: each job of a multirun logs its factors and final metrics into its own
tb/run_1, so TensorBoard's HParams tab (`tensorboard --logdir SWEEP_DIR`) compares the grid side by side.

The factors are the job's overrides (a sweep's values and the command's fixed ones), run-only keys and Hydra's
own left out, with the types Hydra parsed (`algo.gamma=0.95` a number, `algo=td3` a string); the metrics the
final evaluation's success rate, mean return and final distance, at the run's last step.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rlexp.config import RUN_ONLY_KEYS

log = logging.getLogger("rlexp")

METRICS = {"success_rate": "final/success_rate", "return_mean": "final/return_mean",
           "final_distance_mean": "final/final_distance_mean"}
NOT_FACTORS = (*RUN_ONLY_KEYS, "hparams_search", "hydra")


def factors(overrides: list[str]) -> dict[str, bool | int | float | str]:
    """{"algo.gamma": 0.95, "experiment": "ch05_her_push", "seed": 1} from a job's overrides."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    out: dict[str, bool | int | float | str] = {}
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.is_delete() or any(key == k or key.startswith((k + ".", k + "/")) for k in NOT_FACTORS):
            continue
        value = override.value()
        out[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return out


def job_overrides() -> list[str] | None:
    """The overrides of this multirun job (None outside a multirun)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return list(HydraConfig.get().overrides.task)


def write(tb_run: Path, factors: dict[str, Any], aggregate: dict[str, Any], step: int) -> None:
    """The HParams plugin's three summaries (experiment, session start, session end) and the metrics as scalars,
    by torch's SummaryWriter, into the run's own TensorBoard run (one session per run directory)."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    metrics = {tag: float(aggregate[k]) for k, tag in METRICS.items() if aggregate.get(k) is not None}
    experiment, start, end = hparams(factors, metrics)
    # Its own file name: SummaryWriter's default (time in seconds, host, pid) can be the name the run's scalars
    # file got in the same second, and would then replace it.
    with SummaryWriter(log_dir=str(tb_run), filename_suffix=".hparams") as writer:
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary, step)
        for tag, value in metrics.items():
            writer.add_scalar(tag, value, step)


def log_sweep_job(tb_run: Path, aggregate: dict[str, Any], step: int) -> None:
    """In a multirun job, write its HParams session; elsewhere nothing. A failure is a warning, not a failed run."""
    overrides = job_overrides()
    if overrides is None:
        return
    try:
        write(tb_run, factors(overrides), aggregate, step)
    except (OSError, ValueError) as exc:
        log.warning("TensorBoard HParams not written (%s: %s)", type(exc).__name__, exc)
