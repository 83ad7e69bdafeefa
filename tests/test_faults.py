"""A stop saves where it stopped; a resumed run ends bitwise equal to the run never stopped.

Stops are deterministic: RLEXP_FAULT makes the training process signal itself at a chosen step and moment
(after an env step, inside a gradient step, while a checkpoint is written, during evaluation). Each case
compares the interrupted run's checkpoint with the uninterrupted reference's checkpoint at the same step
(weights, optimizer states, entropy coefficient, replay contents, env and random states) and the final
model and eval episodes after resuming.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rlexp.rundir import RunDir
from rlexp.training.checkpoint import STATE_KEY, verify

from helpers import assert_same_final, assert_same_tensors, assert_tb_monotonic, ok, read_json, run_py

pytestmark = pytest.mark.slow

COMMON = ["progress=false", "eval.n_episodes=2", "diagnostics.freq=0", "n_envs=2", "device=cpu"]
OFF = ["algo.learning_starts=100", "algo.buffer_size=5000", "algo.batch_size=32",
       "+algo.policy_kwargs.net_arch=[32,32]"]
ALGOS = {
    "ppo": ["+experiment=ch03_ppo_reach_dense", "total_steps=768", "algo.n_steps=128", "algo.batch_size=64",
            "algo.n_epochs=2", "+algo.policy_kwargs.net_arch=[32,32]"],
    "sac": ["+experiment=ch04_sac_reach_dense", "total_steps=400", "fast=true", *OFF],  # FastSAC stops exactly too
    "td3": ["+experiment=ch04_sac_reach_dense", "algo=td3", "~algo.ent_coef", "total_steps=400", *OFF],
    "her": ["+experiment=ch05_her_reach", "total_steps=400", *OFF],
    "pixel": ["+experiment=ch09_step2_critic_encoder", "total_steps=160", "algo.learning_starts=100",
              "algo.buffer_size=1000", "algo.batch_size=8", "env.kwargs.width=32", "env.kwargs.height=32",
              "env.pixels.image_size=32", "env.pixels.frame_stack=2"],
}
# The reference run checkpoints every FREQ steps, keeping every replay buffer, so each stop has a twin.
FREQ = {"ppo": 256, "sac": 100, "td3": 100, "her": 50, "pixel": 20}


def args(algo: str, run_dir: Path, *extra: str) -> list[str]:
    return [*ALGOS[algo], *COMMON, f"hydra.run.dir={run_dir}", *extra]


def run_faulty(algo: str, run_dir: Path, fault: str, *extra: str) -> subprocess.CompletedProcess:
    return run_py(*args(algo, run_dir, *extra), env={"RLEXP_FAULT": fault})


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Uninterrupted runs, built lazily per algo."""
    cache: dict[str, Path] = {}

    class Refs(dict):
        def __missing__(self, algo: str) -> Path:
            run_dir = tmp_path_factory.mktemp(f"ref_{algo}")
            ok(run_py(*args(algo, run_dir, f"checkpoint_freq={FREQ[algo]}", "checkpoint_replay=all")))
            cache[algo] = run_dir
            return run_dir

    return Refs()


def _state(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return json.loads(arrays.pop(STATE_KEY).tobytes()), arrays


WALL_CLOCK = {"t", "t_start", "episode_times"}  # Monitor's wall-clock fields


def _resolve(value: object, arrays: dict[str, np.ndarray]) -> object:
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]].tolist()
        return {k: _resolve(v, arrays) for k, v in value.items() if k not in WALL_CLOCK}
    if isinstance(value, list):
        return [_resolve(v, arrays) for v in value]
    return value


def assert_same_checkpoint(a: RunDir, b: RunDir, step: int) -> None:
    """Weights, optimizers, replay contents, env states and random states of step `step` are identical."""
    ca, cb = a.checkpoint(step), b.checkpoint(step)
    assert cb.meta.exists(), f"the reference has no checkpoint at step {step}"
    verify(ca)
    assert_same_tensors(ca.zip, cb.zip)
    sa, sb = _state(ca.state), _state(cb.state)
    assert _resolve(sa[0], sa[1]) == _resolve(sb[0], sb[1])
    if cb.replay.exists():
        files = sorted(p.name for p in cb.replay.glob("*.npy"))
        assert files == sorted(p.name for p in ca.replay.glob("*.npy"))
        for name in files:
            assert np.array_equal(np.load(ca.replay / name), np.load(cb.replay / name)), name


def interrupted_step(proc: subprocess.CompletedProcess) -> int:
    assert proc.returncode == 3, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "step None" not in out and "resume=" in out
    line = next(x for x in out.splitlines() if "interrupted by" in x)
    return int(line.split(" at step ")[1].split(":")[0].split(",")[0])


# Each case is one run stopped by each fault in turn, resumed after each, and finally resumed to its end: the
# HER chain is also a run requeued four times (every signal the trainer handles, at env steps, during warm-up
# and mid gradient step).
CASES = [
    ("her", ("SIGUSR2@50:step",  # during warm-up (learning_starts 100), SLURM's time-limit signal
             "SIGINT@150:step",  # Ctrl-C
             "SIGTERM@200:update",  # mid gradient step
             "SIGUSR1@250:update")),
    ("sac", ("SIGTERM@200:update",)),
    ("td3", ("SIGTERM@300:update",)),
    ("ppo", ("SIGTERM@300:step",)),  # waits for the rollout to end: saved at 512
    ("pixel", ("SIGTERM@120:update",)),
]


