"""A checkpoint is one unit, written so a kill at any instant leaves the previous complete one.

Units are written every checkpoint_freq steps, where a stop lands, and when training ends (the state an
extension of the finished run continues from: rlexp.training.callbacks.CheckpointCallback).

What it holds, so that a resumed run ends bitwise equal to one never stopped (CPU, same seed):
- `step_N.zip`: SB3's weights and optimizer states (SB3's own format; we read only its tensors back);
- `step_N.state.npz`: Python/NumPy/torch random states, what SB3 keeps
  between steps (`_last_obs`, episode starts, episode-info buffers, counters) and every sub-env's state
  (MuJoCo data, goal, random generators of env and spaces, wrapper counters such as TimeLimit's step);
- `step_N.replay/`: the replay buffer's filled rows as .npy files plus `replay.json` (off-policy only);
- `step_N.meta.json`: the run's meta record with a manifest (size and sha256 of every part), written last.

Nothing here unpickles: arrays load with `allow_pickle=False`, the zip with `load_data=False` (tensors
only, `torch.load(weights_only=True)`); everything else is rebuilt from the recorded config.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from rlexp import artifacts
from rlexp.errors import CheckpointError
from rlexp.rundir import CHECKPOINT_FORMAT, Checkpoint, remove
from rlexp.training.replay_io import check_entry, manifest_entry, read_replay, verify_replay, write_replay
from rlexp.training.run_state import Arrays, runtime_state, set_runtime_state

__all__ = ["CheckpointError", "STATE_KEY", "has_replay", "load_weights", "restore", "save", "verify"]
STATE_KEY = "resume_state_json"  # the JSON side of the state, stored inside the .npz as bytes
mid_write_hook: Callable[[], None] | None = None  # set by rlexp.training.faults only


def save(model: BaseAlgorithm, ckpt: Checkpoint, write_meta: Callable[[Path, dict[str, Any]], None],
         replay: bool = True) -> dict[str, Any]:
    """Write every part, then the meta file that commits the unit. On failure nothing of this step
    stays behind (the previous checkpoint is untouched) and the exception propagates.

    `replay=False` leaves the replay buffer out (a finished run's last unit under `checkpoint_final=noreplay`):
    the unit then resumes like one whose buffer was pruned, with an empty buffer."""
    step = int(model.num_timesteps)
    ckpt.dir.mkdir(parents=True, exist_ok=True)
    try:
        artifacts.atomic_write(ckpt.zip, lambda tmp: model.save(tmp))
        arrays = Arrays()
        resume_state = runtime_state(model, arrays)
        blob = np.frombuffer(json.dumps(resume_state).encode(), dtype=np.uint8)

        def write_state(tmp: Path) -> None:
            np.savez(tmp, **arrays.data, **{STATE_KEY: blob})
            if mid_write_hook is not None:  # rlexp.training.faults: a signal while the unit is half written
                mid_write_hook()

        artifacts.atomic_write(ckpt.state, write_state)
        manifest: dict[str, Any] = {"format": CHECKPOINT_FORMAT, "step": step, "zip": manifest_entry(ckpt.zip),
                                    "state": manifest_entry(ckpt.state), "replay": None}
        buf = getattr(model, "replay_buffer", None)
        if replay and isinstance(model, OffPolicyAlgorithm) and buf is not None:
            manifest["replay"] = {"name": ckpt.replay.name, **write_replay(buf, ckpt.replay, step)}
        write_meta(ckpt.zip, {"checkpoint": str(ckpt.zip), "total_steps_done": step, "checkpoint_unit": manifest})
    except BaseException:
        for part in ckpt.parts():
            remove(part)
        raise
    return manifest


_VERIFIED: dict[tuple[str, int, int], dict[str, Any]] = {}


def verify(ckpt: Checkpoint) -> dict[str, Any]:
    """The meta record of a committed checkpoint whose parts all exist, match their hashes and step.

    Remembered per meta file (path, size, mtime) within a process: planning looks at a checkpoint twice.
    """
    try:
        stat = ckpt.meta.stat()
    except OSError:
        stat = None
    key = (str(ckpt.meta), stat.st_size, stat.st_mtime_ns) if stat else None
    if key in _VERIFIED:
        return _VERIFIED[key]
    meta = _verify(ckpt)
    if key is not None:
        _VERIFIED[key] = meta
    return meta


def _verify(ckpt: Checkpoint) -> dict[str, Any]:
    try:
        meta = artifacts.read_json(ckpt.meta)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{ckpt.meta} cannot be read ({exc.__class__.__name__}: {exc})") from None
    unit = meta.get("checkpoint_unit")
    if unit is None:
        return meta  # a checkpoint from before units (weights only): resumable approximately
    if unit.get("step") != ckpt.step or meta.get("total_steps") != ckpt.step:
        raise CheckpointError(f"{ckpt.meta} describes step {unit.get('step')}, not {ckpt.step}")
    for key in ("zip", "state"):
        check_entry(ckpt.dir / unit[key]["name"], unit[key], ckpt.meta.name)
    if unit.get("replay") and ckpt.replay.exists():  # pruned (older checkpoints): resumable without a buffer
        verify_replay(ckpt.replay, ckpt.step, unit["replay"].get("sha256_replay_json"))
    return meta


def has_replay(ckpt: Checkpoint, meta: dict[str, Any]) -> bool:
    unit = meta.get("checkpoint_unit") or {}
    return bool(unit.get("replay")) and (ckpt.replay / "replay.json").exists()


def load_weights(model: BaseAlgorithm, zip_path: Path) -> None:
    """Weights, optimizer states and SB3's extra tensors (SAC's log_ent_coef) from an SB3 zip, unpickling
    nothing: SB3's pickled fields are not read; the model was rebuilt from the recorded config."""
    from stable_baselines3.common.save_util import load_from_zip_file, recursive_setattr

    try:
        _, params, variables = load_from_zip_file(str(zip_path), load_data=False, device=model.device)
        model.set_parameters(params, exact_match=True, device=model.device)
    except Exception as exc:
        raise CheckpointError(f"cannot load weights from {zip_path} into {type(model).__name__}: "
                              f"{' '.join(str(a) for a in exc.args) or exc.__class__.__name__}") from None
    for name, value in (variables or {}).items():
        recursive_setattr(model, f"{name}.data", value.data)


def restore(model: BaseAlgorithm, ckpt: Checkpoint, meta: dict[str, Any]) -> dict[str, Any]:
    """Load a verified checkpoint into a model freshly built from its config. Returns what was restored."""
    load_weights(model, ckpt.zip)
    info: dict[str, Any] = {"exact": False, "replay_transitions": None}
    unit = meta.get("checkpoint_unit")
    buf = getattr(model, "replay_buffer", None)
    if isinstance(model, OffPolicyAlgorithm) and buf is not None:
        if unit is not None and has_replay(ckpt, meta):  # verify() checked the files
            info["replay_transitions"] = read_replay(buf, ckpt.replay, ckpt.step,
                                                     artifacts.read_json(ckpt.replay / "replay.json"))
    if unit is None:
        model.num_timesteps = int(meta["total_steps"])
        return info
    with np.load(ckpt.state, allow_pickle=False) as npz:
        arrays = Arrays({k: npz[k] for k in npz.files})
    state = json.loads(arrays.data.pop(STATE_KEY).tobytes())
    info["exact"] = set_runtime_state(model, state, arrays)
    return info
