"""Writing a run's files: atomic JSON/zip writes, library versions and git state for the meta record.

Where the files go is rlexp.rundir's business."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write through a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix last: SB3 appends ".zip" to paths that do not end in it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file normal permissions
        fsync(Path(tmp))  # durable before it is visible: a crash never leaves a named but empty file
        os.replace(tmp, path)
        fsync(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def fsync(path: Path) -> None:
    """Flush a file's or a folder's entries to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: str | Path, data: Any) -> Path:
    def _write(tmp: Path) -> None:
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True, default=str)
            fh.write("\n")

    return atomic_write(path, _write)


def read_json(path: str | Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def versions() -> dict[str, str | None]:
    """Library versions the book's meta records, plus numpy and hydra."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "gymnasium", "gymnasium-robotics", "mujoco", "stable-baselines3", "numpy", "hydra-core"):
        try:
            out[dist.replace("-", "_")] = version(dist)
        except PackageNotFoundError:
            out[dist.replace("-", "_")] = None
    out["torch_cuda"] = torch.version.cuda
    return out


def git_state(cwd: str | Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the project checkout, or nulls outside a git repo."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent.parent

    def _git(*args: str) -> str | None:
        try:
            res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout.strip() if res.returncode == 0 else None

    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}
