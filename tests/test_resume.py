"""Resume semantics: a run continues with its own config, forks never touch the original, refused commands
write nothing, one process per run directory, re-runs skip finished runs, files a user is handed never run code."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from rlexp.rundir import RunDir

from helpers import FAST, ROOT, ok, read_json, rlexp_cli, run_py, start_py

pytestmark = pytest.mark.slow

HER = ["+experiment=ch05_her_reach", *FAST, "n_envs=2", "algo.learning_starts=100", "algo.buffer_size=5000",
       "algo.batch_size=32", "+algo.policy_kwargs.net_arch=[32,32]"]


def snapshot(root: Path, skip: tuple[str, ...] = (".rlexp.lock",)) -> dict[str, str]:
    """Every file under a run directory with its content hash (the lock file aside)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 400-step HER Reach run with checkpoints at 200 and 400."""
    run_dir = tmp_path_factory.mktemp("finished")
    ok(run_py(*HER, "total_steps=400", "checkpoint_freq=200", f"hydra.run.dir={run_dir}"))
    return run_dir


def test_rerun_of_a_finished_run_skips_and_writes_nothing(finished: Path) -> None:
    before = snapshot(finished, skip=(".rlexp.lock", "run.log"))  # the log says it skipped
    proc = ok(run_py(*HER, "total_steps=400", "checkpoint_freq=200", f"hydra.run.dir={finished}"))
    assert "skipped" in proc.stderr + proc.stdout
    assert snapshot(finished, skip=(".rlexp.lock", "run.log")) == before


@pytest.mark.parametrize("override", ["algo.gamma=0.9", "total_steps=800", "seed=3"])
def test_refused_command_leaves_the_run_directory_untouched(finished: Path, override: str) -> None:
    before = snapshot(finished)
    proc = run_py(*HER, "total_steps=400", override, f"hydra.run.dir={finished}")
    assert proc.returncode == 2 and "different config" in proc.stderr and "Traceback" not in proc.stderr
    assert snapshot(finished) == before, ".hydra/ and every artifact unchanged"


def test_resume_from_an_older_checkpoint_is_a_fork(finished: Path, tmp_path: Path) -> None:
    before = snapshot(finished)
    fork = tmp_path / "fork"
    proc = run_py(f"resume={finished}/checkpoints/step_200.zip", "total_steps=600", f"hydra.run.dir={fork}",
                  "progress=false")
    ok(proc)
    assert snapshot(finished) == before, "the original run is never modified"
    meta = read_json(fork / "model.meta.json")
    assert meta["total_steps"] == 600 and meta["forked_from"] == str(finished)
    assert meta["resumed_from"] == str(finished / "checkpoints" / "step_200.zip")
    assert meta["config"]["algo"]["policy_kwargs"]["net_arch"] == [32, 32], "the run's own config"
    assert (fork / "eval.json").exists() and (fork / ".hydra" / "config.yaml").exists()
    # The two latest checkpoints keep their replay buffers (a damaged latest falls back to the one before it):
    # the fork from step 200 continues with its buffer.
    assert "resume: replay buffer restored (200 transitions)" in proc.stdout + proc.stderr


def test_fork_from_a_run_in_use_is_refused(finished: Path, tmp_path: Path) -> None:
    """A fork reads the source's replay buffer, which its own trainer may be pruning: refused while it trains."""
    holder = RunDir(finished).lock()
    assert holder.acquire()
    try:
        proc = run_py(f"resume={finished}/checkpoints/step_400.zip", "total_steps=600",
                      f"hydra.run.dir={tmp_path / 'fork'}", "progress=false")
    finally:
        holder.release()
    assert proc.returncode == 2 and "is in use: running in pid" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "fork").exists(), "refused before anything is written: Hydra's directory is removed"


