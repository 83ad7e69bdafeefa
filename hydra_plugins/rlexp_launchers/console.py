"""What a sweep says while it runs: one line per job as it ends and a closing table with counts.

The same for every rlexp launcher (sequential, local, slurm). A job's outcome comes from its JobReturn:
training tasks return a `rlexp.status.Summary` (done / skipped / busy / pruned); any other value counts as done,
with the success rate read from the run's eval.json when there is one; a raised exception is `failed`, a
stop by signal (exit 3) `interrupted`. Each outcome is also recorded in the sweep directory
(rlexp/sweepdir.py), which is what `python -m rlexp status DIR` reads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus

from rlexp.fmt import percent
from rlexp.status import Exit, Status, Summary
from rlexp.sweepdir import JobEvent, SweepDir, error_line, where

# Order of the closing table; "resumed" is a done job that continued from a checkpoint.
ORDER = ("done", "resumed", "skipped", "pruned", "busy", "interrupted", "failed", "refused", "not started")


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_dir_of(ret: JobReturn) -> str | None:
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)
    except Exception:  # a JobReturn built for a job that never ran
        return None


def _exc_line(exc: BaseException) -> str:
    text = str(exc).strip()
    found = error_line(text) if "\n" in text else None
    return found or f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def event_of(ret: JobReturn, num: int, wall_s: float | None, subdir: str | None = None) -> JobEvent:
    """The outcome of a job that returned (or raised inside Hydra's run_job)."""
    ev = JobEvent(num=num, event="done", subdir=subdir, wall_s=wall_s)
    if ret.status == JobStatus.FAILED:
        ev.event, ev.error = "failed", _exc_line(ret._return_value)
        return ev
    value = ret._return_value
    run_dir = Path(value.run_dir) if isinstance(value, Summary) else None
    if run_dir is None and (out := run_dir_of(ret)):
        run_dir = Path(out)
    if isinstance(value, Summary):
        ev.event = value.status.value
        ev.success_rate, ev.return_mean, ev.step = value.success_rate, value.return_mean, value.step
        if value.status == Status.BUSY:
            ev.error = f"in use: running in {value.holder}"
    elif run_dir is not None and (agg := (_read(run_dir / "eval.json") or {}).get("aggregate")):
        ev.success_rate, ev.return_mean = agg.get("success_rate"), agg.get("return_mean")
    if ev.event == "done" and run_dir is not None:
        ev.resumed = bool((_read(run_dir / "model.meta.json") or {}).get("resumed_from"))
    return ev


def event_of_exit(num: int, exc: SystemExit, wall_s: float | None, subdir: str | None) -> JobEvent:
    """A job that left with SystemExit (run.py's exit codes, rlexp.status.Exit); bad input (rlexp.status.Refused)
    is `refused`, with its one error line."""
    code = exc.code
    if code == Exit.INTERRUPTED:
        return JobEvent(num=num, event="interrupted", subdir=subdir, wall_s=wall_s)
    if code == Exit.BUSY:
        return JobEvent(num=num, event="busy", subdir=subdir, wall_s=wall_s)
    if code == Exit.PRUNED:  # an Optuna trial its pruner stopped (rlexp.hpo)
        return JobEvent(num=num, event="pruned", subdir=subdir, wall_s=wall_s)
    if code == Exit.BAD_INPUT:
        reason = getattr(exc, "reason", None)
        return JobEvent(num=num, event="refused", subdir=subdir, wall_s=wall_s,
                        error=f"error: {reason}" if reason else "bad input (exit code 2)")
    return JobEvent(num=num, event="failed", subdir=subdir, wall_s=wall_s, error=f"exit (exit code {code})")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def label(ev: JobEvent) -> str:
    return "resumed" if ev.event == "done" and ev.resumed else ev.event


class SweepConsole:
    """Prints each job's line as it ends and, at the end, the table; counts what it printed."""

    def __init__(self, sweep: SweepDir, n_jobs: int) -> None:
        self.sweep, self.n_jobs, self.t0 = sweep, n_jobs, time.time()
        self.ended: list[JobEvent] = []

    def job_ended(self, ev: JobEvent) -> None:
        self.ended.append(ev)
        parts = [f"[{len(self.ended)}/{self.n_jobs}]", f"#{ev.num}", f"{label(ev):<11}"]
        if ev.success_rate is not None:
            parts.append(f"success {percent(ev.success_rate)}")
        if ev.return_mean is not None:
            parts.append(f"return {ev.return_mean:.2f}")
        parts.append(_duration(ev.wall_s))
        parts.append(ev.subdir or where(self.sweep.root))
        if ev.error:
            parts.append(f"-- {ev.error}")
        print("  ".join(parts), flush=True)

    def close(self) -> None:
        """The closing table; none for a launch of one job (a sweeper like Optuna launches trial by trial),
        whose line says it all."""
        if self.n_jobs < 2:
            return
        counts = {k: 0 for k in ORDER}
        rates: dict[str, list[float]] = {k: [] for k in ORDER}
        for ev in self.ended:
            counts[label(ev)] += 1
            if ev.success_rate is not None:
                rates[label(ev)].append(ev.success_rate)
        counts["not started"] = self.n_jobs - len(self.ended)
        lines = [f"sweep: {self.n_jobs} jobs in {_duration(time.time() - self.t0)}, {where(self.sweep.root)}",
                 f"  {'status':<12}{'jobs':>5}  mean success"]
        for key in ORDER:
            if counts[key]:
                mean = sum(rates[key]) / len(rates[key]) if rates[key] else None
                lines.append(f"  {key:<12}{counts[key]:>5}  {percent(mean)}")
        for ev in self.ended:
            if ev.event in ("failed", "refused", "busy", "interrupted"):
                what = ev.error or "resumes from its checkpoint when the same command runs again"
                lines.append(f"  #{ev.num} {ev.event}: {what}")
        lines.append(f"  details: python -m rlexp status {where(self.sweep.root)}")
        print("\n".join(lines), flush=True)
