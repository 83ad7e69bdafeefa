"""HPO: the objective a run reports, the search space, a trial's link to its study, and real Optuna studies driven
through run.py by rlexp's Optuna sweeper (hydra_plugins/rlexp_optuna).

The end-to-end searches use the shipped preset (hparams_search=her_push_optuna) on tiny HER Reach runs, with batch
size and network fixed small and the learning rate narrowed, so every trial takes seconds.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from rlexp import hpo
from rlexp.errors import ConfigError
from rlexp.status import Status, Summary

from helpers import HER_TINY, ok, read_json, rlexp_cli, run_py, start_py, wait_for

STUDY = "her_push_optuna"  # the preset's study_name
TINY = [o for o in HER_TINY if "net_arch" not in o] + [
    "hparams_search=her_push_optuna", "++algo.policy_kwargs.net_arch=[32,32]", "algo.batch_size=32",
    "algo.learning_rate=tag(log, interval(1e-4, 1e-3))", "eval.freq=100", "eval.freq_episodes=2"]


def test_objective_is_float_of_a_finished_run_only() -> None:
    """A sweeper reads float(job return): a result for finished runs, an error otherwise."""
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
    assert Status.PRUNED.exit_code == 5


def test_trial_keys_leave_the_config_hash_alone() -> None:
    """The `trial` node (run-only keys a search sets) is not part of what a run computes: a config's hash is the
    one it had before the node existed, with or without a trial, so earlier runs are still skipped and resumed."""
    from rlexp.config import compose, config_hash, to_container

    cfg = to_container(compose("+experiment=ch05_her_reach"))
    with_trial = {**cfg, "trial": {"number": 3, "study": "s", "storage": "sqlite:////x.db"}}
    before = {k: v for k, v in cfg.items() if k != "trial"}
    assert config_hash(cfg) == config_hash(with_trial) == config_hash(before)


def test_search_space_of_the_preset_and_the_command_line() -> None:
    """hydra-optuna-sweeper's syntax as Optuna distributions; the command line fixes or narrows a key."""
    from omegaconf import OmegaConf
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.rlexp_optuna import space
    from rlexp.config import CONF_DIR

    preset = OmegaConf.load(CONF_DIR / "hparams_search" / "her_push_optuna.yaml").hydra.sweeper.params
    params = [f"{k}={v}" for k, v in preset.items()]
    found, fixed = space.parse(params, ["+experiment=ch05_her_push", "algo.gamma=0.95",
                                        "algo.tau=choice(0.005,0.01)", "seed=range(0,10,3)"])
    by_key = {p.key: p for p in found}
    assert "algo.gamma" not in by_key and fixed == ["+experiment=ch05_her_push", "algo.gamma=0.95"]
    assert by_key["algo.learning_rate"].distribution == FloatDistribution(1e-5, 1.0, log=True)
    assert by_key["algo.tau"].distribution == CategoricalDistribution([0.005, 0.01])
    assert by_key["buffer.n_sampled_goal"].distribution == IntDistribution(1, 5)
    assert by_key["seed"].distribution == IntDistribution(0, 9, step=3)  # Hydra's range: stop excluded
    net = by_key["algo.policy_kwargs.net_arch"]
    assert net.prefix == "++" and net.distribution.choices[0] == "[64,64]"
    assert net.override("[64,64]") == "++algo.policy_kwargs.net_arch=[64,64]"
    assert by_key["algo.ent_coef"].distribution.choices == ("auto", 0.5, 0.1, 0.05, 0.01, 0.0001)
    with pytest.raises(ConfigError, match="empty range"):
        space.parse(["seed=range(5,1)"], [])


