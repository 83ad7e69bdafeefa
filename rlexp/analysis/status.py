"""`python -m rlexp status DIR`: where every job of a sweep stands, read from disk at any moment.

Works while the sweep runs, after it ended, and for a SLURM array whose launching process has exited
(`hydra.launcher.wait=false`), since every fact is a file: the planned jobs and each job's last event in
`DIR/.rlexp/` (rlexp/sweepdir.py, written by our launchers and the jobs), and in each run directory the lock
(who trains there, since when), checkpoints, eval.json and logs (rlexp/rundir.py). A job is

    done         eval.json exists (success rate, return; "resumed" if it continued from a checkpoint), or the
                 job recorded that it ended well (a task that writes no eval.json)
    running      its run directory's lease is held by a live trainer (host, pid, since when, last heartbeat,
                 step reached), or its lock is (runs of older rlexp versions), or it has started and its
                 process is alive (before it takes the lock)
    pruned       an Optuna trial its study's pruner stopped (pruned.json, with the step and the value); a search
                 never runs it again
    interrupted  stopped with a checkpoint (or a trained model without evaluation): the same command resumes it
    failed       it recorded a failure, or its logs end with an error; the last error line is shown
    refused      its config was bad input (exit code 2): the job's one error line, and no run directory
    pending      planned but not started; for SLURM, waiting in the queue (also when requeued after a time limit)

Whether a trainer holds the run is read from its lease (`.rlexp.lease/`, rlexp.lease: alive means its pid lives
on this host, or its heartbeat is fresher than the timeout on another), else from /proc/locks (this host),
never by touching the lock: trying it could make a starting job find its run directory busy and skip it.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlexp import lease as leases
from rlexp.errors import ConfigError
from rlexp.fmt import percent
from rlexp.rundir import Checkpoint, RunDir
from rlexp.sweepdir import JobEvent, PlannedJob, SweepDir, error_line, where

STATES = ("done", "running", "pruned", "interrupted", "failed", "refused", "pending")
_HOLDER = re.compile(r"pid (\d+) on host (\S+) since (\S+)")


@dataclass
class JobState:
    num: int | None  # None: a run directory of the sweep dir that no plan lists (an older command's)
    subdir: str | None
    state: str
    detail: str = ""
    success_rate: float | None = None
    return_mean: float | None = None
    step: int | None = None
    total_steps: int | None = None
    host: str | None = None
    pid: int | None = None
    since: str | None = None
    resumed: bool = False
    error: str | None = None
    job_id: str | None = None
    heartbeat_age_s: float | None = None  # running: seconds since the trainer's last lease heartbeat


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def held_flocks() -> dict[tuple[int, int, int], int] | None:
    """(device major, minor, inode) -> pid of every exclusive flock on this host; None without /proc/locks."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return None
    held = {}
    for line in text.splitlines():
        parts = line.split()  # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5678 0 EOF"; waiters have "->" in [1]
        if len(parts) >= 6 and parts[1] == "FLOCK" and parts[3] == "WRITE":
            try:
                major, minor, inode = parts[5].split(":")
                held[(int(major, 16), int(minor, 16), int(inode))] = int(parts[4])
            except ValueError:
                continue
    return held


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_holder(run: RunDir, flocks: dict[tuple[int, int, int], int] | None) -> dict[str, Any] | None:
    """{pid, host, since[, heartbeat_age_s]} of the process training in `run` now, or None if nobody is (as far as
    we can tell). The lease answers for any node; a run without one (older rlexp) is read from its flock."""
    lease = leases.current(run.lease_dir)
    if lease is not None and not lease.released:
        if lease.gone() is not None:
            return None  # its pid is dead (this host) or its heartbeat is older than the timeout (another host)
        return {"pid": lease.pid, "host": lease.host, "since": lease.since, "heartbeat_age_s": round(lease.age_s, 1)}
    try:
        st = os.stat(run.lock_file)
        text = run.lock_file.read_text()
    except OSError:
        return None
    m = _HOLDER.search(text)
    info = {"pid": int(m.group(1)), "host": m.group(2), "since": m.group(3)} if m else {}
    if flocks is not None and (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino) in flocks:
        info.setdefault("pid", flocks[(os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)])
        info.setdefault("host", socket.gethostname())
        return info
    if info and info["host"] != socket.gethostname():
        return {**info, "unsure": True}  # another host's lock: its kernel knows; the caller weighs the events
    if flocks is None and info and _alive(info["pid"]):  # no /proc/locks: a live holder on this host
        return info
    return None


