"""Sweeps through our SLURM launcher on a real one-node SLURM cluster (tools/slurm_local.sh, as root).

Submit and return (`hydra.launcher.wait=false`): the command exits once the array is submitted and
`rlexp status` follows the jobs from the sweep dir (one tiny run and one bad-input job). Hydra's launcher
conformance suite (the share that differs by launcher; tests/test_launcher_suites.py has the rest).
Requeue and cancel through `hydra/launcher=submitit_slurm` (our launcher under the plugin's name): one array
job of two tiny runs (2048 and 200000 steps, so neither ends before its signal): task 0 gets the time-limit
signal (USR2) mid-training and must be requeued by SLURM, resume from its checkpoint and complete; task 1 is
`scancel`ed mid-training and must stay cancelled (checkpoint written, no requeue). `sacct` must show both
tasks ran through SLURM. A sweep larger than the cluster's MaxArraySize (3 on the local cluster): 4 tiny runs as
2 arrays that share `array_parallelism`, followed by `status`, then skipped by the same command again. An Optuna
search whose trials run as SLURM arrays sharing one journal-file study.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra.test_utils.launcher_common_tests import LauncherTestSuite
from test_launcher_suites import _suite_environment  # noqa: F401  - Hydra's suites' process assumptions

from hydra_plugins.rlexp_launchers.launchers import SLURM_FINAL
from rlexp.analysis.status import sweep_status

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

SCRIPT = ROOT / "tools" / "slurm_local.sh"
# A real SLURM sweep of training runs. The module fixture brings the one local cluster up and down: the module
# must run on one pytest-xdist worker (`--dist loadfile` in pyproject.toml).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slurm_conf() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("the local SLURM cluster (tools/slurm_local.sh) needs root")
    if not shutil.which("apt-get") or not shutil.which("dpkg-query"):
        pytest.skip("the local SLURM cluster (tools/slurm_local.sh) needs Debian's apt-get to install SLURM")
    status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=60)
    already_up = "slurmctld: running" in status.stdout  # e.g. brought up by .ci/run: leave it running
    up = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, timeout=300)
        pytest.fail(f"slurm_local.sh up failed:\n{up.stderr[-4000:]}")
    conf = up.stdout.strip().splitlines()[-1].split("=", 1)[1]
    yield conf
    if not already_up:
        down = subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stderr[-2000:]


def slurm(conf: str, *args: str) -> str:
    res = subprocess.run(
        list(args), capture_output=True, text=True, timeout=60, env={**os.environ, "SLURM_CONF": conf}
    )
    assert res.returncode == 0, f"{args}: {res.stderr}"
    return res.stdout


def starter(conf: str, job: str, delay_s: float = 2.0):
    """A poll that starts the requeued `job` now rather than after SLURM's ~120 s BeginTime hold.

    Not in the same second as the requeue: slurmd refuses a launch whose credential is not newer (in whole
    seconds) than the revocation of the job's previous run ("Killing non-startable batch job: Job credential
    revoked"), which fails the job. So it waits `delay_s` after first seeing the job pending, then asks for
    StartTime=now, which also wakes the scheduler. True once the job runs again (or is done and gone).
    """
    pending_since: list[float] = []
    seen: list[str] = []  # every state polled, in order, for the failure message

    def poll() -> bool:
        state = slurm(conf, "squeue", "-h", "-j", job, "-o", "%T").strip()
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in ("REQUEUE_HOLD", "SPECIAL_EXIT"):  # held instead of pending: release it
            # Not slurm(): a release that races the job's own move to PENDING fails harmlessly; the next poll sees it.
            subprocess.run(["scontrol", "release", job], capture_output=True, timeout=60,
                           env={**os.environ, "SLURM_CONF": conf})
            return False
        if state != "PENDING":
            return state in ("RUNNING", "")
        if not pending_since:
            pending_since.append(time.time())
        elif time.time() - pending_since[0] >= delay_s:
            # May race with the scheduler ("no longer pending"): the next poll sees the new state.
            subprocess.run(
                ["scontrol", "update", f"JobId={job}", "StartTime=now"],
                capture_output=True,
                timeout=60,
                env={**os.environ, "SLURM_CONF": conf},
            )
        return False

    poll.seen = seen  # type: ignore[attr-defined]
    return poll


def sacct_states(conf: str, job: str) -> list[str]:
    out = slurm(conf, "sacct", "-X", "-n", "-P", "--duplicates", "-j", job, "-o", "State,NodeList")
    return [line for line in out.splitlines() if line]


def test_slurm_sweep_requeue_resume_and_cancel(slurm_conf: str, tmp_path: Path) -> None:
    sweep = tmp_path / "slurm_sweep"
    cmd = [
        *PPO_TINY,
        "total_steps=2048,200000",
        "threads=1",  # the reference run below uses one torch thread too: same float reductions
        "hydra/launcher=submitit_slurm",
        "hydra.launcher.partition=debug",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=1",
        "hydra.launcher.timeout_min=10",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = start_py(*cmd, multirun=True, env={"SLURM_CONF": slurm_conf})

    def run_of(task: int) -> Path:
        return sweep / (
            "+experiment=ch03_ppo_reach_dense,algo.batch_size=64,algo.n_steps=64,"
            f"diagnostics.freq=0,eval.n_episodes=2,n_envs=2,total_steps={(2048, 200000)[task]}"
        )

    def ckpt(task: int) -> bool:
        return bool(checkpoints(run_of(task)))

    def cancel_all() -> None:  # never raises: it runs where a check already failed
        subprocess.run(["scancel", array], capture_output=True, timeout=60,
                       env={**os.environ, "SLURM_CONF": slurm_conf})

    try:
        wait_for(lambda: ckpt(0), 300, proc, "a checkpoint of task 0")
        array = slurm(slurm_conf, "squeue", "-h", "-o", "%F").split()[0]
        t0, t1 = f"{array}_0", f"{array}_1"
        # What SLURM sends signal_delay_s before the time limit (submitit's job._interrupt(timeout=True)).
        slurm(slurm_conf, "scancel", "--signal=USR2", t0)
        wait_for(
            lambda: any(s.startswith("REQUEUED") for s in sacct_states(slurm_conf, t0)),
            120,
            proc,
            "task 0 to be requeued",
        )
        requeued = {j.num: j for j in sweep_status(sweep)[0]}[0]  # as `rlexp status` sees it meanwhile
        assert requeued.state == "pending" and "(resumes from step" in requeued.detail, requeued  # PENDING/COMPLETING
        # SLURM holds a requeued job for ~120 s (BeginTime); start it sooner to keep the test short.
        restart = starter(slurm_conf, t0)
        # Generous: on 2 loaded cores the stopped run may take a while to checkpoint and leave COMPLETING.
        try:
            wait_for(restart, 300, proc, "task 0 to start again")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its squeue states: {restart.seen}") from None
        wait_for(lambda: ckpt(1), 400, proc, "a checkpoint of task 1")
        slurm(slurm_conf, "scancel", t1)  # a user's cancel: checkpoint and stop, but never requeue
        out, _ = proc.communicate(timeout=400)
        ended = True  # the sweep returned: every task must be in a final state now, left alone
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            time.sleep(2)
            proc.kill()
        if "array" in locals() and "ended" not in locals():  # a failed check must not leave a task running
            cancel_all()
    # Task 1 was cancelled, so the sweep as a whole reports a failure, after the other tasks completed.
    assert proc.returncode != 0, out[-3000:]
    assert "UncompletedJobError" in out or "CANCELLED" in out, out[-3000:]

    states = {i: sacct_states(slurm_conf, f"{array}_{i}") for i in range(2)}
    if not all(rows and rows[-1].split("|")[0].split()[0] in SLURM_FINAL for rows in states.values()):
        cancel_all()  # the checks below fail: leave no task running
    assert [s.split("|")[0] for s in states[0]] == ["REQUEUED", "COMPLETED"], (states, out[-3000:])
    assert states[1] and all(s.startswith("CANCELLED") for s in states[1]), states
    assert all(s.split("|")[1] for rows in states.values() for s in rows), "every task ran on a SLURM node"

    run = run_of(0)
    meta = read_json(run / "model.meta.json")
    assert (run / "eval.json").exists() and meta["total_steps"] >= 2048  # PPO ends on a whole rollout
    assert "/checkpoints/step_" in meta["resumed_from"]
    # The requeued run ends bitwise equal to the same run never interrupted.
    reference = tmp_path / "reference"
    ok(run_py(*PPO_TINY, "total_steps=2048", "threads=1", f"hydra.run.dir={reference}"))
    assert_same_final(run, reference)
    cancelled = run_of(1)
    assert not (cancelled / "eval.json").exists() and checkpoints(cancelled)
    logs = {
        i: "".join(p.read_text() for p in (sweep / ".submitit").rglob(f"{array}_{i}_*log.out"))
        for i in range(2)
    }
    assert "Requeued job" in logs[0] and "resuming" in logs[0]
    assert "Requeued job" not in logs[1], logs[1][-2000:]
    # The launcher's lines, and `rlexp status` from disk afterwards.
    assert "#0  resumed" in out and "#1  interrupted" in out, out[-3000:]
    states = {j.num: j for j in sweep_status(sweep)[0]}
    assert (states[0].state, states[0].resumed) == ("done", True)
    assert states[1].state == "interrupted" and states[1].step == int(checkpoints(cancelled)[-1].stem[5:])


SLURM_FLAGS = ["hydra.launcher.partition=debug", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
               "hydra.launcher.timeout_min=10"]


def test_slurm_wait_false_returns_at_once_and_status_follows(slurm_conf: str, tmp_path: Path) -> None:
    """Hydra issue #2479: with wait=false the command returns once the array is submitted, printing the
    status command; the jobs record themselves, so `rlexp status` shows them to the end without the launcher."""
    sweep = tmp_path / "no_wait"
    # job 1 is refused when it starts (HER's warm-up check needs the env), after the sweep was submitted
    her = [o for o in HER_TINY if not o.startswith("algo.learning_starts=")]
    proc = run_py(*her, "total_steps=256", "algo.learning_starts=100,10", "threads=1", "hydra/launcher=slurm",
                  *SLURM_FLAGS, "hydra.launcher.wait=false", f"hydra.sweep.dir={sweep}", multirun=True,
                  env={"SLURM_CONF": slurm_conf}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"follow them with:\n  python -m rlexp status {sweep}" in proc.stdout, proc.stdout
    states = {j.num: j for j in sweep_status(sweep)[0]}
    assert states[0].state in ("pending", "running"), states  # training takes longer than submitting

    def ended() -> bool:
        return all(j.state in ("done", "failed", "refused") for j in sweep_status(sweep)[0])

    wait_for(ended, 300, None, "both jobs of the array to end")
    states = {j.num: j for j in sweep_status(sweep)[0]}
    assert states[0].state == "done" and states[0].success_rate is not None
    assert states[1].state == "refused" and "is too small for HER" in (states[1].error or ""), states
    shown = ok(rlexp_cli("status", str(sweep))).stdout
    assert "2 jobs, SLURM array " in shown and "1 done" in shown and "1 refused" in shown, shown


def sacct_times(conf: str, array: str) -> list[tuple[str, float, float]]:
    """(task id, start, end) in epoch seconds of every task of an array, from sacct."""
    import datetime as dt

    out = slurm(conf, "sacct", "-X", "-n", "-P", "-j", array, "-o", "JobID,Start,End,State")
    rows = []
    for line in out.splitlines():
        job, start, end, state = line.split("|")
        if state != "COMPLETED":
            raise ValueError(f"{job} is {state}")
        rows.append((job, *(dt.datetime.fromisoformat(t).timestamp() for t in (start, end))))
    return rows


def every(seconds: float, predicate):  # noqa: ANN001, ANN201
    """`predicate`, asked at most every `seconds` (wait_for polls every 50 ms: status and sacct calls that often
    would take CPU from the jobs themselves)."""
    last = [float("-inf")]

    def poll() -> bool:
        if time.time() - last[0] < seconds:
            return False
        last[0] = time.time()
        return bool(predicate())

    return poll


def _completed(conf: str, arrays: list[str], n: int) -> bool:
    try:
        return sum(len(sacct_times(conf, a)) for a in arrays) == n
    except ValueError:  # accounting lags the jobs' own records by a moment
        return False


def test_slurm_sweep_larger_than_max_array_size(slurm_conf: str, tmp_path: Path) -> None:
    """A 4-job sweep on a cluster whose MaxArraySize is 3 (tools/slurm_local.sh), which refuses it as one array:
    submitted as 2 arrays of 2 with wait=false, array_parallelism=2 across them (one lane: each array waits for
    the one before); `status` follows all 4 from the start, all finish, and the same command again skips them."""
    from hydra_plugins.rlexp_launchers.arrays import parse_max_array_size

    limit = parse_max_array_size(slurm(slurm_conf, "scontrol", "show", "config"))
    # A cluster brought up by an older copy of slurm_local.sh keeps SLURM's default: then the launcher is told.
    told = [] if limit == 3 else ["hydra.launcher.max_array_size=3"]
    if limit is not None and limit <= 3:  # what a single array of the sweep meets (submitit #1624)
        one = subprocess.run(["sbatch", "--hold", "--array=0-3", "-p", "debug", "--wrap", "true"],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "SLURM_CONF": slurm_conf})
        assert one.returncode != 0 and "array" in one.stderr.lower(), (one.stdout, one.stderr)
    sweep = tmp_path / "big"
    tiny = [o for o in PPO_TINY if not o.startswith(("checkpoint_freq=", "eval.n_episodes="))]
    cmd = [*tiny, "total_steps=128", "checkpoint_freq=0", "eval.n_episodes=1", "tensorboard=false", "threads=1",
           "seed=range(0,4)", "hydra/launcher=slurm", *SLURM_FLAGS, "hydra.launcher.array_parallelism=2", *told,
           f"hydra.sweep.dir={sweep}"]
    env = {"SLURM_CONF": slurm_conf}
    first = run_py(*cmd, "hydra.launcher.wait=false", multirun=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "submitted 4 jobs as 2 SLURM arrays " in first.stdout, first.stdout
    arrays = first.stdout.split("2 SLURM arrays ", 1)[1].split(" (", 1)[0].split(", ")
    try:
        shown = ok(rlexp_cli("status", str(sweep))).stdout
        assert f"4 jobs, 2 SLURM arrays {', '.join(arrays)} -- " in shown, shown
        early = sweep_status(sweep)[0]  # the later array waits for the first one: 2 jobs pending in SLURM
        assert [j.state for j in early[2:]] == ["pending"] * 2, [(j.num, j.state, j.detail) for j in early]

        def ended() -> bool:
            return all(j.state in ("done", "failed", "refused") for j in sweep_status(sweep)[0])

        wait_for(every(3, ended), 900, None, "the 4 jobs of the 2 arrays to end")
        finished = True  # every job wrote its eval.json; SLURM may still be completing the last ones: leave them
    finally:
        if "finished" not in locals():  # none left running
            subprocess.run(["scancel", *arrays], capture_output=True, timeout=60, env={**os.environ, **env})
    states = sweep_status(sweep)[0]
    assert [j.state for j in states] == ["done"] * 4, [(j.num, j.state, j.detail) for j in states]
    try:
        wait_for(every(2, lambda: _completed(slurm_conf, arrays, 4)), 120, None, "sacct: 4 tasks completed")
    except AssertionError:
        rows = slurm(slurm_conf, "sacct", "-X", "-P", "-j", ",".join(arrays), "-o", "JobID,State")
        raise AssertionError(f"sacct does not report the 4 tasks completed:\n{rows}") from None
    tasks = {a: sacct_times(slurm_conf, a) for a in arrays}
    assert [len(t) for t in tasks.values()] == [2, 2], tasks  # within MaxArraySize, and every job ran in SLURM
    for before, after in itertools.pairwise(arrays):  # one lane: an array starts once the one before has ended
        assert min(t[1] for t in tasks[after]) >= max(t[2] for t in tasks[before]), tasks
    spans = [t[1:] for ts in tasks.values() for t in ts]
    assert max(sum(s <= at < e for s, e in spans) for at, _ in spans) <= 2  # array_parallelism=2 over all of them
    again = run_py(*cmd, multirun=True, env=env, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    lines = again.stdout.splitlines()
    assert sum(bool(re.match(r"\[\d+/4\]  #\d+  skipped ", ln)) for ln in lines) == 4, again.stdout[-3000:]
    assert any(re.fullmatch(r"  skipped +4  .*", ln) for ln in lines), again.stdout[-3000:]  # the closing table
    assert [j.state for j in sweep_status(sweep)[0]] == ["done"] * 4


@pytest.mark.usefixtures("slurm_conf", "_suite_environment")
@pytest.mark.parametrize("launcher_name, overrides", [("slurm", SLURM_FLAGS)])
class TestSlurmLauncherSuite(LauncherTestSuite):
    """Hydra's LauncherTestSuite on the SLURM launcher: 1 and 2 jobs, per-job config merging, refused Hydra
    sweeps, a failing job. The rest (config-group variants) is covered on `sequential`/`local`."""

    test_sweep_2_optimizers = None
    test_sweep_over_unspecified_mandatory_default = None
    test_sweep_1_job_strict = None
    test_sweep_with_custom_resolver = None


def test_optuna_study_as_slurm_arrays_with_journal_storage(slurm_conf: str, tmp_path: Path) -> None:
    """An Optuna search whose trials run as SLURM arrays (3 trials, one array per batch of up to 2) sharing one study in
    Optuna's journal file (the default under the SLURM launcher): every trial reports each evaluation and its
    result from its own job, none is lost or counted twice, and `status` reads the journal."""
    import optuna

    from rlexp import hpo

    sweep = tmp_path / "hpo"
    tiny = [o for o in HER_TINY if "net_arch" not in o]
    proc = run_py("hparams_search=her_push_optuna", *tiny, "++algo.policy_kwargs.net_arch=[32,32]",
                  "algo.batch_size=32", "algo.learning_rate=tag(log, interval(1e-4, 1e-3))", "total_steps=200",
                  "eval.freq=100", "eval.freq_episodes=2", "hydra/sweeper/pruner=none", "hydra.sweeper.n_trials=3",
                  "hydra/launcher=slurm", *SLURM_FLAGS, f"hydra.sweep.dir={sweep}",
                  multirun=True, env={"SLURM_CONF": slurm_conf})
    ok(proc)
    assert "to acquire the lock file" not in proc.stderr, proc.stderr[-3000:]  # nothing waits on the journal's lock
    assert (sweep / "optuna.journal").is_file() and not (sweep / "optuna.db").exists()
    trials = optuna.load_study(study_name="her_push_optuna",
                               storage=hpo.open_storage(f"journal:{sweep / 'optuna.journal'}")).trials
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    for t in trials:
        run = sweep / hpo.trial_dir(t.number)
        assert t.value == hpo.objective("success_rate", read_json(run / "eval.json")["aggregate"])
        assert sorted(t.intermediate_values) == [100, 200]
        assert read_json(run / "model.meta.json")["config"]["trial"]["number"] == t.number
    ids = {read_json(p)["job_id"].split("_")[0] for p in (sweep / ".rlexp" / "jobs").glob("*.json")}
    assert len(ids) == 2, ids  # one array per batch of n_jobs=2: trials 0-1, then 2
    status = ok(rlexp_cli("status", str(sweep)))
    assert "study her_push_optuna: 3/3 trials -- 3 complete" in status.stdout, status.stdout