def test_storage_spec(tmp_path: Path) -> None:
    """SQLite in the sweep dir by default, the journal file under SLURM, a URL as given, anything else refused."""
    assert hpo.storage_spec(None, tmp_path) == f"sqlite:///{tmp_path / 'optuna.db'}"
    assert hpo.storage_spec(None, tmp_path, slurm=True) == f"journal:{tmp_path / 'optuna.journal'}"
    assert hpo.storage_spec("journal", tmp_path) == f"journal:{tmp_path / 'optuna.journal'}"
    assert hpo.storage_spec("postgresql://h/db", tmp_path) == "postgresql://h/db"
    assert hpo.study_file(f"journal:{tmp_path}/x.journal") == tmp_path / "x.journal"
    with pytest.raises(ConfigError, match="choose sqlite, journal"):
        hpo.storage_spec("optuna.db", tmp_path)
    with pytest.raises(ConfigError, match="not an Optuna pruner"):
        hpo.make_pruner({"_target_": "os.system", "command": "true"})


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_one_search_command_per_study_file_beside_the_storages_own_lock(tmp_path: Path, kind: str) -> None:
    """While a search holds its study file, the storage works as usual (the journal file takes its own lock and
    lets it go) and a second search command is refused. A study lock at Optuna's own lock path made the first
    journal write wait 30 s for it, then remove it as stale: the lock file was gone (the lease alone still held)."""
    import optuna

    spec = hpo.storage_spec(kind, tmp_path)
    file = hpo.study_file(spec)
    assert file is not None
    file.parent.mkdir(parents=True, exist_ok=True)
    legacy = file.with_name(file.name + ".lock")
    legacy.write_text("pid 1 on host old since then\n")  # left by an earlier rlexp at Optuna's journal-lock path
    held = hpo.StudyLock(file)
    assert held.acquire()
    assert not legacy.exists(), "an earlier version's lock file, held by nobody, is removed"
    try:
        study = optuna.create_study(study_name="s", storage=hpo.open_storage(spec))
        study.tell(study.ask(), 1.0)
        assert held.path.exists()
        assert not hpo.StudyLock(file).acquire(), "a second search command on the same study file"
    finally:
        held.release()
    again = hpo.StudyLock(file)
    assert again.acquire()
    again.release()


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_trial_link_reports_prunes_and_tells(tmp_path: Path, kind: str) -> None:
    """A trial's job, given only the storage, the study name and its number: it reports each evaluation, the
    study's pruner (named in the study, as the sweeper stores it) stops a trial below the median, and it tells
    the result; a finished trial takes no more values."""
    import optuna
    from omegaconf import OmegaConf

    spec = hpo.storage_spec(kind, tmp_path)
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0}
    study = optuna.create_study(study_name="s", storage=hpo.open_storage(spec), direction="maximize")
    study.set_user_attr(hpo.PRUNER_ATTR, pruner)
    good, bad = study.ask(), study.ask()

    def link(number: int) -> hpo.TrialLink:
        cfg = OmegaConf.create({"objective": "return", "trial": {"number": number, "study": "s", "storage": spec}})
        found = hpo.TrialLink.of(cfg)
        assert found is not None
        return found

    first = link(good.number)
    assert first.report(100, {"return_mean": -10.0}) is False
    first.tell("complete", -5.0)
    second = link(bad.number)
    assert second.report(100, {"return_mean": -40.0}) is True  # below the one finished trial's -10 at step 100
    second.tell("pruned")
    trials = optuna.load_study(study_name="s", storage=hpo.open_storage(spec)).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED]
    assert trials[0].value == -5.0 and trials[1].intermediate_values == {100: -40.0}
    assert link(good.number).report(200, {"return_mean": 0.0}) is False  # finished: nothing reported
    assert optuna.load_study(study_name="s", storage=hpo.open_storage(spec)).trials[0].intermediate_values == \
        {100: -10.0}
    assert hpo.TrialLink.of(OmegaConf.create({"objective": "return", "trial": {"number": None}})) is None


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_several_seeds_one_trial(tmp_path: Path, kind: str) -> None:
    """A trial of two seeds (two jobs): only its first seed reports evaluations and is asked the pruner; the other
    stops at its next evaluation once the trial is pruned. The trial's value is told once both seeds stored
    theirs, as their mean, whichever finishes last; telling it again (the sweeper, from the returns) changes
    nothing."""
    import optuna
    from omegaconf import OmegaConf

    spec = hpo.storage_spec(kind, tmp_path)
    pruner = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1, "n_warmup_steps": 0}
    study = optuna.create_study(study_name="s", storage=hpo.open_storage(spec), direction="maximize")
    study.set_user_attr(hpo.PRUNER_ATTR, pruner)
    good, bad = study.ask(), study.ask()

    def link(number: int, seed: int) -> hpo.TrialLink:
        cfg = OmegaConf.create({"objective": "return", "seed": seed,
                                "trial": {"number": number, "study": "s", "storage": spec, "seeds": [3, 5]}})
        found = hpo.TrialLink.of(cfg)
        assert found is not None
        return found

    def trials() -> list:
        return optuna.load_study(study_name="s", storage=hpo.open_storage(spec)).trials

    lead, other = link(good.number, 3), link(good.number, 5)
    assert lead.lead and not other.lead
    assert other.report(100, {"return_mean": -30.0}) is False
    assert lead.report(100, {"return_mean": -10.0}) is False
    other.tell("complete", -4.0)
    assert trials()[0].state == optuna.trial.TrialState.RUNNING  # one seed of two: not told yet
    lead.tell("complete", -7.0)
    lead.tell("complete", -7.0)  # the sweeper tells from the returns too
    first = trials()[0]
    assert first.state == optuna.trial.TrialState.COMPLETE and first.value == (-7.0 + -4.0) / 2
    assert first.intermediate_values == {100: -10.0}  # the first seed's only
    assert first.user_attrs[hpo.seed_attr(3)] == -7.0 and first.user_attrs[hpo.seed_attr(5)] == -4.0

    lead, other = link(bad.number, 3), link(bad.number, 5)
    assert other.report(100, {"return_mean": -40.0}) is False  # not pruned yet: it only asks the trial's state
    assert lead.report(100, {"return_mean": -40.0}) is True  # below the finished trial's -10
    lead.tell("pruned")
    assert other.report(200, {"return_mean": 0.0}) is True  # its trial is pruned: it stops too
    assert trials()[1].state == optuna.trial.TrialState.PRUNED and trials()[1].intermediate_values == {100: -40.0}
    with pytest.raises(ConfigError, match="is not one of trial.seeds"):
        hpo.TrialLink.of(OmegaConf.create({"objective": "return", "seed": 0, "trial": {
            "number": 0, "study": "s", "storage": spec, "seeds": [3, 5]}}))
    assert hpo.trial_dir(7) == "trial-0007" and hpo.trial_dir(7, [3, 5], 5) == "trial-0007-seed-5"


