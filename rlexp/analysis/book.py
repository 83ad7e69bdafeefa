"""The book's reported results (rlexp/data/book_results.yaml), to print beside a run's or a sweep's own numbers.

The file holds one entry per experiment with its chapter; `figures` writes an entry as one line
("ch05 SAC+HER Push, book: 99% ± 1% at 2M (3 seeds)"), `recipe_changes` says which of a run's command-line
overrides make it another run than the book's (seeds, step counts and run-only keys do not), and `grid_row` finds
the book's figure for one config of the ch05 grid.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent.parent / "data" / "book_results.yaml"
# Overrides that leave a run the book's recipe: which experiment, which seed, how long, where and how it runs.
SAME_RECIPE = ("experiment", "seed", "env.seed", "total_steps", "hydra")


@dataclass(frozen=True)
class Figure:
    """One reported result: a success rate (or range, or bound) at a step count."""

    steps: int
    success: float | tuple[float, float]
    pm: float | None = None
    at_least: bool = False
    seeds: int | None = None
    flat: bool = False
    inconsistent: str | None = None
    what: str | None = None

    def text(self) -> str:
        """`99% ± 1% at 2M (3 seeds)`, `40-80% at 1M`, `≥ 85% at 2M`, `flat at 6% to 2.2M`."""
        if isinstance(self.success, tuple):
            rate = f"{pct(self.success[0])[:-1]}-{pct(self.success[1])}"
        else:
            rate = pct(self.success)
        if self.pm is not None:
            rate += f" ± {pct(self.pm)}"
        if self.at_least:
            rate = f"≥ {rate}"
        where = f"flat at {rate} to {steps_text(self.steps)}" if self.flat else f"{rate} at {steps_text(self.steps)}"
        about = [f"{self.seeds} seed{'s' if self.seeds != 1 else ''}"] if self.seeds else []
        about += [self.what] if self.what else []
        seeds = f" ({'; '.join(about)})" if about else ""
        return where + seeds + (f" [inconsistent in the book: {self.inconsistent}]" if self.inconsistent else "")


@dataclass(frozen=True)
class Entry:
    """The book's results for one experiment."""

    experiment: str
    chapter: str
    task: str
    results: tuple[Figure, ...]
    notes: str | None = None
    factors: tuple[str, ...] = ()
    configs: dict[tuple, float] = field(default_factory=dict)  # grid: factor values -> mean success

    def line(self, steps: int | None = None) -> str:
        """`ch05 SAC+HER Push, book: ...`: every figure, or with `steps` the one nearest to it."""
        shown = self.results if steps is None else (nearest(self.results, steps),)
        return f"{self.chapter} {self.task}, book: " + "; ".join(f.text() for f in shown)

    def line_for(self, config: dict[str, Any], steps: int | None = None) -> str:
        """`line`, or for a grid config (flattened `config`) the book's figure for that config."""
        mean = grid_row(self, config)
        if mean is None:
            return self.line(steps)
        first = self.results[0]
        return f"{self.chapter} {self.task}, book for this config: {pct(mean)} at {steps_text(first.steps)}" + (
            f" ({first.seeds} seeds)" if first.seeds else "")


def pct(rate: float) -> str:
    """A rate as the book prints it: 0.99 -> 99%, 0.994 -> 99.4%."""
    return f"{100 * rate:.1f}".removesuffix(".0") + "%"


def steps_text(steps: int) -> str:
    """500000 -> 500k, 2200000 -> 2.2M."""
    for div, unit in ((1_000_000, "M"), (1_000, "k")):
        if steps >= div:
            return f"{steps / div:g}{unit}"
    return str(steps)


def nearest(results: tuple[Figure, ...], steps: int) -> Figure:
    """The figure reported at the step count closest to `steps` (the later one on a tie)."""
    return min(results, key=lambda f: (abs(f.steps - steps), -f.steps))


@functools.cache
def entries() -> dict[str, Entry]:
    """Every entry of the data file, by experiment name."""
    import yaml

    data = yaml.safe_load(DATA.read_text())
    out = {}
    for name, e in data.items():
        results = tuple(
            Figure(int(r["steps"]), tuple(r["success"]) if isinstance(r["success"], list) else float(r["success"]),
                   r.get("pm"), bool(r.get("at_least")), r.get("seeds"), bool(r.get("flat")), r.get("inconsistent"),
                   r.get("what"))
            for r in e["results"]
        )
        factors = tuple(e.get("factors") or ())
        configs = {tuple(row[:-1]): float(row[-1]) for row in e.get("configs") or ()}
        out[name] = Entry(name, e["chapter"], e["task"], results, e.get("notes"), factors, configs)
    return out


def entry(experiment: str | None) -> Entry | None:
    return entries().get(experiment) if experiment else None


def grid_row(e: Entry, config: dict[str, Any]) -> float | None:
    """The book's mean success for the grid config whose factor values `config` (flattened) has, else None."""
    if not e.factors:
        return None
    key = tuple(config.get(f) for f in e.factors)
    return next((v for k, v in e.configs.items() if all(_same(a, b) for a, b in zip(k, key, strict=True))), None)


def _same(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def recipe_changes(run_dir: Path, factors: tuple[str, ...] = ()) -> list[str]:
    """The overrides of the command(s) that made this run (a fork's source's too) that change what it computes
    against the book's recipe: not the experiment, seed, step count, run-only keys or (for the grid) its factors."""
    from omegaconf import OmegaConf

    from rlexp.analysis.runs import hydra_record, is_run_only, source_of

    changes: list[str] = []
    seen: set[Path] = set()
    current: Path | None = Path(run_dir).resolve()
    while current is not None and current not in seen:
        seen.add(current)
        node = hydra_record(current)
        for override in (OmegaConf.select(node, "hydra.overrides.task", default=[]) or []) if node else []:
            key = override.split("=", 1)[0].lstrip("+~")
            same = any(key == k or key.startswith((k + ".", k + "/")) for k in SAME_RECIPE)
            if not (same or is_run_only(key) or key in factors):
                changes.append(override.lstrip("+"))
        current = source_of(current)
    return list(dict.fromkeys(changes))


def summary_note(run_dir: str | Path, steps: int | None) -> str:
    """What a run's closing summary line adds: ` | book: ...` for a run of an experiment the book reports, with
    the figure nearest to its step count (the grid: its config's), and the overrides that make it another recipe.
    Empty for any other run; never raises (the note must not cost a finished run its summary)."""
    try:
        from rlexp.analysis.runs import experiment_of, run_config
        from rlexp.config import flatten

        e = entry(experiment_of(Path(run_dir)))
        if e is None:
            return ""
        text = e.line_for(flatten(run_config(Path(run_dir))), steps)
        changed = recipe_changes(Path(run_dir), e.factors)
        return f" | {text}" + (f" (the book's recipe; this run sets {', '.join(changed)})" if changed else "")
    except Exception:  # noqa: BLE001 - an unreadable .hydra/ or meta must not fail a finished run
        return ""
