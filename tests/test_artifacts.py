"""Artifacts are written atomically: a failure mid-write leaves the previous file intact."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import pytest

from rlexp import artifacts


def test_failed_write_keeps_previous_file(tmp_path: Path) -> None:
    target = tmp_path / "eval.json"
    artifacts.write_json(target, {"success_rate": 1.0})

    def crash(tmp: Path) -> None:
        tmp.write_text('{"success_rate": 0.')  # half a JSON, then the process "dies"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        artifacts.atomic_write(target, crash)
    assert json.loads(target.read_text()) == {"success_rate": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no temp file left behind


def test_written_files_are_world_readable_and_keep_zip_suffix(tmp_path: Path) -> None:
    seen: list[str] = []
    path = artifacts.atomic_write(tmp_path / "model.zip", lambda tmp: (seen.append(tmp.name), tmp.write_bytes(b"x")))
    assert seen[0].endswith(".zip")  # SB3 appends .zip to paths without it
    assert path.stat().st_mode & 0o044 == 0o044 or artifacts._UMASK & 0o044


def test_versions_and_git_state() -> None:
    v = artifacts.versions()
    # The installed ones (any set pyproject.toml admits, .ci/oldest.txt's too), not one pinned release.
    assert v["gymnasium_robotics"] == version("gymnasium-robotics") and v["mujoco"] == version("mujoco")
    assert v["stable_baselines3"] == version("stable-baselines3") and v["mujoco"].startswith("3.")
    assert int(v["mujoco"].split(".")[1]) < 12  # gymnasium-robotics 1.4.2 breaks on mujoco >= 3.12
    g = artifacts.git_state()
    assert set(g) == {"commit", "dirty"}
