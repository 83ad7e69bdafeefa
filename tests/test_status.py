"""`python -m rlexp status` and the launchers' per-job lines, without training (a few seconds).

Runs with training are in test_sweeps.py (running / pending / interrupted / resumed while a real sweep runs and
after it is stopped) and test_slurm.py (a SLURM array followed after its launcher returned)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
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
