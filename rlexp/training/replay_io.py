"""A replay buffer on disk: its filled rows as `.npy` files plus `replay.json` (the manifest), written through a
temp directory and renamed, verified by size and sha256 before it is read back. Also the manifest entries the
checkpoint unit uses for its other parts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from rlexp import artifacts
from rlexp.errors import CheckpointError
from rlexp.rundir import CHECKPOINT_FORMAT


def _per_transition(buf: Any, arr: np.ndarray) -> bool:
    """Arrays laid out (rows, envs, ...) hold one entry per transition; others (HER's per-env episode start) are
    saved whole."""
    return arr.ndim >= 2 and arr.shape[:2] == (buf.buffer_size, buf.n_envs)


def buffer_arrays(buf: Any) -> tuple[dict[str, np.ndarray], int]:
    """The filled rows of every per-transition array (views), plus whole small arrays."""
    n = buf.buffer_size if buf.full else buf.pos
    out: dict[str, np.ndarray] = {}

    def add(name: str, arr: np.ndarray) -> None:
        out[name] = arr[:n] if _per_transition(buf, arr) else arr

    for name, value in vars(buf).items():
        if isinstance(value, np.ndarray) and value.dtype != object:
            add(name, value)
        elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray) for v in value.values()) \
                and all(isinstance(k, str) for k in value):
            for key, arr in value.items():
                add(f"{name}.{key}", arr)
    extra = getattr(buf, "extra_state", None)
    if extra is not None:
        out.update({f"extra.{k}": v for k, v in extra().items()})
    return out, n


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def manifest_entry(path: Path) -> dict[str, Any]:
    """A part's record in a manifest: what verification compares the file against."""
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}


def check_entry(path: Path, record: dict[str, Any], manifest: str) -> None:
    if not path.exists() or path.stat().st_size != record["bytes"] or sha256(path) != record["sha256"]:
        raise CheckpointError(f"{path} is missing or corrupted (size or sha256 differ from {manifest})")


def write_replay(buf: Any, target: Path, step: int) -> dict[str, Any]:
    """Write the buffer into directory `target` through a temp directory; return its manifest."""
    arrays, n = buffer_arrays(buf)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        files: dict[str, dict[str, Any]] = {}
        for name, arr in arrays.items():
            path = tmp / f"{name}.npy"
            np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
            artifacts.fsync(path)
            files[path.name] = manifest_entry(path)
        infos = None
        if getattr(buf, "copy_info_dict", False) and hasattr(buf, "infos"):
            infos = json.loads(json.dumps(buf.infos[:n].tolist(), default=lambda o: o.item()
                                          if isinstance(o, np.generic) else str(o)))
        meta = {"format": CHECKPOINT_FORMAT, "step": step, "class": f"{type(buf).__module__}.{type(buf).__qualname__}",
                "buffer_size": int(buf.buffer_size), "n_envs": int(buf.n_envs), "pos": int(buf.pos),
                "full": bool(buf.full), "rows": int(n), "transitions": int(n * buf.n_envs), "files": files,
                "infos": infos}
        artifacts.write_json(tmp / "replay.json", meta)
        os.chmod(tmp, 0o777 & ~artifacts._UMASK)
        os.replace(tmp, target)
        artifacts.fsync(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"bytes": sum(f["bytes"] for f in files.values()), "transitions": meta["transitions"],
            "sha256_replay_json": sha256(target / "replay.json")}


def verify_replay(source: Path, step: int, replay_jsonsha256: str | None = None) -> dict[str, Any]:
    """replay.json (matching the checkpoint's record) and every array file it lists, by size and sha256."""
    if replay_jsonsha256 is not None and (not (source / "replay.json").exists()
                                           or sha256(source / "replay.json") != replay_jsonsha256):
        raise CheckpointError(f"{source / 'replay.json'} is missing or corrupted (sha256 differs from the record)")
    meta = artifacts.read_json(source / "replay.json")
    if meta.get("step") != step:
        raise CheckpointError(f"{source} holds the replay of step {meta.get('step')}, not {step}")
    for fname, record in meta["files"].items():
        check_entry(source / fname, record, "replay.json")
    return meta


def read_replay(buf: Any, source: Path, step: int, verified: dict[str, Any] | None = None) -> int:
    """Fill a freshly built buffer from `source`; returns the number of transitions restored."""
    meta = verified or verify_replay(source, step)
    for key in ("buffer_size", "n_envs"):
        if meta[key] != int(getattr(buf, key)):
            raise CheckpointError(f"{source}: replay {key} {meta[key]} differs from this config's "
                                  f"{getattr(buf, key)}")
    arrays, _ = buffer_arrays(buf)
    extra: dict[str, np.ndarray] = {}
    for fname in meta["files"]:
        path = source / fname
        name = fname[: -len(".npy")]
        value = np.load(path, mmap_mode="r", allow_pickle=False)
        if name.startswith("extra."):
            extra[name[len("extra."):]] = np.array(value)
            continue
        obj, _, key = name.partition(".")
        target = getattr(buf, obj)[key] if key else getattr(buf, obj)
        rows = meta["rows"] if _per_transition(buf, target) else target.shape[0]
        if target[:rows].shape != value.shape:
            raise CheckpointError(f"{path}: shape {value.shape} does not fit the buffer ({target[:rows].shape})")
        target[:rows] = value
    missing = set(arrays) - {f[: -len(".npy")] for f in meta["files"]}
    if missing:
        raise CheckpointError(f"{source}: no data for buffer arrays {sorted(missing)}")
    if extra:
        buf.load_extra_state(extra)
    if meta.get("infos") is not None:
        for i, row in enumerate(meta["infos"]):
            buf.infos[i] = row
    buf.pos, buf.full = meta["pos"], meta["full"]
    return int(meta["transitions"])
