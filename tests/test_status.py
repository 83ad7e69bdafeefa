"""`python -m rlexp status` and the launchers' per-job lines, without training (a few seconds).

Runs with training are in test_sweeps.py (running / pending / interrupted / resumed while a real sweep runs and
after it is stopped) and test_slurm.py (a SLURM array followed after its launcher returned)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from helpers import ROOT, _env, rlexp_cli

APP = """import hydra

@hydra.main(version_base=None, config_path=None)
def main(cfg):
    if cfg.x == 2:
        raise ValueError("x=2 is not allowed")
    return cfg.x

if __name__ == "__main__":
    main()
"""


def test_status_refuses_what_is_not_a_sweep_or_run(tmp_path: Path) -> None:
    for target in (tmp_path, tmp_path / "missing"):
        proc = rlexp_cli("status", str(target))
        assert proc.returncode == 2, proc
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    bad = rlexp_cli("status", str(tmp_path), "--only", "finished")
    assert bad.returncode == 2 and "--only" in bad.stderr


def test_failed_job_line_table_and_status(tmp_path: Path) -> None:
    """A plain `-m` (rlexp's default launcher, `sequential`) prints a line per job and the closing table;
    `status` then lists the failed job with its error and the done one, from the sweep dir alone."""
    (tmp_path / "app.py").write_text(APP)
    sweep = tmp_path / "sweep"
    env = {**_env(), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "app.py", "-m", "hydra/launcher=sequential", "+x=1,2", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]  # Hydra raises the failed job's exception at the end
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("[1/2]  #0  done") for ln in lines), proc.stdout
    failed = next(ln for ln in lines if ln.startswith("[2/2]  #1  failed"))
    assert failed.endswith("  1  -- ValueError: x=2 is not allowed"), failed  # Hydra's default subdir: job num
    table = proc.stdout[proc.stdout.index("sweep: 2 jobs"):]
    assert "done            1" in table and "failed          1" in table, table
    assert "details: python -m rlexp status sweep" in table  # relative to where the command ran

    status = rlexp_cli("status", str(sweep), "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["counts"] == {"done": 1, "running": 0, "pruned": 0, "interrupted": 0, "failed": 1, "refused": 0,
                                "pending": 0}
    by_num = {j["num"]: j for j in report["jobs"]}
    assert by_num[1]["state"] == "failed" and by_num[1]["error"] == "ValueError: x=2 is not allowed"
    assert by_num[0]["subdir"] == "0" and by_num[0]["state"] == "done"
    text = rlexp_cli("status", str(sweep), "--only", "failed").stdout
    assert "2 jobs -- 1 done, 1 failed" in text and "ValueError: x=2" in text, text
    rows = [ln.split()[:2] for ln in text.splitlines() if ln.strip()[:1].isdigit()]
    assert rows == [["1", "failed"]], text


def test_running_is_read_from_the_lock_without_taking_it(tmp_path: Path) -> None:
    """A held run lock reads as `running` with its pid, host and start time, and status leaves it alone:
    taking it, even shared and briefly, could make a starting job find its run directory busy."""
    from rlexp.analysis.status import sweep_status
    from rlexp.rundir import RunDir

    run = RunDir(tmp_path / "run")
    (run.hydra).mkdir(parents=True)
    (run.hydra / "config.yaml").write_text("total_steps: 5000\n")
    lock = run.lock()
    assert lock.acquire()
    try:
        [state], info = sweep_status(run.root)
        assert state.state == "running" and state.pid == os.getpid() and state.host == socket.gethostname()
        assert state.total_steps == 5000 and "step 0/5,000" in state.detail, state.detail
        fd = os.open(run.lock_file, os.O_RDONLY)  # the lock is still ours alone
        try:
            import fcntl

            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                raise AssertionError("the lock was released")
            except BlockingIOError:
                pass
        finally:
            os.close(fd)
    finally:
        lock.release()
    [state], _ = sweep_status(run.root)
    assert state.state == "interrupted" and "before its first checkpoint" in state.detail


# A sweep being written to as fast as it can, with the writers the launchers and trainers use: job records and
# the job list, leases taken, beating and released, progress rows appended (a row half-written for a moment) and
# cut back, TensorBoard histories rewritten and cleared, checkpoint units committed, pruned, set aside as damaged
# and left half-written, eval.json, and whole job folders removed (a refused job's) and made again.
WRITER = r'''
import os, random, shutil, sys, time
from pathlib import Path
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from rlexp import artifacts
from rlexp.lease import Holder
from rlexp.rundir import RunDir, remove
from rlexp.sweepdir import JobEvent, PlannedJob, SweepDir
from rlexp.training import tblog
from rlexp.training.logs import keep_progress

# it stops once it has made at least `min_ops` changes and the reader has looped 10 times over them (or at the cap)
root, min_ops, looped = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
cap = time.time() + 90
sweep, rng, n = SweepDir(root), random.Random(0), 12
(root / "multirun.yaml").parent.mkdir(parents=True, exist_ok=True)
(root / "multirun.yaml").write_text("hydra: {}\n")
jobs = [PlannedJob(num=i, subdir=f"seed={i}", overrides=[f"seed={i}"], job_id=str(1000 + i)) for i in range(n)]
sweep.write_plan(jobs, launcher="RlexpLocalLauncher")
holders, steps, ops = {}, {}, 0
OPS = (0, 0, 1, 2, 3, 3, 3, 3, 4, 5, 6, 7, 8, 8, 9, 10)  # histories rewritten and folders removed most often
while (ops < min_ops or not looped.exists()) and time.time() < cap:
    num = rng.randrange(n)
    run, op, sub = RunDir(root / f"seed={num}"), rng.choice(OPS), f"seed={num}"
    step = steps[num] = steps.get(num, 0) + 64
    try:
        if op == 0:  # a job starts: its folder, .hydra, its record, the lease
            artifacts.write_json(run.hydra / "config.yaml", {"total_steps": 4096, "seed": num})
            sweep.record(JobEvent(num=num, event="started", subdir=sub, job_id=str(1000 + num)))
            if num not in holders and (h := Holder(run.lease_dir)).take():
                holders[num] = h
        elif op == 1 and run.root.is_dir():  # progress rows, the last one in two writes
            new = not run.progress.exists()
            with open(run.progress, "a") as f:
                if new:
                    f.write("time/total_timesteps,rollout/ep_rew_mean\n")
                f.write(f"{step},-1.5\n{step + 32},")
                f.flush()
                f.write("-1.2\n")
        elif op == 2 and run.root.is_dir():  # progress cut back (a resume) or removed (a fresh start)
            keep_progress(run.progress, run.progress, step // 2) if rng.random() < 0.5 else remove(run.progress)
        elif op == 3 and run.root.is_dir():  # TensorBoard events, then the history rewritten or cleared
            writer = EventFileWriter(str(run.tb_run))
            writer.add_event(Event(step=step, summary=Summary(value=[Summary.Value(tag="a", simple_value=1.0)])))
            writer.close()
            tblog.keep_until(run.tb_run, run.tb_run, step) if rng.random() < 0.7 else tblog.clear(run.tb_run)
        elif op == 4 and run.root.is_dir():  # a checkpoint unit: parts, then the meta that commits it
            unit = run.checkpoint(step)
            unit.dir.mkdir(parents=True, exist_ok=True)
            unit.zip.write_bytes(b"z" * 64)
            unit.state.write_bytes(b"s" * 64)
            unit.replay.mkdir(exist_ok=True)
            (unit.replay / "replay.json").write_text("{}")
            if rng.random() < 0.8:
                artifacts.write_json(unit.meta, {"step": step})
        elif op == 5 and run.root.is_dir():  # old units pruned, half-written ones removed, a damaged one set aside
            units = run.checkpoints()
            for old in units[:-2]:
                if old.replay.exists():
                    old.replay.rename(old.dir / f".pruned.{old.replay.name}")
                    shutil.rmtree(old.dir / f".pruned.{old.replay.name}", ignore_errors=True)
            run.remove_uncommitted()
            if units and rng.random() < 0.3:
                run.set_aside(units[-1])
        elif op == 6 and run.root.is_dir():  # the run ends: model, eval.json, lease released, record
            artifacts.write_json(run.eval, {"aggregate": {"success_rate": 0.5, "return_mean": -3.0}})
            if (h := holders.pop(num, None)) is not None:
                h.release()
            sweep.record(JobEvent(num=num, event="done", subdir=sub, success_rate=0.5))
        elif op == 7:  # stopped, or failed with an error in its log
            if (h := holders.pop(num, None)) is not None:
                h.release()
            event = rng.choice(["interrupted", "failed"])
            logs = sweep.submitit / str(1000 + num)
            logs.mkdir(parents=True, exist_ok=True)
            with open(logs / f"{1000 + num}_0_log.err", "a") as f:
                f.write("Traceback (most recent call last):\nRuntimeError: boom\n")
            sweep.record(JobEvent(num=num, event=event, subdir=sub, error="exit (exit code 1)"))
        elif op == 8:  # refused: its folder removed with the refusal
            if (h := holders.pop(num, None)) is not None:
                h.release()
            shutil.rmtree(run.root, ignore_errors=True)
            sweep.record(JobEvent(num=num, event="refused", subdir=sub, error="error: bad"))
        elif op == 9:  # a re-launch: the job list again
            sweep.write_plan(jobs, launcher="RlexpLocalLauncher")
        elif op == 10 and run.root.is_dir():  # eval.json gone again (a fresh start of the same folder)
            remove(run.eval)
    except (FileNotFoundError, NotADirectoryError):  # a folder this writer removed a moment ago
        pass
    ops += 1
print(ops)
'''

# `status` in a loop, with every write it might attempt under the sweep directory recorded through Python's audit
# hooks (open for writing, rename, remove, mkdir, utime, ...); any exception ends it with a traceback.
READER = r'''
import json, os, sys
from pathlib import Path
root, stop, looped = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), Path(sys.argv[3])
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
CHANGES = {"os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.utime", "os.chmod", "os.chown", "os.truncate",
           "os.link", "os.symlink", "shutil.rmtree", "shutil.copyfile", "shutil.move"}
writes = []

def under(path) -> bool:
    try:
        return os.path.abspath(os.fsdecode(path)).startswith(str(root))
    except TypeError:  # a file descriptor
        return False

def hook(event, args):
    if event == "open" and under(args[0]):
        mode, flags = args[1], args[2] or 0
        if flags & WRITE_FLAGS or (isinstance(mode, str) and any(c in mode for c in "wax+")):
            writes.append((event, str(args[0])))
    elif event in CHANGES and args and under(args[0]):
        writes.append((event, str(args[0])))

sys.addaudithook(hook)
from rlexp.analysis.status import render, sweep_status
loops, seen = 0, set()
while not stop.exists() or loops < 3:
    states, info = sweep_status(root)
    render(root, states, info)
    seen |= {j.state for j in states}
    loops += 1
    if loops == 10:
        looped.touch()  # outside the sweep directory: tells the writer it may stop
print(json.dumps({"loops": loops, "writes": writes[:10], "seen": sorted(seen)}))
'''


def test_status_while_the_sweep_writes_never_fails_and_writes_nothing(tmp_path: Path) -> None:
    """`status` read-only and safe at any moment: looping over a sweep directory that a second process keeps
    rewriting with the real writers (job folders appearing and vanishing, units committed and moved aside,
    histories rewritten), it never raises and never writes, opens for writing, renames, removes or touches
    anything under the sweep directory (Python audit hooks). The writer makes at least 1,000 changes and goes on
    until the reader has looped 10 times, however slow the host. ~4 s."""
    sweep, stop, looped = tmp_path / "sweep", tmp_path / "stop", tmp_path / "looped"
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "reader.py").write_text(READER)
    env = {**_env(), "PYTHONPATH": str(ROOT), "RLEXP_LEASE_HEARTBEAT": "0.05"}
    writer = subprocess.Popen([sys.executable, str(tmp_path / "writer.py"), str(sweep), "1000", str(looped)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (sweep / ".rlexp" / "jobs.json").exists() and writer.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    reader = subprocess.Popen([sys.executable, str(tmp_path / "reader.py"), str(sweep), str(stop), str(looped)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wout, werr = writer.communicate(timeout=120)
    stop.touch()
    rout, rerr = reader.communicate(timeout=120)
    assert writer.returncode == 0, werr[-3000:]
    assert reader.returncode == 0, rerr[-5000:]
    result = json.loads(rout.strip().splitlines()[-1])
    assert result["writes"] == [], result["writes"]
    assert result["loops"] >= 10 and int(wout.strip()) >= 1000, (result, wout)
    assert {"running", "done", "interrupted", "failed", "refused", "pending"} <= set(result["seen"]), result
