"""Interrupted runs resume: step counter, replay buffer and TensorBoard curve continue; re-runs skip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stable_baselines3 import SAC

from rlexp.evaluate import load_model, load_run_config

from helpers import FAST, ROOT, _env, ok, read_json, run_py, scalars

ARGS = ["+experiment=ch05_her_reach", *FAST, "total_steps=4800", "checkpoint_freq=1600", "algo.learning_starts=400",
        "algo.buffer_size=10000", "algo.batch_size=64"]


def _start(run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run.py", *ARGS, f"hydra.run.dir={run_dir}"], cwd=ROOT, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path.name} appeared:\n{proc.stdout.read()[-3000:]}"
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.2)


def test_sigterm_checkpoints_and_resume_continues(tmp_path: Path) -> None:
    proc = _start(tmp_path)
    _wait_for(tmp_path / "checkpoints" / "step_1600.zip", proc)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 3, out[-3000:]
    assert "interrupted at step" in out and f"resume={tmp_path}" in out
    assert not (tmp_path / "model.zip").exists() and not (tmp_path / "eval.json").exists()
    steps = sorted(int(p.stem.split("_")[1]) for p in (tmp_path / "checkpoints").glob("step_*.zip"))
    stopped_at = steps[-1]
    assert 1600 <= stopped_at < 4800
    meta = read_json(tmp_path / "checkpoints" / f"step_{stopped_at}.meta.json")
    assert meta["replay_buffer"]["step"] == stopped_at and meta["replay_buffer"]["transitions"] == stopped_at
    before = scalars(tmp_path)["rollout/ep_rew_mean"]

    resumed = ok(run_py(*ARGS, f"resume={tmp_path}", "hydra.run.dir=" + str(tmp_path / "resume_job")))
    assert "replay buffer restored" in resumed.stderr + resumed.stdout
    final = read_json(tmp_path / "model.meta.json")
    assert final["total_steps"] == 4800
    assert final["resumed_from"] == str(tmp_path / "checkpoints" / f"step_{stopped_at}.zip")
    assert (tmp_path / "eval.json").exists()
    # The replay buffer lost nothing: the last periodic checkpoint holds every transition of the run.
    assert read_json(tmp_path / "checkpoints" / "step_4800.meta.json")["replay_buffer"]["transitions"] == 4800
    zip_path = tmp_path / "checkpoints" / "step_4800.zip"
    model = load_model(zip_path, load_run_config(zip_path))  # HER checkpoints need the env to load
    assert isinstance(model, SAC) and model.num_timesteps == 4800
    # One TensorBoard run whose curve continues past the interruption, no new run_2 folder.
    after = scalars(tmp_path)["rollout/ep_rew_mean"]
    assert [s for s, _ in after if s <= stopped_at] == [s for s, _ in before]
    assert max(s for s, _ in after) > stopped_at


def test_killed_run_resumes_by_rerunning_the_same_command(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to save: re-running into the same directory resumes the last periodic checkpoint."""
    proc = _start(tmp_path)
    _wait_for(tmp_path / "checkpoints" / "step_1600.meta.json", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    for f in tmp_path.glob("checkpoints/*.json"):  # atomic writes: every visible JSON is complete
        read_json(f)
    ok(run_py(*ARGS, f"hydra.run.dir={tmp_path}"))
    meta = read_json(tmp_path / "model.meta.json")
    assert meta["total_steps"] == 4800 and meta["resumed_from"].startswith(str(tmp_path / "checkpoints"))
    # A third run of the same command finds eval.json with the same config hash and skips.
    again = ok(run_py(*ARGS, f"hydra.run.dir={tmp_path}"))
    assert "skipped" in again.stderr + again.stdout
    assert read_json(tmp_path / "model.meta.json")["created_at"] == meta["created_at"]


def test_rerun_with_a_different_config_is_refused(tmp_path: Path, ppo_run: Path) -> None:
    proc = run_py("+experiment=ch03_ppo_reach_dense", "total_steps=8192", f"hydra.run.dir={ppo_run}")
    assert proc.returncode == 2 and "different config" in proc.stderr


@pytest.mark.parametrize("resume,message", [
    ("{tmp}/missing", "checkpoint not found"),
    ("{tmp}", "no checkpoint in"),
    ("{tmp}/notes.txt", "expected a run directory or a .zip"),
    ("{ppo}", "incompatible"),
])
def test_bad_resume_target(tmp_path: Path, ppo_run: Path, resume: str, message: str) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    target = resume.format(tmp=tmp_path, ppo=ppo_run)
    proc = run_py("+experiment=ch05_her_reach", f"resume={target}", f"hydra.run.dir={tmp_path / 'job'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_run_stopped_after_its_last_checkpoint_is_finished_on_rerun(tmp_path: Path) -> None:
    """Killed while saving or evaluating (checkpoint at total_steps, no eval.json): a re-run just evaluates."""
    args = ["+experiment=ch03_ppo_reach_dense", "total_steps=512", "n_envs=2", "algo.n_steps=128", "algo.batch_size=64",
            "checkpoint_freq=256", "progress=false", "eval.n_episodes=2", f"hydra.run.dir={tmp_path}"]
    ok(run_py(*args))
    (tmp_path / "eval.json").unlink()
    (tmp_path / "model.zip").unlink()
    proc = ok(run_py(*args))
    assert "success" in proc.stderr + proc.stdout
    meta = read_json(tmp_path / "model.meta.json")
    assert meta["total_steps"] == 512 and meta["resumed_from"] == str(tmp_path / "checkpoints" / "step_512.zip")
    assert read_json(tmp_path / "eval.json")["n_episodes"] == 2
