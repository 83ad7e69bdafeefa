"""The built wheel is a whole package: configs inside it, `rlexp-train` and `rlexp` commands, usable outside a checkout.

The wheel goes into a fresh venv. Its dependencies come from this test run's environment through a `.pth` line
(installing torch, MuJoCo and SB3 again would take minutes and a network); that line adds the folder to sys.path
without running the `.pth` files in it, so the editable install of this checkout stays out of the fresh venv, and
the test asserts that `rlexp` is imported from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT, read_json

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} -> {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(fresh venv's bin folder, the wheel) with only the wheel's rlexp installed in the venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # Built from a copy: setuptools writes build/ beside the sources and would reuse stale files from it.
    src = tmp / "src"
    skip = (".git", ".venv", "build", "outputs", "multirun", "*.egg-info", "__pycache__", ".*_cache", "out", ".whl")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*skip))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"),
          str(src)], cwd=tmp, env=env)
    (wheel,) = (tmp / "dist").glob("rlexp-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp, env=env)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(venv / "bin" / "python"), "-c", purelib], text=True).strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # dependencies, not this checkout
    _run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", "--no-deps",
          "--no-index", str(wheel)], cwd=tmp, env=env)
    return venv / "bin", wheel


def test_wheel_ships_configs_and_plugins(wheel_venv: tuple[Path, Path]) -> None:
    names = set(zipfile.ZipFile(wheel_venv[1]).namelist())
    for needed in ("rlexp/conf/config.yaml", "rlexp/conf/experiment/ch05_her_push.yaml",
                   "rlexp/conf/env/_base/fetch.yaml", "hydra_plugins/rlexp_launchers/launchers.py"):
        assert needed in names, needed
    shipped = {n.removeprefix("rlexp/") for n in names if n.startswith("rlexp/conf/") and n.endswith(".yaml")}
    in_checkout = {str(p.relative_to(ROOT / "rlexp")) for p in (ROOT / "rlexp" / "conf").rglob("*.yaml")}
    assert shipped == in_checkout


def test_installed_wheel_trains_and_evaluates_outside_the_checkout(wheel_venv: tuple[Path, Path],
                                                                    tmp_path: Path) -> None:
    bin_dir, _ = wheel_venv
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    where = _run([str(bin_dir / "python"), "-c", "import rlexp; print(rlexp.__file__)"], cwd=tmp_path, env=env)
    assert str(bin_dir.parent) in where.stdout and str(ROOT) not in where.stdout

    helptext = _run([str(bin_dir / "rlexp-train"), "--help"], cwd=tmp_path, env=env).stdout
    assert "rlexp-train" in helptext and "ch05_her_push" in helptext and "total_steps" in helptext

    run_dir = tmp_path / "run"
    _run([str(bin_dir / "rlexp-train"), "+experiment=ch05_her_reach", "total_steps=200", "n_envs=1",
          "algo.learning_starts=100", "algo.buffer_size=1000", "eval.n_episodes=2", "progress=false",
          "checkpoint_freq=0", f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env)
    assert read_json(run_dir / "eval.json")["n_episodes"] == 2
    assert (run_dir / "model.zip").is_file() and (run_dir / "run.log").is_file()
    assert not (tmp_path / "outputs").exists()  # the run went where it was told, nothing else was written

    out = tmp_path / "again.json"
    proc = _run([str(bin_dir / "rlexp"), "eval", str(run_dir), "--episodes", "2", "--out", str(out)], cwd=tmp_path,
                env=env)
    assert "success" in proc.stdout
    assert read_json(out)["per_episode"] == read_json(run_dir / "eval.json")["per_episode"]
