"""Fixtures and markers shared by every test; helpers live in tests/helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import FAST, ok, run_py


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
