"""A run whose disk fills up mid-training: every log skips its writes with one warning, training goes on, nothing
already written is cut or damaged, and everything held back is written once there is space again.

A real small file system (a tmpfs the test mounts, as root) is filled by the test after the run's first
checkpoint and emptied once the run has warned for every kind of log file (and skipped a checkpoint). Short
episodes (2 steps) and an evaluation every 10 steps make every log grow fast, so each one meets the full disk
within a few hundred steps; no gradient steps keep the run fast. A fork from the run's last checkpoint then
checks that its logs still line up with its checkpoints.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rlexp.rundir import RunDir

from helpers import assert_tb_monotonic, run_py, scalars, start_py

pytestmark = pytest.mark.slow

KINDS = ("progress.csv", "monitor", "TensorBoard events", "evaluations.csv", "run.log")
TOTAL, FREQ = 2000, 10
ARGS = ["+experiment=ch05_her_reach", "n_envs=1", "algo.learning_starts=100000", "algo.buffer_size=3000",
        "+algo.policy_kwargs.net_arch=[32,32]", "+env.kwargs.max_episode_steps=2", "checkpoint_freq=300",
        f"eval.freq={FREQ}", "eval.freq_episodes=1", "eval.n_episodes=2", "progress=false", "diagnostics.freq=0",
        f"total_steps={TOTAL}"]


def _complete(path: Path) -> bytes:
    """A file's bytes up to its last newline (a writer may be in the middle of a line)."""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1]


def _rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode())))


def _fill(path: Path) -> None:
    """Write until the file system says ENOSPC."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)


def test_logs_survive_a_full_disk(tmp_path: Path) -> None:
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mnt)], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    proc = None
    try:
        run = mnt / "run"
        proc = start_py(*ARGS, f"hydra.run.dir={run}")
        lines: list[str] = []

        def read_until(done, what: str) -> None:  # noqa: ANN001
            assert proc is not None and proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if done(line):
                    return
            raise AssertionError(f"the run ended before {what}:\n{''.join(lines)[-4000:]}")

        read_until(lambda _: bool(RunDir(run).checkpoints()), "its first checkpoint")
        names = ("progress.csv", "evaluations.csv", "run.log", "monitor/0.monitor.csv")
        before = {name: _complete(run / name) for name in names}
        tb_before = {tag: dict(values) for tag, values in scalars(run).items()}

        _fill(mnt / "filler")
        waiting = {*KINDS, "checkpoint"}

        def warned(line: str) -> bool:
            for kind in list(waiting):
                if (f"{kind}: " in line and " not written (" in line) or (
                        kind == "checkpoint" and "checkpoint at step" in line and "skipped" in line):
                    waiting.discard(kind)
            return not waiting

        read_until(warned, f"a warning for each of {sorted(waiting)}")
        (mnt / "filler").unlink()
        out = "".join(lines) + proc.communicate(timeout=600)[0]

        assert proc.returncode == 0, out[-4000:]
        assert (run / "eval.json").exists()
        assert "Traceback" not in out and "Logging error" not in out, out[-4000:]
        assert "No space left on device" in out
        for kind in KINDS:  # one warning per kind of file
            assert sum(f"{kind}: " in line and " not written (" in line for line in out.splitlines()) == 1, kind

        # What was written before the disk filled is still there, byte for byte (progress.csv row by row: a new
        # column would pad its rows).
        for name in ("evaluations.csv", "run.log", "monitor/0.monitor.csv"):
            assert (run / name).read_bytes().startswith(before[name]), name
        old, new = _rows(before["progress.csv"]), _rows((run / "progress.csv").read_bytes())
        assert [row[: len(old[0])] for row in new[: len(old)]] == old
        for tag, values in tb_before.items():
            assert {s: v for s, v in scalars(run)[tag] if s in values} == values, tag

        # Every file is whole, and nothing held back was lost: an evaluation row, TensorBoard event, run.log
        # line and npz entry for every evaluation, a Monitor row for every episode.
        steps = list(range(FREQ, TOTAL + 1, FREQ))
        assert all(len(row) == len(new[0]) for row in new), "a cut progress.csv row"
        with open(run / "evaluations.csv") as fh:
            assert [int(r["step"]) for r in csv.DictReader(fh)] == steps
        assert [s for s, _ in scalars(run)["eval/success_rate"]] == steps
        col = new[0].index("eval/success_rate")
        assert [int(float(r[new[0].index("time/total_timesteps")])) for r in new[1:] if r[col]] == steps
        with np.load(run / "evaluations.npz") as npz:
            assert npz["timesteps"].tolist() == steps
        log = (run / "run.log").read_text()
        assert all(f"eval @ {s:,} steps" in log for s in steps)
        monitor = (run / "monitor" / "0.monitor.csv").read_text().splitlines()
        episodes = list(csv.DictReader(monitor[1:]))
        assert all(len(r) == 4 and None not in r.values() for r in episodes)
        assert sum(int(r["l"]) for r in episodes) == TOTAL
        assert_tb_monotonic(run)

        skipped = int(next(x for x in out.splitlines() if "checkpoint at step" in x).split("checkpoint at step ")[1]
                      .split()[0])
        from rlexp.training.checkpoint import verify

        later = [c for c in RunDir(run).checkpoints() if c.step > skipped]
        assert later, "checkpoints resume once there is space"
        for ckpt in RunDir(run).checkpoints():
            verify(ckpt)

        # A later resume still lines its logs up with the checkpoint: a fork from the last one, extended by 100
        # steps, has every evaluation and every episode exactly once.
        fork = tmp_path / "fork"
        forked = run_py(f"resume={later[-1].zip}", f"total_steps={TOTAL + 100}", f"hydra.run.dir={fork}",
                        "progress=false")
        assert forked.returncode == 0, forked.stderr[-3000:]
        with open(fork / "evaluations.csv") as fh:
            assert [int(r["step"]) for r in csv.DictReader(fh)] == list(range(FREQ, TOTAL + 101, FREQ))
        episodes = list(csv.DictReader((fork / "monitor" / "0.monitor.csv").read_text().splitlines()[1:]))
        assert sum(int(r["l"]) for r in episodes) == TOTAL + 100
        assert_tb_monotonic(fork)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