def test_bad_search_input_is_refused(tmp_path: Path) -> None:
    """Refused with one line and exit 2 before the study or its folder exist: an unknown objective, a bad storage,
    a SLURM launcher that would not wait for the trials."""
    line = "error: unknown objective 'accuracy'; choose one of: success_rate, return, neg_final_distance"
    proc = run_py("objective=accuracy", "total_steps=100", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [line], proc.stderr
    search = run_py("hparams_search=her_push_optuna", "+experiment=ch05_her_reach", "objective=accuracy",
                    f"hydra.sweep.dir={tmp_path / 'hpo'}", multirun=True)
    assert search.returncode == 2 and search.stderr.strip().splitlines() == [line], search.stderr
    storage = run_py("hparams_search=her_push_optuna", "+experiment=ch05_her_reach", "hydra.sweeper.storage=x.db",
                     f"hydra.sweep.dir={tmp_path / 'hpo'}", multirun=True)
    assert storage.returncode == 2 and len(storage.stderr.strip().splitlines()) == 1, storage.stderr
    assert "hydra.sweeper.storage='x.db'" in storage.stderr
    seeds = run_py("hparams_search=her_push_optuna", "+experiment=ch05_her_reach", "hydra.sweeper.seeds=[0,0]",
                   f"hydra.sweep.dir={tmp_path / 'hpo'}", multirun=True)
    assert seeds.returncode == 2 and seeds.stderr.strip().splitlines() == [
        "error: hydra.sweeper.seeds=[0, 0]: each seed once"], seeds.stderr
    nowait = run_py("hparams_search=her_push_optuna", "+experiment=ch05_her_reach", "hydra/launcher=slurm",
                    "hydra.launcher.wait=false", f"hydra.sweep.dir={tmp_path / 'hpo'}", multirun=True)
    assert nowait.returncode == 2 and nowait.stderr.strip().splitlines() == [
        "error: hydra.launcher.wait=false: a search tells each batch's results to its study before it asks the next, "
        "so it waits for its jobs; drop wait=false"], nowait.stderr
    assert not (tmp_path / "hpo").exists()


def _study(sweep: Path, name: str = "optuna.db") -> list:
    import optuna

    return optuna.load_study(study_name=STUDY, storage=hpo.open_storage(
        f"sqlite:///{sweep / name}" if name.endswith(".db") else f"journal:{sweep / name}")).trials


@pytest.mark.slow
def test_pruning_study(tmp_path: Path) -> None:
    """Three trials, each reporting its evaluations (every 100 steps; the final distance as objective, which tiny
    runs vary in); the median pruner stops those below the median once one trial finished: they checkpoint and
    stop early, say `pruned` (job line, pruned.json, `status`, `report`), and the study records each trial once."""
    import optuna

    sweep = tmp_path / "hpo"
    proc = ok(run_py(*TINY, "total_steps=300", "objective=neg_final_distance", "hydra.sweeper.n_trials=3",
                     "hydra.sweeper.n_jobs=1", "hydra.sweeper.pruner.n_startup_trials=1",
                     "hydra.sweeper.pruner.n_warmup_steps=0", f"hydra.sweep.dir={sweep}", multirun=True))
    out = proc.stdout + proc.stderr
    trials = _study(sweep)
    states = optuna.trial.TrialState
    assert [t.number for t in trials] == [0, 1, 2]
    assert {t.state for t in trials} <= {states.COMPLETE, states.PRUNED}, [t.state for t in trials]
    assert trials[0].state == states.COMPLETE  # nothing finished to compare it with
    pruned = [t for t in trials if t.state == states.PRUNED]
    assert pruned, [t.intermediate_values for t in trials]
    for t in trials:
        run = sweep / hpo.trial_dir(t.number)
        assert list(t.intermediate_values) == sorted(t.intermediate_values) and min(t.intermediate_values) == 100
        if t.state == states.COMPLETE:
            assert t.value == hpo.objective("neg_final_distance", read_json(run / "eval.json")["aggregate"])
            assert sorted(t.intermediate_values) == [100, 200, 300]
        else:
            record = read_json(run / "pruned.json")
            last = max(t.intermediate_values)
            assert record["trial"] == t.number and record["step"] == last < 300
            assert record["value"] == t.intermediate_values[last]
            assert not (run / "eval.json").exists() and not (run / "model.zip").exists()
            assert (run / "checkpoints" / f"step_{record['stopped_at']}.zip").exists()
            assert f"pruned at step {record['stopped_at']}" in out
    status = ok(rlexp_cli("status", str(sweep)))
    assert f"{len(pruned)} pruned" in status.stdout and f"study {STUDY}: 3/3 trials" in status.stdout, status.stdout
    for t in pruned:
        assert f"pruned at step {max(t.intermediate_values):,}" in status.stdout
    report = ok(rlexp_cli("report", str(sweep), "--reps", "100"))
    assert f"Pruned {len(pruned)} run(s)" in report.stdout
    assert f"dashboard: optuna-dashboard sqlite:///{sweep.resolve() / 'optuna.db'}" in out


def kill_search_at(command: list[str], marker: Path, what: str) -> None:
    """Start `python run.py -m COMMAND` in its own session and SIGKILL the whole search (trials included) once
    `marker` exists: a launcher killed with a trial in the middle of training."""
    proc = start_py(*command, multirun=True, start_new_session=True)
    try:
        wait_for(marker.exists, 300, proc, what)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_killed_search_is_continued_to_n_trials(tmp_path: Path) -> None:
    """A search killed (SIGKILL) while its second trial trains: the same command re-launches that trial (same
    number, same values, its run resumes from its checkpoint), then asks the third; three trials in all, none
    lost or run twice. Again: nothing more to do."""
    import optuna

    sweep = tmp_path / "hpo"
    command = [*TINY, "total_steps=400", "hydra/sweeper/pruner=none", "hydra.sweeper.n_trials=3",
               "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={sweep}"]
    kill_search_at(command, sweep / "trial-0001" / "checkpoints" / "step_200.meta.json",
                   "the second trial's first checkpoint")
    states = optuna.trial.TrialState
    before = _study(sweep)
    assert [t.state for t in before] == [states.COMPLETE, states.RUNNING]

    rerun = ok(run_py(*command, multirun=True))
    log = rerun.stdout + rerun.stderr
    assert "re-launching trial 1" in log and "resuming" in log, log[-3000:]
    trials = _study(sweep)
    assert [t.number for t in trials] == [0, 1, 2] and all(t.state == states.COMPLETE for t in trials)
    assert trials[1].params == before[1].params
    assert sorted(p.name for p in sweep.glob("trial-*")) == ["trial-0000", "trial-0001", "trial-0002"]
    assert "/checkpoints/step_" in read_json(sweep / "trial-0001" / "model.meta.json")["resumed_from"]
    assert sorted(trials[1].intermediate_values) == [100, 200, 300, 400]
    for t in trials:
        assert t.value == hpo.objective("success_rate",
                                        read_json(sweep / hpo.trial_dir(t.number) / "eval.json")["aggregate"])

    again = ok(run_py(*command, multirun=True))
    assert len(_study(sweep)) == 3 and "study her_push_optuna: 3/3 trials (3 complete)" in again.stdout


@pytest.mark.slow
def test_preempted_trial_is_requeued_resumes_bitwise_and_reports_on(tmp_path: Path) -> None:
    """A trial's job gets the time-limit signal (USR2) mid-training under hydra/launcher=local: it checkpoints, is
    requeued by submitit, resumes from its checkpoint and goes on reporting to the same trial. Its model and
    evaluation equal the same config trained without a stop, and the trial holds every evaluation once."""
    import optuna
    import yaml

    from helpers import assert_same_final

    sweep = tmp_path / "hpo"
    command = [*TINY, "total_steps=300", "threads=1", "hydra/sweeper/pruner=none", "hydra/launcher=local",
               "hydra.sweeper.n_trials=1", "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={sweep}"]
    proc = start_py(*command, multirun=True)
    run = sweep / "trial-0000"
    try:
        wait_for(lambda: len((run / "evaluations.csv").read_text().splitlines()) > 1 if (run / "evaluations.csv")
                 .exists() else False, 300, proc, "the first evaluation")
        holder = (run / ".rlexp.lock").read_text()
        pid = int(holder.split("pid ")[1].split()[0])
        os.kill(pid, signal.SIGUSR2)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    (trial,) = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{sweep / 'optuna.db'}").trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert sorted(trial.intermediate_values) == [100, 200, 300]
    meta = read_json(run / "model.meta.json")
    assert meta["resumed_from"] and "/checkpoints/step_" in meta["resumed_from"], meta["resumed_from"]
    assert trial.value == hpo.objective("success_rate", read_json(run / "eval.json")["aggregate"])
    rows = (run / "evaluations.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == [100, 200, 300]  # each once, resumed at the stop

    overrides = [o for o in yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
                 if not o.startswith(("trial.", "hparams_search="))]
    assert "threads=1" in overrides
    ok(run_py(*overrides, f"hydra.run.dir={tmp_path / 'plain'}"))
    assert_same_final(run, tmp_path / "plain")


@pytest.mark.slow
def test_search_with_several_seeds_per_trial(tmp_path: Path) -> None:
    """Two trials of two seeds each (hydra.sweeper.seeds=[0,1]), the command killed (SIGKILL) while trial 0's second
    seed trains, then run again: it re-launches trial 0 (seed 0 skipped as finished, seed 1 resumed), then trial 1.
    Four runs, trial-NNNN-seed-S, each pair with the same sampled values and its own seed; each trial's value is
    the mean of its seeds' eval.json objectives, its intermediate values its first seed's evaluations; `status`
    shows the seeds under their trial. Again: nothing more to do."""
    import optuna

    sweep = tmp_path / "hpo"
    command = [*TINY, "total_steps=300", "hydra.sweeper.seeds=[0,1]", "hydra.sweeper.n_trials=2",
               "hydra.sweeper.n_jobs=1", f"hydra.sweep.dir={sweep}"]
    kill_search_at(command, sweep / "trial-0000-seed-1" / "checkpoints" / "step_200.meta.json",
                   "trial 0's second seed's checkpoint")
    (before,) = _study(sweep)
    assert before.state == optuna.trial.TrialState.RUNNING and hpo.seed_attr(0) in before.user_attrs
    assert hpo.seed_attr(1) not in before.user_attrs  # one seed of two: not told

    rerun = ok(run_py(*command, multirun=True))
    log = rerun.stdout + rerun.stderr
    assert "re-launching trial 0" in log and "resuming" in log, log[-3000:]
    trials = _study(sweep)
    assert [t.number for t in trials] == [0, 1] and trials[0].params == before.params
    assert sorted(p.name for p in sweep.glob("trial-*")) == [
        "trial-0000-seed-0", "trial-0000-seed-1", "trial-0001-seed-0", "trial-0001-seed-1"]
    assert "/checkpoints/step_" in read_json(sweep / "trial-0000-seed-1" / "model.meta.json")["resumed_from"]
    for t in trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        runs = [sweep / hpo.trial_dir(t.number, [0, 1], s) for s in (0, 1)]
        objectives = [hpo.objective("success_rate", read_json(r / "eval.json")["aggregate"]) for r in runs]
        assert t.value == sum(objectives) / 2
        configs = [read_json(r / "model.meta.json")["config"] for r in runs]
        assert [c["seed"] for c in configs] == [0, 1]
        assert configs[0]["algo"]["learning_rate"] == configs[1]["algo"]["learning_rate"] == \
            t.params["algo.learning_rate"]
        assert sorted(t.intermediate_values) == [100, 200, 300]
    assert "mean of seeds 0, 1" in rerun.stdout
    status = ok(rlexp_cli("status", str(sweep))).stdout
    assert f"study {STUDY}: 2/2 trials" in status and "trial-0000-seed-*" in status, status
    assert "trial-0001-seed-1" in status and "seed 1" in status, status

    again = ok(run_py(*command, multirun=True))
    assert [(t.number, t.value) for t in _study(sweep)] == [(t.number, t.value) for t in trials]
    assert "study her_push_optuna: 2/2 trials (2 complete)" in again.stdout
