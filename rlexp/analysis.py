"""Sweep analysis: `report` (per-config statistics, factor effects), `diff` (config keys that differ),
`plot` (TensorBoard learning curves and a summary bar chart). Subcommands of `python -m rlexp`.

A run is a directory with model.meta.json or .hydra/config.yaml; it is finished when it has eval.json.
Runs are grouped by their resolved config minus the seed and keys that do not change what is computed,
so the seeds of one config form one group, as in the book's sweep analysis (book_facts §2).
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlexp import artifacts
from rlexp.cli import command
from rlexp.config import RUN_ONLY_KEYS
from rlexp.errors import ConfigError

# Keys that identify a repetition (seed) or only change how a run is executed/shown: not part of a "config".
SEED_KEYS = ("seed", "env.seed")

METRICS = ("success_rate", "return_mean", "final_distance_mean")
DEFAULT_TAG = "rollout/success_rate"


# ----------------------------------------------------------------------------------------------- loading
def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}; lists stay values (shown as a whole when they differ)."""
    if isinstance(data, dict):
        if not data and prefix:
            return {prefix: {}}
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data}


def _is_run_only(key: str) -> bool:
    return key in SEED_KEYS or any(key == p or key.startswith(p + ".") for p in RUN_ONLY_KEYS)


@dataclass
class Run:
    path: Path
    config: dict[str, Any]  # flattened resolved config
    experiment: str | None
    eval: dict[str, Any] | None = None  # eval.json aggregate, None if the run has not finished
    checkpoint_step: int | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def seed(self) -> Any:
        return self.config.get("seed")

    @property
    def group_items(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, repr(v)) for k, v in self.config.items() if not _is_run_only(k)))


def _is_run_dir(path: Path) -> bool:
    return (
        (path / artifacts.META).is_file()
        or (path / ".hydra" / "config.yaml").is_file()
        or (path / artifacts.EVAL).is_file()
    )


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories at or below each path (a multirun folder, a run folder, or several of either)."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise ConfigError(f"{path}: no such file or directory")
        if not path.is_dir():
            raise ConfigError(f"{path}: expected a run or multirun directory")
        if _is_run_dir(path):
            found.append(path.resolve())
            continue
        for marker in sorted(path.rglob(".hydra")):
            if marker.is_dir() and "checkpoints" not in marker.parts and _is_run_dir(marker.parent):
                found.append(marker.parent.resolve())
        for meta in sorted(path.rglob(artifacts.META)):
            if meta.parent.name != artifacts.CKPT_DIR:
                found.append(meta.parent.resolve())
    unique = sorted(set(found))
    if not unique:
        raise ConfigError(
            f"no runs found under {', '.join(map(str, paths))} "
            "(looked for directories with .hydra/config.yaml, model.meta.json or eval.json)"
        )
    return unique


def _experiment_of(run_dir: Path) -> str | None:
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if hydra_file.is_file():
        from omegaconf import OmegaConf

        choice = OmegaConf.select(OmegaConf.load(hydra_file), "hydra.runtime.choices.experiment")
        if choice:
            return str(choice)
    return None


def run_config(run_dir: Path) -> dict[str, Any]:
    """Resolved config of a run: model.meta.json's record, else the .hydra/config.yaml Hydra saved."""
    meta = run_dir / artifacts.META
    if meta.is_file():
        return artifacts.read_json(meta)["config"]
    cfg_file = run_dir / ".hydra" / "config.yaml"
    if cfg_file.is_file():
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=True)
        assert isinstance(data, dict)
        data.pop("hydra", None)
        return data
    raise ConfigError(f"{run_dir}: no model.meta.json or .hydra/config.yaml to read its config from")