@pytest.mark.parametrize(("algo", "faults"), CASES, ids=[f"{a}-{'+'.join(f)}" for a, f in CASES])
def test_stop_saves_where_it_stopped_and_resume_is_exact(tmp_path: Path, reference: dict, algo: str,
                                                          faults: tuple[str, ...]) -> None:
    ref = reference[algo]
    freq = f"checkpoint_freq={FREQ[algo] * 4}"
    previous = None
    for fault in faults:
        proc = run_faulty(algo, tmp_path, fault, freq)
        step = interrupted_step(proc)
        out = proc.stdout + proc.stderr
        signame, at = fault.split("@")
        assert signame in out
        assert step >= int(at.split(":")[0])
        if previous is not None:
            assert f"from step {previous}" in out, out[-3000:]
        run = RunDir(tmp_path)
        assert run.latest_checkpoint().step == step, "the stop checkpoint is at the step it reports"
        assert not run.model.exists() and not run.eval.exists()
        assert_same_checkpoint(run, RunDir(ref), step)
        previous = step
    resumed = ok(run_py(*args(algo, tmp_path, freq)))
    assert f"from step {previous}" in resumed.stdout + resumed.stderr
    assert_same_final(tmp_path, ref)
    assert_tb_monotonic(tmp_path)


def test_stop_during_evaluation_then_rerun_evaluates(tmp_path: Path, reference: dict) -> None:
    proc = run_faulty("her", tmp_path, "SIGTERM@0:eval")
    assert proc.returncode == 3 and "during evaluation" in proc.stderr + proc.stdout
    assert (tmp_path / "model.zip").exists() and not (tmp_path / "eval.json").exists()
    ok(run_py(*args("her", tmp_path)))
    assert_same_final(tmp_path, reference["her"])


def test_stop_while_a_checkpoint_is_written(tmp_path: Path, reference: dict) -> None:
    proc = run_faulty("her", tmp_path, "SIGTERM@100:checkpoint", "checkpoint_freq=100")
    step = interrupted_step(proc)
    assert RunDir(tmp_path).latest_checkpoint().step == step
    ok(run_py(*args("her", tmp_path, "checkpoint_freq=100")))
    assert_same_final(tmp_path, reference["her"])


def test_sigkill_resumes_from_last_complete_checkpoint(tmp_path: Path, reference: dict) -> None:
    """A kill at any instant (mid-write included) leaves the previous complete checkpoint; a re-run cleans up
    the half-written parts and ends equal to the uninterrupted run. One run killed three times: before its first
    checkpoint (the re-run starts over, its TensorBoard file must not keep the dead run's steps), half-way
    through writing the checkpoint of step 200, and between checkpoints."""
    run = RunDir(tmp_path)
    proc = run_faulty("her", tmp_path, "SIGKILL@60:step", "checkpoint_freq=100")
    assert proc.returncode == -signal.SIGKILL and not run.checkpoints()

    proc = run_faulty("her", tmp_path, "SIGKILL@200:checkpoint", "checkpoint_freq=100")
    assert proc.returncode == -signal.SIGKILL
    assert "from step" not in proc.stdout + proc.stderr, "nothing to resume from: a fresh start"
    latest = run.latest_checkpoint()
    assert latest is not None and latest.step == 100
    verify(latest)
    assert any(p.name.startswith(".") for p in run.ckpt_dir.iterdir()), "the killed write left its temp file"

    proc = run_faulty("her", tmp_path, "SIGKILL@250:step", "checkpoint_freq=100")
    assert proc.returncode == -signal.SIGKILL and "from step 100" in proc.stdout + proc.stderr
    assert not [p for p in run.ckpt_dir.iterdir() if p.name.startswith(".")], "temp files cleaned up"
    latest = run.latest_checkpoint()
    assert latest is not None and latest.step == 200
    verify(latest)

    resumed = ok(run_py(*args("her", tmp_path, "checkpoint_freq=100")))
    assert "from step 200" in resumed.stdout + resumed.stderr
    assert_same_final(tmp_path, reference["her"])
    assert_tb_monotonic(tmp_path)


def test_replay_on_disk_in_proportion_to_content(tmp_path: Path) -> None:
    """A short HER Push run with the book's 1M buffer checkpoints KBs of replay, not the preallocated GB."""
    # No gradient step (learning_starts = total_steps): the buffer's content is what is measured, not learning.
    ok(run_py("+experiment=ch05_her_push", *COMMON, "total_steps=200", "checkpoint_freq=200",
              "algo.learning_starts=200", f"hydra.run.dir={tmp_path}"))
    ckpt = RunDir(tmp_path).latest_checkpoint()
    size = sum(p.stat().st_size for p in ckpt.replay.iterdir())
    assert read_json(ckpt.replay / "replay.json")["transitions"] == 200
    assert size < 1_000_000, size  # ~0.5 KB per transition; the whole 1M buffer would be ~540 MB
    assert not list(ckpt.dir.glob("*.pkl"))
