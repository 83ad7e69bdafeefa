"""Multirun sweeps: the 120-run grid's expansion, run directory names, kill-and-rerun through the basic
launcher, and requeue-with-resume through the `local` submitit launcher. Real runs, tiny step counts."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from helpers import (
    HER_TINY,
    PPO_TINY,
    ROOT,
    assert_same_final,
    checkpoints,
    ok,
    read_json,
    rlexp_cli,
    run_py,
    start_py,
    wait_for,
)


def job_dir(sweep: Path, seed: int) -> Path:
    found = [p for p in sweep.iterdir() if p.is_dir() and re.search(rf"(^|,)seed={seed}(,|$)", p.name)]
    assert len(found) == 1, (
        f"expected one job dir for seed={seed} in {sweep}: {[p.name for p in sweep.iterdir()]}"
    )
    return found[0]


def test_grid_expands_to_the_books_120_runs() -> None:
    proc = ok(rlexp_cli("plan", "+experiment=ch05_her_grid"))
    assert proc.stdout.splitlines()[-1] == "120 jobs in multirun/ch05_her_grid", proc.stdout
    first = proc.stdout.splitlines()[0]
    for part in (
        "algo.ent_coef=0.05",
        "buffer.n_sampled_goal=4",
        "algo.learning_starts=1000",
        "algo.gamma=0.95",
        "seed=0",
    ):
        assert part in first, first
    # Command-line values replace a factor's levels; other factors keep the grid's.
    narrowed = ok(rlexp_cli("plan", "+experiment=ch05_her_grid", "seed=0,1", "algo.gamma=0.95"))
    assert narrowed.stdout.splitlines()[-1] == "24 jobs in multirun/ch05_her_grid"
    # An experiment without a grid sweeps exactly what the command line asks for.
    push = ok(rlexp_cli("plan", "+experiment=ch05_her_push", "seed=0,1", "buffer.n_sampled_goal=4,8"))
    lines = push.stdout.splitlines()
    assert lines[-1] == "4 jobs in multirun/ch05_her_push"
    assert "+experiment=ch05_her_push,buffer.n_sampled_goal=8,seed=1" in lines
    bad = rlexp_cli("plan", "+experiment=no_such_experiment")
    assert bad.returncode == 2 and bad.stderr.startswith("error:"), bad.stderr


def test_grid_config_is_the_books_recipe() -> None:
    from rlexp.config import compose

    cfg = compose("+experiment=ch05_her_grid")
    assert cfg.total_steps == 2_000_000
    assert cfg.env.id == "FetchPush-v4" and "HerReplayBuffer" in cfg.buffer._target_
    assert cfg.buffer.goal_selection_strategy == "future"


def sweep_states(sweep: Path) -> dict:
    """`python -m rlexp status` of a sweep, in-process: {job number: JobState}."""
    from rlexp.analysis.status import sweep_status

    return {j.num: j for j in sweep_status(sweep)[0]} if (sweep / ".rlexp" / "jobs.json").is_file() else {}


@pytest.mark.slow
def test_kill_and_rerun_skips_finished_and_resumes_interrupted(tmp_path: Path) -> None:
    """Default (sequential) launcher: SIGTERM during the 2nd job checkpoints and stops the sweep (exit 3); the
    same command again skips job 1 (eval.json with the same config hash) and resumes job 2 from its checkpoint.
    `rlexp status` follows it from disk: running + pending, done + running (step reached), done + interrupted
    (resumable from its checkpoint), then both done; the sweep prints a line per job and a closing table."""
    sweep = tmp_path / "sweep"
    args = [*PPO_TINY, "total_steps=1536", "seed=0,1", f"hydra.sweep.dir={sweep}"]  # long enough to interrupt
    proc = start_py(*args, multirun=True)
    try:

        def first_running_second_pending() -> bool:
            states = sweep_states(sweep)
            return bool(states) and states[0].state == "running" and states[1].state == "pending"

        wait_for(first_running_second_pending, 300, proc, "job 0 running while job 1 is pending")
        assert sweep_states(sweep)[0].pid == proc.pid

        def second_job_checkpointed() -> bool:
            dirs = [p for p in sweep.glob("*seed=1*") if p.is_dir()] if sweep.is_dir() else []
            return bool(dirs) and bool(checkpoints(dirs[0]))

        wait_for(second_job_checkpointed, 300, proc, "a checkpoint of the second job")
        states = sweep_states(sweep)
        assert states[0].state == "done" and states[0].success_rate is not None
        assert states[1].state == "running" and states[1].step >= 128 and states[1].total_steps == 1536
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 3, out[-3000:]
    first, second = job_dir(sweep, 0), job_dir(sweep, 1)
    assert first.name == (
        "+experiment=ch03_ppo_reach_dense,algo.batch_size=64,algo.n_steps=64,"
        "diagnostics.freq=0,eval.n_episodes=2,n_envs=2,seed=0,total_steps=1536"
    )
    assert (first / "eval.json").exists() and not (second / "eval.json").exists()
    stopped_at = checkpoints(second)[-1]
    eval_mtime = (first / "eval.json").stat().st_mtime_ns
    assert "[1/2]  #0  done" in out and "[2/2]  #1  interrupted" in out, out[-3000:]
    assert "interrupted     1" in out[out.rindex("sweep: 2 jobs"):], out[-2000:]
    states = sweep_states(sweep)
    assert states[1].state == "interrupted" and f"step_{states[1].step}.zip" == stopped_at.name

    again = ok(run_py(*args, multirun=True))
    log = again.stdout + again.stderr
    assert "skipped:" in log and f"resuming {stopped_at}" in log, log[-3000:]
    assert "[1/2]  #0  skipped" in again.stdout and "[2/2]  #1  resumed" in again.stdout, again.stdout[-3000:]
    assert [(j.state, j.resumed) for j in sweep_states(sweep).values()] == [("done", False), ("done", True)]
    assert (first / "eval.json").stat().st_mtime_ns == eval_mtime  # finished run untouched
    meta = read_json(second / "model.meta.json")
    assert meta["resumed_from"] == str(stopped_at) and meta["total_steps"] >= 1536
    assert read_json(second / "eval.json")["config_hash"] == meta["config_hash"]


def _submit_pids(marker: str) -> list[int]:
    """PIDs of submitit job processes (`python -m submitit.core._submit <folder>`) whose folder has marker."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = [c.decode(errors="replace") for c in cmd]
        if "submitit.core._submit" in text and any(marker in c for c in text):
            pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("name", ["local", "submitit_local", "slurm", "submitit_slurm"])
