"""The sweep directory (`multirun/NAME`): the one place that knows its layout besides Hydra's own files.

    multirun.yaml              Hydra's: the composed sweep config
    .rlexp/jobs.json           the planned jobs, written by our launchers when they submit: number, run
                               directory, overrides, submitit job id (so `rlexp status` knows what is pending)
    .rlexp/jobs/N.json         job N's last event, written where the job runs: `started` (pid, host) or how
                               it ended (done/skipped/pruned/busy/interrupted/failed, success rate, wall time, error)
    .submitit/JOB_ID/          submitit's pickles and logs (local and SLURM launchers)
    RUN_DIR/                   one run directory per job (rlexp/rundir.py)

Records are small JSON files written atomically, so a reader (`python -m rlexp status`) sees a whole file
or the previous one, also while jobs run, and also after the process that launched a SLURM array exited.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE = ".rlexp"
PLAN = "jobs.json"
JOBS = "jobs"
SUBMITIT = ".submitit"
MULTIRUN = "multirun.yaml"


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class PlannedJob:
    num: int
    subdir: str | None  # run directory name inside the sweep dir (None if it could not be resolved)
    overrides: list[str]
    job_id: str | None = None  # submitit's (SLURM: ARRAY_TASK), once submitted


@dataclass
class JobEvent:
    """What a job last did: `started`, or how it ended (a rlexp.status.Status value, or `failed`)."""

    num: int
    event: str
    subdir: str | None = None
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    time: str = field(default_factory=now)
    wall_s: float | None = None
    success_rate: float | None = None
    return_mean: float | None = None
    step: int | None = None
    resumed: bool = False
    error: str | None = None  # failed: the last error line; busy: who holds the run directory
    job_id: str | None = None


class SweepDir:
    """Paths and records of one sweep directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    state = property(lambda self: self.root / STATE)
    plan_file = property(lambda self: self.root / STATE / PLAN)
    jobs_dir = property(lambda self: self.root / STATE / JOBS)
    submitit = property(lambda self: self.root / SUBMITIT)
    multirun = property(lambda self: self.root / MULTIRUN)

    def is_sweep(self) -> bool:
        return self.plan_file.is_file() or self.multirun.is_file()

    def write_plan(self, jobs: list[PlannedJob], launcher: str, **info: Any) -> None:
        """Record the jobs of one launch. A sweeper that launches in batches (e.g. Optuna) adds its jobs batch
        by batch; a new command replaces the list (its run directories from before still show in `status`)."""
        session = f"{socket.gethostname()}:{os.getpid()}"  # the launching process: one command
        old = self.read_plan()
        same = old is not None and old[1].get("session") == session
        keep = {j.num: j for j in (old[0] if same else []) if j.num not in {n.num for n in jobs}}  # type: ignore[index]
        merged = sorted([*keep.values(), *jobs], key=lambda j: j.num)
        data = {"launcher": launcher, "session": session, "submitted": now(), **info,
                "jobs": [asdict(j) for j in merged]}
        _write_json(self.plan_file, data)

    def read_plan(self) -> tuple[list[PlannedJob], dict[str, Any]] | None:
        data = _read_json(self.plan_file)
        if not isinstance(data, dict):
            return None
        keys = set(PlannedJob.__dataclass_fields__)
        jobs = [PlannedJob(**{k: v for k, v in j.items() if k in keys}) for j in data.pop("jobs", [])
                if isinstance(j, dict) and "num" in j]
        return jobs, data

    def record(self, event: JobEvent) -> None:
        _write_json(self.jobs_dir / f"{event.num}.json", asdict(event))

    def event(self, num: int) -> JobEvent | None:
        data = _read_json(self.jobs_dir / f"{num}.json")
        if not isinstance(data, dict):
            return None
        try:  # fields another version added or dropped do not make the record unreadable
            return JobEvent(**{k: v for k, v in data.items() if k in JobEvent.__dataclass_fields__})
        except TypeError:
            return None

    def submitit_logs(self, job_id: str | None) -> list[Path]:
        """submitit's stdout/stderr logs of one job (all attempts), newest last."""
        if not job_id or not self.submitit.is_dir():
            return []
        found = []
        try:
            for path in self.submitit.glob(f"{job_id}/{job_id}_*_log.*"):
                found.append((path.stat().st_mtime, path))
        except OSError:  # removed while listed
            return []
        return [p for _, p in sorted(found)]


def where(path: Path) -> str:
    """A path as the user would type it: relative below the working directory, else absolute."""
    path = Path(path).resolve()
    cwd = Path.cwd().resolve()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def error_line(text: str) -> str | None:
    """The line that says why a job failed: our `error: ...` line, else the last exception line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error: "):
            return ln
    for ln in reversed(lines):
        head = ln.split(":", 1)[0]
        if head.replace(".", "").replace("_", "").isalnum() and head.endswith(("Error", "Exception")):
            return ln
    return None
