"""Tasks and routing are config groups: their options in rlexp/conf/ match the code that runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

import rlexp
from rlexp import tasks
from rlexp.components.policies import ROUTINGS
from rlexp.config import CONF_DIR, TASKS
from rlexp.errors import ConfigError
from rlexp.runner import run_task

from helpers import read_json


def test_every_task_option_is_registered() -> None:
    assert set(TASKS) == set(tasks.REGISTRY) == {"train", "proof_of_life", "env_anatomy"}
    for name in TASKS:
        assert rlexp.compose(f"task={name}").task == name


def test_routing_options_are_the_code_routings() -> None:
    options = {p.stem for p in (CONF_DIR / "routing").glob("*.yaml")}
    assert options == {*ROUTINGS, "default"}
    assert rlexp.compose().routing is None
    for name in ROUTINGS:
        assert rlexp.compose(f"routing={name}").routing == name
    assert rlexp.compose("+experiment=ch09_step2_critic_encoder", "routing=separate").routing == "separate"


def test_unregistered_task_value_is_a_config_error(tmp_path: Path) -> None:
    cfg = rlexp.compose()
    OmegaConf.update(cfg, "task", "fly")
    with pytest.raises(ConfigError, match="unknown task 'fly'"):
        run_task(cfg, tmp_path)


def test_env_anatomy_without_its_experiment(tmp_path: Path) -> None:
    """task=env_anatomy brings its own settings: it runs on the default env (FetchReachDense-v4)."""
    cfg = rlexp.compose("task=env_anatomy", "anatomy.reward_check_steps=20", "anatomy.random_episodes=1")
    summary = run_task(cfg, tmp_path)
    assert summary.status == "done" and summary.extra["reward_check"]["ok"]
    assert tasks.REGISTRY["env_anatomy"].summary_line(summary).startswith("reward check OK: ")
    assert read_json(tmp_path / "describe.json")["env_id"] == "FetchReachDense-v4"
    assert read_json(tmp_path / "random_baseline.json")["n_episodes"] == 1
