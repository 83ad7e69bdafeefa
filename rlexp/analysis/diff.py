"""`python -m rlexp diff A B`: the config keys that differ between two runs or experiments."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rlexp.analysis.runs import is_run_dir, run_config
from rlexp.config import flatten
from rlexp.errors import ConfigError


def resolve_config(spec: str) -> dict[str, Any]:
    """A run directory (its recorded config) or an experiment name (composed like `+experiment=NAME`)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not is_run_dir(path):
            raise ConfigError(
                f"{path} is a directory but not a run (no model.meta.json or .hydra/config.yaml); "
                "for a multirun, pass one of its job directories"
            )
        return run_config(path)
    from rlexp.config import compose, experiment_names, to_container

    if spec not in experiment_names():
        raise ConfigError(
            f"{spec!r} is neither a run directory nor an experiment; experiments: " + ", ".join(experiment_names())
        )
    return to_container(compose(f"+experiment={spec}"))


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, value in a, value in b) for every flattened key that differs; "<absent>" where one lacks it."""
    fa, fb = flatten(a), flatten(b)
    missing = object()
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if va is missing or vb is missing or va != vb or type(va) is not type(vb):
            rows.append((key, "<absent>" if va is missing else va, "<absent>" if vb is missing else vb))
    return rows


def show(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="run directory (e.g. a multirun job) or experiment name")
    p.add_argument("b", help="run directory (e.g. a multirun job) or experiment name")


def executed(spec: str) -> dict[str, Any] | None:
    """A run's `execution` record (threads, device, fast, overlap as they ran: rlexp/execution.py), if any."""
    from rlexp.execution import recorded
    from rlexp.rundir import RunDir

    meta = RunDir(spec).meta
    return recorded(json.loads(meta.read_text())) if Path(spec).expanduser().is_dir() and meta.is_file() else None


def run(args: argparse.Namespace) -> int:
    """Print the config keys that differ between two runs or experiments: `key: A -> B`, nothing else; for two
    runs also `execution.KEY` where they ran with other threads, device, fast path or overlap (float rounding)."""
    for key, va, vb in config_diff(resolve_config(args.a), resolve_config(args.b)):
        print(f"{key}: {show(va)} -> {show(vb)}")
    ea, eb = executed(args.a), executed(args.b)
    if ea is not None and eb is not None:
        for key in sorted(set(ea) & set(eb)):
            if ea[key] != eb[key]:
                print(f"execution.{key}: {show(ea[key])} -> {show(eb[key])}")
    return 0
