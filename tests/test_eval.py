"""Evaluation is reproducible for the same checkpoint and seeds; eval and video entry points work."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import pytest

from helpers import ok, read_json, rlexp_cli

pytestmark = pytest.mark.slow  # every test reads the trained `ppo_run`


def test_eval_is_identical_for_same_checkpoint_and_seeds(ppo_run: Path, tmp_path: Path) -> None:
    """The run directory with its default seeds (0..n-1) and its model.zip with the same seeds named explicitly
    give the same episodes; the seeds training evaluated (0-2) give the episodes written at the end of training."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    ok(rlexp_cli("eval", str(ppo_run), "--episodes", "4", "--out", str(a)))
    ok(rlexp_cli("eval", str(ppo_run / "model.zip"), "--episodes", "4", "--seeds", "0-3", "--out", str(b)))
    ra, rb = read_json(a), read_json(b)
    assert ra["seeds"] == rb["seeds"] == [0, 1, 2, 3] and ra["deterministic"] is True
    assert ra["per_episode"] == rb["per_episode"] and ra["aggregate"] == rb["aggregate"]
    train_eval = read_json(ppo_run / "eval.json")
    assert train_eval["seeds"] == [0, 1, 2]
    assert ra["per_episode"][:3] == train_eval["per_episode"]


def test_eval_default_output_and_stochastic(ppo_run: Path) -> None:
    proc = ok(rlexp_cli("eval", str(ppo_run / "checkpoints" / "step_2048.zip"), "--episodes", "2", "--stochastic"))
    out = ppo_run / "checkpoints" / "step_2048.eval.json"
    assert str(out) in proc.stdout and "success" in proc.stdout
    res = read_json(out)
    assert res["deterministic"] is False and res["n_episodes"] == 2 and res["algo"] == "PPO"


def test_eval_errors(tmp_path: Path, ppo_run: Path) -> None:
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    (tmp_path / "bad.meta.json").write_text((ppo_run / "model.meta.json").read_text())
    cases = [
        ((str(tmp_path / "nope"),), "checkpoint not found"),
        ((str(tmp_path),), "no model.zip"),
        ((str(tmp_path / "bad.zip"),), "cannot load"),
        ((str(ppo_run), "--episodes", "0"), "--episodes must be positive"),
        ((str(ppo_run), "--seeds", "x-y"), "eval seeds"),
    ]
    for args, message in cases:
        proc = rlexp_cli("eval", *args)
        assert proc.returncode == 2, (args, proc.stderr[-1500:])
        assert message in proc.stderr and "Traceback" not in proc.stderr, (args, proc.stderr[-1500:])


def test_video_writes_mp4_and_gif(ppo_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo.mp4"
    proc = ok(rlexp_cli("video", str(ppo_run), "--episodes", "1", "--gif", "--width", "160", "--height", "120",
                        "--out", str(out)))
    assert str(out) in proc.stdout
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == 50 + 15 and frames.shape[1:] == (120, 160, 3)  # 50 steps + end-of-episode pause
    assert frames.std() > 5
    gif = iio.imread(tmp_path / "demo.gif", index=None)
    assert gif.shape[0] > 10 and gif.shape[1:3] == (60, 80)


def test_eval_progress_bar_stays_out_of_redirected_output(ppo_run: Path, capfd: pytest.CaptureFixture) -> None:
    """progress=true (the default) in a sweep's log or a redirected run: no per-episode bar redraws there."""
    from rlexp.evaluate import load_model, load_run_config, run_episodes

    cfg = load_run_config(ppo_run / "model.zip")
    model = load_model(ppo_run / "model.zip", cfg, device="cpu")
    try:
        assert len(run_episodes(model, cfg, [0, 1], progress=True)) == 2
    finally:
        model.get_env().close()
    out, err = capfd.readouterr()
    assert "eval:" not in out + err and "ep/s" not in out + err
