"""The logs SB3 and RL Zoo users look for: monitor.csv per env, progress.csv, periodic evaluation with
evaluations.csv/.npz and best_model.zip -- training unchanged by them, and consistent under kill/resume/fork.

Tiny SAC+HER runs on dense Reach (returns vary, so the best model changes), checkpoints at 250 of 400 steps
and an evaluation every 100: evaluations at 300 and 400 come after the last checkpoint.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from rlexp.rundir import RunDir, meta_of
from rlexp.training import logs

from helpers import (
    assert_same_final,
    assert_same_tensors,
    assert_tb_monotonic,
    ok,
    read_json,
    rlexp_cli,
    run_py,
    scalars,
)

BASE = ["+experiment=ch05_her_reach", "env=reach_dense", "n_envs=2", "algo.learning_starts=100",
        "algo.buffer_size=5000", "algo.batch_size=32", "+algo.policy_kwargs.net_arch=[32,32]", "progress=false",
        "eval.n_episodes=3", "diagnostics.freq=0", "device=cpu", "total_steps=400", "checkpoint_freq=250"]
EVAL = ["eval.freq=100", "eval.freq_episodes=2"]
TIME_COLUMNS = {"t", "train_time_s", "eval_time_s"}


def train(run_dir: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    return run_py(*BASE, *extra, f"hydra.run.dir={run_dir}", env={"RLEXP_FAULT": fault} if fault else None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same run with periodic evaluation and without."""
    out = {}
    for name, extra in (("eval", EVAL), ("plain", [])):
        out[name] = tmp_path_factory.mktemp(name)
        ok(train(out[name], *extra))
    return out


def table(path: Path, drop: set[str] = TIME_COLUMNS) -> list[dict[str, str]]:
    """A CSV's rows without its wall-clock columns (Monitor files: after their `#{...}` header line)."""
    lines = path.read_text().splitlines()
    rows = csv.DictReader(lines[1:] if lines[0].startswith("#") else lines)
    return [{k: v for k, v in row.items() if k not in drop} for row in rows]


def progress_steps(run: Path) -> list[int]:
    return [int(r[logs.STEP_KEY]) for r in table(run / "progress.csv")]


def assert_same_logs(a: Path, b: Path) -> None:
    """Everything but wall-clock times: monitor rows, progress steps, evaluations, best model."""
    for rank in (0, 1):
        assert table(a / "monitor" / f"{rank}.monitor.csv") == table(b / "monitor" / f"{rank}.monitor.csv")
    assert progress_steps(a) == progress_steps(b)
    assert table(a / "evaluations.csv") == table(b / "evaluations.csv")
    with np.load(a / "evaluations.npz") as na, np.load(b / "evaluations.npz") as nb:
        assert sorted(na.files) == sorted(nb.files)
        for key in na.files:
            assert np.array_equal(na[key], nb[key]), key
    assert_same_tensors(a / "best_model.zip", b / "best_model.zip")
    best_a, best_b = (read_json(d / "best_model.meta.json")["best"] for d in (a, b))
    assert {**best_a, "sha256": None} == {**best_b, "sha256": None}  # zip bytes differ (SB3's pickled fields)
    assert_same_tensorboard(a, b)


def assert_same_tensorboard(a: Path, b: Path) -> None:
    """The TensorBoard history, read as scalars the way EventAccumulator users and `rlexp plot` read it: every
    tag at every step, values equal but for wall-clock ones. The part before a resume is a rewritten file;
    written as tensor summaries it was invisible to both readers."""
    from rlexp.analysis.tb import read_scalars

    sa, sb = scalars(a), scalars(b)
    assert sorted(sa) == sorted(sb)
    for tag in sa:
        assert [s for s, _ in sa[tag]] == [s for s, _ in sb[tag]], tag
        if tag.startswith(("rollout/", "train/", "eval/")):
            assert [v for _, v in sa[tag]] == [v for _, v in sb[tag]], tag
    ra, rb = (read_scalars(d / "tb", ["rollout/success_rate"])["rollout/success_rate"] for d in (a, b))
    assert len(ra[0]) > 1 and np.array_equal(ra[0], rb[0]) and np.array_equal(ra[1], rb[1])


