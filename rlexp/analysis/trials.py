"""The trials of an Optuna search in a sweep directory, for `python -m rlexp status`: read from the study itself.

A search (hparams_search=..., rlexp's Optuna sweeper) keeps its study in the sweep directory: `optuna.db` (SQLite)
or `optuna.journal` (Optuna's journal file, under SLURM). Each trial: its state in the study (running, complete,
pruned, fail, waiting), its value, the last step it reported (an evaluation), where the pruner stopped it, and its
run directory (`trial-NNNN`); a trial of several seeds, each seed's objective and run directory (`trial-NNNN-seed-S`)
under it. Read-only; nothing is read unless such a file exists, and Optuna is imported only then.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlexp import hpo

STATES = ("running", "complete", "pruned", "fail", "waiting")


@dataclass
class TrialState:
    study: str
    number: int
    state: str
    value: float | None
    step: int | None  # the last step it reported (a periodic evaluation)
    pruned_at: int | None
    run_dir: str
    params: dict[str, Any]
    best: bool = False  # the study's best trial (by its direction)
    seeds: dict[int, float | None] | None = None  # several seeds per trial: each seed's objective (value: mean)


def study_specs(root: Path) -> list[str]:
    """Storage specs of the study files in a sweep directory."""
    found = []
    for kind, name in hpo.STORAGE_FILES.items():
        path = Path(root) / name
        if path.is_file() and path.stat().st_size > 0:
            found.append(f"{hpo.SQLITE}{path.resolve()}" if kind == "sqlite" else f"{hpo.JOURNAL}{path.resolve()}")
    return found


def trials(root: Path) -> list[TrialState]:
    """Every trial of every study in the sweep directory, by study then number; [] without a study file."""
    specs = study_specs(root)
    if not specs:
        return []
    try:
        import optuna
    except ImportError:  # the hpo extra is not installed here
        return []
    logging.getLogger("alembic").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = []
    for spec in specs:
        storage = hpo.open_storage(spec)
        for name in optuna.study.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            try:
                best = study.best_trial.number
            except ValueError:  # no trial complete yet
                best = None
            for t in study.get_trials(deepcopy=False):
                state = t.state.name.lower()
                step = max(t.intermediate_values) if t.intermediate_values else None
                seeds = hpo.trial_seeds(t.user_attrs.get(hpo.SEEDS_ATTR))
                out.append(TrialState(study=name, number=t.number, state=state, value=t.value, step=step,
                                      pruned_at=step if state == "pruned" else None,
                                      run_dir=hpo.trial_dir(t.number, seeds, "*") if seeds else hpo.trial_dir(t.number),
                                      params=dict(t.params), best=t.number == best,
                                      seeds={s: t.user_attrs.get(hpo.seed_attr(s)) for s in seeds} if seeds else None))
    return out


def render(rows: list[TrialState], n_trials: int | None = None) -> list[str]:
    """The trials table of `status`: one line a trial, after a line of counts."""
    if not rows:
        return []
    counts = {s: sum(1 for r in rows if r.state == s) for s in STATES}
    total = f"{len(rows)}/{n_trials}" if n_trials else str(len(rows))
    studies = sorted({r.study for r in rows})
    lines = [f"study {', '.join(studies)}: {total} trials -- " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    for best in [r for r in rows if r.best and r.value is not None]:
        lines.append(f"best: trial {best.number} ({best.run_dir}) value {best.value:.6g}")
    lines.append(f"{'trial':>5}  {'state':<9}  {'value':>10}  {'step':>10}  run directory")
    for r in rows:
        value = f"{r.value:.4g}" if r.value is not None else "-"
        step = f"{r.step:,}" if r.step is not None else "-"
        where = f"pruned at step {r.pruned_at:,}" if r.pruned_at is not None else ""
        lines.append(f"{r.number:>5}  {r.state:<9}  {value:>10}  {step:>10}  {r.run_dir}  {where}".rstrip())
        for seed, got in (r.seeds or {}).items():  # the mean's parts, under their trial
            part = f"{got:.4g}" if got is not None else "-"
            lines.append(f"{'':>5}  {'seed ' + str(seed):<9}  {part:>10}  {'':>10}  "
                         f"{hpo.trial_dir(r.number, [seed], seed)}")
    return lines