def _tail(path: Path, size: int = 1 << 18) -> str:
    """The last `size` bytes of a file as text: a log of a long job can be many MB, its error is at the end."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - size))
        return f.read().decode(errors="replace")


def latest_checkpoint(run: RunDir) -> Checkpoint | None:
    """The run's latest committed checkpoint; None also when its folder vanishes while it is read (a job's
    folder removed with its refusal, a fresh start clearing stale checkpoints)."""
    try:
        return run.latest_checkpoint()
    except OSError:
        return None


def _progress_step(run: RunDir) -> int | None:
    """`time/total_timesteps` of progress.csv's last complete row (SB3 flushes it at every log dump; a row being
    appended is left out)."""
    try:
        with open(run.progress, "rb") as f:
            header = f.readline().decode().strip().split(",")
            f.seek(max(0, os.fstat(f.fileno()).st_size - 65536))
            data = f.read().decode(errors="replace")
        rows = data.splitlines() if data.endswith("\n") else data.splitlines()[:-1]
        last = next((r.split(",") for r in reversed(rows) if len(r.split(",")) == len(header)), None)
        if last is None or last == header:
            return None
        return int(float(last[header.index("time/total_timesteps")]))
    except (OSError, ValueError, IndexError):
        return None


def step_reached(run: RunDir) -> int | None:
    """The latest environment step the run has logged: progress.csv's last row, else (no progress.csv: runs
    with only TensorBoard) the newest TensorBoard event file's last event; its latest checkpoint if that is
    further."""
    steps = []
    if (ckpt := latest_checkpoint(run)) is not None:
        steps.append(ckpt.step)
    if (logged := _progress_step(run)) is not None:
        return max([logged, *steps])
    if run.progress.exists():  # no complete row yet: the checkpoint says as much as TensorBoard would
        return max(steps) if steps else None
    files = []
    try:  # a history being rewritten (a resume) or cleared (a fresh start) may vanish while it is listed
        for path in run.tb.rglob("events.out.tfevents.*") if run.tb.is_dir() else []:
            files.append((path.stat().st_mtime, path))
    except OSError:
        files = []
    if files:
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        try:
            steps.extend(int(ev.step) for ev in EventFileLoader(str(max(files)[1])).Load())
        except Exception:  # a file being written: what was read so far counts
            pass
    return max(steps) if steps else None


def total_steps(run: RunDir) -> int | None:
    """`total_steps` of the run's `.hydra/config.yaml`, read as plain YAML (OmegaConf's loader is slow, and this
    runs for every running job)."""
    import yaml

    try:
        data = yaml.load((run.hydra / "config.yaml").read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        value = data.get("total_steps") if isinstance(data, dict) else None
        return int(value) if value is not None else None
    except Exception:
        return None


def log_error(sweep: SweepDir | None, run: RunDir, job_id: str | None) -> str | None:
    """The last error line of the job's submitit stderr log, else of its run.log."""
    logs = sweep.submitit_logs(job_id) if sweep is not None else []
    for path in [*[p for p in logs if p.name.endswith(".err")], run.root / "run.log"]:
        try:
            found = error_line(_tail(path))
        except OSError:
            continue
        if found:
            return found
    return None


def slurm_arrays(info: dict[str, Any]) -> list[str]:
    """The SLURM arrays a sweep was submitted as (jobs.json: `slurm_arrays`; one `slurm_array` before the
    launcher split sweeps)."""
    arrays = info.get("slurm_arrays") or ([info["slurm_array"]] if info.get("slurm_array") else [])
    return [str(a) for a in arrays]


