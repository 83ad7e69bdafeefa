"""Statistics across seeds: describe (mean, std, 95% CI), IQM with a bootstrap CI, factor effects.

Every random draw here is seeded, so the same runs give the same numbers on every call.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from rlexp.analysis.runs import Group, level

RATE_METRICS = ("success_rate",)  # bounded to [0, 1]: CI by percentile bootstrap over seeds, not t
CI_T = "t"
CI_BOOTSTRAP = "percentile bootstrap over seeds"
SEED = 0  # seed of every bootstrap


def describe(values: list[float | None]) -> dict[str, float | int | None]:
    """Mean, sample std (n-1), 95% t-interval, min, max over seeds."""
    from scipy import stats

    arr = np.asarray([v for v in values if v is not None], dtype=float)
    n = int(arr.size)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95_low": None, "ci95_high": None, "min": None, "max": None}
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


def bootstrap_mean_ci(values: np.ndarray, reps: int, seed: int = SEED) -> tuple[float, float] | None:
    """95% percentile-bootstrap CI of the mean over seeds (resampling seeds with replacement).

    Every resampled mean lies between the smallest and largest value, so a rate's interval stays in [0, 1].
    None with fewer than two values.
    """
    arr = np.asarray(values, dtype=float)
    if arr.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(reps, arr.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def bootstrap_mean_band(ys: np.ndarray, reps: int, seed: int = SEED) -> tuple[np.ndarray, np.ndarray] | None:
    """Pointwise 95% percentile-bootstrap CI of the mean of curves ys (seeds x points), seeds resampled."""
    if ys.shape[0] < 2:
        return None
    rng = np.random.default_rng(seed)
    means = ys[rng.integers(0, ys.shape[0], size=(reps, ys.shape[0]))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return low, high


def describe_metric(metric: str, values: list[float | None], reps: int) -> dict[str, Any]:
    """`describe`, with the CI of a rate (success) from `bootstrap_mean_ci` instead of the t distribution."""
    out: dict[str, Any] = describe(values)
    if metric in RATE_METRICS:
        ci = bootstrap_mean_ci(np.asarray([v for v in values if v is not None], float), reps)
        out["ci95_low"], out["ci95_high"] = ci if ci is not None else (None, None)
        out["ci95_method"] = CI_BOOTSTRAP
    else:
        out["ci95_method"] = CI_T
    return out


@contextmanager
def seeded_global_numpy(seed: int) -> Iterator[None]:
    """Seed NumPy's global generator and restore its previous state afterwards.

    rliable 1.2.0's StratifiedBootstrap draws its indices with `np.random.choice` and ignores the
    `random_state` it is given, so its intervals are reproducible only from a seeded global generator; the
    IQM below draws the same way to give the same numbers.
    """
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def iqm_with_ci(scores: dict[str, np.ndarray], reps: int, seed: int = SEED) -> dict[str, tuple[float, float, float]]:
    """Interquartile mean over seeds with a stratified-bootstrap 95% CI (rliable, Agarwal et al. 2021).

    The numbers of rliable 1.2.0's `get_interval_estimates(..., aggregate_iqm, method="percentile")` on one task,
    bit for bit (tests/test_analysis.py compares them): the same resample indices, drawn from the same seeded
    global generator (`seeded_global_numpy`) as the same stream of `np.random.choice` draws, the same
    `scipy.stats.trim_mean` and percentiles. Only the draws and the statistic are done for all resamples at
    once: rliable draws and calls the statistic once per resample in Python (about 1 s a config at 2000
    resamples, so minutes for a report of a few hundred configs).
    Each config is bootstrapped on its own from the same seed, so its interval does not depend on which
    other configs are in the report.
    """
    from scipy import stats

    alpha = (1.0 - 0.95) / 2  # as arch's conf_int computes its percentiles
    percentiles = [100 * alpha, 100 * (1.0 - alpha)]
    out = {}
    for key, values in scores.items():
        x = np.asarray(values, dtype=float).reshape(-1)
        if x.size == 0:
            continue
        n = x.size
        with seeded_global_numpy(seed):  # rliable's StratifiedBootstrap.update_indices draws (n, 1) per resample:
            index = np.random.choice(n, (reps, n), replace=True)  # one call draws the same stream of indices
        boot = stats.trim_mean(x[index], proportiontocut=0.25, axis=1)
        low, high = np.percentile(boot, percentiles)
        out[key] = (float(stats.trim_mean(x, proportiontocut=0.25, axis=None)), float(low), float(high))
    return out


def sorted_levels(levels: Iterable[str]) -> list[str]:
    """Numeric levels in numeric order, then the others alphabetically."""

    def key(s: str) -> tuple[int, float, str]:
        try:
            return (0, float(s), s)
        except ValueError:
            return (1, 0.0, s)

    return sorted(levels, key=key)


def marginal_effects(groups: list[Group], factors: list[str], metric: str) -> dict[str, list[dict[str, Any]]]:
    """Per factor level: the unweighted mean of config means (the book's "gamma 0.95 vs 0.98: -11 pp")."""
    out: dict[str, list[dict[str, Any]]] = {}
    for factor in factors:
        levels: dict[str, list[float]] = {}
        for g in groups:
            m = g.stats[metric]["mean"]
            if m is not None:
                levels.setdefault(level(g.factors[factor]), []).append(m)
        rows = []
        base = None
        for name in sorted_levels(levels):
            mean = float(np.mean(levels[name]))
            base = mean if base is None else base
            rows.append({"level": name, "mean": mean, "n_configs": len(levels[name]), "delta": mean - base})
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
                cells.setdefault((level(g.factors[fa]), level(g.factors[fb])), []).append(m)
        rows_a = sorted_levels({a for a, _ in cells})
        cols_b = sorted_levels({b for _, b in cells})
        table = {
            a: {b: (float(np.mean(cells[(a, b)])) if (a, b) in cells else None) for b in cols_b} for a in rows_a
        }
        tables.append({"row_factor": fa, "col_factor": fb, "cells": table})
    return tables
