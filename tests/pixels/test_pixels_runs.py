"""The ch09 investigation as configs: each step changes only what the book says, and each one trains."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from rlexp.config import compose, to_container

from helpers import ok, read_json, run_py

STEPS = [
    "ch09_full_state",
    "ch09_step0_nature_cnn",
    "ch09_step1_manipulation",
    "ch09_step2_critic_encoder",
    "ch09_step4_drq",
]
# What the book says changed from the previous step (book ch9).
CHANGES = {
    "ch09_step0_nature_cnn": {
        "env.kwargs.render_mode",
        "env.kwargs.width",
        "env.kwargs.height",
        "env.pixels",  # null (state) -> the mapping below
        "env.pixels.image_size",
        "env.pixels.frame_stack",
        "env.pixels.goal_mode",
        "env.pixels.proprio_indices",
        "env.pixels.resize",
        "buffer._target_",
        "buffer.frame_stack",
        "buffer.image_key",
        "buffer.drq_pad",
        "routing",
    },
    "ch09_step1_manipulation": {
        "encoder._target_",
        "encoder.cnn_output_dim",
        "encoder.spatial_softmax",
        "encoder.num_filters",
        "encoder.flat_features_dim",
        "env.pixels.proprio_indices",
    },
    "ch09_step2_critic_encoder": {"routing", "algo.buffer_size", "buffer.n_sampled_goal", "total_steps"},
    "ch09_step4_drq": {"buffer.drq_pad"},
}
# Tiny real runs: 120 env steps on 2 envs, 10 gradient steps of batch 8 (HER samples once the first episodes end,
# at 100), one eval episode.
TINY = [
    "total_steps=120",
    "n_envs=2",
    "algo.learning_starts=100",
    "algo.batch_size=8",
    "algo.buffer_size=1000",
    "eval.n_episodes=1",
    "checkpoint_freq=0",
    "diagnostics.freq=0",
    "progress=false",
    "device=cpu",
]


def flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: data}


@pytest.mark.parametrize(("prev", "step"), list(zip(STEPS, STEPS[1:], strict=False)))
def test_consecutive_steps_differ_only_by_the_book_change(prev: str, step: str) -> None:
    a, b = (
        flat(to_container(compose(f"+experiment={prev}"))),
        flat(to_container(compose(f"+experiment={step}"))),
    )
    changed = {k for k in set(a) | set(b) if a.get(k, "<absent>") != b.get(k, "<absent>")}
    assert changed == CHANGES[step]


def test_book_values_of_the_winning_card() -> None:
    cfg = compose("+experiment=ch09_step2_critic_encoder")
    assert cfg.routing == "critic" and cfg.algo.buffer_size == 500_000 and cfg.buffer.n_sampled_goal == 8
    assert (cfg.n_envs, cfg.algo.batch_size, cfg.algo.learning_rate, cfg.algo.gamma, cfg.algo.ent_coef) == (
        4,
        256,
        1e-4,
        0.95,
        0.05,
    )
    pixels = cfg.env.pixels
    assert (pixels.image_size, pixels.frame_stack, pixels.goal_mode, pixels.proprio_indices) == (84, 4, "both", "push")
    from rlexp.components.envs import PUSH_PROPRIO

    assert list(PUSH_PROPRIO) == [0, 1, 2, 9, 10, 20, 21, 22, 23, 24]
    assert cfg.buffer._target_.endswith("PixelHerReplayBuffer") and cfg.buffer.drq_pad == 0


@pytest.mark.slow
@pytest.mark.parametrize("experiment", STEPS)
def test_tiny_real_run(experiment: str, tmp_path: Path) -> None:
    ok(run_py(f"+experiment={experiment}", *TINY, f"hydra.run.dir={tmp_path}", timeout=300))
    result = read_json(tmp_path / "eval.json")
    assert result["n_episodes"] == 1
    assert (
        result["per_episode"][0]["final_distance"] is not None
    )  # ground truth reachable through the wrapper
    meta = read_json(tmp_path / "model.meta.json")
    assert meta["config"]["routing"] == compose(f"+experiment={experiment}").routing
    if experiment == "ch09_step2_critic_encoder":
        from rlexp.components.policies import CriticEncoderMultiInputPolicy
        from rlexp.evaluate import load_model, load_run_config

        zip_path = tmp_path / "model.zip"
        model = load_model(zip_path, load_run_config(zip_path), "cpu")
        pol = model.policy
        assert type(pol) is CriticEncoderMultiInputPolicy and pol.actor.features_extractor.features_dim == 80
        assert pol.actor.features_extractor is pol.critic.features_extractor
        assert pol.critic_target.features_extractor is not pol.critic.features_extractor
        model.get_env().close()


def test_config_errors_before_training(tmp_path: Path) -> None:
    proc = run_py(
        "+experiment=ch09_full_state", "encoder=manipulation", f"hydra.run.dir={tmp_path}", timeout=120
    )
    assert proc.returncode != 0 and "no image key" in proc.stderr + proc.stdout
    proc = run_py(
        "+experiment=ch09_step1_manipulation", "routing=both", f"hydra.run.dir={tmp_path}", timeout=120
    )
    assert proc.returncode == 2 and "no routing option 'both'" in proc.stderr, proc.stderr
    assert not (tmp_path / "model.zip").exists()