def slurm_queue(arrays: list[str]) -> dict[str, str]:
    """{ARRAY_TASK: STATE} of the tasks of these SLURM arrays still in the queue (one squeue call for all);
    {} without squeue or arrays."""
    if not arrays or not shutil.which("squeue"):
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i %T"], capture_output=True,
                             text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(line.split(None, 1) for line in out.splitlines() if len(line.split()) == 2)


def _since(iso: str | None) -> str:
    """"2026-11-23T00:08:38+00:00" -> "00:08:38 UTC (4m02s ago)" (the date too if not today)."""
    try:
        then = _dt.datetime.fromisoformat(str(iso)).astimezone(_dt.UTC)
    except ValueError:
        return str(iso)
    now = _dt.datetime.now(_dt.UTC)
    s = max(0, int((now - then).total_seconds()))
    ago = f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"
    day = "" if then.date() == now.date() else f"{then:%Y-%m-%d} "
    return f"{day}{then:%H:%M:%S} UTC ({ago} ago)"


def job_state(sweep: SweepDir | None, run: RunDir, num: int | None = None, subdir: str | None = None,
              event: JobEvent | None = None, job_id: str | None = None,
              flocks: dict[tuple[int, int, int], int] | None = None, queue: dict[str, str] | None = None) -> JobState:
    """Where one job stands; see the module docstring for the rules."""
    js = JobState(num=num, subdir=subdir, state="pending", job_id=job_id or (event.job_id if event else None))
    queued = (queue or {}).get(js.job_id or "")
    holder = lock_holder(run, flocks) if run.root.is_dir() else None
    starting = (event is not None and event.event == "started" and
                (_alive(event.pid) if event.host == socket.gethostname() else queued in ("RUNNING", None)))
    if holder is not None and holder.get("unsure"):
        holder = holder if starting or queued == "RUNNING" else None
    if holder is not None or (starting and not run.eval.exists()):
        js.state = "running"
        who = holder or {"pid": event.pid, "host": event.host, "since": event.time}  # type: ignore[union-attr]
        js.pid, js.host, js.since = who.get("pid"), who.get("host"), who.get("since")
        js.heartbeat_age_s = who.get("heartbeat_age_s")
        js.step, js.total_steps = step_reached(run), total_steps(run)
        at = "starting" if holder is None else (
            f"step {js.step:,}" if js.step is not None else "step 0") + (
            f"/{js.total_steps:,}" if js.total_steps else "")
        beat = f", last heartbeat {js.heartbeat_age_s:.0f} s ago" if js.heartbeat_age_s is not None else ""
        js.detail = f"{at} on {js.host} pid {js.pid} since {_since(js.since)}{beat}"
        return js
    if run.eval.exists():
        js.state = "done"
        agg = (_read_json(run.eval) or {}).get("aggregate") or {}
        js.success_rate, js.return_mean = agg.get("success_rate"), agg.get("return_mean")
        js.resumed = bool((_read_json(run.meta) or {}).get("resumed_from"))
        ret = f"  return {js.return_mean:.2f}" if js.return_mean is not None else ""
        js.detail = f"success {percent(js.success_rate)}{ret}" + ("  (resumed)" if js.resumed else "")
        return js
    if event is not None and event.event in ("done", "skipped"):  # a job without eval.json (not a training task)
        js.state, js.success_rate, js.return_mean = "done", event.success_rate, event.return_mean
        js.detail = f"success {percent(js.success_rate)}" if js.success_rate is not None else ""
        return js
    if event is not None and event.event == "refused":  # its run directory was removed with the refusal
        js.state, js.error = "refused", event.error
        js.detail = event.error or ""
        return js
    if run.pruned.is_file() or (event is not None and event.event == "pruned"):  # an Optuna trial, stopped
        record = _read_json(run.pruned) or {}
        js.state, js.step = "pruned", record.get("stopped_at") or (event.step if event else None)
        value = f" (objective {record['value']:.4g})" if record.get("value") is not None else ""
        js.detail = f"pruned at step {js.step:,}{value}" if js.step is not None else "pruned"
        return js
    if not run.root.is_dir():
        js.detail = f"SLURM {queued.lower()}" if queued else ""
        return js
    if queued and queued != "RUNNING":  # waiting for its (next) start: requeued, or a re-launched sweep's job
        ckpt = latest_checkpoint(run)
        js.detail = f"SLURM {queued.lower()}" + (f" (resumes from step {ckpt.step:,})" if ckpt else "")
        return js
    if event is not None and event.event == "failed":
        js.state, js.error = "failed", log_error(sweep, run, js.job_id) if "exit code" in (event.error or "") else None
        js.error = js.error or event.error
        js.detail = js.error or ""
        return js
    if (ckpt := latest_checkpoint(run)) is not None:
        js.state, js.step = "interrupted", ckpt.step
        js.detail = f"resumable from step {ckpt.step:,}"
        return js
    if run.model.exists():
        js.state, js.detail = "interrupted", "trained; evaluation pending (the same command evaluates it)"
        return js
    if (err := log_error(sweep, run, js.job_id)) is not None:
        js.state, js.error, js.detail = "failed", err, err
        return js
    js.state, js.detail = "interrupted", "stopped before its first checkpoint (the same command starts it over)"
    return js