def test_a_fork_refused_while_restoring_takes_back_what_it_wrote(finished: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal after writing began (the checkpoint fails to restore) leaves a directory that held nothing as it
    was: no lock, monitor or log files; the original run untouched."""
    import rlexp
    from rlexp.errors import CheckpointError
    from rlexp.training import checkpoint, train

    def broken(*args: object, **kwargs: object) -> None:
        raise CheckpointError("cannot load weights (test)")

    monkeypatch.setattr(checkpoint, "restore", broken)
    before = snapshot(finished)
    fork = tmp_path / "fork"
    fork.mkdir()
    cfg = rlexp.compose(*HER, "total_steps=600", f"resume={finished}/checkpoints/step_200.zip")
    with pytest.raises(CheckpointError):
        train.train(cfg, fork)
    assert list(fork.iterdir()) == []
    assert snapshot(finished) == before


def test_resume_in_place_refuses_an_old_checkpoint(finished: Path) -> None:
    before = snapshot(finished)
    proc = run_py(f"resume={finished}/checkpoints/step_200.zip", f"hydra.run.dir={finished}")
    assert proc.returncode == 2 and "finished" in proc.stderr
    assert snapshot(finished) == before


def _faulty(fault: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return run_py(*args, cwd=cwd, env={"RLEXP_FAULT": fault})


def test_resume_dir_uses_the_runs_own_config_and_extends_in_place(tmp_path: Path) -> None:
    """`resume=DIR` alone continues with the run's own config (total_steps, hyperparameters, checkpoint_freq);
    changed hyperparameters are refused by name; `total_steps=` extends an unfinished run in place. The
    resumed commands run from another directory: the log goes on in the run's own run.log, not in Hydra's
    outputs/DATE/TIME there."""
    run_dir, cwd = tmp_path / "run", tmp_path / "cwd"
    cwd.mkdir()
    proc = _faulty("SIGTERM@100:step", *HER, "total_steps=300", "checkpoint_freq=0", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 3, proc.stderr[-2000:]
    refused = run_py(f"resume={run_dir}", "algo.gamma=0.5", "algo.batch_size=16", "progress=false", cwd=cwd)
    assert refused.returncode == 2 and "algo.gamma" in refused.stderr and "algo.batch_size" in refused.stderr
    again = _faulty("SIGTERM@200:step", f"resume={run_dir}", "progress=false", cwd=cwd)
    assert again.returncode == 3, again.stderr[-2000:]
    meta = read_json(RunDir(run_dir).latest_checkpoint().meta)
    assert meta["target_steps"] == 300 and meta["config"]["algo"]["batch_size"] == 32
    assert meta["config"]["checkpoint_freq"] == 0
    ok(run_py(f"resume={run_dir}", "total_steps=400", "progress=false", cwd=cwd))
    meta = read_json(run_dir / "model.meta.json")
    assert meta["total_steps"] == 400 and meta["target_steps"] == 400 and meta["forked_from"] is None
    assert meta["resumed_from"].endswith("step_200.zip")
    assert not list(cwd.rglob("*.log"))
    text = (run_dir / "run.log").read_text()
    assert "from step 100" in text and "from step 200" in text and "400 steps at" in text, text[-2000:]


def test_resume_after_a_stop_during_evaluation_evaluates(tmp_path: Path) -> None:
    proc = _faulty("SIGTERM@0:eval", *HER, "total_steps=200", "checkpoint_freq=0", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 3 and "during evaluation" in proc.stdout + proc.stderr
    assert f"resume={tmp_path}" in proc.stdout + proc.stderr
    ok(run_py(f"resume={tmp_path}", "progress=false"))
    assert read_json(tmp_path / "eval.json")["n_episodes"] == 3


def test_two_processes_one_run_directory(tmp_path: Path) -> None:
    """The second process reports who holds the directory and skips; the first finishes undisturbed."""
    first = start_py(*HER, "total_steps=800", f"hydra.run.dir={tmp_path}")
    try:
        lock = tmp_path / ".rlexp.lock"
        t0 = time.time()
        while not (lock.exists() and lock.read_text().strip()):
            assert first.poll() is None and time.time() - t0 < 120
            time.sleep(0.1)
        second = run_py(*HER, "total_steps=800", f"hydra.run.dir={tmp_path}")
        assert second.returncode == 4, second.stderr[-2000:]
        assert f"running in pid {first.pid} on host" in second.stderr + second.stdout
    finally:
        out = first.communicate(timeout=600)[0]
    assert first.returncode == 0, out[-2000:]
    assert read_json(tmp_path / "model.meta.json")["total_steps"] == 800


@pytest.mark.parametrize(("resume", "message"), [
    ("{tmp}/missing", "checkpoint not found"),
    ("{tmp}", "no checkpoint in"),
    ("{tmp}/notes.txt", "expected a run directory or a .zip"),
])
def test_bad_resume_target(tmp_path: Path, resume: str, message: str) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    proc = run_py("+experiment=ch05_her_reach", f"resume={resume.format(tmp=tmp_path)}",
                  f"hydra.run.dir={tmp_path / 'job'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_corrupted_files_are_one_clear_line(finished: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    (run / "eval.json").write_text("{not json")
    proc = run_py(*HER, "total_steps=400", "checkpoint_freq=200", f"hydra.run.dir={run}")
    assert proc.returncode == 2 and "eval.json" in proc.stderr and "Traceback" not in proc.stderr
    (run / "eval.json").unlink()
    (run / "model.zip").unlink()
    for step in (400, 200):  # a damaged latest alone is skipped (tests/test_checkpoint_fallback.py): damage both
        (RunDir(run).checkpoint(step).replay / "actions.npy").write_bytes(b"garbage")
    proc = run_py(*HER, "total_steps=400", "checkpoint_freq=200", f"hydra.run.dir={run}")
    assert proc.returncode == 2 and "corrupted" in proc.stderr and "Traceback" not in proc.stderr


def test_files_a_user_is_handed_never_run_code(finished: Path, tmp_path: Path) -> None:
    """A model.zip whose serialized fields hold a pickle payload: eval and resume load it without running it."""
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):  # noqa: ANN204
            return (Path.touch, (marker,))

    run = tmp_path / "hostile"
    run.mkdir()
    with zipfile.ZipFile(finished / "model.zip") as src, zipfile.ZipFile(run / "model.zip", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "data":
                fields = json.loads(data)
                fields["observation_space"][":serialized:"] = base64.b64encode(pickle.dumps(Payload())).decode()
                data = json.dumps(fields).encode()
            dst.writestr(item, data)
    (run / "model.meta.json").write_bytes((finished / "model.meta.json").read_bytes())
    ok(rlexp_cli("eval", str(run), "--episodes", "2"))
    ok(rlexp_cli("video", str(run), "--episodes", "1", "--width", "64", "--height", "64"))
    assert not marker.exists()
    ok(run_py(f"resume={run / 'model.zip'}", "total_steps=600", f"hydra.run.dir={tmp_path / 'cont'}",
              "progress=false"))
    assert not marker.exists()


def test_recorded_config_naming_other_code_is_refused(finished: Path, tmp_path: Path) -> None:
    """A .meta.json whose _target_ names arbitrary code: eval and resume refuse before building anything."""
    run = tmp_path / "hostile"
    run.mkdir()
    (run / "model.zip").write_bytes((finished / "model.zip").read_bytes())
    meta = read_json(finished / "model.meta.json")
    marker = tmp_path / "pwned"
    meta["config"]["env"]["wrappers"] = [{"_target_": "pathlib.Path.touch", "self": str(marker)}]
    (run / "model.meta.json").write_text(json.dumps(meta))
    for proc in (rlexp_cli("eval", str(run), "--episodes", "1"),
                 run_py(f"resume={run}", "total_steps=600", f"hydra.run.dir={tmp_path / 'cont'}")):
        assert proc.returncode == 2 and "refusing to build" in proc.stderr, proc.stderr[-2000:]
    assert not marker.exists()


def test_eval_seeds_must_match_episodes(finished: Path) -> None:
    proc = rlexp_cli("eval", str(finished), "--episodes", "2", "--seeds", "0-4")
    assert proc.returncode == 2 and "5 seeds" in proc.stderr and "Traceback" not in proc.stderr


def test_full_disk_skips_the_checkpoint_and_keeps_training(tmp_path: Path) -> None:
    """A real full disk (a small tmpfs): the checkpoint is skipped with a warning, training goes on, the
    previous checkpoint stays complete and no temp file is left behind."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        run = mnt / "run"
        proc = start_py(*HER, "total_steps=1000", "checkpoint_freq=400", "tensorboard=false", f"hydra.run.dir={run}")
        filler = mnt / "filler"
        t0 = time.time()
        while not RunDir(run).checkpoints():
            assert proc.poll() is None and time.time() - t0 < 300
            time.sleep(0.05)
        free = __import__("shutil").disk_usage(mnt).free
        with open(filler, "wb") as fh:  # leave ~100 KB: the next checkpoint (state + replay) cannot fit
            fh.write(b"\0" * max(0, free - 100_000))
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "skipped (" in line:
                filler.unlink()
                break
        out = "".join(lines) + proc.communicate(timeout=600)[0]
        assert proc.returncode == 0, out[-3000:]
        assert "checkpoint at step" in out and "No space left on device" in out
        from rlexp.training.checkpoint import verify

        for ckpt in RunDir(run).checkpoints():
            verify(ckpt)
        assert not [p for p in RunDir(run).ckpt_dir.iterdir() if p.name.startswith(".")]
        assert (run / "eval.json").exists()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_log_moves_into_the_resumed_run_with_the_lines_already_written(tmp_path: Path) -> None:
    """Hydra's file log, already opened by this process, follows a resume in place: earlier lines move into
    the run's run.log after what it held, later lines append there, and Hydra's file is gone."""
    import logging

    from rlexp.training.train import _log_into

    hydra_dir, run_dir = tmp_path / "outputs" / "DATE" / "TIME", tmp_path / "run"
    hydra_dir.mkdir(parents=True)
    run_dir.mkdir()
    (run_dir / "run.log").write_text("first segment\n")
    handler = logging.FileHandler(hydra_dir / "run.log", delay=True)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger()
    logger.addHandler(handler)
    try:
        logger.warning("before the move")
        _log_into(RunDir(run_dir), hydra_dir)
        logger.warning("after the move")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert (run_dir / "run.log").read_text() == "first segment\nbefore the move\nafter the move\n"
    assert list(hydra_dir.iterdir()) == []
