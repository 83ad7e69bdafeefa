"""`overlap=true` (rlexp.fast.overlap): envs stepped in a worker process while the gradient step runs.

What it claims and these tests check: with no gradient steps it is bitwise the plain run; with them, each
action is exactly one update stale; a stop mid-update saves one consistent step and the resumed run is
bitwise the uninterrupted overlapped run; the worker never outlives the trainer; PPO refuses it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from rlexp.errors import ConfigError
from rlexp.rundir import RunDir
from rlexp.training.checkpoint import STATE_KEY

from helpers import HER_TINY, assert_same_final, assert_same_tensors, ok, run_py, start_py

TINY = [*HER_TINY, "total_steps=400", "device=cpu", "threads=1"]
WORKER = re.compile(r"overlap: \d+ envs step in worker process (\d+)")


def worker_pid(text: str) -> int:
    match = WORKER.search(text)
    assert match, f"no worker line in:\n{text[-2000:]}"
    return int(match.group(1))


def assert_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.1)
    raise AssertionError(f"overlap worker {pid} outlived its trainer")


def state_of(path: Path) -> object:
    """A checkpoint's state file as plain data (arrays as lists), wall-clock fields dropped."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    state = json.loads(arrays.pop(STATE_KEY).tobytes())

    def plain(value: object) -> object:
        if isinstance(value, dict):
            if "__array__" in value:
                return arrays[value["__array__"]].tolist()
            return {k: plain(v) for k, v in value.items() if k not in {"t", "t_start", "episode_times"}}
        return [plain(v) for v in value] if isinstance(value, list) else value

    return plain(state)


def assert_same_checkpoint(a: Path, b: Path, step: int) -> None:
    ca, cb = RunDir(a).checkpoint(step), RunDir(b).checkpoint(step)
    assert ca.meta.exists() and cb.meta.exists(), f"checkpoint at step {step} missing"
    assert_same_tensors(ca.zip, cb.zip)
    assert state_of(ca.state) == state_of(cb.state)
    for npy in sorted(cb.replay.glob("*.npy")):
        assert np.array_equal(np.load(ca.replay / npy.name), np.load(npy)), npy.name


def test_refused_where_it_cannot_apply(tmp_path: Path) -> None:
    from rlexp.config import compose
    from rlexp.spec import RunSpec

    for overrides, message in [
        (["+experiment=ch05_her_reach", "overlap=true", "algo.train_freq=4"], "train_freq=1"),
        (["+experiment=ch05_her_reach", "overlap=true", "env.vec_env=subproc"], "env.vec_env=dummy"),
        (["+experiment=ch05_her_reach", "overlap=1"], "true or false"),
    ]:
        with pytest.raises(ConfigError, match=message):
            RunSpec.of(compose(*overrides))
    proc = run_py("+experiment=ch03_ppo_reach_dense", "overlap=true", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: overlap=true applies to off-policy algorithms (SAC, TD3, ...); PPO collects whole rollouts "
        "before each update, so there is no env step to overlap: use overlap=false"]


def test_hash_unchanged_when_off() -> None:
    """Runs recorded before the key existed keep their hash; overlap=true is another experiment."""
    from rlexp.config import compose, config_hash, to_container

    cfg = compose("+experiment=ch05_her_reach")
    old = to_container(cfg)
    del old["overlap"]
    assert config_hash(cfg) == config_hash(old)
    assert config_hash(compose("+experiment=ch05_her_reach", "overlap=true")) != config_hash(cfg)


@pytest.mark.slow
def test_without_gradient_steps_bitwise_plain_and_worker_gone(tmp_path: Path) -> None:
    """No update, nothing stale: every checkpoint and the final model/eval equal overlap=false's."""
    common = [*TINY, "algo.gradient_steps=0", "checkpoint_replay=all"]
    plain = ok(run_py(*common, f"hydra.run.dir={tmp_path / 'plain'}"))
    over = ok(run_py(*common, "overlap=true", f"hydra.run.dir={tmp_path / 'over'}"))
    assert WORKER.search(plain.stdout + plain.stderr) is None
    assert_gone(worker_pid(over.stdout + over.stderr))
    for step in (200, 400):
        assert_same_checkpoint(tmp_path / "over", tmp_path / "plain", step)
    assert_same_final(tmp_path / "over", tmp_path / "plain")


@pytest.mark.slow
def test_actions_are_one_update_stale() -> None:
    """The action for step t+1 is chosen before update t: one fewer update behind it, once updates begin."""
    import torch

    from rlexp.builder import build
    from rlexp.config import compose

    def updates_at_each_action(overlap: bool) -> dict[int, int]:
        model = build(compose(*TINY, f"overlap={str(overlap).lower()}"))
        updates: dict[int, int] = {}
        sample = model._sample_action

        def record(*args):  # noqa: ANN002, ANN202
            updates[model.num_timesteps] = model._n_updates
            return sample(*args)

        model._sample_action = record
        try:
            model.learn(300)
        finally:
            model.get_env().close()
        return updates

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as threads=1 does in a run: several torch threads on busy cores crawl
    try:
        seen = {overlap: updates_at_each_action(overlap) for overlap in (False, True)}
    finally:
        torch.set_num_threads(threads)
    assert seen[False].keys() == seen[True].keys()
    lag = {step: seen[False][step] - seen[True][step] for step in seen[False]}
    assert all(lag[s] == (1 if s > 100 else 0) for s in lag), lag  # learning_starts=100
    assert max(seen[True].values()) > 50


@pytest.mark.slow
def test_stop_mid_update_saves_and_resumes_exactly(tmp_path: Path) -> None:
    """A signal while a step is in flight: the checkpoint describes one step; resuming ends bitwise equal."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    common = [*TINY, "overlap=true"]
    ok(run_py(*common, "checkpoint_freq=100", "checkpoint_replay=all", f"hydra.run.dir={ref}"))
    # Armed at step 198, fired inside the update that runs while step 200 is in flight: saved at 200.
    proc = run_py(*common, "checkpoint_freq=0", f"hydra.run.dir={run}", env={"RLEXP_FAULT": "SIGTERM@198:update"})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out[-3000:]
    step = int(re.search(r"interrupted by SIGTERM at step (\d+)", out).group(1))
    assert_gone(worker_pid(out))
    assert step == 200 and RunDir(run).latest_checkpoint().step == step
    assert_same_checkpoint(run, ref, step)
    resumed = ok(run_py(*common, "checkpoint_freq=0", f"hydra.run.dir={run}"))
    assert f"from step {step}" in resumed.stdout + resumed.stderr
    assert_same_final(run, ref)


@pytest.mark.slow
def test_worker_dies_with_a_killed_trainer(tmp_path: Path) -> None:
    proc = start_py(*TINY, "total_steps=1000000", "overlap=true", f"hydra.run.dir={tmp_path}")
    try:
        text = ""
        assert proc.stdout is not None
        while not WORKER.search(text):
            line = proc.stdout.readline()
            assert line, f"trainer ended early:\n{text[-2000:]}"
            text += line
        pid = worker_pid(text)
        assert psutil.Process(pid).ppid() == proc.pid
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert_gone(pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
