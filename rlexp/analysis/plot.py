"""`python -m rlexp plot PATH...`: learning curves per config from TensorBoard, and a summary bar chart.

Both figures are written as PNG and PDF. Configs are labelled by what differs between them (short factor
names, with the full keys in a footnote), keep one colour each across both figures (curves also one line style
and marker each, so curves that coincide stay apart), and show the mean over seeds with a 95%
percentile-bootstrap CI over seeds where there are two seeds or more. Rates (success) are shown in percent, on an
axis that ends at 100%.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rlexp import artifacts, fmt
from rlexp.analysis.runs import Group, default_out, group_runs, level, load_runs
from rlexp.analysis.stats import CI_BOOTSTRAP, bootstrap_mean_band, describe_metric
from rlexp.analysis.tb import read_scalars
from rlexp.errors import ConfigError
from rlexp.rundir import RunDir

DEFAULT_TAG = "rollout/success_rate"
FEW_POINTS = 20  # a curve with at most this many logged points is drawn through them, with markers
REPS = 1000  # bootstrap resamples for the bands and bars
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def short_names(factors: list[str]) -> dict[str, str]:
    """Shortest dotted suffix of each factor key that tells them apart: algo.gamma -> gamma."""
    out = {}
    for key in factors:
        parts = key.split(".")
        for k in range(1, len(parts) + 1):
            short = ".".join(parts[-k:])
            if sum(f == short or f.endswith("." + short) for f in factors) == 1:
                break
        out[key] = short
    return out


def labels(groups: list[Group], factors: list[str]) -> list[str]:
    """Per group: its experiment (when several) and `short=value` for every swept factor."""
    names = short_names(factors)
    out = []
    for g in groups:
        parts = ([g.experiment] if g.experiment else []) + [f"{names[k]}={level(v)}" for k, v in g.factors.items()]
        out.append(", ".join(parts) or (g.runs[0].experiment or "all runs"))
    return out


def footnote(factors: list[str]) -> str:
    names = short_names(factors)
    renamed = [f"{short} = {key}" for key, short in names.items() if short != key]
    return ("factors: " + "; ".join(renamed)) if renamed else ""


def count(ns: list[int], what: str) -> str:
    lo, hi = min(ns), max(ns)
    return f"{lo} {what}" if lo == hi else f"{lo}-{hi} {what}"


def steps_label(x: float) -> str:
    """Step counts as a reader writes them: 500000 -> 500k, 2000000 -> 2M."""
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:g}{unit}"
    return f"{x:g}"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="multirun directory(ies) and/or run directories")
    p.add_argument("--tag", default=DEFAULT_TAG, help=f"TensorBoard scalar (default {DEFAULT_TAG})")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for curves.png/.pdf and summary.png/.pdf (default: like report)",
    )
    p.add_argument("--points", type=int, default=200, help="points on the common step grid (default 200)")


def _footnote(ax: Any, note: str) -> None:
    """A small line under the x-axis label, at a fixed distance from the axes."""
    ax.annotate(note, xy=(0, 0), xycoords="axes fraction", xytext=(0, -40), textcoords="offset points",
                fontsize=7, ha="left", va="top")


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    paths = []
    for ext in ("png", "pdf"):
        path = out / f"{stem}.{ext}"
        artifacts.atomic_write(path, lambda tmp, ext=ext: fig.savefig(tmp, dpi=150, format=ext, bbox_inches="tight"))
        paths.append(path)
    return paths


def _curve(series: list[tuple[np.ndarray, np.ndarray]], points: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """(grid, seeds x grid values, few) on the step range every seed covers."""
    hi = min(s[-1] for s, _ in series)
    lo = max(s[0] for s, _ in series)
    logged = np.unique(np.concatenate([s[(s >= lo) & (s <= hi)] for s, _ in series])).astype(float)
    few = logged.size <= FEW_POINTS
    if few or hi <= lo:
        grid = logged if logged.size else np.asarray([hi], dtype=float)
    else:
        grid = np.linspace(lo, hi, points)
    return grid, np.stack([np.interp(grid, s, v) for s, v in series]), few


def styles(n: int) -> list[dict[str, Any]]:
    """Colour, line style and marker per config: curves that coincide stay apart in print and for readers who
    do not tell colours apart (four dash patterns and seven markers cycle at different periods)."""
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [{"color": cmap(i % cmap.N), "linestyle": LINESTYLES[i % len(LINESTYLES)],
             "marker": MARKERS[i % len(MARKERS)]} for i in range(n)]


def seeds_phrase(ns: list[int]) -> str:
    """How many seeds each config's mean is over and what the band is; with one seed each, neither."""
    if max(ns) < 2:
        return "one seed per config"
    band = f"band: 95% CI of the mean ({CI_BOOTSTRAP})" + ("; configs with one seed have none" if min(ns) < 2 else "")
    return f"mean over {count(ns, 'seeds')} per config\n{band}"