def test_launcher_names_pick_rlexp_launchers(name: str) -> None:
    """The plugin's own names must not fall back to its stock launchers (no requeue-with-resume, no bound)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "rlexp" / "conf"), version_base="1.3"):
        cfg = compose("config", [f"hydra/launcher={name}"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    kind = "Local" if "local" in name else "Slurm"
    assert launcher._target_ == f"hydra_plugins.rlexp_launchers.launchers.Rlexp{kind}Launcher"
    assert launcher.max_num_timeout == (3 if kind == "Local" else 20)
    assert launcher.cpus_per_task == (1 if kind == "Local" else 2)


@pytest.mark.slow
def test_local_launcher_requeues_after_signal_and_resumes(tmp_path: Path) -> None:
    """hydra/launcher=submitit_local (our local launcher under the plugin's name): SIGUSR2 (what SLURM sends
    before a time limit) makes an off-policy (SAC+HER) run checkpoint and stop; our launcher hands over to
    submitit, which requeues the job; the new attempt resumes the checkpoint, replay buffer included, and
    ends equal to an uninterrupted run. Jobs get cpus_per_task (1) torch threads, not one per core."""
    sweep = tmp_path / "local_sweep"
    her = [*HER_TINY, "total_steps=1000", "seed=3"]
    args = [*her, "hydra/launcher=submitit_local", f"hydra.sweep.dir={sweep}"]
    proc = start_py(*args, multirun=True, env={"OMP_NUM_THREADS": None}, fork=True)  # read by the job, not here
    try:

        def checkpointed() -> bool:
            dirs = [p for p in sweep.glob("*seed=3*") if p.is_dir()] if sweep.is_dir() else []
            return bool(dirs) and bool(checkpoints(dirs[0]))

        wait_for(checkpointed, 300, proc, "the first checkpoint")
        pids = _submit_pids(str(sweep))
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGUSR2)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-4000:]
    run = job_dir(sweep, 3)
    meta = read_json(run / "model.meta.json")
    assert meta["resumed_from"] and "/checkpoints/step_" in meta["resumed_from"], meta["resumed_from"]
    assert meta["total_steps"] == 1000 and (run / "eval.json").exists()
    assert meta["torch_threads"] == 1
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.out"))
    assert "asking submitit to requeue" in logs and "Requeued job" in logs, logs[-3000:]
    assert "replay buffer restored" in logs
    assert "[1/1]  #0  resumed" in out, out[-3000:]  # the launcher's line for the requeued job
    assert not (sweep / ".submitit" / "%j").exists(), "no folder named after submitit's unexpanded pattern"
    # The requeued SAC+HER run ends bitwise equal to the same run never interrupted.
    reference = tmp_path / "reference"
    ok(run_py(*her, f"hydra.run.dir={reference}"))
    assert_same_final(run, reference)


@pytest.mark.parametrize(("state", "done"), [
    ("COMPLETED", True), ("FAILED", True), ("CANCELLED by 0", True), ("TIMEOUT", True), ("OUT_OF_MEMORY", True),
    ("NODE_FAIL", True), ("RUNNING", False), ("PENDING", False), ("REQUEUED", False), ("COMPLETING", False),
    ("REQUEUE_HOLD", False), ("SPECIAL_EXIT", False), ("CONFIGURING", False), ("SUSPENDED", False),
    ("PREEMPTED", False), ("UNKNOWN", False),
])
def test_a_slurm_job_is_done_only_in_a_final_state(state: str, done: bool) -> None:
    """The SLURM launcher waits on jobs through a watcher that reads sacct's output with submitit's own parser
    and counts a job done only in a final state. submitit's watcher takes a job held during a requeue
    (REQUEUE_HOLD, SPECIAL_EXIT) for finished: the sweep then collected a running job as failed."""
    from submitit.slurm.slurm import SlurmInfoWatcher

    from hydra_plugins.rlexp_launchers.launchers import final_states_watcher

    sacct = f"JobID|State|NodeList\n42_0|{state}|vm\n"
    ours, submitits = final_states_watcher(), SlurmInfoWatcher(delay_s=600)
    for watcher in (ours, submitits):
        watcher.register_job("42_0")
        watcher._info_dict.update(watcher.read_info(sacct))
    assert ours.is_done("42_0", mode="cache") is done
    if state in ("REQUEUE_HOLD", "SPECIAL_EXIT", "CONFIGURING", "SUSPENDED"):
        assert submitits.is_done("42_0", mode="cache")  # the gap this watcher closes


def test_a_slurm_job_is_collected_once_slurm_and_the_job_are_both_done(tmp_path: Path) -> None:
    """submitit's `done()` is true once the result pickle exists, while the job may still be COMPLETING: the
    sweep then returned with a job running, and the caller's next `scancel` (CI, once) cancelled it. And a
    cancelled job is final in sacct at once, while it still writes its stop checkpoint and its record. The
    launcher collects a job only when both agree, or after SETTLE_S. Real submitit jobs and records on disk;
    the watcher reads the sacct lines given here instead of calling sacct."""
    import time

    from submitit.slurm.slurm import SlurmJob

    from hydra_plugins.rlexp_launchers.launchers import RlexpSlurmLauncher, final_states_watcher
    from rlexp.sweepdir import JobEvent, PlannedJob, SweepDir

    launcher = RlexpSlurmLauncher(submitit_folder=str(tmp_path))
    sweep = SweepDir(tmp_path / "sweep")
    watcher = final_states_watcher()
    watcher._make_command = lambda: None  # update() reads nothing new: what sacct() below put there stays

    def job(job_id: str, state: str | None, result: bool) -> SlurmJob:
        sub = SlurmJob(folder=tmp_path, job_id=job_id)
        sub.watcher = watcher
        watcher.register_job(job_id)
        if state is not None:
            sacct(job_id, state)
        if result:
            write_result(sub)
        return sub

    def write_result(sub: SlurmJob) -> None:
        sub.paths.result_pickle.parent.mkdir(parents=True, exist_ok=True)
        sub.paths.result_pickle.write_bytes(b"")

    def sacct(job_id: str, state: str) -> None:
        watcher._info_dict.update(watcher.read_info(f"JobID|State|NodeList\n{job_id}|{state}|vm\n"))

    planned = PlannedJob(num=0, subdir="a", overrides=[])
    finished = job("42_0", "RUNNING", result=False)
    assert not launcher._finished(sweep, planned, finished)  # no result, running
    write_result(finished)
    sacct("42_0", "COMPLETING")
    assert finished.done() and not launcher._finished(sweep, planned, finished)  # the gap
    sacct("42_0", "COMPLETED")
    assert launcher._finished(sweep, planned, finished)

    lagging = job("42_1", "RUNNING", result=True)  # sacct behind: taken after SETTLE_S
    assert not launcher._finished(sweep, planned, lagging)
    launcher._seen["42_1"] -= launcher.SETTLE_S + 1
    assert launcher._finished(sweep, planned, lagging)

    unknown = job("43_0", None, result=True)  # accounting off: taken at the first sacct call after the result
    launcher._last_forced = float("-inf")
    launcher._seen["43_0"] = time.monotonic() - 5
    assert launcher._finished(sweep, planned, unknown)

    cancelled = job("44_0", "CANCELLED by 0", result=False)
    sweep.record(JobEvent(num=0, event="started", subdir="a", job_id="44_0"))
    assert cancelled.done() and not launcher._finished(sweep, planned, cancelled)  # still checkpointing
    sweep.record(JobEvent(num=0, event="interrupted", subdir="a", job_id="44_0", step=300))
    assert launcher._finished(sweep, planned, cancelled)
    never_started = job("45_0", "CANCELLED by 0", result=False)  # cancelled while pending: no record of its own
    assert launcher._finished(sweep, PlannedJob(num=1, subdir="b", overrides=[]), never_started)
