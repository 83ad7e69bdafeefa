"""Finished runs stay finished: `resume=` of one says so and writes nothing; extending one continues from the
unit written when training ended, bitwise equal to a run asked for the longer total_steps from the start; a
retyped `+experiment=` is accepted and only the keys typed are compared."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from rlexp.rundir import RunDir
from rlexp.training.checkpoint import verify

from helpers import FAST, assert_same_final, assert_same_tensors, ok, read_json, run_py

HER = ["+experiment=ch05_her_reach", *FAST, "n_envs=2", "algo.learning_starts=100", "algo.buffer_size=5000",
       "algo.batch_size=32", "+algo.policy_kwargs.net_arch=[32,32]", "device=cpu", "threads=1"]


def listing(root: Path) -> dict[str, str]:
    """Every file and folder under root, files with their content hash (the lock file included)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def progress_rows(run: Path) -> list[dict[str, str]]:
    """progress.csv without its wall-clock columns."""
    with (run / "progress.csv").open() as f:
        return [{k: v for k, v in row.items() if not k.startswith("time/") or k == "time/total_timesteps"}
                for row in csv.DictReader(f)]


def replay_arrays(run: Path, step: int) -> dict[str, np.ndarray]:
    replay = RunDir(run).checkpoint(step).replay
    return {p.name: np.load(p, allow_pickle=False) for p in sorted(replay.glob("*.npy"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished 200-step run (a periodic unit at 150, the final one at 200) and a 300-step reference."""
    short, long = tmp_path_factory.mktemp("short"), tmp_path_factory.mktemp("long")
    ok(run_py(*HER, "total_steps=200", "checkpoint_freq=150", f"hydra.run.dir={short}"))
    ok(run_py(*HER, "total_steps=300", "checkpoint_freq=100", "checkpoint_replay=all", f"hydra.run.dir={long}"))
    return {"short": short, "long": long}


@pytest.mark.slow
def test_training_ends_with_a_complete_unit(runs: dict[str, Path]) -> None:
    """The final unit is the state a longer run passes through at that step: weights, replay, env states."""
    short = RunDir(runs["short"])
    final = short.latest_checkpoint()
    assert final is not None and final.step == 200
    assert verify(final)["checkpoint_unit"]["replay"] is not None
    assert_same_tensors(final.zip, RunDir(runs["long"]).checkpoint(200).zip)
    a, b = replay_arrays(runs["short"], 200), replay_arrays(runs["long"], 200)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("retyped", [[], ["+experiment=ch05_her_reach", "seed=0", "total_steps=200"]])
def test_resume_of_a_finished_run_says_so_and_writes_nothing(runs: dict[str, Path], tmp_path: Path,
                                                             retyped: list[str]) -> None:
    """Also when the command retypes the experiment without the run's other overrides (from shell history)."""
    run = runs["short"]
    before, here = listing(run), listing(tmp_path)
    proc = ok(run_py(f"resume={run}", *retyped, cwd=tmp_path))
    out = proc.stdout + proc.stderr
    assert "already finished at 200 steps" in out and str(run) in out, out[-2000:]
    assert "Traceback" not in out and "resuming" not in out
    assert listing(run) == before, "nothing in the run changes, run.log included"
    assert listing(tmp_path) == here, "no outputs/DATE/TIME for this command"


@pytest.mark.slow
def test_extending_a_finished_run_equals_a_longer_run(runs: dict[str, Path], tmp_path: Path) -> None:
    """resume=DIR total_steps=300 continues from the final unit at 200 (a fork: the finished run is not touched)
    and ends bitwise equal to the 300-step run: weights, eval episodes, the final unit's replay, progress.csv."""
    short, long, fork = runs["short"], runs["long"], tmp_path / "fork"
    before = listing(short)
    proc = ok(run_py(f"resume={short}", "total_steps=300", f"hydra.run.dir={fork}"))
    out = proc.stdout + proc.stderr
    assert f"resumed from {short}/checkpoints/step_200.zip at step 200" in out, out[-3000:]
    assert "replay buffer restored (200 transitions)" in out
    assert listing(short) == before
    assert_same_final(fork, long)
    a, b = replay_arrays(fork, 300), replay_arrays(long, 300)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert progress_rows(fork) == progress_rows(long)
    meta = read_json(fork / "model.meta.json")
    assert meta["forked_from"] == str(short) and meta["experiment"] == "ch05_her_reach"


@pytest.mark.slow
def test_final_unit_without_replay(tmp_path: Path) -> None:
    """checkpoint_final=noreplay: the final unit holds weights and state only, and no unit keeps a buffer."""
    ok(run_py(*HER, "total_steps=200", "checkpoint_freq=100", "checkpoint_final=noreplay",
              f"hydra.run.dir={tmp_path}"))
    units = RunDir(tmp_path).checkpoints()
    assert [u.step for u in units] == [100, 200]
    assert verify(units[-1])["checkpoint_unit"]["replay"] is None
    assert not [u for u in units if u.replay.exists()]


# ------------------------------------------------------------------ which keys a resume compares, no training
def _recorded(*overrides: str) -> dict:
    import rlexp
    from rlexp.config import to_container

    return {"config": to_container(rlexp.compose(*overrides))}


def test_a_retyped_experiment_compares_only_the_keys_typed() -> None:
    import rlexp
    from rlexp.errors import ConfigError
    from rlexp.training.resume import config_for_resume

    meta = _recorded("+experiment=ch05_her_reach", "seed=3", "algo.learning_starts=100")
    typed = ["resume=x", "+experiment=ch05_her_reach"]
    cfg = config_for_resume(rlexp.compose(*typed), meta, typed, "ch05_her_reach")
    assert cfg.seed == 3 and cfg.algo.learning_starts == 100, "the run's own values, not the experiment's defaults"
    typed = ["resume=x", "+experiment=ch05_her_reach", "seed=3", "algo.gamma=0.5"]
    with pytest.raises(ConfigError, match=r"1 key\(s\) differ.*algo\.gamma: run 0\.95 vs command 0\.5") as exc:
        config_for_resume(rlexp.compose(*typed), meta, typed, "ch05_her_reach")
    differing = str(exc.value).split(". A resumed run")[0]
    assert "seed" not in differing and "learning_starts" not in differing, differing
    typed = ["resume=x", "+experiment=ch05_her_push"]
    with pytest.raises(ConfigError, match=r"the run is \+experiment=ch05_her_reach, the command names "
                                          r"\+experiment=ch05_her_push"):
        config_for_resume(rlexp.compose(*typed), meta, typed, "ch05_her_reach")
