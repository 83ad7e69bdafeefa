"""The `logger` config group: W&B (offline files) and MLflow (a file store) run for real and are read back with their
own clients; a run killed after its last checkpoint and run again continues the same tracker runs with no repeated
or backward steps; a missing tracker package is refused before anything is written."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import rlexp
from rlexp.config import config_hash, to_container
from rlexp.errors import ConfigError
from rlexp.spec import RunSpec
from rlexp.trackers import chosen
from rlexp.training.resume import config_for_resume

from helpers import PPO_TINY, ROOT, _env, ok, read_json, run_py, scalars

# Tiny PPO: one rollout (and one SB3 logger dump) every 128 steps, a checkpoint every 256.
BASE = [*PPO_TINY, "checkpoint_freq=256", "total_steps=640", "device=cpu"]
TRACKED = ["logger=[tensorboard,csv,wandb,mlflow]", "logger.wandb.mode=offline"]


def test_logger_is_one_option_or_a_list_and_run_only() -> None:
    default = rlexp.compose()
    assert chosen(default) == ["tensorboard", "csv"]
    assert chosen(rlexp.compose("logger=wandb")) == ["wandb"]
    both = rlexp.compose("logger=[tensorboard,mlflow]", "logger.mlflow.tracking_uri=http://example:5000")
    assert chosen(both) == ["tensorboard", "mlflow"] and both.logger.mlflow.tracking_uri == "http://example:5000"
    assert chosen(rlexp.compose("logger=[]")) == []
    assert config_hash(both) == config_hash(default) == config_hash(rlexp.compose("logger=wandb"))


def test_a_setting_of_a_logger_not_chosen_says_how_to_add_it() -> None:
    with pytest.raises(ConfigError, match=re.escape("logger.wandb.* sets the wandb logger, which this config does not "
                                                    "use (logger=[tensorboard,csv]); add it: "
                                                    "logger=[tensorboard,csv,wandb]")):
        rlexp.compose("logger.wandb.mode=offline")
    with pytest.raises(ConfigError, match=r"logger.wandb.mode must be online, offline or disabled, got 'ofline'"):
        RunSpec.of(rlexp.compose("logger=wandb", "logger.wandb.mode=ofline"))


def test_resume_takes_the_commands_logger_choice_whole() -> None:
    recorded = {"config": to_container(rlexp.compose("total_steps=1000"))}
    assert chosen(config_for_resume(rlexp.compose("logger=mlflow"), recorded, ["logger=mlflow"])) == ["mlflow"]
    assert chosen(config_for_resume(rlexp.compose("logger=mlflow"), recorded, [])) == ["tensorboard", "csv"]


@pytest.mark.parametrize("tracker", ["wandb", "mlflow"])
def test_a_missing_tracker_package_is_refused_before_anything_is_written(tmp_path: Path, tracker: str) -> None:
    """Python's own way to make a package unimportable (None in sys.modules), then run.py as usual."""
    run_dir = tmp_path / "run"
    code = (f"import runpy, sys; sys.modules[{tracker!r}] = None; "
            f"sys.argv = ['run.py', 'logger=[tensorboard,{tracker}]', 'hydra.run.dir={run_dir}']; "
            "runpy.run_path('run.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=_env())
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f'error: logger={tracker} needs the {tracker} package, which is not installed: pip install "rlexp[{tracker}]"']
    assert not run_dir.exists()


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One run with both trackers in three processes (~80 s on the busy 2-core VM): stopped (SIGTERM, exit 3) at step
    200, so it ends its rollout and checkpoints at 256 (a SLURM requeue's stop); resumed and killed (SIGKILL) at step
    400, after the dump at 384; run again from the checkpoint at 256 to the end. Returns the run directory and
    trackers.json as the kill left it."""
    root = tmp_path_factory.mktemp("trackers")
    run = root / "run"
    cmd = [*BASE, *TRACKED, f"hydra.run.dir={run}"]
    # W&B's cache, settings and temp folders in the test's own directory, not the user's home or /tmp
    env = {name: str(root / "home") for name in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "TMPDIR")}
    (root / "home").mkdir()
    stopped = run_py(*cmd, env={**env, "RLEXP_FAULT": "SIGTERM@200"})
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    killed = run_py(*cmd, env={**env, "RLEXP_FAULT": "SIGKILL@400"})
    assert killed.returncode == -9, killed.stderr[-3000:]
    before = read_json(run / "trackers.json")
    ok(run_py(*cmd, env=env))
    return run, before


@pytest.mark.slow
def test_mlflow_run_continues_with_no_repeated_steps(resumed: tuple[Path, dict],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow's own opt-in for reading its file store
    run, before = resumed
    state = read_json(run / "trackers.json")["mlflow"]
    assert before["mlflow"]["run_id"] == state["run_id"] and before["mlflow"]["step"] == 384
    assert state["tracking_uri"] == (run.parent / "mlruns").as_uri()  # the default: a file store beside the run
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    found = client.get_run(state["run_id"])
    assert found.info.status == "FINISHED"
    assert client.get_experiment(found.info.experiment_id).name == "ch03_ppo_reach_dense"
    assert len(client.search_runs([found.info.experiment_id])) == 1  # the resumed command continued it
    params = found.data.params
    assert params["algo.n_steps"] == "64" and params["seed"] == "0" and params["env.id"] == "FetchReachDense-v4"
    assert found.data.tags["rlexp.config_hash"] == read_json(run / "model.meta.json")["config_hash"]

    tb = scalars(run)  # TensorBoard's history: cut back to the checkpoint and continued
    for tag in ("rollout/ep_rew_mean", "train/value_loss", "time/fps"):
        history = client.get_metric_history(state["run_id"], tag)
        steps = [m.step for m in history]
        assert steps == sorted(set(steps)), f"{tag}: repeated or backward steps {steps}"
        # every step TensorBoard has; and the one the killed process sent after the checkpoint (PPO's train/* of the
        # rollout before a checkpoint are not in the checkpoint: the resumed process's dump at 384 lacks them)
        assert set(s for s, _ in tb[tag]) <= set(steps) <= set(s for s, _ in tb[tag]) | {384}, tag
        if tag != "time/fps":  # wall-clock; the rest is bitwise the same after the resume
            values = {m.step: m.value for m in history}
            assert [(s, values[s]) for s, _ in tb[tag]] == [(s, pytest.approx(v, rel=1e-6)) for s, v in tb[tag]]
    aggregate = read_json(run / "eval.json")["aggregate"]
    final = client.get_metric_history(state["run_id"], "final/success_rate")
    assert [(m.step, m.value) for m in final] == [(640, aggregate["success_rate"])]

    names = {a.path for a in client.list_artifacts(state["run_id"])}
    assert names == {"eval.json", "model.meta.json"}
    local = Path(client.download_artifacts(state["run_id"], "eval.json", str(run.parent / "dl")))
    assert read_json(local) == read_json(run / "eval.json")


def _wandb_parts(run: Path) -> list[list[dict]]:
    """The records of each offline-run folder (one per process, oldest first), read by W&B's own reader of its
    transaction logs, `wandb leet inspect --json`."""
    parts = []
    for folder in sorted((run / "wandb").glob("offline-run-*")):
        proc = ok(subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(folder)],
                                 capture_output=True, text=True, timeout=120))
        parts.append([json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")])
    return parts


@pytest.mark.slow
def test_wandb_offline_run_continues_with_no_repeated_steps(resumed: tuple[Path, dict]) -> None:
    run, before = resumed
    state = read_json(run / "trackers.json")["wandb"]
    assert before["wandb"]["id"] == state["id"] and before["wandb"]["step"] == 384
    parts = _wandb_parts(run)
    assert len(parts) == 3, "one offline-run folder per process"
    # W&B's service writes its log asynchronously: a SIGKILL can lose what it had not written yet (any part of the
    # killed process's records, up to all of them), never make a step repeat; a stop loses nothing
    config: dict = {}
    for i, records in enumerate(parts):
        headers = [r["run"] for r in records if r["type"] == "run"]
        assert len(headers) == (len(headers[:1]) if i == 1 else 1)
        assert all(h["run_id"] == state["id"] and h["project"] == "rlexp" for h in headers)  # `wandb sync --id` joins
        for record in records:
            if record["type"] == "config":
                config.update(record["config"]["update"])
    meta = read_json(run / "model.meta.json")
    assert config["config_hash"] == meta["config_hash"] and config["run_dir"] == str(run)
    assert config["git"] == meta["git"] and config["config"]["algo"]["n_steps"] == 64

    histories = [[(r["history"]["step"].get("num", 0), r["history"]["item"]) for r in records
                  if r["type"] == "history"] for records in parts]
    steps = [step for history in histories for step, _ in history]
    assert steps == sorted(set(steps)), f"repeated or backward steps: {steps}"
    assert min(step for step, _ in histories[2]) > before["wandb"]["step"]  # the last process sent only later ones
    tb = dict(scalars(run)["rollout/ep_rew_mean"])
    logged = [[(step, item["rollout/ep_rew_mean"]) for step, item in history if "rollout/ep_rew_mean" in item]
              for history in histories]
    assert logged[0] == [(s, pytest.approx(v, rel=1e-6)) for s, v in sorted(tb.items()) if s <= 256]
    assert all(s == 384 and tb[s] == pytest.approx(v, rel=1e-6) for s, v in logged[1])
    assert logged[2] == [(s, pytest.approx(v, rel=1e-6)) for s, v in sorted(tb.items()) if s > 384]
    final = dict(histories[2])[640]
    assert final["final/success_rate"] == read_json(run / "eval.json")["aggregate"]["success_rate"]