def load_run(run_dir: Path) -> Run:
    from rlexp.rundir import RunDir

    run = Run(run_dir, flatten(run_config(run_dir)), _experiment_of(run_dir))
    eval_file = run_dir / artifacts.EVAL
    if eval_file.is_file():
        result = artifacts.read_json(eval_file)
        run.eval = result["aggregate"]
        meta = run_dir / artifacts.META
        if meta.is_file():
            meta_hash = artifacts.read_json(meta).get("config_hash")
            if result.get("config_hash") and meta_hash and result["config_hash"] != meta_hash:
                run.warnings.append(
                    f"{run_dir}: eval.json config_hash {result['config_hash']} != model.meta.json {meta_hash}"
                )
    steps = [(c.step, c.zip) for c in RunDir(run_dir).checkpoints()]
    run.checkpoint_step = steps[-1][0] if steps else None
    return run


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    return [load_run(p) for p in find_run_dirs(list(paths))]


# ----------------------------------------------------------------------------------------------- grouping
@dataclass
class Group:
    label: str
    factors: dict[str, Any]  # swept factor -> value for this config
    runs: list[Run]
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)


def _fmt(value: Any) -> str:
    return "null" if value is None else str(value)


def swept_factors(runs: list[Run]) -> list[str]:
    """Config keys (seed and run-only keys aside) whose value differs between runs.

    With several experiments, keys that only follow the experiment are folded into its name.
    """
    keys = sorted({k for r in runs for k in r.config if not _is_run_only(k)})
    varying = [k for k in keys if len({repr(r.config.get(k, "<absent>")) for r in runs}) > 1]
    experiments = {r.experiment for r in runs}
    if len(experiments) > 1:
        varying = [
            k
            for k in varying
            if any(
                len({repr(r.config.get(k, "<absent>")) for r in runs if r.experiment == e}) > 1
                for e in experiments
            )
        ]
    return varying


def group_runs(runs: list[Run]) -> tuple[list[Group], list[str]]:
    factors = swept_factors(runs)
    several_experiments = len({r.experiment for r in runs}) > 1
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault((run.experiment if several_experiments else None, run.group_items), []).append(run)
    groups = []
    for (experiment, _), members in by_key.items():
        values = {k: members[0].config.get(k) for k in factors}
        parts = ([str(experiment)] if several_experiments else []) + [
            f"{k}={_fmt(v)}" for k, v in values.items()
        ]
        groups.append(
            Group(
                ", ".join(parts) or (members[0].experiment or "all runs"),
                values,
                sorted(members, key=lambda r: str(r.seed)),
            )
        )
    groups.sort(key=lambda g: g.label)
    return groups, factors


# ----------------------------------------------------------------------------------------------- statistics
def describe(values: list[float]) -> dict[str, float | int | None]:
    """Mean, sample std (n-1), 95% t-interval half width, min, max over seeds."""
    from scipy import stats

    arr = np.asarray([v for v in values if v is not None], dtype=float)
    n = int(arr.size)
    if n == 0:
        return {
            "n": 0,
            "mean": None,
            "std": None,
            "ci95_low": None,
            "ci95_high": None,
            "min": None,
            "max": None,
        }
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if n > 1 else None
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)) if std is not None else None
    return {
        "n": n,
        "mean": mean,
        "std": std,
        "ci95_low": mean - half if half is not None else None,
        "ci95_high": mean + half if half is not None else None,
        "min": float(arr.min()),
        "max": float(arr.max()),
    }


