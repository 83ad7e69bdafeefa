"""The built wheel is a whole package: configs inside it, `rlexp-train` and `rlexp` commands, usable outside a checkout.

The wheel goes into a fresh venv. Its dependencies come from this test run's environment through a `.pth` line
(installing torch, MuJoCo and SB3 again would take minutes and a network); that line adds the folder to sys.path
without running the `.pth` files in it, so the editable install of this checkout stays out of the fresh venv, and
the test asserts that `rlexp` is imported from the wheel.

pyproject.toml asks for a torch range, not a pin, so that installing rlexp beside a supported torch keeps it (a
reinstall would swap a CUDA or vendor build for a multi-GB download): the last two tests install the wheel with
dependency resolution next to a present torch and check that pip leaves it alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

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
                   "rlexp/conf/env/_base/fetch.yaml", "hydra_plugins/rlexp_launchers/launchers.py",
                   "rlexp/data/book_results.yaml"):
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
    # The summary line quotes the book from the data file shipped in the wheel.
    assert ("| ch05 SAC+HER Reach, book: 100% ± 0% at 1M (3 seeds) (the book's recipe; this run sets "
            in (run_dir / "run.log").read_text())
    assert not (tmp_path / "outputs").exists()  # the run went where it was told, nothing else was written

    out = tmp_path / "again.json"
    proc = _run([str(bin_dir / "rlexp"), "eval", str(run_dir), "--episodes", "2", "--out", str(out)], cwd=tmp_path,
                env=env)
    assert "success" in proc.stdout
    assert read_json(out)["per_episode"] == read_json(run_dir / "eval.json")["per_episode"]


def _bare_venv(where: Path, env: dict[str, str]) -> tuple[Path, Path]:
    """(python, site-packages) of a new venv without pip: the test run's pip installs into it with --python."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(where)], cwd=where.parent, env=env)
    python = where / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    return python, Path(subprocess.check_output([str(python), "-c", purelib], text=True).strip())


def _pip_install_report(python: Path, wheel: Path, *options: str, cwd: Path, env: dict[str, str]) -> dict[str, str]:
    """{name: version} of what `pip install wheel` (with dependency resolution) installs, or would with --dry-run."""
    report = cwd / "report.json"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--report", str(report), *options,
          str(wheel)], cwd=cwd, env=env)
    items = json.loads(report.read_text())["install"]
    return {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"] for i in items}


_TORCH = """import importlib.metadata as md, hashlib, json, torch
d = md.distribution("torch")
print(json.dumps([torch.__version__, torch.__file__, d.version, str(d._path), hashlib.sha256(d.read_text("RECORD")
                  .encode()).hexdigest()]))"""


def test_installing_the_wheel_keeps_the_present_torch(wheel_venv: tuple[Path, Path], tmp_path: Path) -> None:
    """The real thing with this run's torch and libraries, as a user's environment has them: a fresh venv sees
    them (deps.pth, as in wheel_venv); `pip install rlexp.whl`, not --no-deps, resolves rlexp's requirements against
    them and installs rlexp alone. A torch pip wanted to replace would be a new torch dist in the venv's own
    site-packages, so the one of this run is never touched (pip does not uninstall outside the venv)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    python, site = _bare_venv(tmp_path / "venv", env)
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    before = _run([str(python), "-c", _TORCH], cwd=tmp_path, env=env).stdout
    planned = _pip_install_report(python, wheel_venv[1], "--dry-run", cwd=tmp_path, env=env)
    assert "torch" not in planned and "rlexp" in planned, planned
    installed = _pip_install_report(python, wheel_venv[1], "--no-index", cwd=tmp_path, env=env)
    assert set(installed) == {"rlexp"}, installed  # every requirement met by what is there, torch included
    assert _run([str(python), "-c", _TORCH], cwd=tmp_path, env=env).stdout == before
    where = _run([str(python), "-c", "import rlexp.fast.sac as m; print(m.__file__)"], cwd=tmp_path, env=env)
    assert str(site) in where.stdout  # the wheel's rlexp, imported beside that torch


def test_resolving_the_wheel_keeps_a_torch_at_the_floor(wheel_venv: tuple[Path, Path], tmp_path: Path) -> None:
    """A torch other than this run's: the oldest the wheel accepts (its torch>=X), in a venv with nothing else, so
    pip resolves every other requirement from the index (PyPI and the configured mirrors): the newest SB3 and
    friends must accept that torch, else pip would replace it (SB3 2.9 needs torch >= 2.8: with torch>=2.4, a
    present torch 2.5 was swapped for the newest). pip decides from metadata alone, so the venv holds the floor's
    dist-info without its files (several GB of CUDA build otherwise), and pip only plans (--dry-run)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    metadata = zipfile.ZipFile(wheel_venv[1]).read("rlexp-0.1.0.dist-info/METADATA").decode()
    (torch_req,) = [Requirement(line.split(":", 1)[1]) for line in metadata.splitlines()
                    if line.startswith("Requires-Dist:") and Requirement(line.split(":", 1)[1]).name == "torch"]
    (floor,) = [s.version for s in torch_req.specifier if s.operator == ">="]
    assert floor != _run([sys.executable, "-c", "import torch; print(torch.__version__)"], cwd=tmp_path,
                         env=env).stdout.split("+")[0].strip()  # a torch other than the one this run has
    python, site = _bare_venv(tmp_path / "venv", env)
    dist = site / f"torch-{floor}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: torch\nVersion: {floor}\n")
    (dist / "INSTALLER").write_text("pip\n")
    (dist / "RECORD").write_text("")
    planned = _pip_install_report(python, wheel_venv[1], "--dry-run", cwd=tmp_path, env=env)
    assert "torch" not in planned, planned
    assert "stable-baselines3" in planned and "rlexp" in planned, planned  # resolved from the index, not found here