def sweep_status(path: Path) -> tuple[list[JobState], dict[str, Any]]:
    """Every job of the sweep (or the one run) at `path`, and facts about the sweep itself."""
    path = Path(path)
    sweep = SweepDir(path)
    flocks = held_flocks()
    if not sweep.is_sweep():
        run = RunDir(path)
        if not run.is_run():
            if not path.is_dir():
                raise ConfigError(f"{path} does not exist")
            raise ConfigError(f"{path} is neither a sweep directory (multirun.yaml, .rlexp/jobs.json) nor a run "
                              "directory (model.meta.json, .hydra/config.yaml, eval.json)")
        return [job_state(None, run, flocks=flocks)], {"run": str(run.root)}
    plan = sweep.read_plan()
    jobs: list[PlannedJob] = plan[0] if plan else []
    info: dict[str, Any] = plan[1] if plan else {}
    queue = slurm_queue(slurm_arrays(info))
    states = []
    for job in jobs:
        event = sweep.event(job.num)
        if event is not None and event.subdir != job.subdir:
            event = None  # a record of another command's job with the same number
        run = RunDir(sweep.root / job.subdir) if job.subdir else RunDir(sweep.root / f"#{job.num}")
        states.append(job_state(sweep, run, job.num, job.subdir, event, job.job_id, flocks, queue))
    listed = {j.subdir for j in jobs}
    others = sorted(p for p in sweep.root.iterdir() if p.is_dir() and p.name not in listed
                    and not p.name.startswith(".") and RunDir(p).is_run())
    states.extend(job_state(sweep, RunDir(p), None, p.name, flocks=flocks) for p in others)
    _add_trials(sweep, info)
    return states, info


def _add_trials(sweep: SweepDir, info: dict[str, Any]) -> None:
    """An Optuna search's trials (rlexp.analysis.trials), and the study's n_trials from multirun.yaml."""
    from rlexp.analysis import trials

    found = trials.trials(sweep.root)
    if not found:
        return
    info["trials"] = [asdict(t) for t in found]
    try:
        from omegaconf import OmegaConf

        info["n_trials"] = int(OmegaConf.load(sweep.multirun).hydra.sweeper.n_trials)
    except Exception:  # noqa: BLE001 - no multirun.yaml, or another sweeper's: the count alone
        pass


def counts(states: list[JobState]) -> dict[str, int]:
    return {s: sum(1 for j in states if j.state == s) for s in STATES}