def curves_figure(groups: list[Group], names: list[str], style: dict[str, dict[str, Any]], tag: str,
                  points: int, note: str) -> tuple[Any, list[str]]:
    """The learning curves of `tag` per config (and the configs without data); ConfigError when none has any."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rate = tag.endswith("success_rate")
    scale = 100.0 if rate else 1.0
    fig, ax = plt.subplots(figsize=(9, 5.5))
    no_data, seeds = [], []
    for g, name in zip(groups, names, strict=True):
        series = [read_scalars(RunDir(r.path).tb, [tag])[tag] for r in g.runs]
        series = [(s, v) for s, v in series if s.size > 0]
        if not series:
            no_data.append(g.label)
            continue
        grid, ys, _ = _curve(series, points)
        ys = scale * ys
        mean = ys.mean(axis=0)
        band = bootstrap_mean_band(ys, REPS)
        st = style[g.label]
        k = len(seeds)  # markers of dense curves at every ~10th point, shifted per curve so they do not stack
        every = max(1, grid.size // 10)
        ax.plot(
            grid,
            mean,
            color=st["color"],
            linestyle=st["linestyle"],
            marker=st["marker"],
            markevery=(k * max(1, every // 4) % every, every) if grid.size > FEW_POINTS else None,
            markersize=7 if grid.size == 1 else 5,
            markerfacecolor="none" if k % 2 else st["color"],
            zorder=3 if grid.size == 1 else 2,
            clip_on=not rate,
            label=f"{name} (n={len(series)})" + (f", logged at {steps_label(grid[0])} only" if grid.size == 1 else ""),
        )
        if band is not None and grid.size > 1:
            ax.fill_between(grid, band[0], band[1], color=st["color"], alpha=0.2, linewidth=0)
        elif band is not None:  # one logged step: the CI as an error bar
            ax.errorbar(grid, mean, yerr=[mean - band[0], band[1] - mean], color=st["color"], capsize=4, zorder=3,
                        clip_on=not rate)
        seeds.append(len(series))
    if not seeds:
        plt.close(fig)
        raise ConfigError(f"no run has TensorBoard data for tag {tag!r} (looked in <run>/tb/*/events.*)")
    ax.set_xlabel("environment steps")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: steps_label(x)))
    ax.set_ylabel("success rate (%)" if rate else tag)
    if rate:  # the axis ends where the scale does; lines and markers at 0% and 100% are drawn whole
        ax.set_ylim(0, 100)
    ax.set_title(
        f"{'Success rate' if rate else 'Training curve'} during training ({tag}): {seeds_phrase(seeds)}",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    if len(seeds) > 6:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8, loc="best")
    if note:
        _footnote(ax, note)
    return fig, no_data


def summary_figure(groups: list[Group], names: list[str], style: dict[str, dict[str, Any]], note: str) -> Any:
    """Final success per config from eval.json: bars with the seeds' 95% CI, value and n; None without any."""
    import matplotlib.pyplot as plt

    bars = []
    for g, name in zip(groups, names, strict=True):
        s = describe_metric("success_rate", [r.eval["success_rate"] for r in g.runs if r.eval], REPS)
        if s["n"]:
            episodes = {r.n_episodes for r in g.runs if r.eval and r.n_episodes}
            bars.append((g, name, s, episodes))
    if not bars:
        return None
    bars.sort(key=lambda b: (-b[2]["mean"], b[1]))
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.42 * len(bars) + 1.6)))
    y = np.arange(len(bars))[::-1]
    means = np.asarray([100 * s["mean"] for _, _, s, _ in bars])
    low = np.asarray([100 * s["ci95_low"] if s["ci95_low"] is not None else m for (_, _, s, _), m in
                      zip(bars, means, strict=True)])
    high = np.asarray([100 * s["ci95_high"] if s["ci95_high"] is not None else m for (_, _, s, _), m in
                       zip(bars, means, strict=True)])
    ax.barh(y, means, color=[style[g.label]["color"] for g, *_ in bars], alpha=0.85,
            edgecolor="black", linewidth=0.5)
    has_ci = np.asarray([s["ci95_low"] is not None for _, _, s, _ in bars])
    if has_ci.any():  # one seed: no interval, and no zero-width bar that would look like a tight one
        ax.errorbar(means[has_ci], y[has_ci], xerr=[(means - low)[has_ci], (high - means)[has_ci]], fmt="none",
                    ecolor="black", capsize=3, lw=1, clip_on=False)
    for yi, m, (_, _, s, _) in zip(y, means, bars, strict=True):  # right of the axis, which ends at 100%
        n = f"n={s['n']}" + (" (no CI)" if s["ci95_low"] is None else "")
        ax.annotate(f"{fmt.percent(m / 100)}  {n}", xy=(1, yi), xycoords=ax.get_yaxis_transform(),
                    xytext=(8, 0), textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(y, [name for _, name, _, _ in bars], fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xticks(range(0, 101, 20))
    ax.set_xlabel("final success rate (%)")
    ax.grid(axis="x", alpha=0.3)
    eps = set().union(*(e for *_, e in bars))
    per_run = f", {eps.pop()} eval episodes per run" if len(eps) == 1 else ""
    ns = [s["n"] for _, _, s, _ in bars]
    if max(ns) < 2:
        title = f"Final success rate per config: one seed per config{per_run}"
    else:
        title = (f"Final success rate per config: mean over {count(ns, 'seeds')}{per_run}\n"
                 f"error bars: 95% CI ({CI_BOOTSTRAP}); n = seeds" + ("; none for one seed" if min(ns) < 2 else ""))
    ax.set_title(title, fontsize=10)
    if note:
        _footnote(ax, note)
    return fig


def run(args: argparse.Namespace) -> int:
    """Learning curves (mean over seeds, 95% bootstrap band) per config, and a summary bar chart (PNG + PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.points < 2:
        raise ConfigError(f"--points must be >= 2, got {args.points}")
    runs = load_runs(args.paths)
    groups, factors = group_runs(runs)
    names = labels(groups, factors)
    style = {g.label: st for g, st in zip(groups, styles(len(groups)), strict=True)}
    note = footnote(factors)
    out = default_out(args.paths, args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig, no_data = curves_figure(groups, names, style, args.tag, args.points, note)
    written = _save(fig, out, "curves")
    plt.close(fig)
    fig = summary_figure(groups, names, style, note)
    if fig is not None:
        written += _save(fig, out, "summary")
        plt.close(fig)
    for path in written:
        print(f"wrote {path}")
    if no_data:
        print(f"warning: no {args.tag!r} data for: {'; '.join(no_data)}", file=sys.stderr)
    return 0
