"""HPO: the objective a run reports, and a real Optuna study (hydra-optuna-sweeper) driven through run.py.

The sweep uses the shipped preset (hparams_search=her_push_optuna) on tiny HER Reach runs, with batch size
and network fixed small so every trial takes seconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlexp import hpo
from rlexp.status import Status, Summary

from helpers import HER_TINY, ok, read_json, run_py

STUDY = "her_push_optuna"  # the preset's study_name
# optuna 2.10 (the newest hydra-optuna-sweeper allows) on its pinned SQLAlchemy 1.4: a notice about 2.0, not a fault.
pytestmark = pytest.mark.filterwarnings("ignore:Deprecated API features detected")


def test_objective_is_float_of_a_finished_run_only() -> None:
    """Optuna's sweeper reads float(job return): a result for finished runs, an error (failed trial) otherwise."""
    metrics = {"success_rate": 0.5, "return_mean": -20.0, "final_distance_mean": 0.03}
    assert hpo.objective("success_rate", metrics) == pytest.approx(0.5 - 20.0 / 1e6)
    assert hpo.objective("return", metrics) == -20.0
    assert hpo.objective("neg_final_distance", metrics) == -0.03
    # The return only breaks ties: 1 more success in 100 episodes beats the best possible return gap (50).
    assert hpo.objective("success_rate", {**metrics, "success_rate": 0.51, "return_mean": -50.0}) > \
        hpo.objective("success_rate", {**metrics, "return_mean": 0.0})
    assert hpo.objective("success_rate", {"success_rate": None, "return_mean": None}) is None
    assert float(Summary(Status.DONE, "d", objective=0.25)) == 0.25
    for status in (Status.BUSY, Status.INTERRUPTED, Status.FAILED):
        with pytest.raises(TypeError):
            float(Summary(status, "d"))


def test_unknown_objective_is_bad_input() -> None:
    proc = run_py("objective=accuracy", "total_steps=100")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: unknown objective 'accuracy'; choose one of: success_rate, return, neg_final_distance"]


def _trial_runs(sweep: Path) -> dict[str, Path]:
    return {p.name: p for p in sweep.iterdir() if p.name.startswith("trial-")}


def _overrides(run: Path) -> dict[str, str]:
    import yaml

    return dict(o.split("=", 1) for o in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()))


def _run_of(trial, runs: dict[str, Path]) -> Path:  # noqa: ANN001 - an optuna FrozenTrial
    """The run folder whose overrides carry this trial's sampled values."""
    found = [r for r in runs.values()
             if all(_overrides(r).get(k) == str(v) for k, v in trial.params.items())]
    assert len(found) == 1, (trial.params, [_overrides(r) for r in runs.values()])
    return found[0]


@pytest.mark.slow
def test_optuna_study_in_the_sweep_dir_continues_on_rerun(tmp_path: Path) -> None:
    import optuna

    sweep = tmp_path / "hpo"
    tiny = [o for o in HER_TINY if "net_arch" not in o]
    command = ["hparams_search=her_push_optuna", *tiny, "total_steps=200", "++algo.policy_kwargs.net_arch=[32,32]",
               "algo.batch_size=32", "checkpoint_freq=0", f"hydra.sweep.dir={sweep}"]
    storage = f"sqlite:///{sweep / 'optuna.db'}"

    def check_values(study: optuna.Study, runs: dict[str, Path]) -> None:
        for trial in study.trials:
            assert trial.state == optuna.trial.TrialState.COMPLETE, trial
            run = _run_of(trial, runs)
            agg = read_json(run / "eval.json")["aggregate"]
            assert trial.value == hpo.objective("success_rate", agg), (trial.number, run)

    ok(run_py(*command, "hydra.sweeper.n_trials=2", multirun=True))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert len(study.trials) == 2
    runs = _trial_runs(sweep)
    assert len(runs) == 2 and all((r / "eval.json").exists() for r in runs.values())
    check_values(study, runs)
    best = (sweep / "optimization_results.yaml").read_text()
    assert "best_params" in best and "algo.learning_rate" in best

    # The same command again continues the study with two new trials (not the first two proposed again).
    rerun = ok(run_py(*command, "hydra.sweeper.n_trials=2", multirun=True))
    assert f"study {STUDY} holds 2 trials" in rerun.stdout + rerun.stderr
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert len(study.trials) == 4
    assert study.trials[2].params != study.trials[0].params and study.trials[3].params != study.trials[1].params
    runs = _trial_runs(sweep)
    assert len(runs) == 4
    check_values(study, runs)

    # A trial that samples a finished point is skipped and reports that run's eval.json (here a fresh study
    # with the same seed proposes study 1's first trial), with the objective this command chooses.
    replay = ok(run_py(*command, "hydra.sweeper.study_name=replay", "hydra.sweeper.n_trials=1",
                       "objective=neg_final_distance", multirun=True))
    assert "skipped:" in replay.stdout + replay.stderr
    assert len(_trial_runs(sweep)) == 4
    again = optuna.load_study(study_name="replay", storage=storage).trials
    first = optuna.load_study(study_name=STUDY, storage=storage).trials[0]
    assert len(again) == 1 and again[0].params == first.params
    agg = read_json(_run_of(first, runs) / "eval.json")["aggregate"]
    assert again[0].value == -agg["final_distance_mean"]