def iqm_with_ci(
    scores: dict[str, np.ndarray], reps: int, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Interquartile mean over seeds with a stratified-bootstrap 95% CI (rliable, Agarwal et al. 2021)."""
    from rliable import library as rly
    from rliable import metrics

    usable = {k: v.reshape(-1, 1) for k, v in scores.items() if v.size > 0}
    if not usable:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arch's RandomState deprecation notice
        point, interval = rly.get_interval_estimates(
            usable,
            lambda x: np.array([metrics.aggregate_iqm(x)]),
            reps=reps,
            random_state=np.random.RandomState(seed),
        )
    return {k: (float(point[k][0]), float(interval[k][0][0]), float(interval[k][1][0])) for k in usable}


def marginal_effects(groups: list[Group], factors: list[str], metric: str) -> dict[str, list[dict[str, Any]]]:
    """Per factor level: the unweighted mean of config means (the book's "gamma 0.95 vs 0.98: -11 pp")."""
    out: dict[str, list[dict[str, Any]]] = {}
    for factor in factors:
        levels: dict[str, list[float]] = {}
        for g in groups:
            m = g.stats[metric]["mean"]
            if m is not None:
                levels.setdefault(_fmt(g.factors[factor]), []).append(m)
        rows = []
        base = None
        for level in _sorted_levels(levels):
            mean = float(np.mean(levels[level]))
            base = mean if base is None else base
            rows.append({"level": level, "mean": mean, "n_configs": len(levels[level]), "delta": mean - base})
        out[factor] = rows
    return out


def interactions(groups: list[Group], factors: list[str], metric: str) -> list[dict[str, Any]]:
    """For each factor pair: mean of config means in every (level a, level b) cell."""
    tables = []
    for fa, fb in itertools.combinations(factors, 2):
        cells: dict[tuple[str, str], list[float]] = {}
        for g in groups:
            m = g.stats[metric]["mean"]
            if m is not None:
                cells.setdefault((_fmt(g.factors[fa]), _fmt(g.factors[fb])), []).append(m)
        rows_a = _sorted_levels({a for a, _ in cells})
        cols_b = _sorted_levels({b for _, b in cells})
        table = {
            a: {b: (float(np.mean(cells[(a, b)])) if (a, b) in cells else None) for b in cols_b}
            for a in rows_a
        }
        tables.append({"row_factor": fa, "col_factor": fb, "cells": table})
    return tables


def _sorted_levels(levels: Iterable[str]) -> list[str]:
    def key(s: str) -> tuple[int, float, str]:
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s)

    return sorted(levels, key=key)


# ----------------------------------------------------------------------------------------------- report
def _pct(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric == "success_rate":
        return f"{100 * value:.1f}%"
    if metric == "final_distance_mean":
        return f"{1000 * value:.1f} mm"
    return f"{value:.2f}"


def _delta(metric: str, value: float) -> str:
    if metric == "success_rate":
        return f"{100 * value:+.1f} pp"
    if metric == "final_distance_mean":
        return f"{1000 * value:+.1f} mm"
    return f"{value:+.2f}"


def build_report(paths: list[str], reps: int = 2000) -> dict[str, Any]:
    runs = load_runs(paths)
    finished = [r for r in runs if r.eval is not None]
    missing = [r for r in runs if r.eval is None]
    if not finished:
        raise ConfigError(
            f"none of the {len(runs)} runs found has {artifacts.EVAL} yet (unfinished: "
            + "; ".join(_missing_line(r) for r in missing[:10])
            + (" ..." if len(missing) > 10 else "")
            + ")"
        )
    groups, factors = group_runs(finished)
    for g in groups:
        g.stats = {m: describe([r.eval.get(m) for r in g.runs]) for m in METRICS}
    iqm = {
        m: iqm_with_ci(
            {
                g.label: np.asarray([r.eval[m] for r in g.runs if r.eval.get(m) is not None], float)
                for g in groups
            },
            reps,
        )
        for m in METRICS
    }
    report = {
        "paths": [str(p) for p in paths],
        "n_runs": len(runs),
        "n_finished": len(finished),
        "missing": [{"run_dir": str(r.path), "checkpoint_step": r.checkpoint_step} for r in missing],
        "warnings": [w for r in runs for w in r.warnings],
        "factors": factors,
        "configs": [],
        "marginal_effects": {m: marginal_effects(groups, factors, m) for m in METRICS},
        "interactions": {m: interactions(groups, factors, m) for m in METRICS},
        "iqm_bootstrap_reps": reps,
    }
    for g in groups:
        entry = {
            "label": g.label,
            "factors": g.factors,
            "seeds": [r.seed for r in g.runs],
            "run_dirs": [str(r.path) for r in g.runs],
        }
        for m in METRICS:
            entry[m] = dict(g.stats[m])
            if g.label in iqm[m]:
                entry[m]["iqm"], entry[m]["iqm_ci95_low"], entry[m]["iqm_ci95_high"] = iqm[m][g.label]
        report["configs"].append(entry)
    report["configs"].sort(key=lambda c: (-(c["success_rate"]["mean"] or 0), c["success_rate"]["std"] or 0))
    return report


def _missing_line(run: Run) -> str:
    ckpt = f"checkpoint at step {run.checkpoint_step}" if run.checkpoint_step is not None else "no checkpoint"
    return f"{run.path.name} ({ckpt})"


def report_markdown(report: dict[str, Any]) -> str:
    out = io.StringIO()
    w = out.write
    w(
        f"# Sweep report\n\n{report['n_finished']} of {report['n_runs']} runs finished "
        f"({', '.join(report['paths'])}).\n\n"
    )
    if report["missing"]:
        w(
            f"**Missing {len(report['missing'])} run(s) without eval.json** "
            "(re-run the sweep command to finish them):\n\n"
        )
        for m in report["missing"]:
            step = (
                f"checkpoint at step {m['checkpoint_step']}"
                if m["checkpoint_step"] is not None
                else "no checkpoint"
            )
            w(f"- `{m['run_dir']}` ({step})\n")
        w("\n")
    w("## Per config (across seeds; CI: t distribution; IQM CI: stratified bootstrap)\n\n")
    w(
        "| config | n | success mean | std | 95% CI | min-max | IQM [95% CI] | return mean ± std "
        "| final distance |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    for c in report["configs"]:
        s, r, d = c["success_rate"], c["return_mean"], c["final_distance_mean"]
        ci = (
            f"[{_pct('success_rate', s['ci95_low'])}, {_pct('success_rate', s['ci95_high'])}]"
            if s["ci95_low"] is not None
            else "-"
        )
        iqm = (
            (
                f"{_pct('success_rate', s['iqm'])} [{_pct('success_rate', s['iqm_ci95_low'])}, "
                f"{_pct('success_rate', s['iqm_ci95_high'])}]"
            )
            if "iqm" in s
            else "-"
        )
        rstd = f" ± {r['std']:.2f}" if r["std"] is not None else ""
        w(
            f"| {c['label']} | {s['n']} | {_pct('success_rate', s['mean'])} | "
            f"{_pct('success_rate', s['std'])} | {ci} | {_pct('success_rate', s['min'])}-"
            f"{_pct('success_rate', s['max'])} | {iqm} | {_pct('return_mean', r['mean'])}{rstd} | "
            f"{_pct('final_distance_mean', d['mean'])} |\n"
        )
    if report["factors"]:
        w("\n## Marginal effect of each factor (unweighted mean of config means per level)\n\n")
        w(
            "| factor | level | configs | success | Δ success | return | Δ return |\n"
            "|---|---|---|---|---|---|---|\n"
        )
        for factor in report["factors"]:
            sr = report["marginal_effects"]["success_rate"][factor]
            rt = {row["level"]: row for row in report["marginal_effects"]["return_mean"][factor]}
            for row in sr:
                rr = rt.get(row["level"])
                ret = _pct("return_mean", rr["mean"]) if rr else "-"
                ret_delta = _delta("return_mean", rr["delta"]) if rr else "-"
                w(
                    f"| {factor} | {row['level']} | {row['n_configs']} | "
                    f"{_pct('success_rate', row['mean'])} | {_delta('success_rate', row['delta'])} | "
                    f"{ret} | {ret_delta} |\n"
                )
        if report["interactions"]["success_rate"]:
            w("\n## Interactions (mean success of config means)\n")
        for t in report["interactions"]["success_rate"]:
            cols = list(next(iter(t["cells"].values())).keys()) if t["cells"] else []
            w(f"\n{t['row_factor']} (rows) x {t['col_factor']} (columns)\n\n")
            w("| | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n")
            for a, row in t["cells"].items():
                w(f"| {a} | " + " | ".join(_pct("success_rate", row[b]) for b in cols) + " |\n")
    for warning in report["warnings"]:
        w(f"\nwarning: {warning}\n")
    return out.getvalue()


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for c in report["configs"]:
        row: dict[str, Any] = {
            "config": c["label"],
            **{f"factor:{k}": v for k, v in c["factors"].items()},
            "seeds": " ".join(map(str, c["seeds"])),
        }
        for m in METRICS:
            for stat, value in c[m].items():
                row[f"{m}_{stat}"] = value
        rows.append(row)
    return rows


def write_report(report: dict[str, Any], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md = artifacts.atomic_write(out_dir / "report.md", lambda tmp: tmp.write_text(report_markdown(report)))
    js = artifacts.write_json(out_dir / "report.json", report)
    rows = report_rows(report)
    fields = list(dict.fromkeys(k for row in rows for k in row))

    def _csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)

    cs = artifacts.atomic_write(out_dir / "report.csv", _csv)
    return [md, cs, js]


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="multirun directory(ies) and/or run directories")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.md/.csv/.json (default: the first path if it is not a run dir, "
        "else the current directory)",
    )
    p.add_argument(
        "--reps", type=int, default=2000, help="bootstrap resamples for the IQM CIs (default 2000)"
    )


@command("report", _report_args)
def cmd_report(args: argparse.Namespace) -> int:
    """Per-config statistics across seeds, factor effects and interactions of a sweep (Markdown/CSV/JSON)."""
    if args.reps < 100:
        raise ConfigError(f"--reps must be >= 100, got {args.reps}")
    report = build_report(args.paths, args.reps)
    first = Path(args.paths[0])
    out = args.out or (first if not _is_run_dir(first) else Path.cwd())
    text = report_markdown(report)
    print(text)
    for path in write_report(report, out):
        print(f"wrote {path}", file=sys.stderr)
    if report["missing"]:
        print(
            f"warning: {len(report['missing'])} of {report['n_runs']} runs have no {artifacts.EVAL}; "
            "the report uses the finished ones",
            file=sys.stderr,
        )
    return 0


# ----------------------------------------------------------------------------------------------- diff
def resolve_config(spec: str) -> dict[str, Any]:
    """A run directory (its recorded config) or an experiment name (composed like `+experiment=NAME`)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not _is_run_dir(path):
            raise ConfigError(
                f"{path} is a directory but not a run (no model.meta.json or .hydra/config.yaml); "
                "for a multirun, pass one of its job directories"
            )
        return run_config(path)
    from rlexp.config import compose, experiment_names, to_container

    if spec not in experiment_names():
        raise ConfigError(
            f"{spec!r} is neither a run directory nor an experiment; experiments: "
            + ", ".join(experiment_names())
        )
    return to_container(compose(f"+experiment={spec}"))


def config_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    fa, fb = flatten(a), flatten(b)
    missing = object()
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if va is missing or vb is missing or va != vb or type(va) is not type(vb):
            rows.append((key, "<absent>" if va is missing else va, "<absent>" if vb is missing else vb))
    return rows


def _diff_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="run directory (e.g. a multirun job) or experiment name")
    p.add_argument("b", help="run directory (e.g. a multirun job) or experiment name")


@command("diff", _diff_args)
def cmd_diff(args: argparse.Namespace) -> int:
    """Print the config keys that differ between two runs or experiments: `key: A -> B`, nothing else."""
    for key, va, vb in config_diff(resolve_config(args.a), resolve_config(args.b)):
        print(f"{key}: {_value(va)} -> {_value(vb)}")
    return 0


def _value(v: Any) -> str:
    if isinstance(v, str):
        return v
    import json

    return json.dumps(v, default=str)


# ----------------------------------------------------------------------------------------------- plot
def read_scalars(run_dir: Path, tag: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one TensorBoard tag over every events file under <run>/tb (resumed runs append)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted((run_dir / artifacts.TB_DIR).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            for ev in acc.Scalars(tag):
                points[int(ev.step)] = float(ev.value)
    steps = np.asarray(sorted(points), dtype=float)
    return steps, np.asarray([points[int(s)] for s in steps], dtype=float)


def _plot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="multirun directory(ies) and/or run directories")
    p.add_argument("--tag", default=DEFAULT_TAG, help=f"TensorBoard scalar (default {DEFAULT_TAG})")
    p.add_argument(
        "--out", type=Path, default=None, help="folder for curves.png and summary.png (default: like report)"
    )
    p.add_argument("--points", type=int, default=200, help="points on the common step grid (default 200)")


@command("plot", _plot_args)
def cmd_plot(args: argparse.Namespace) -> int:
    """Learning curves (mean and min-max band over seeds) per config, and a summary bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(args.paths)
    groups, _ = group_runs(runs)
    first = Path(args.paths[0])
    out = args.out or (first if not _is_run_dir(first) else Path.cwd())
    out.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(figsize=(9, 5.5))
    plotted, no_data = 0, []
    for g in groups:
        series = [read_scalars(r.path, args.tag) for r in g.runs]
        series = [(s, v) for s, v in series if s.size > 0]
        if not series:
            no_data.append(g.label)
            continue
        hi = min(s[-1] for s, _ in series)  # common range: where every seed has data
        lo = max(s[0] for s, _ in series)
        grid = np.linspace(lo, hi, args.points) if hi > lo else np.asarray([hi])
        ys = np.stack([np.interp(grid, s, v) for s, v in series])
        mean = ys.mean(axis=0)
        (line,) = ax.plot(grid, mean, label=f"{g.label} (n={len(series)})")
        if len(series) > 1:
            ax.fill_between(grid, ys.min(axis=0), ys.max(axis=0), color=line.get_color(), alpha=0.2)
        plotted += 1
    if not plotted:
        plt.close(fig)
        raise ConfigError(f"no run has TensorBoard data for tag {args.tag!r} (looked in <run>/tb/*/events.*)")
    ax.set_xlabel("environment steps")
    ax.set_ylabel(args.tag)
    ax.set_title(f"{args.tag}: mean over seeds, band = min-max")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    curves = out / "curves.png"
    artifacts.atomic_write(curves, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
    print(f"wrote {curves}")

    finished = [(g, describe([r.eval["success_rate"] for r in g.runs if r.eval])) for g in groups]
    finished = [(g, s) for g, s in finished if s["n"]]
    if finished:
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(finished) + 3), 5))
        means = [100 * s["mean"] for _, s in finished]
        errs = [100 * (s["ci95_high"] - s["mean"]) if s["ci95_high"] is not None else 0 for _, s in finished]
        ax.bar(range(len(finished)), means, yerr=errs, capsize=3)
        ax.set_xticks(
            range(len(finished)), [g.label for g, _ in finished], rotation=60, ha="right", fontsize=7
        )
        ax.set_ylabel("final success rate (%), 95% CI")
        ax.set_ylim(0, 105)
        fig.tight_layout()
        summary = out / "summary.png"
        artifacts.atomic_write(summary, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
        plt.close(fig)
        print(f"wrote {summary}")
    if no_data:
        print(f"warning: no {args.tag!r} data for: {'; '.join(no_data)}", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------------- plan
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


def _plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("overrides", nargs="+", help="the overrides you would give `python run.py -m`")


@command("plan", _plan_args)
def cmd_plan(args: argparse.Namespace) -> int:
    """Dry run of a multirun: one line per job (its run directory name), then the job count."""
    sweep_dir, names = sweep_plan(args.overrides)
    for name in names:
        print(name)
    print(f"{len(names)} jobs in {sweep_dir}")
    return 0
