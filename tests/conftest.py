"""Fixtures and markers shared by every test; helpers live in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import FAST, ok, run_py

# Modules whose tests all train but that this file marks instead of a pytestmark in the module.
# test_resume.py: being rewritten for checkpoint/resume work; move this into the module when that lands.
SLOW_MODULES = {"test_resume.py"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test is slow if it trains: its module is in SLOW_MODULES or it needs the trained `ppo_run`."""
    for item in items:
        if item.path.name in SLOW_MODULES or "ppo_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ppo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One short real PPO dense-Reach run shared by artifact, eval and video tests."""
    run_dir = tmp_path_factory.mktemp("ppo_run")
    ok(run_py("+experiment=ch03_ppo_reach_dense", "total_steps=4096", "algo.n_steps=256", "algo.batch_size=256",
              "checkpoint_freq=2048", f"hydra.run.dir={run_dir}", *FAST))
    return run_dir
