"""Short real end-to-end runs of every state experiment, with artifact schema checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlexp.rundir import RunDir

from helpers import FAST, ok, read_json, run_py, scalars

META_FIELDS = {"created_at", "algo", "env_id", "seed", "device", "n_envs", "total_steps", "checkpoint", "hyperparams",
               "her", "her_config", "training_time_sec", "steps_per_sec", "versions", "git", "config", "config_hash",
               "resumed_from"}
VERSION_FIELDS = {"python", "torch", "torch_cuda", "gymnasium", "gymnasium_robotics", "mujoco", "stable_baselines3"}
AGG_FIELDS = {"success_rate", "return_mean", "return_std", "final_distance_mean", "final_distance_std", "ep_len_mean",
              "ep_len_std", "action_smoothness_mean", "action_max_abs_mean", "time_to_success_mean"}
EPISODE_FIELDS = {"seed", "return", "length", "success", "final_distance", "time_to_success", "action_smoothness",
                  "action_max_abs"}
# Off-policy runs: 800 env steps (100 vector steps of 8 envs), updates from step 400 (the first episodes end there),
# small buffer; a checkpoint every 200 steps, so older units (which drop their replay) exist beside the two latest.
OFF_POLICY = ["total_steps=800", "checkpoint_freq=200", "algo.learning_starts=400", "algo.buffer_size=4000",
              "algo.batch_size=64", "diagnostics.freq=400", "diagnostics.n_samples=200"]
# On-policy: two rollouts of 128 steps x 8 envs.
ON_POLICY = ["total_steps=2048", "checkpoint_freq=1024", "algo.n_steps=128"]


def check_artifacts(run_dir: Path, env_id: str, algo: str, total_steps: int, n_episodes: int = 3) -> dict:
    meta = read_json(run_dir / "model.meta.json")
    assert META_FIELDS <= set(meta)
    assert VERSION_FIELDS <= set(meta["versions"])
    assert meta["env_id"] == env_id and meta["algo"] == algo and meta["total_steps"] == total_steps
    assert meta["n_envs"] == 8 and meta["steps_per_sec"] > 0 and meta["resumed_from"] is None
    assert meta["torch_threads"] >= 1
    assert len(meta["config_hash"]) == 16 and meta["config"]["env"]["id"] == env_id
    assert meta["git"]["commit"] is None or len(meta["git"]["commit"]) == 40
    ev = read_json(run_dir / "eval.json")
    assert ev["n_episodes"] == n_episodes and ev["seeds"] == list(range(n_episodes)) and ev["deterministic"] is True
    assert ev["config_hash"] == meta["config_hash"] and ev["env_id"] == env_id
    assert AGG_FIELDS <= set(ev["aggregate"])
    assert len(ev["per_episode"]) == n_episodes
    for i, ep in enumerate(ev["per_episode"]):
        assert set(ep) == EPISODE_FIELDS and ep["seed"] == i and ep["length"] == 50
        assert ep["success"] in (0, 1) and ep["final_distance"] >= 0 and 0 <= ep["action_max_abs"] <= 1
    returns = [ep["return"] for ep in ev["per_episode"]]
    assert ev["aggregate"]["return_mean"] == pytest.approx(np.mean(returns))
    assert ev["aggregate"]["return_std"] == pytest.approx(np.std(returns))
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").glob("step_*.zip"))
    assert ckpts, "periodic checkpoints"
    assert (run_dir / ".hydra" / "config.yaml").exists()
    return meta


@pytest.mark.slow
@pytest.mark.parametrize("name,env_id,algo", [
    ("ch03_ppo_reach_dense", "FetchReachDense-v4", "ppo"),
    ("ch04_sac_reach_dense", "FetchReachDense-v4", "sac"),
    ("ch05_sac_reach", "FetchReach-v4", "sac"),
    ("ch05_her_reach", "FetchReach-v4", "sac"),
    ("ch05_sac_push", "FetchPush-v4", "sac"),
    ("ch05_her_push", "FetchPush-v4", "sac"),
    ("ch06_her_pick_and_place", "FetchPickAndPlace-v4", "sac"),
])
def test_state_experiment_end_to_end(tmp_path: Path, name: str, env_id: str, algo: str) -> None:
    extra = ON_POLICY if algo == "ppo" else OFF_POLICY
    proc = ok(run_py(f"+experiment={name}", *FAST, *extra, f"hydra.run.dir={tmp_path}"))
    assert "success" in proc.stderr + proc.stdout and str(tmp_path) in proc.stderr + proc.stdout
    assert f"run directory  {tmp_path} (fresh)" in proc.stdout + proc.stderr  # the header, before training
    total = 2048 if algo == "ppo" else 800
    meta = check_artifacts(tmp_path, env_id, algo, total)
    assert meta["her"] == ("her" in name)
    if meta["her"]:
        assert meta["her_config"] == {"n_sampled_goal": 4, "goal_selection_strategy": "future"}
    tags = scalars(tmp_path)
    assert "rollout/success_rate" in tags and "rollout/ep_rew_mean" in tags
    if algo == "sac":
        for tag in ("train/critic_loss", "train/ent_coef", "replay/ent_coef", "replay/q_min_mean",
                    "replay/reward_mean", "replay/goal_distance_mean"):
            assert tag in tags, tag
        if "push" in name or "pick" in name:  # fixed alpha stays exactly 0.05
            assert {round(v, 6) for _, v in tags["replay/ent_coef"]} == {0.05}
        ckpts = RunDir(tmp_path).checkpoints()  # the two latest keep the replay buffer, older ones drop it
        assert all((c.replay / "replay.json").exists() for c in ckpts[-2:])
        assert len(ckpts) > 2 and not any(c.replay.exists() for c in ckpts[:-2])
        assert not list(tmp_path.rglob("*.pkl"))


@pytest.mark.slow
def test_proof_of_life(tmp_path: Path) -> None:
    ok(run_py("+experiment=ch01_proof_of_life", *FAST, "total_steps=2048", "algo.n_steps=256", "render.width=120",
              "render.height=96", f"hydra.run.dir={tmp_path}"))
    report = read_json(tmp_path / "proof_of_life.json")
    assert report["passed"] is True and report["device_check"]["device"] in ("cpu", "cuda")
    assert "FetchReachDense-v4" in report["fetch_envs"] and "FetchPush-v4" in report["fetch_envs"]
    import imageio.v3 as iio

    frame = iio.imread(tmp_path / "smoke_frame.png")
    assert frame.shape == (96, 120, 3) and frame.std() > 5  # a real picture, not a blank
    from stable_baselines3 import PPO

    model = PPO.load(tmp_path / "model.zip")
    assert set(model.observation_space.spaces) == {"observation", "achieved_goal", "desired_goal"}
    assert model.observation_space["observation"].shape == (10,) and model.action_space.shape == (4,)
    assert not (tmp_path / "tb").exists()  # the book's smoke run writes no TensorBoard


def test_env_anatomy(tmp_path: Path) -> None:
    proc = ok(run_py("+experiment=ch02_env_anatomy", "anatomy.reward_check_steps=200", f"hydra.run.dir={tmp_path}"))
    assert "reward check OK" in proc.stderr + proc.stdout
    desc = read_json(tmp_path / "describe.json")
    assert desc["observation_space"]["observation"]["shape"] == [10]
    assert desc["observation_space"]["achieved_goal"]["shape"] == [3]
    assert desc["action_space"]["shape"] == [4] and desc["action_space"]["low"] == [-1.0] * 4
    assert desc["max_episode_steps"] == 50 and desc["distance_threshold"] == 0.05 and desc["reward_type"] == "dense"
    check = read_json(tmp_path / "reward_check.json")
    assert check["ok"] and check["mismatches"] == [] and check["n_checks"] == 200 * (2 + 1 + 3)
    base = read_json(tmp_path / "random_baseline.json")
    assert base["n_episodes"] == 10 and base["aggregate"]["ep_len_mean"] == 50
    assert -30 < base["aggregate"]["return_mean"] < -3 and base["aggregate"]["success_rate"] <= 0.3


def test_env_anatomy_fails_on_a_reward_mismatch(tmp_path: Path) -> None:
    """A wrapper that negates rewards breaks the invariant: the task must exit non-zero and list mismatches."""
    wrapper = "env.wrappers=[{_target_:gymnasium.wrappers.TransformReward,func:{_target_:operator.neg,_partial_:true}}]"
    proc = run_py("+experiment=ch02_env_anatomy", wrapper, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "FAILED" in proc.stderr + proc.stdout
    check = read_json(tmp_path / "reward_check.json")
    assert not check["ok"] and check["mismatches"][0]["kind"] == "step_vs_compute_reward"


def test_header_says_the_steps_actually_trained() -> None:
    """PPO trains whole rollouts: total_steps=20000 with 8 envs x 1024 steps is 24,576 steps; the header says why."""
    import rlexp
    from rlexp.training.train import steps_trained

    model = rlexp.build(rlexp.compose("+experiment=ch03_ppo_reach_dense"))
    try:
        assert steps_trained(model, 20_000) == (24_576, "20,000 asked: PPO trains whole rollouts of 1,024 steps x "
                                                        "8 envs = 8,192")
        assert steps_trained(model, 8_192) == (8_192, None)
    finally:
        model.get_env().close()