def bar(done: int, total: int, width: int = 30) -> str:
    filled = round(width * done / total) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} ended"


def render(path: Path, states: list[JobState], info: dict[str, Any], only: set[str] | None = None) -> str:
    c = counts(states)
    head = ", ".join(f"{n} {s}" for s, n in c.items() if n)
    arrays = slurm_arrays(info)
    shown = ", ".join(arrays if len(arrays) <= 4 else [*arrays[:2], "...", arrays[-1]])
    array = f", SLURM array {shown}" if len(arrays) == 1 else f", {len(arrays)} SLURM arrays {shown}" if arrays else ""
    lines = [f"{where(path)}: {len(states)} job{'s' * (len(states) != 1)}{array} -- {head}"]
    if len(states) > 1:
        lines.append(bar(c["done"] + c["pruned"] + c["failed"] + c["refused"], len(states)))
    rows = [j for j in states if not only or j.state in only]
    if rows and "run" not in info:
        width = max(len(j.detail) for j in rows)
        lines.append(f"{'#':>4}  {'state':<11}  {'detail':<{width}}  run directory")
        for j in rows:
            num = "-" if j.num is None else str(j.num)
            lines.append(f"{num:>4}  {j.state:<11}  {j.detail:<{width}}  {j.subdir or ''}".rstrip())
    elif rows:
        lines.append(f"{rows[0].state}: {rows[0].detail}".rstrip(": "))
    again = [w for n, w in ((c["interrupted"], "interrupted jobs resume from their checkpoints"),
                            (c["failed"], "failed jobs start over")) if n]
    if again:
        lines.append(f"{' and '.join(again)} when the sweep's command runs again")
    if c["refused"]:
        lines.append("refused jobs are refused again until their overrides are fixed (the error says how)")
    if info.get("trials"):
        lines.extend(trials_lines(info))
    return "\n".join(lines)


def trials_lines(info: dict[str, Any]) -> list[str]:
    from rlexp.analysis import trials

    return ["", *trials.render([trials.TrialState(**t) for t in info["trials"]], info.get("n_trials"))]


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", type=Path, help="a sweep directory (multirun/NAME) or one run directory")
    p.add_argument("--only", default=None, help=f"list only jobs in these states (comma-separated: {','.join(STATES)})")
    p.add_argument("--json", action="store_true", help="print the job states as JSON")
    p.add_argument("--watch", type=float, default=None, metavar="SECONDS",
                   help="refresh every SECONDS until no job is running or pending, with a progress bar")


def _watch(path: Path, every: float) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    states, _ = sweep_status(path)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar_:
        task = bar_.add_task("", total=len(states))
        while True:
            c = counts(states)
            bar_.update(task, completed=c["done"] + c["pruned"] + c["failed"] + c["refused"], total=len(states),
                        description=", ".join(f"{n} {s}" for s, n in c.items() if n))
            if not c["running"] and not c["pending"]:
                break
            time.sleep(every)
            states, _ = sweep_status(path)


def run(args: argparse.Namespace) -> int:
    """Where every job of a sweep stands (done / running / interrupted / failed / refused / pending), from disk:
    at any moment, also while it runs and for a SLURM array after the launching process has exited."""
    only = {s.strip() for s in args.only.split(",")} if args.only else None
    if only and (bad := only - set(STATES)):
        raise ConfigError(f"--only: unknown state(s) {sorted(bad)}; choose from {', '.join(STATES)}")
    if args.watch is not None and args.watch <= 0:
        raise ConfigError(f"--watch must be > 0 seconds, got {args.watch}")
    states, info = sweep_status(args.dir)
    if args.watch is not None:
        _watch(args.dir, args.watch)
        states, info = sweep_status(args.dir)
    if args.json:
        print(json.dumps({"dir": str(Path(args.dir).resolve()), **info, "counts": counts(states),
                          "jobs": [asdict(j) for j in states if not only or j.state in only]}, indent=1))
    else:
        print(render(args.dir, states, info, only))
    return 0
