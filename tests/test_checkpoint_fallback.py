"""A damaged latest checkpoint does not end a run: resume falls back to the newest unit that verifies, moves
the damaged one aside (never deletes it) and still ends bitwise equal to the run never interrupted.

The run is stopped by SIGTERM after step 250 (units at 100, 200 and the stop's 250); the stop unit is then
damaged three ways. The unit before it (200) kept its replay buffer, which the fallback needs to be exact.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlexp.rundir import RunDir

from helpers import HER_TINY, assert_same_final, assert_tb_monotonic, ok, run_py

pytestmark = pytest.mark.slow

ARGS = [*(a for a in HER_TINY if not a.startswith("checkpoint_freq=")), "total_steps=300", "checkpoint_freq=100",
        "device=cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The run never interrupted, and the same run stopped after step 250."""
    ref, stopped = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("stopped")
    ok(run_py(*ARGS, f"hydra.run.dir={ref}"))
    proc = run_py(*ARGS, f"hydra.run.dir={stopped}", env={"RLEXP_FAULT": "SIGTERM@250:step"})
    assert proc.returncode == 3, proc.stderr[-3000:]
    steps = [c.step for c in RunDir(stopped).checkpoints()]
    assert steps[:2] == [100, 200] and len(steps) == 3 and steps[2] >= 250, steps
    return {"reference": ref, "stopped": stopped}


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {
    "zip-truncated": lambda unit: _truncate(unit.zip),
    "state-byte-flipped": lambda unit: _flip(unit.state),
    "replay-npy-deleted": lambda unit: sorted(unit.replay.glob("*.npy"))[0].unlink(),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_falls_back_past_a_damaged_unit(runs: dict[str, Path], tmp_path: Path, damage: str) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(runs["stopped"], run_dir)
    run = RunDir(run_dir)
    damaged = run.checkpoints()[-1]
    assert (run.checkpoint(200).replay / "replay.json").exists(), "the unit before the latest keeps its replay"
    DAMAGE[damage](damaged)

    # Named explicitly, the damaged unit is refused (the user asked for that one) and left where it is.
    named = run_py(f"resume={damaged.zip}", "progress=false", f"hydra.run.dir={tmp_path / 'named'}")
    assert named.returncode == 2 and "Traceback" not in named.stderr, named.stderr[-2000:]
    assert "missing or corrupted" in named.stderr and damaged.meta.exists()

    proc = ok(run_py(*ARGS, f"hydra.run.dir={run_dir}"))
    out = proc.stdout + proc.stderr
    warnings = [line for line in out.splitlines() if "damaged checkpoint" in line]
    assert len(warnings) == 1, out[-3000:]
    aside = run.ckpt_dir / "damaged" / damaged.stem
    assert f"damaged checkpoint {damaged.stem} (" in warnings[0] and "resuming from step_200" in warnings[0]
    assert "moved to checkpoints/damaged/" + damaged.stem in warnings[0], warnings[0]
    assert "from step 200" in out
    assert sorted(p.name for p in aside.iterdir()) == sorted(p.name for p in damaged.parts()), "moved, not deleted"
    assert damaged.step not in [c.step for c in run.checkpoints()]
    assert_same_final(run_dir, runs["reference"])
    assert_tb_monotonic(run_dir)


def test_no_unit_verifies_stops_with_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    """Every unit damaged: nothing to fall back to, so the run stops (exit 2) and nothing is moved."""
    run_dir = tmp_path / "run"
    shutil.copytree(runs["stopped"], run_dir)
    units = RunDir(run_dir).checkpoints()
    for unit in units:
        _flip(unit.state)
    proc = run_py(*ARGS, f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no checkpoint of") and "verifies" in line, line
    assert [u.step for u in RunDir(run_dir).checkpoints()] == [u.step for u in units]
    assert not (run_dir / "checkpoints" / "damaged").exists()
