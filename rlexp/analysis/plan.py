"""`python -m rlexp plan OVERRIDES`: dry run of `python run.py -m OVERRIDES` (job names and count)."""

from __future__ import annotations

import argparse

from rlexp.errors import ConfigError


def sweep_plan(overrides: list[str]) -> tuple[str, list[str]]:
    """(sweep dir, job subdirectory names) that `python run.py -m OVERRIDES` would create (rlexp.config.sweep_jobs
    expands the sweep as Hydra's basic sweeper does)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rlexp.config import sweep_jobs

    cfg, jobs = sweep_jobs(overrides)
    if jobs is None:
        raise ConfigError(f"plan lists the jobs of Hydra's basic sweeper; this sweep runs "
                          f"{cfg.hydra.sweeper._target_}, which draws its jobs as it goes")
    exclude = set(cfg.hydra.job.config.override_dirname.exclude_keys)
    sweep_dir = str(cfg.hydra.sweep.dir)
    parser = OverridesParser.create()
    names = []
    for job in jobs:
        lines = sorted(
            o.input_line
            for o in parser.parse_overrides(job)
            if o.key_or_group not in exclude and not o.key_or_group.startswith("hydra")
        )
        names.append(",".join(lines))
    return sweep_dir, names


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="+", help="the overrides you would give `python run.py -m`")


def run(args: argparse.Namespace) -> int:
    """Dry run of a multirun: one line per job (its run directory name), then the job count."""
    sweep_dir, names = sweep_plan(args.overrides)
    for name in names:
        print(name)
    print(f"{len(names)} jobs in {sweep_dir}")
    return 0
