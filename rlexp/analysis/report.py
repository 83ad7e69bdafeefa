"""`python -m rlexp report PATH...`: per-config statistics across seeds, factor effects and interactions."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

import numpy as np

from rlexp import artifacts, fmt
from rlexp.analysis import book
from rlexp.analysis.runs import Group, LoadedRun, default_out, group_runs, level, load_runs
from rlexp.analysis.stats import (
    CI_BOOTSTRAP,
    CI_T,
    RATE_METRICS,
    describe_metric,
    interactions,
    iqm_with_ci,
    marginal_effects,
)
from rlexp.errors import ConfigError
from rlexp.rundir import EVAL

METRICS = ("success_rate", "return_mean", "final_distance_mean")


def value(metric: str, x: float | None) -> str:
    """A metric's value as printed: success in %, final distance in mm, return as a plain number."""
    if metric == "success_rate":
        return fmt.percent(x)
    if metric == "final_distance_mean":
        return fmt.mm(x)
    return "-" if x is None else f"{x:.2f}"


def delta(metric: str, x: float) -> str:
    if metric == "success_rate":
        return fmt.points(x)
    if metric == "final_distance_mean":
        return fmt.mm(x, sign=True)
    return f"{x:+.2f}"


def build_report(paths: list[str], reps: int = 2000) -> dict[str, Any]:
    runs = load_runs(paths, unfinished_config=False)  # unfinished runs are listed, not analysed
    finished = [r for r in runs if r.eval is not None]
    missing = [r for r in runs if r.eval is None and r.pruned_step is None]
    pruned = [r for r in runs if r.eval is None and r.pruned_step is not None]
    if not finished:
        raise ConfigError(
            f"none of the {len(runs)} runs found has {EVAL} yet (unfinished: "
            + "; ".join(_missing_line(r) for r in [*missing, *pruned][:10])
            + (" ..." if len(missing) > 10 else "")
            + ")"
        )
    groups, factors = group_runs(finished)
    for g in groups:
        g.stats = {m: describe_metric(m, [r.eval.get(m) for r in g.runs], reps) for m in METRICS}
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
        "pruned": [{"run_dir": str(r.path), "pruned_step": r.pruned_step} for r in pruned],
        "warnings": [w for r in runs for w in r.warnings],
        "factors": factors,
        "configs": [],
        "marginal_effects": {m: marginal_effects(groups, factors, m) for m in METRICS},
        "interactions": {m: interactions(groups, factors, m) for m in METRICS},
        "iqm_bootstrap_reps": reps,
        "ci95_methods": {m: CI_BOOTSTRAP if m in RATE_METRICS else CI_T for m in METRICS},
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
    report["book"], report["book_grid"] = beside_the_book(groups)
    return report


