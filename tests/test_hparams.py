"""TensorBoard HParams for sweeps: each job of a real multirun writes its swept factors and final metrics into its
own tb/run_1, read back through TensorBoard's own EventAccumulator and the HParams plugin's protos."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlexp.training import hparams

from helpers import PPO_TINY, ok, read_json, run_py


def _sessions(run_dir: Path) -> tuple[dict, dict[str, list[tuple[int, float]]]]:
    """The HParams session start (factor -> value) and the scalars of a run's tb/run_1, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir / "tb" / "run_1"), size_guidance={"scalars": 0})
    acc.Reload()
    try:
        content = acc.PluginTagToContent("hparams")
    except KeyError:  # no HParams data in this run
        content = {}
    starts = {}
    for raw in content.values():
        data = plugin_data_pb2.HParamsPluginData.FromString(raw)
        if data.HasField("session_start_info"):
            for name, value in data.session_start_info.hparams.items():
                kind = value.WhichOneof("kind")
                starts[name] = getattr(value, kind)
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    return starts, scalars


def test_factors_are_the_jobs_overrides_without_run_only_keys() -> None:
    got = hparams.factors(["+experiment=ch03_ppo_reach_dense", "algo.gamma=0.95", "seed=2", "algo=td3",
                           "progress=false", "logger=[tensorboard,csv]", "eval.freq=100", "hydra.run.dir=x",
                           "total_steps=128"])
    assert got == {"experiment": "ch03_ppo_reach_dense", "algo.gamma": 0.95, "seed": 2, "algo": "td3",
                   "total_steps": 128}


@pytest.mark.slow
def test_each_sweep_job_logs_its_factors_and_final_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two jobs of a gamma sweep, one rollout each, and a single run (~40 s on the busy 2-core VM): each job's
    TensorBoard run holds one HParams session with its own gamma and the final metrics of its eval.json (and, with
    logger=mlflow, one MLflow run in the sweep directory's shared store); a single run writes none."""
    sweep = tmp_path / "sweep"
    ok(run_py(*PPO_TINY, "total_steps=128", "algo.gamma=0.9,0.99", "logger=[tensorboard,csv,mlflow]",
              f"hydra.sweep.dir={sweep}", multirun=True))
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "mlruns")
    assert len(jobs) == 2, [p.name for p in sweep.iterdir()]
    gammas = []
    for job in jobs:
        factors, scalars = _sessions(job)
        gammas.append(factors["algo.gamma"])
        assert factors["experiment"] == "ch03_ppo_reach_dense" and factors["total_steps"] == 128
        assert "progress" not in factors and "checkpoint_freq" not in factors  # run-only: not factors
        aggregate = read_json(job / "eval.json")["aggregate"]
        steps = read_json(job / "model.meta.json")["total_steps"]
        assert scalars["final/success_rate"] == [(steps, pytest.approx(aggregate["success_rate"]))]
        assert scalars["final/return_mean"] == [(steps, pytest.approx(aggregate["return_mean"]))]
        assert scalars["final/final_distance_mean"] == [(steps, pytest.approx(aggregate["final_distance_mean"]))]
        assert "rollout/ep_rew_mean" in scalars  # SB3's own history stays in the same run
    assert sorted(gammas) == [pytest.approx(0.9), pytest.approx(0.99)]

    # logger=mlflow in a multirun: the jobs share the sweep directory's store, one run each, in one experiment
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(sweep / "mlruns").as_uri())
    runs = client.search_runs([client.get_experiment_by_name("ch03_ppo_reach_dense").experiment_id])
    assert sorted(r.data.params["algo.gamma"] for r in runs) == ["0.9", "0.99"]
    assert sorted(r.data.tags["rlexp.run_dir"] for r in runs) == [str(job) for job in jobs]

    single = tmp_path / "single"
    ok(run_py(*PPO_TINY, "total_steps=128", f"hydra.run.dir={single}"))
    factors, scalars = _sessions(single)
    assert factors == {} and not any(t.startswith("final/") for t in scalars)


def test_a_run_continued_from_a_finished_job_does_not_copy_its_session(tmp_path: Path) -> None:
    """A fork of a finished sweep job copies its TensorBoard history up to the checkpoint (rlexp.training.tblog), but
    not its HParams session: the fork is another session, which writes its own when it ends."""
    from rlexp.training import tblog

    source, fork = tmp_path / "job" / "tb" / "run_1", tmp_path / "fork" / "tb" / "run_1"
    hparams.write(source, {"algo.gamma": 0.9}, {"success_rate": 0.5, "return_mean": -3.0}, 256)
    assert _sessions(source.parent.parent)[0] == {"algo.gamma": pytest.approx(0.9)}
    tblog.keep_until(source, fork, 256)
    factors, scalars = _sessions(fork.parent.parent)
    assert factors == {} and scalars["final/success_rate"] == [(256, 0.5)]
