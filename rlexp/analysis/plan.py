"""`python -m rlexp plan OVERRIDES`: dry run of `python run.py -m OVERRIDES` (job names and count)."""

from __future__ import annotations

import argparse

from rlexp.errors import ConfigError


def sweep_plan(overrides: list[str]) -> tuple[str, list[str]]:
    """(sweep dir, job subdirectory names) that `python run.py -m OVERRIDES` would create.

    Expands exactly as Hydra's basic sweeper does: `hydra.sweeper.params` of the composed config first,
    then the command line (a key given on both keeps the command line's values).
    """
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from rlexp.config import CONF_DIR

    parser = OverridesParser.create()
    try:
        parsed = parser.parse_overrides(overrides)
        fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=fixed, return_hydra_config=True)
        node = cfg.hydra.sweeper.get("params")
        params = OmegaConf.to_container(node) if node is not None else {}
        jobs = BasicSweeper.split_arguments(
            parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + list(overrides)), None
        )[0]
        exclude = set(cfg.hydra.job.config.override_dirname.exclude_keys)
        sweep_dir = str(cfg.hydra.sweep.dir)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(f"cannot expand the sweep: {exc}") from None
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