def beside_the_book(groups: list[Group]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per config of an experiment the book reports: its measured success beside the book's figures (with the
    chapter, and the overrides that make it another recipe); for the ch05 grid also the book's figure for the
    same config, one row per config the sweep ran."""
    rows, grid = [], []
    for g in groups:
        experiment = g.runs[0].experiment
        e = book.entry(experiment)
        if e is None:
            continue
        steps = sorted({r.steps for r in g.runs if r.steps is not None})
        success = g.stats["success_rate"]
        changes = list(dict.fromkeys(c for r in g.runs for c in book.recipe_changes(r.path, e.factors)))
        rows.append({
            "label": g.label,
            "experiment": experiment,
            "chapter": e.chapter,
            "what": f"{e.chapter} {e.task}",
            "steps": steps,
            "success_mean": success["mean"],
            "n": success["n"],
            "book": e.line_for(g.runs[0].config),
            "book_notes": e.notes,
            "recipe_changes": changes,
        })
        figure = book.grid_row(e, g.runs[0].config)
        if figure is not None:
            grid.append({
                "label": g.label,
                "factors": {f: g.runs[0].config.get(f) for f in e.factors},
                "book_success_mean": figure,
                "book_seeds": e.results[0].seeds,
                "success_mean": success["mean"],
                "n": success["n"],
                "n_book_configs": len(e.configs),
            })
    grid.sort(key=lambda r: -r["book_success_mean"])
    return rows, grid


def _missing_line(run: LoadedRun) -> str:
    if run.pruned_step is not None:
        return f"{run.path.name} (pruned at step {run.pruned_step})"
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
    if report.get("pruned"):
        w(f"**Pruned {len(report['pruned'])} run(s)** (Optuna trials their search stopped; not run again):\n\n")
        for m in report["pruned"]:
            w(f"- `{m['run_dir']}` (pruned at step {m['pruned_step']})\n")
        w("\n")
    w(
        f"## Per config (across seeds; success 95% CI: {CI_BOOTSTRAP}, stays within 0-100%; "
        f"IQM CI: stratified bootstrap; {report['iqm_bootstrap_reps']} seeded resamples each; "
        f"other metrics' CIs in report.json: {CI_T} distribution)\n\n"
    )
    w(
        "| config | n | success mean | std | 95% CI | min-max | IQM [95% CI] | return mean ± std "
        "| final distance |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    sr = "success_rate"
    for c in report["configs"]:
        s, r, d = c[sr], c["return_mean"], c["final_distance_mean"]
        ci = f"[{value(sr, s['ci95_low'])}, {value(sr, s['ci95_high'])}]" if s["ci95_low"] is not None else "-"
        iqm = (
            f"{value(sr, s['iqm'])} [{value(sr, s['iqm_ci95_low'])}, {value(sr, s['iqm_ci95_high'])}]"
            if "iqm" in s
            else "-"
        )
        rstd = f" ± {r['std']:.2f}" if r["std"] is not None else ""
        w(
            f"| {c['label']} | {s['n']} | {value(sr, s['mean'])} | {value(sr, s['std'])} | {ci} | "
            f"{value(sr, s['min'])}-{value(sr, s['max'])} | {iqm} | {value('return_mean', r['mean'])}{rstd} | "
            f"{value('final_distance_mean', d['mean'])} |\n"
        )
    if report["factors"]:
        w("\n## Marginal effect of each factor (unweighted mean of config means per level)\n\n")
        w("| factor | level | configs | success | Δ success | return | Δ return |\n|---|---|---|---|---|---|---|\n")
        for factor in report["factors"]:
            rt = {row["level"]: row for row in report["marginal_effects"]["return_mean"][factor]}
            for row in report["marginal_effects"][sr][factor]:
                rr = rt.get(row["level"])
                ret = value("return_mean", rr["mean"]) if rr else "-"
                ret_delta = delta("return_mean", rr["delta"]) if rr else "-"
                w(
                    f"| {factor} | {row['level']} | {row['n_configs']} | {value(sr, row['mean'])} | "
                    f"{delta(sr, row['delta'])} | {ret} | {ret_delta} |\n"
                )
        if report["interactions"][sr]:
            w("\n## Interactions (mean success of config means)\n")
        for t in report["interactions"][sr]:
            cols = list(next(iter(t["cells"].values())).keys()) if t["cells"] else []
            w(f"\n{t['row_factor']} (rows) x {t['col_factor']} (columns)\n\n")
            w("| | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n")
            for a, row in t["cells"].items():
                w(f"| {a} | " + " | ".join(value(sr, row[b]) for b in cols) + " |\n")
    _book_markdown(report, w)
    for warning in report["warnings"]:
        w(f"\nwarning: {warning}\n")
    return out.getvalue()


def _book_markdown(report: dict[str, Any], w: Any) -> None:
    """The "beside the book" sections of report.md (from report["book"] and report["book_grid"])."""
    rows = report.get("book") or []
    if not rows:
        return
    sr = "success_rate"
    w("\n## Beside the book\n\n"
      "The book's reported results (rlexp/data/book_results.yaml) for the experiment each config comes from. They "
      "are for the book's recipe at the steps they name; a config that sets other keys is another run.\n\n")
    w("| config | steps | success (seeds) | book | recipe |\n|---|---|---|---|---|\n")
    for r in rows:
        steps = ", ".join(f"{s:,}" for s in r["steps"]) or "-"
        recipe = ("sets " + ", ".join(f"`{c}`" for c in r["recipe_changes"])) if r["recipe_changes"] else "the book's"
        w(f"| {r['label']} | {steps} | {value(sr, r['success_mean'])} ({r['n']}) | {r['book']} | {recipe} |\n")
    notes = {r["what"]: r["book_notes"] for r in rows if r["book_notes"]}
    if notes:
        w("\n" + "".join(f"- {what}: {note}\n" for what, note in notes.items()))
    grid = report.get("book_grid") or []
    if grid:
        names = list(grid[0]["factors"])
        w(f"\n### The book's per-config table beside this sweep\n\n{len(grid)} of the book's "
          f"{grid[0]['n_book_configs']} configs are in this sweep; the book's column is its mean over "
          f"{grid[0]['book_seeds']} seeds, as printed.\n\n")
        w("| " + " | ".join(names) + " | book | this sweep (seeds) | Δ |\n|" + "---|" * (len(names) + 3) + "\n")
        for r in grid:
            d = delta(sr, r["success_mean"] - r["book_success_mean"]) if r["success_mean"] is not None else "-"
            w("| " + " | ".join(level(r["factors"][f]) for f in names)
              + f" | {value(sr, r['book_success_mean'])} | {value(sr, r['success_mean'])} ({r['n']}) | {d} |\n")


def report_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for c in report["configs"]:
        row: dict[str, Any] = {
            "config": c["label"],
            **{f"factor:{k}": v for k, v in c["factors"].items()},
            "seeds": " ".join(map(str, c["seeds"])),
        }
        for m in METRICS:
            for stat, x in c[m].items():
                row[f"{m}_{stat}"] = x
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


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", help="multirun directory(ies) and/or run directories")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder for report.md/.csv/.json (default: the first path if it is not a run dir, "
        "else the current directory)",
    )
    p.add_argument(
        "--reps", type=int, default=2000, help="bootstrap resamples for the success and IQM CIs (default 2000)"
    )


def run(args: argparse.Namespace) -> int:
    """Per-config statistics across seeds, factor effects and interactions of a sweep (Markdown/CSV/JSON)."""
    if args.reps < 100:
        raise ConfigError(f"--reps must be >= 100, got {args.reps}")
    report = build_report(args.paths, args.reps)
    out = default_out(args.paths, args.out)
    print(report_markdown(report))
    for path in write_report(report, out):
        print(f"wrote {path}", file=sys.stderr)
    if report["missing"]:
        print(
            f"warning: {len(report['missing'])} of {report['n_runs']} runs have no {EVAL}; "
            "the report uses the finished ones",
            file=sys.stderr,
        )
    return 0
