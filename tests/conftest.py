"""Fixtures and markers shared by every test; helpers live in tests/helpers.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import FAST, ok, run_py


@pytest.fixture(scope="session", autouse=True)
def _sb3_logs_in_basetemp(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SB3's `learn()` without a logger of the caller's makes an empty folder under /tmp at each call; tests that call
    it in this process (plain SB3 next to rlexp) make theirs under pytest's base temp instead (SB3_LOGDIR)."""
    os.environ["SB3_LOGDIR"] = str(tmp_path_factory.mktemp("sb3_logs"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the trained `ppo_run` is slow (training modules carry their own pytestmark)."""
    for item in items:
        if "ppo_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short real PPO dense-Reach run shared by artifact, eval and video tests."""
    run_dir = tmp_path_factory.mktemp("ppo_run")
    ok(run_py("+experiment=ch03_ppo_reach_dense", "total_steps=4096", "algo.n_steps=256", "algo.batch_size=256",
              "checkpoint_freq=2048", f"hydra.run.dir={run_dir}", *FAST))
    return run_dir
