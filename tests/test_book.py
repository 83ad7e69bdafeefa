"""The book's reported results (rlexp/data/book_results.yaml): the file loads, names only real experiments, says
where the book contradicts itself, and `report` puts the book's per-config grid table beside a sweep's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml


def test_book_data_loads_and_every_key_is_an_experiment() -> None:
    from rlexp.analysis import book
    from rlexp.config import compose, experiment_names

    raw = yaml.safe_load(book.DATA.read_text())
    entries = book.entries()
    assert set(entries) == set(raw) and set(entries) <= set(experiment_names())
    # Every experiment the book reports a success figure for is here; the project's own additions are not.
    assert {"ch03_ppo_reach_dense", "ch04_sac_reach_dense", "ch05_her_reach", "ch05_her_push", "ch05_her_grid",
            "ch09_step2_critic_encoder"} <= set(entries)
    assert not {"ch05_her_push_tqc", "ch05_her_push_crossq", "ch01_proof_of_life"} & set(entries)
    for name, e in entries.items():
        assert re.fullmatch(r"ch\d\d", e.chapter) and e.results, name
        for f in e.results:
            rates = f.success if isinstance(f.success, tuple) else (f.success,)
            assert all(0 <= r <= 1 for r in rates) and f.steps > 0, (name, f)
    assert entries["ch05_her_push"].line() == (
        "ch05 SAC+HER Push, book: 40-80% at 1M [inconsistent in the book: ch9's run of this recipe, quoted there as "
        "the ch4/ch5 result, takes off at 1-1.5M]; 99% ± 1% at 2M (3 seeds)")
    assert entries["ch05_her_push"].line(2_000_000) == "ch05 SAC+HER Push, book: 99% ± 1% at 2M (3 seeds)"
    assert entries["ch09_full_state"].line() == "ch09 full-state Push control, book: ≥ 85% at 2M"
    grid = entries["ch05_her_grid"]
    assert len(grid.configs) == 24 and all(len(k) == len(grid.factors) for k in grid.configs)
    swept = compose("+experiment=ch05_her_grid", hydra=True).hydra.sweeper.params
    assert set(grid.factors) <= set(swept)  # the book's factors are the ones the experiment sweeps


def _grid_runs(root: Path, configs: dict[tuple, float], seeds: tuple[int, ...]) -> Path:
    """Run folders of the ch05 grid as a sweep leaves them (model.meta.json, eval.json, .hydra/hydra.yaml with
    the experiment choice and the job's overrides), each config's seeds spread around `configs`' mean."""
    from omegaconf import OmegaConf

    from rlexp import artifacts
    from rlexp.config import compose, to_container

    base = to_container(compose("+experiment=ch05_her_grid"))
    for (ent, nsg, ls, gamma), mean in configs.items():
        for i, seed in enumerate(seeds):
            cfg = {**base, "seed": seed, "env": {**base["env"], "seed": seed},
                   "algo": {**base["algo"], "ent_coef": ent, "learning_starts": ls, "gamma": gamma},
                   "buffer": {**base["buffer"], "n_sampled_goal": nsg}}
            run = root / f"ent{ent}_nsg{nsg}_ls{ls}_g{gamma}_seed{seed}"
            sr = mean + (i - (len(seeds) - 1) / 2) * 0.002
            artifacts.write_json(run / "model.meta.json", {"config": cfg, "total_steps": 2_000_000})
            artifacts.write_json(run / "eval.json", {"aggregate": {"success_rate": sr, "return_mean": -10 * sr,
                                                                   "final_distance_mean": 0.1 * (1 - sr)}})
            overrides = [f"algo.ent_coef={ent}", f"buffer.n_sampled_goal={nsg}", f"algo.learning_starts={ls}",
                         f"algo.gamma={gamma}", f"seed={seed}", "+experiment=ch05_her_grid"]
            hydra = {"hydra": {"runtime": {"choices": {"experiment": "ch05_her_grid"}, "cwd": str(root)},
                               "overrides": {"task": overrides, "hydra": []}}}
            (run / ".hydra").mkdir()
            OmegaConf.save(OmegaConf.create(hydra), run / ".hydra" / "hydra.yaml")
    return root


def test_report_puts_the_books_grid_table_beside_the_sweep(tmp_path: Path) -> None:
    """Four of the book's 24 configs, 3 seeds each, 2 points below the book: the report's per-config table shows
    the book's figure and the difference for exactly those four, and the book's line for the grid."""
    from rlexp.analysis import book

    entry = book.entries()["ch05_her_grid"]
    table = entry.configs
    chosen = dict(list(table.items())[:2] + list(table.items())[-2:])
    grid = _grid_runs(tmp_path / "grid", {k: v - 0.02 for k, v in chosen.items()}, (0, 1, 2))
    from rlexp.analysis.report import build_report, report_markdown

    report = build_report([str(grid)], reps=100)  # in process: the CLI around it is tested in test_analysis.py
    md = report_markdown(report)
    rows = {tuple(r["factors"][f] for f in entry.factors): r for r in report["book_grid"]}
    assert set(rows) == set(chosen)
    for key, r in rows.items():
        assert r["book_success_mean"] == chosen[key] and r["n"] == 3 and r["book_seeds"] == 5
        assert r["success_mean"] == pytest.approx(chosen[key] - 0.02)
    assert "### The book's per-config table beside this sweep" in md
    assert "4 of the book's 24 configs are in this sweep" in md
    assert "| 0.05 | 4 | 1000 | 0.95 | 99.4% | 97.4% (3) | -2.0 pp |" in md
    assert "| 0.2 | 4 | 1000 | 0.98 | 64.0% | 62.0% (3) | -2.0 pp |" in md
    # The grid's factors are its recipe, not a change of it; the book's line names the chapter.
    assert all(r["recipe_changes"] == [] and r["chapter"] == "ch05" for r in report["book"])
    assert "| ch05 SAC+HER Push grid, book for this config: 99.4% at 2M (5 seeds) | the book's |" in md
    assert "| ch05 SAC+HER Push grid, book for this config: 64% at 2M (5 seeds) | the book's |" in md
