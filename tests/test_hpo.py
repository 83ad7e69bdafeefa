"""HPO: the objective a run reports, and a real Optuna study (hydra-optuna-sweeper) driven through run.py.

The sweep uses the shipped preset (hparams_search=her_push_optuna) on tiny HER Reach runs, with batch size
and network fixed small so every trial takes seconds.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rlexp import hpo
from rlexp.status import Status, Summary

from helpers import HER_TINY, ROOT, _env, ok, read_json, run_py, wait_for

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


def test_unknown_objective_is_bad_input(tmp_path: Path) -> None:
    """Refused with one line and exit 2: by a run before training, by a search before its study is opened."""
    line = "error: unknown objective 'accuracy'; choose one of: success_rate, return, neg_final_distance"
    proc = run_py("objective=accuracy", "total_steps=100", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [line], proc.stderr
    search = run_py("hparams_search=her_push_optuna", "+experiment=ch05_her_reach", "objective=accuracy",
                    f"hydra.sweep.dir={tmp_path / 'hpo'}", multirun=True)
    assert search.returncode == 2 and search.stderr.strip().splitlines() == [line], search.stderr
    assert not (tmp_path / "hpo").exists()


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
    """A stopped search resumes its stopped trial and reports its finished one; the next command adds new trials."""
    import optuna

    sweep = tmp_path / "hpo"
    tiny = [o for o in HER_TINY if "net_arch" not in o]
    command = ["hparams_search=her_push_optuna", *tiny, "total_steps=300", "++algo.policy_kwargs.net_arch=[32,32]",
               "algo.batch_size=32", "checkpoint_freq=0", f"hydra.sweep.dir={sweep}"]
    storage = f"sqlite:///{sweep / 'optuna.db'}"

    def study() -> list[optuna.trial.FrozenTrial]:
        return optuna.load_study(study_name=STUDY, storage=storage).trials

    def check_values(trials: list[optuna.trial.FrozenTrial], runs: dict[str, Path]) -> None:
        for trial in trials:
            assert trial.state == optuna.trial.TrialState.COMPLETE, trial
            agg = read_json(_run_of(trial, runs) / "eval.json")["aggregate"]
            assert trial.value == hpo.objective("success_rate", agg), (trial.number, trial.params)

    # 1. Ctrl-C while the second trial trains: its run checkpoints, the command exits 3.
    proc = subprocess.Popen([sys.executable, "run.py", "-m", *command, "hydra.sweeper.n_trials=2"], cwd=ROOT,
                            env=_env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(list(sweep.glob("trial-*/.hydra/config.yaml"))) == 2, 300, proc, "the second trial")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, out[-3000:]
    assert [t.state for t in study()] == [optuna.trial.TrialState.RUNNING] * 2  # told only after the batch

    # 2. The same command: both trials asked again first, the finished run skipped with its eval.json, the
    #    stopped one resumed from its checkpoint; the study (in the sweep dir) now holds 4 trials.
    rerun = ok(run_py(*command, "hydra.sweeper.n_trials=2", multirun=True))
    log = rerun.stdout + rerun.stderr
    assert "skipped:" in log and ("resuming" in log or "evaluating it" in log), log[-3000:]  # stop in eval: evaluates
    trials = study()
    assert [t.state for t in trials[:2]] == [optuna.trial.TrialState.FAIL] * 2
    assert [t.params for t in trials[2:]] == [t.params for t in trials[:2]]
    runs = _trial_runs(sweep)
    assert len(trials) == 4 and len(runs) == 2
    check_values(trials[2:], runs)
    assert "best_params" in (sweep / "optimization_results.yaml").read_text()

    # 3. Again: the study continues with a new point (the sampler's seed moves on with the study).
    again = ok(run_py(*command, "hydra.sweeper.n_trials=1", multirun=True))
    assert f"study {STUDY} holds 4 trials" in again.stdout + again.stderr
    trials = study()
    assert len(trials) == 5 and trials[4].params not in [t.params for t in trials[:4]]
    runs = _trial_runs(sweep)
    assert len(runs) == 3
    check_values(trials[2:], runs)
