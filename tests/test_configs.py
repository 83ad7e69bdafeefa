"""Every experiment composes and builds; each experiment file sets exactly the book's recipe."""

from __future__ import annotations

import re

import pytest
from stable_baselines3 import PPO, SAC, HerReplayBuffer
from stable_baselines3.common.buffers import DictReplayBuffer

import rlexp
from rlexp.config import config_hash, experiment_names, parse_seeds
from rlexp.errors import ConfigError

from helpers import ROOT

STATE_EXPERIMENTS = [
    "ch01_proof_of_life", "ch02_env_anatomy", "ch03_ppo_reach_dense", "ch04_sac_reach_dense", "ch05_sac_reach",
    "ch05_her_reach", "ch05_sac_push", "ch05_her_push", "ch06_her_pick_and_place",
]


def test_book_experiments_exist() -> None:
    assert set(STATE_EXPERIMENTS) <= set(experiment_names())


@pytest.mark.parametrize("name", experiment_names())
def test_every_experiment_composes_and_builds(name: str) -> None:
    small = ["algo.buffer_size=1000"] if "buffer_size" in rlexp.compose(f"+experiment={name}").algo else []
    cfg = rlexp.compose(f"+experiment={name}", "n_envs=2", *small)
    model = rlexp.build(cfg)
    try:
        assert model.num_timesteps == 0
        assert model.get_env().num_envs == 2
        assert model.seed == cfg.seed
    finally:
        model.get_env().close()


def _built(name: str):  # noqa: ANN202
    return rlexp.build(rlexp.compose(f"+experiment={name}"))


def test_ppo_recipe() -> None:
    model = _built("ch03_ppo_reach_dense")
    assert isinstance(model, PPO)
    assert (model.n_envs, model.n_steps, model.batch_size, model.n_epochs) == (8, 1024, 256, 10)
    assert model.gamma == 0.99 and model.learning_rate == 3e-4
    assert model.get_env().envs[0].spec.id == "FetchReachDense-v4"
    model.get_env().close()


def test_sac_dense_recipe() -> None:
    model = _built("ch04_sac_reach_dense")
    assert isinstance(model, SAC) and type(model.replay_buffer) is DictReplayBuffer
    assert (model.batch_size, model.buffer_size, model.learning_starts) == (256, 1_000_000, 10_000)
    assert model.gamma == 0.99 and model.ent_coef == "auto" and model.tau == 0.005
    model.get_env().close()


@pytest.mark.parametrize("name,env_id,her", [
    ("ch05_sac_reach", "FetchReach-v4", False), ("ch05_her_reach", "FetchReach-v4", True),
    ("ch05_sac_push", "FetchPush-v4", False), ("ch05_her_push", "FetchPush-v4", True),
    ("ch06_her_pick_and_place", "FetchPickAndPlace-v4", True),
])
def test_sparse_recipes(name: str, env_id: str, her: bool) -> None:
    model = _built(name)
    env = model.get_env()
    assert env.envs[0].spec.id == env_id and env.num_envs == 8
    assert (model.batch_size, model.buffer_size, model.learning_starts, model.gamma) == (256, 1_000_000, 1000, 0.95)
    if "Reach" in env_id:
        assert model.ent_coef == "auto"
    else:  # Push/PickAndPlace: fixed alpha 0.05, never auto-tuned
        assert model.ent_coef == 0.05 and model.log_ent_coef is None
    if her:
        buf = model.replay_buffer
        assert isinstance(buf, HerReplayBuffer)
        assert buf.n_sampled_goal == 4 and buf.goal_selection_strategy.name == "FUTURE"
        assert buf.her_ratio == pytest.approx(0.8)
    else:
        assert type(model.replay_buffer) is DictReplayBuffer
    env.close()


def test_total_steps_per_experiment() -> None:
    steps = {n: rlexp.compose(f"+experiment={n}").total_steps for n in STATE_EXPERIMENTS}
    assert steps["ch01_proof_of_life"] == 50_000
    assert steps["ch03_ppo_reach_dense"] == steps["ch04_sac_reach_dense"] == 500_000
    assert steps["ch05_her_push"] == 2_000_000 and steps["ch06_her_pick_and_place"] == 5_000_000


def test_override_reaches_the_model() -> None:
    cfg = rlexp.compose("+experiment=ch05_her_push", "buffer.n_sampled_goal=8", "algo.gamma=0.98", "seed=3")
    model = rlexp.build(cfg)
    assert model.replay_buffer.n_sampled_goal == 8 and model.gamma == 0.98 and model.seed == 3
    model.get_env().close()


def test_config_hash_ignores_run_only_keys() -> None:
    base = rlexp.compose("+experiment=ch05_her_push")
    assert config_hash(base) == config_hash(rlexp.compose("+experiment=ch05_her_push", "progress=false",
                                                          "resume=/somewhere"))
    assert config_hash(base) != config_hash(rlexp.compose("+experiment=ch05_her_push", "seed=1"))


def test_parse_seeds() -> None:
    assert parse_seeds(None, 3) == [0, 1, 2]
    assert parse_seeds("0-99", 100) == list(range(100))
    assert parse_seeds("5,7", 2) == [5, 7]
    with pytest.raises(ConfigError, match=r"9-1: the end is before the start; did you mean 1-9\?"):
        parse_seeds("9-1", None)


def test_run_only_keys_are_one_list() -> None:
    """The hash, the analysis grouping and Hydra's multirun directory names leave out the same keys."""
    from omegaconf import OmegaConf

    from rlexp.config import CONF_DIR, HASH_EXCLUDE, RUN_ONLY_KEYS

    primary = OmegaConf.load(CONF_DIR / "config.yaml")
    assert list(primary.hydra.job.config.override_dirname.exclude_keys) == [*RUN_ONLY_KEYS, "hparams_search"]
    cfg = rlexp.compose()
    assert set(HASH_EXCLUDE) == {*RUN_ONLY_KEYS, "hydra"}
    base = config_hash(cfg)
    changed = ("progress=false", "threads=1", "device=cpu", "checkpoint_freq=7", "checkpoint_replay=all",
               "tensorboard=false", "objective=return")
    assert all(config_hash(rlexp.compose(o)) == base for o in changed)
    assert config_hash(rlexp.compose("diagnostics.freq=5")) != base


def _listed_run_only_keys(text: str) -> list[list[str]]:
    """The keys of each list that follows a mention of `rlexp.config.RUN_ONLY_KEYS` (`a`, `b`, ... `z`)."""
    lists = re.findall(r"`rlexp\.config\.RUN_ONLY_KEYS`\)?:\s*((?:`[\w.]+`(?:,?\s+(?:and\s+)?)?)+)", text)
    return [re.findall(r"`([\w.]+)`", found) for found in lists]


@pytest.mark.parametrize("doc", ["README.md", "docs/sweeps.md"])
def test_docs_list_exactly_the_run_only_keys(doc: str) -> None:
    """Where a doc lists the run-only keys, it lists rlexp.config.RUN_ONLY_KEYS: no more, no fewer."""
    from rlexp.config import RUN_ONLY_KEYS

    lists = _listed_run_only_keys((ROOT / doc).read_text())
    assert lists, f"{doc} no longer lists the run-only keys after `rlexp.config.RUN_ONLY_KEYS`:"
    for keys in lists:
        assert sorted(keys) == sorted(RUN_ONLY_KEYS), f"{doc}: {keys} vs {list(RUN_ONLY_KEYS)}"