@pytest.mark.slow
def test_periodic_eval_leaves_training_bitwise_unchanged(runs: dict[str, Path]) -> None:
    assert_same_final(runs["eval"], runs["plain"])
    assert_same_tensors(runs["eval"] / "checkpoints" / "step_250.zip", runs["plain"] / "checkpoints" / "step_250.zip")
    for rank in (0, 1):  # the training envs saw the same episodes
        assert table(runs["eval"] / "monitor" / f"{rank}.monitor.csv") == \
            table(runs["plain"] / "monitor" / f"{rank}.monitor.csv")
    assert not (runs["plain"] / "evaluations.csv").exists() and not (runs["plain"] / "best_model.zip").exists()
    assert read_json(runs["eval"] / "model.meta.json")["config_hash"] == \
        read_json(runs["plain"] / "model.meta.json")["config_hash"], "eval.freq is run-only"


@pytest.mark.slow
def test_monitor_progress_and_evaluations_content(runs: dict[str, Path]) -> None:
    run = runs["eval"]
    monitor = (run / "monitor" / "0.monitor.csv").read_text().splitlines()
    assert monitor[0].startswith('#{"t_start"') and monitor[1] == "r,l,t,is_success"
    lengths = [int(r["l"]) for r in table(run / "monitor" / "0.monitor.csv")]
    assert lengths and all(n == 50 for n in lengths) and sum(lengths) <= 200  # 400 steps / 2 envs
    steps = progress_steps(run)
    assert steps == sorted(steps) and steps[-1] <= 400
    rows = logs.read_evaluations(run / "evaluations.csv")
    assert [r["step"] for r in rows] == [100, 200, 300, 400]
    assert list(rows[0]) == list(logs.EVAL_COLUMNS)
    times = [r["train_time_s"] for r in rows]
    assert times == sorted(times) and times[0] > 0
    with np.load(run / "evaluations.npz") as npz:
        assert npz["timesteps"].tolist() == [100, 200, 300, 400] and npz["results"].shape == (4, 2)
    best = logs.best_row(rows)
    meta = read_json(run / "best_model.meta.json")
    assert meta["best"]["step"] == best["step"] == meta["total_steps"]
    assert [r["best"] for r in rows].count(1) >= 1 and rows[[r["step"] for r in rows].index(best["step"])]["best"] == 1
    # best_model.zip is the policy of that step: rlexp eval, same seeds, gives the same numbers.
    out = run / "best.eval.json"
    ok(rlexp_cli("eval", str(run / "best_model.zip"), "--episodes", "2", "--out", str(out), "--device", "cpu"))
    agg = read_json(out)["aggregate"]
    assert agg["success_rate"] == best["success_rate"] and agg["return_mean"] == pytest.approx(best["return_mean"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb" / "run_1"), size_guidance={"scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("eval/success_rate")] == [100, 200, 300, 400]


@pytest.mark.slow
def test_kill_then_resume_equals_uninterrupted_logs(runs: dict[str, Path], tmp_path: Path) -> None:
    """Killed at 350 (checkpoint 250, evaluations up to 300): the resumed run redoes 300 and ends equal."""
    proc = train(tmp_path, *EVAL, fault="SIGKILL@350:step")
    assert proc.returncode == -signal.SIGKILL
    assert RunDir(tmp_path).latest_checkpoint().step == 250
    assert [r["step"] for r in logs.read_evaluations(tmp_path / "evaluations.csv")] == [100, 200, 300]
    assert max(progress_steps(tmp_path)) > 250
    ok(train(tmp_path, *EVAL))
    assert_same_final(tmp_path, runs["eval"])
    assert_same_logs(tmp_path, runs["eval"])
    assert_tb_monotonic(tmp_path)


@pytest.mark.slow
def test_fork_copies_logs_up_to_its_checkpoint(runs: dict[str, Path], tmp_path: Path) -> None:
    """A fork from step 250 of the finished run: its logs up to 250 are copied, the rest redone -- equal to the
    original, best model included (recovered from checkpoints/ when a later one replaced best_model.zip)."""
    src = runs["eval"]
    fork = tmp_path / "fork"
    proc = ok(run_py(f"resume={src}/checkpoints/step_250.zip", f"hydra.run.dir={fork}", "progress=false"))
    assert "could not be recovered" not in proc.stdout + proc.stderr
    assert_same_final(fork, src)
    assert_same_logs(fork, src)
    assert read_json(src / "checkpoints" / "best_model.meta.json")["best"]["step"] <= 250


# ------------------------------------------------------------------- the files' rules, without training
def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_monitor_and_progress_are_cut_at_the_step_and_lose_a_half_written_row(tmp_path: Path) -> None:
    src = _write(tmp_path / "0.monitor.csv", '#{"t_start": 1.0, "env_id": "X"}\nr,l,t,is_success\n'
                 + "".join(f"-5.0,50,{i}.0,0.0\n" for i in range(4)) + "-5.0,5")
    assert logs.keep_monitor(src, tmp_path / "m" / "0.monitor.csv", 149, {}, []) == 2  # episodes ending at 50, 100
    kept = (tmp_path / "m" / "0.monitor.csv").read_text().splitlines()
    assert kept[0] == '#{"t_start": 1.0, "env_id": "X"}' and len(kept) == 4
    assert logs.keep_monitor(tmp_path / "none.csv", tmp_path / "new.csv", 100, {"t_start": 2.0}, ["r", "l"]) == 0
    assert (tmp_path / "new.csv").read_text() == '#{"t_start": 2.0}\nr,l\n'
    progress = _write(tmp_path / "progress.csv", "a,time/total_timesteps\n1,100\n,200\n2,300\n3,3")
    assert logs.keep_progress(progress, progress, 200) == 2
    writer = logs.ProgressCSV(progress)  # continues the file; a new key pads the earlier rows
    writer.write({"a": 4, "time/total_timesteps": 400, "b": 5}, {}, 400)
    writer.close()
    assert progress.read_text() == "a,time/total_timesteps,b\n1,100,\n,200,\n4,400,5\n"


def _best(run: RunDir, step: int, content: bytes, path: Path | None = None) -> None:
    path = path or run.best
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    _write(meta_of(path), json.dumps({"best": {"step": step, "sha256": logs.sha256(path)}}))


def test_resume_keeps_the_best_model_of_its_step(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """best_model.zip was replaced after the checkpoint (step 600 > 500): checkpoints/best_model.zip holds 400's."""
    run = RunDir(tmp_path)
    rows = [{"step": s, "success_rate": r, "return_mean": -s / 100, "n_episodes": 2} for s, r in
            ((200, 0.5), (400, 0.5), (600, 1.0))]
    rows[1]["return_mean"] = 0.0  # 400 beats 200 on return
    logs.write_evaluations(run.evaluations, rows)
    _best(run, 600, b"six hundred")
    _best(run, 400, b"four hundred", run.best_committed)
    kept = logs.prepare("resume", run, run, 500, 1, "X", ["r", "l", "t"])
    assert [r["step"] for r in kept] == [200, 400] and run.best.read_bytes() == b"four hundred"
    assert logs.best_step(run.best) == 400
    run.best_committed.write_bytes(b"changed")  # no copy of step 400 left: dropped, with a warning
    _best(run, 600, b"six hundred")
    logs.prepare("resume", run, run, 500, 1, "X", ["r", "l", "t"])
    assert not run.best.exists() and "could not be recovered" in caplog.text
    logs.prepare("fresh", run, None, 0, 1, "X", [])
    assert not [p for p in (run.evaluations, run.best, run.best_committed, run.monitor_dir) if p.exists()]


def test_steps_to_a_success_rate(tmp_path: Path) -> None:
    from rlexp.analysis.runs import evaluations, first_reaching

    logs.write_evaluations(RunDir(tmp_path).evaluations, [
        {"step": 1000, "train_time_s": 10.5, "success_rate": 0.5}, {"step": 2000, "train_time_s": 21.25,
                                                                   "success_rate": 0.95}])
    row = first_reaching(evaluations(tmp_path), 0.9)
    assert (row["step"], row["train_time_s"]) == (2000, 21.25)
    assert first_reaching(evaluations(tmp_path), 1.0) is None


@pytest.mark.parametrize(("override", "message"), [("eval.freq=-1", "eval.freq must be"),
                                                   ("eval.freq_episodes=4", "eval.freq_episodes must be")])
def test_bad_eval_freq_is_one_line(override: str, message: str) -> None:
    from rlexp.config import compose
    from rlexp.errors import ConfigError
    from rlexp.validate import check_values as validate

    with pytest.raises(ConfigError, match=message):
        validate(compose("+experiment=ch05_her_reach", "eval.n_episodes=3", override))


def test_checkpoints_leave_the_monitor_file_attached(tmp_path: Path) -> None:
    """Monitor's open file is not env state: not saved, and not overwritten by older checkpoints (None there)."""
    from stable_baselines3.common.monitor import Monitor

    from rlexp.components.envs import make_env
    from rlexp.training.run_state import Arrays, env_state, set_env_state

    env = Monitor(make_env("FetchReachDense-v4"), str(tmp_path / "0"))
    env.reset(seed=0)
    arrays = Arrays()
    state = env_state(env, arrays)
    assert "results_writer" not in state["layers"][0]["attrs"] and "t_start" in state["layers"][0]["attrs"]
    state["layers"][0]["attrs"]["results_writer"] = None  # as checkpoints before monitor files saved it
    set_env_state(env, state, arrays)
    assert env.results_writer is not None
    env.close()


def _history(folder: Path) -> list[tuple[str, int, float]]:
    """Every scalar event in the folder's events files, duplicates included, in file order."""
    from rlexp.training.tblog import _events

    return [(v.tag, int(e.step), v.simple_value) for e in _events(folder) if e.HasField("summary")
            for v in e.summary.value]


def test_a_kill_inside_the_tensorboard_rewrite_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL at moments spread over tblog.keep_until (reading, writing the new file, moving it in, deleting
    the old ones): nothing at or before the checkpoint's step is ever missing, and the next call leaves each
    scalar once, as logged, with none after the step."""
    import os
    import time

    from torch.utils.tensorboard import SummaryWriter  # the writer SB3 logs with

    from rlexp.training.tblog import keep_until

    tb, step = tmp_path / "tb", 3500
    tags = ("rollout/success_rate", "train/critic_loss", "time/fps")
    for seg, (lo, hi) in enumerate([(0, 2000), (2000, 5000)]):  # a run resumed once, then killed past 3500
        writer = SummaryWriter(str(tb), filename_suffix=f".{seg}")
        for s in range(lo, hi, 10):
            for i, tag in enumerate(tags):
                writer.add_scalar(tag, float(s * 3 + i) / 7, s)
        writer.close()
    expected = sorted(set(t for t in _history(tb) if t[1] <= step))
    assert len(expected) == 3 * 351

    def rewrite_in_child(delay: float) -> bool:
        """keep_until in a forked process, SIGKILLed after `delay` s; True if it was killed mid-way."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                keep_until(tb, tb, step)
            finally:
                os._exit(0)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        return os.waitpid(pid, 0)[1] != 0

    probe = tmp_path / "probe"
    shutil.copytree(tb, probe)
    t0 = time.perf_counter()
    keep_until(probe, probe, step)
    duration = time.perf_counter() - t0
    killed, span = 0, duration * 1.2
    for _ in range(4):  # a child faster than the timed probe (the other cores freed up): kill sooner, again
        for delay in np.linspace(0.0, span, 12):
            killed += rewrite_in_child(float(delay))
            history = _history(tb)
            assert set(expected) <= set(history), f"lost events after a kill at {delay:.3f} s"
        if killed >= 6:
            break
        span /= 2
    assert killed >= 6  # most kills landed inside the rewrite, not after it
    keep_until(tb, tb, step)
    assert sorted(_history(tb)) == expected  # each once: `expected` holds no duplicates
    assert [p.name for p in tb.iterdir() if not p.name.startswith("events.out.tfevents.")] == []
