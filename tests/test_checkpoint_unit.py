"""Checkpoint units in-process (no training): replay arrays round-trip exactly, config-only targets are checked,
the best model is committed without leftovers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rlexp
from rlexp.config import check_recorded_targets, to_container
from rlexp.errors import ConfigError
from rlexp.rundir import RunDir, meta_of
from rlexp.training.logs import commit_best
from rlexp.training.replay_io import read_replay, write_replay
from rlexp.training.resume import config_for_resume


def test_replay_round_trip_when_rows_equal_envs(tmp_path: Path) -> None:
    """HER's per-env episode starts (n_envs,) are saved whole even when the buffer has n_envs rows."""
    cfg = rlexp.compose("+experiment=ch05_her_reach", "n_envs=2", "algo.buffer_size=4", "algo.learning_starts=100")
    model, fresh = rlexp.build(cfg), rlexp.build(cfg)
    try:
        buf = model.replay_buffer
        assert buf.buffer_size == buf.n_envs == 2
        rng = np.random.default_rng(0)
        buf.observations["observation"][:1] = rng.standard_normal(buf.observations["observation"][:1].shape)
        buf.actions[:1] = rng.uniform(-1, 1, buf.actions[:1].shape)
        buf.pos, buf._current_ep_start[:] = 1, [1, 0]
        write_replay(buf, tmp_path / "step_2.replay", 2)
        assert read_replay(fresh.replay_buffer, tmp_path / "step_2.replay", 2) == 2
        out = fresh.replay_buffer
        assert out.pos == 1 and list(out._current_ep_start) == [1, 0]
        assert np.array_equal(out.actions, buf.actions)
        assert np.array_equal(out.observations["observation"], buf.observations["observation"])
    finally:
        model.get_env().close()
        fresh.get_env().close()


@pytest.mark.parametrize("target", ["stable_baselines3.common.save_util.load_from_pkl", "os.system",
                                    "stable_baselines3.SAC.load", "gymnasium.utils.play.play"])
def test_recorded_targets_must_be_classes_of_known_kinds(target: str) -> None:
    with pytest.raises(ConfigError, match="refusing to build"):
        check_recorded_targets({"env": {"_target_": target}}, "meta")
    check_recorded_targets(to_container(rlexp.compose("+experiment=ch09_step2_critic_encoder")), "meta")


def test_resume_compares_only_what_the_command_sets() -> None:
    recorded = to_container(rlexp.compose("+experiment=ch05_her_reach", "algo.batch_size=32"))
    meta = {"config": recorded}
    same_env = rlexp.compose("env=reach", "resume=x")  # the run's env group again: accepted
    assert config_for_resume(same_env, meta, ["env=reach", "resume=x"]).algo.batch_size == 32
    with pytest.raises(ConfigError, match="algo.gamma"):
        config_for_resume(rlexp.compose("algo.gamma=0.5"), meta, ["algo.gamma=0.5", "resume=x"])
    extended = config_for_resume(rlexp.compose("total_steps=7"), meta, ["total_steps=7", "resume=x"])
    assert extended.total_steps == 7 and extended.buffer.n_sampled_goal == 4


def test_env_state_round_trip_includes_wrapper_spaces_and_warns_on_unsaved_attributes(caplog) -> None:  # noqa: ANN001
    """A wrapper with its own action space (RescaleAction) gets its RNG saved; an attribute that cannot be
    saved is named in a warning instead of being dropped silently."""
    import gymnasium as gym

    from rlexp.components.envs import register_robotics
    from rlexp.training.run_state import Arrays, env_state, set_env_state

    class Opaque(gym.Wrapper):
        def __init__(self, env: gym.Env) -> None:
            super().__init__(env)
            self.thing = object()

    def make() -> gym.Env:
        register_robotics()
        return Opaque(gym.wrappers.RescaleAction(gym.make("FetchReach-v4"), -0.5, 0.5))

    a, b = make(), make()
    a.reset(seed=1)
    a.action_space.seed(3)
    a.action_space.sample()
    arrays = Arrays()
    with caplog.at_level("WARNING", logger="rlexp"):
        state = env_state(a, arrays)
    assert "Opaque.thing" in caplog.text
    b.reset(seed=2)
    set_env_state(b, state, arrays)
    assert np.array_equal(a.action_space.sample(), b.action_space.sample())
    action = a.action_space.sample()
    b.action_space.sample()
    assert np.array_equal(a.step(action)[0]["observation"], b.step(action)[0]["observation"])


def test_committing_an_unchanged_best_model_leaves_no_temporary_link(tmp_path: Path) -> None:
    """Every checkpoint commits best_model.zip; one that has not changed since the last commit (already a hard
    link of it) must leave no `.best_model.zip.link` behind for a resume to report as an interrupted write."""
    run = RunDir(tmp_path)
    run.best_committed.parent.mkdir(parents=True)
    run.best.write_bytes(b"model at 100")
    meta_of(run.best).write_text('{"best": {"step": 100}}')
    for _ in range(2):  # a checkpoint, then one more with the best model unchanged
        commit_best(run)
        assert [p.name for p in run.best_committed.parent.iterdir() if p.name.startswith(".")] == []
        assert run.best_committed.read_bytes() == b"model at 100"
    assert run.remove_uncommitted() == []
    run.best.unlink()  # replaced by a newer best model (written to a new file, as SB3 saves do)
    run.best.write_bytes(b"model at 200")
    commit_best(run)
    assert run.best_committed.read_bytes() == b"model at 200"
    assert [p.name for p in run.best_committed.parent.iterdir() if p.name.startswith(".")] == []
