"""`python -m rlexp plot PATH...`: learning curves per config from TensorBoard, and a summary bar chart."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from rlexp import artifacts
from rlexp.analysis.runs import default_out, group_runs, load_runs
from rlexp.analysis.stats import describe_metric
from rlexp.analysis.tb import read_scalars
from rlexp.errors import ConfigError

DEFAULT_TAG = "rollout/success_rate"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="multirun directory(ies) and/or run directories")
    p.add_argument("--tag", default=DEFAULT_TAG, help=f"TensorBoard scalar (default {DEFAULT_TAG})")
    p.add_argument(
        "--out", type=Path, default=None, help="folder for curves.png and summary.png (default: like report)"
    )
    p.add_argument("--points", type=int, default=200, help="points on the common step grid (default 200)")


def run(args: argparse.Namespace) -> int:
    """Learning curves (mean and min-max band over seeds) per config, and a summary bar chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = load_runs(args.paths)
    groups, _ = group_runs(runs)
    out = default_out(args.paths, args.out)
    out.mkdir(parents=True, exist_ok=True)

    fig, ax = plt.subplots(figsize=(9, 5.5))
    plotted, no_data = 0, []
    for g in groups:
        series = [read_scalars(r.path / artifacts.TB_DIR, [args.tag])[args.tag] for r in g.runs]
        series = [(s, v) for s, v in series if s.size > 0]
        if not series:
            no_data.append(g.label)
            continue
        hi = min(s[-1] for s, _ in series)  # common range: where every seed has data
        lo = max(s[0] for s, _ in series)
        grid = np.linspace(lo, hi, args.points) if hi > lo else np.asarray([hi], dtype=float)
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

    finished = [(g, describe_metric("success_rate", [r.eval["success_rate"] for r in g.runs if r.eval], 2000))
                for g in groups]
    finished = [(g, s) for g, s in finished if s["n"]]
    if finished:
        fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(finished) + 3), 5))
        means = [100 * s["mean"] for _, s in finished]
        errs = np.asarray(
            [
                [100 * (s["mean"] - s["ci95_low"]), 100 * (s["ci95_high"] - s["mean"])]
                if s["ci95_low"] is not None
                else [0.0, 0.0]
                for _, s in finished
            ]
        ).T
        ax.bar(range(len(finished)), means, yerr=errs, capsize=3)
        ax.set_xticks(range(len(finished)), [g.label for g, _ in finished], rotation=60, ha="right", fontsize=7)
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
