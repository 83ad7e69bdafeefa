"""A checkpoint is one unit, written so a kill at any instant leaves the previous complete one.

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

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv

from rlexp import artifacts
from rlexp.errors import ConfigError
from rlexp.rundir import Checkpoint, remove

log = logging.getLogger("rlexp")
FORMAT = 1
STATE_KEY = "resume_state_json"  # the JSON side of the state, stored inside the .npz as bytes
mid_write_hook: Callable[[], None] | None = None  # set by rlexp.training.faults only
# What SB3 keeps on the model between steps, besides weights and the env.
RUNTIME_SCALARS = ("num_timesteps", "_n_updates", "_episode_num", "_current_progress_remaining")
RUNTIME_ARRAYS = ("_last_obs", "_last_original_obs", "_last_episode_starts")
# Wrapper attributes that are configuration or references, not state.
_SKIP_ATTRS = {"env", "_saved_kwargs", "_action_space", "_observation_space", "_metadata", "_cached_spec",
               "_reward_range", "spec", "model", "data", "mujoco_renderer", "_ezpickle_args", "_ezpickle_kwargs",
               "results_writer"}  # Monitor's open monitor.csv: a resumed run reopens it (rlexp.training.logs)


class CheckpointError(ConfigError):
    """A checkpoint that is incomplete, corrupted or does not match the config resuming it."""


# ------------------------------------------------------------------------------------------ encoding
class _Arrays:
    """Arrays collected under unique keys while the JSON side keeps references to them."""

    def __init__(self, data: dict[str, np.ndarray] | None = None) -> None:
        self.data: dict[str, np.ndarray] = dict(data or {})

    def put(self, value: np.ndarray) -> dict[str, str]:
        key = f"a{len(self.data)}"
        self.data[key] = np.asarray(value)
        return {"__array__": key}

    def get(self, ref: dict[str, str]) -> np.ndarray:
        return self.data[ref["__array__"]]


def _generator_state(gen: np.random.Generator | None) -> dict[str, Any] | None:
    return None if gen is None else gen.bit_generator.state


def _generator(state: dict[str, Any] | None) -> np.random.Generator | None:
    if state is None:
        return None
    gen = np.random.Generator(getattr(np.random, state["bit_generator"])())
    gen.bit_generator.state = state
    return gen


def _encode(value: Any, arrays: _Arrays) -> tuple[bool, Any]:
    """(True, JSON-able form) for state-like values; (False, None) for anything else (left alone)."""
    if value is None or isinstance(value, bool | int | float | str):
        return True, value
    if isinstance(value, np.generic):
        return True, value.item()
    if isinstance(value, np.ndarray) and value.dtype != object:
        return True, arrays.put(value)
    if isinstance(value, np.random.Generator):
        return True, {"__generator__": _generator_state(value)}
    if isinstance(value, list | deque | tuple):
        items = [_encode(v, arrays) for v in value]
        if all(ok for ok, _ in items):
            out: dict[str, Any] = {"__list__": [v for _, v in items]}
            if isinstance(value, deque):
                out["maxlen"] = value.maxlen
            if isinstance(value, tuple):
                out["tuple"] = True
            return True, out
        return False, None
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        items = {k: _encode(v, arrays) for k, v in value.items()}
        if all(ok for ok, _ in items.values()):
            return True, {"__dict__": {k: v for k, (_, v) in items.items()}}
    return False, None


def _decode(value: Any, arrays: _Arrays) -> Any:
    if isinstance(value, dict):
        if "__array__" in value:
            return np.array(arrays.get(value))
        if "__generator__" in value:
            return _generator(value["__generator__"])
        if "__list__" in value:
            items = [_decode(v, arrays) for v in value["__list__"]]
            if value.get("tuple"):
                return tuple(items)
            return deque(items, maxlen=value["maxlen"]) if "maxlen" in value else items
        if "__dict__" in value:
            return {k: _decode(v, arrays) for k, v in value["__dict__"].items()}
    return value


# ------------------------------------------------------------------------------------- random states
def rng_state(arrays: _Arrays) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, arrays.put(keys), int(pos), int(has_gauss), float(cached)],
        "torch": arrays.put(th.get_rng_state().numpy()),
        "cuda": None,
    }
    if th.cuda.is_available() and th.cuda.is_initialized():
        state["cuda"] = [arrays.put(s.numpy()) for s in th.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any], arrays: _Arrays) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, arrays.get(keys), pos, has_gauss, cached))
    th.set_rng_state(th.from_numpy(np.array(arrays.get(state["torch"]))))
    if state.get("cuda") and th.cuda.is_available():
        th.cuda.set_rng_state_all([th.from_numpy(np.array(arrays.get(s))) for s in state["cuda"]])


def _space_rngs(space: gym.Space) -> dict[str, Any]:
    """A space's generator and its sub-spaces' (Dict.sample draws from each sub-space's own)."""
    out: dict[str, Any] = {"rng": _generator_state(space._np_random)}
    if isinstance(space, gym.spaces.Dict):
        out["sub"] = {k: _space_rngs(s) for k, s in space.spaces.items()}
    elif isinstance(space, gym.spaces.Tuple):
        out["sub"] = {str(i): _space_rngs(s) for i, s in enumerate(space.spaces)}
    return out


def _set_space_rngs(space: gym.Space, state: dict[str, Any]) -> None:
    space._np_random = _generator(state["rng"])
    subs = state.get("sub") or {}
    if isinstance(space, gym.spaces.Dict):
        for k, s in space.spaces.items():
            _set_space_rngs(s, subs[k])
    elif isinstance(space, gym.spaces.Tuple):
        for i, s in enumerate(space.spaces):
            _set_space_rngs(s, subs[str(i)])


# ---------------------------------------------------------------------------------------- env states
def _chain(env: gym.Env) -> list[gym.Env]:
    chain = [env]
    while isinstance(chain[-1], gym.Wrapper):
        chain.append(chain[-1].env)
    return chain


# mjData arrays in MuJoCo's arena, sized by this step's constraints: scratch that mj_step recomputes before
# reading (warm starts come from qacc_warmstart, which is saved), and whose unused tail is uninitialised.
_MJ_SCRATCH = ("efc_", "iefc_", "efm_", "map_efc2iefc", "map_iefc2efc")


def _mj_fields(data: Any) -> list[str]:
    return [n for n in dir(data) if not n.startswith(("_", *_MJ_SCRATCH))
            and isinstance(getattr(data, n, None), np.ndarray)]


_WARNED: set[tuple[str, str]] = set()


def _warn_unsaved(layer: gym.Env, name: str, value: Any) -> None:
    """A wrapper attribute that is neither plain data, arrays nor a generator: say once that it is not saved."""
    key = (type(layer).__name__, name)
    if key not in _WARNED and not callable(value):
        _WARNED.add(key)
        log.warning("checkpoint: %s.%s (%s) is not saved; if it changes during an episode, a resumed run can "
                    "differ from an uninterrupted one", key[0], name, type(value).__name__)


def env_state(env: gym.Env, arrays: _Arrays) -> dict[str, Any]:
    """Everything an env (with its wrappers) needs to continue the episode in progress exactly."""
    layers = []
    for layer in _chain(env):
        attrs = {}
        for name, value in vars(layer).items():
            if name in _SKIP_ATTRS:
                continue
            ok, enc = _encode(value, arrays)
            if ok:
                attrs[name] = enc
            elif isinstance(layer, gym.Wrapper):
                _warn_unsaved(layer, name, value)
        own_spaces = {k: _space_rngs(getattr(layer, k)) for k in ("_action_space", "_observation_space")
                      if isinstance(layer, gym.Wrapper) and getattr(layer, k, None) is not None}
        layers.append({"class": type(layer).__name__, "attrs": attrs, "spaces": own_spaces})
    base = env.unwrapped
    out: dict[str, Any] = {"layers": layers, "spaces": {"action": _space_rngs(base.action_space),
                                                        "observation": _space_rngs(base.observation_space)}}
    data = getattr(base, "data", None)
    if data is not None and hasattr(data, "qpos"):  # MuJoCo: all of mjData, derived quantities included
        # (Fetch reads body positions computed by the previous mj_step before the next one recomputes them.)
        out["mujoco"] = {"time": float(data.time), "fields": {n: arrays.put(getattr(data, n).copy())
                                                             for n in _mj_fields(data)}}
    return out


def set_env_state(env: gym.Env, state: dict[str, Any], arrays: _Arrays) -> None:
    chain = _chain(env)
    classes = [type(layer).__name__ for layer in chain]
    saved = [layer["class"] for layer in state["layers"]]
    if classes != saved:
        raise CheckpointError(f"env wrappers differ from the checkpoint's: {saved} vs {classes}")
    for layer, saved_layer in zip(chain, state["layers"], strict=True):
        for name, enc in saved_layer["attrs"].items():
            if name not in _SKIP_ATTRS:  # older checkpoints saved Monitor's results_writer (None then)
                setattr(layer, name, _decode(enc, arrays))
        for name, rngs in saved_layer.get("spaces", {}).items():  # a wrapper's own (rescaled) spaces
            _set_space_rngs(getattr(layer, name), rngs)
    base = env.unwrapped
    _set_space_rngs(base.action_space, state["spaces"]["action"])
    _set_space_rngs(base.observation_space, state["spaces"]["observation"])
    if "mujoco" in state:
        data = base.data
        data.time = state["mujoco"]["time"]
        for name, ref in state["mujoco"]["fields"].items():
            target, value = getattr(data, name), arrays.get(ref)
            if target.shape == value.shape:  # arena-backed arrays (contacts, constraints) are recomputed
                target[...] = value


# ------------------------------------------------------------------------------------ runtime states
def runtime_state(model: BaseAlgorithm, arrays: _Arrays) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(model, k) for k in RUNTIME_SCALARS}
    for name in RUNTIME_ARRAYS:
        out[name] = _encode(getattr(model, name, None), arrays)[1]
    for name in ("ep_info_buffer", "ep_success_buffer"):
        out[name] = _encode(list(getattr(model, name) or []), arrays)[1]
    venv = model.get_env()
    if isinstance(venv, DummyVecEnv):
        out["envs"] = [env_state(e, arrays) for e in venv.envs]
    elif hasattr(venv, "env_states"):  # overlap=true: the same states, from its worker (rlexp.fast.overlap)
        out["envs"] = venv.env_states(arrays)
    else:
        out["envs"] = None  # SubprocVecEnv: sub-envs live in other processes
    out["rng"] = rng_state(arrays)
    return out


def set_runtime_state(model: BaseAlgorithm, state: dict[str, Any], arrays: _Arrays) -> bool:
    """Restore; False when the env state could not be (SubprocVecEnv): the caller resets the envs."""
    for k in RUNTIME_SCALARS:
        setattr(model, k, state[k])
    window = model._stats_window_size
    model.ep_info_buffer = deque(_decode(state["ep_info_buffer"], arrays), maxlen=window)
    model.ep_success_buffer = deque(_decode(state["ep_success_buffer"], arrays), maxlen=window)
    venv = model.get_env()
    exact = state.get("envs") is not None and (isinstance(venv, DummyVecEnv) or hasattr(venv, "set_env_states"))
    if exact:
        if isinstance(venv, DummyVecEnv):
            for env, env_saved in zip(venv.envs, state["envs"], strict=True):
                set_env_state(env, env_saved, arrays)
        else:
            venv.set_env_states(state["envs"], arrays)
        for name in RUNTIME_ARRAYS:
            setattr(model, name, _decode(state[name], arrays))
    set_rng_state(state["rng"], arrays)  # last: nothing after this may draw before learning continues
    return exact


# -------------------------------------------------------------------------------------- replay buffer
def _per_transition(buf: Any, arr: np.ndarray) -> bool:
    """Arrays laid out (rows, envs, ...) hold one entry per transition; others (HER's per-env episode start) are
    saved whole."""
    return arr.ndim >= 2 and arr.shape[:2] == (buf.buffer_size, buf.n_envs)


def _buffer_arrays(buf: Any) -> tuple[dict[str, np.ndarray], int]:
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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _part(path: Path) -> dict[str, Any]:
    """A part's record in a manifest: what verification compares the file against."""
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": _sha256(path)}


def _check_part(path: Path, record: dict[str, Any], manifest: str) -> None:
    if not path.exists() or path.stat().st_size != record["bytes"] or _sha256(path) != record["sha256"]:
        raise CheckpointError(f"{path} is missing or corrupted (size or sha256 differ from {manifest})")


def write_replay(buf: Any, target: Path, step: int) -> dict[str, Any]:
    """Write the buffer into directory `target` through a temp directory; return its manifest."""
    arrays, n = _buffer_arrays(buf)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        files: dict[str, dict[str, Any]] = {}
        for name, arr in arrays.items():
            path = tmp / f"{name}.npy"
            np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
            artifacts.fsync(path)
            files[path.name] = _part(path)
        infos = None
        if getattr(buf, "copy_info_dict", False) and hasattr(buf, "infos"):
            infos = json.loads(json.dumps(buf.infos[:n].tolist(), default=lambda o: o.item()
                                          if isinstance(o, np.generic) else str(o)))
        meta = {"format": FORMAT, "step": step, "class": f"{type(buf).__module__}.{type(buf).__qualname__}",
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
            "sha256_replay_json": _sha256(target / "replay.json")}


def verify_replay(source: Path, step: int, replay_json_sha256: str | None = None) -> dict[str, Any]:
    """replay.json (matching the checkpoint's record) and every array file it lists, by size and sha256."""
    if replay_json_sha256 is not None and (not (source / "replay.json").exists()
                                           or _sha256(source / "replay.json") != replay_json_sha256):
        raise CheckpointError(f"{source / 'replay.json'} is missing or corrupted (sha256 differs from the record)")
    meta = artifacts.read_json(source / "replay.json")
    if meta.get("step") != step:
        raise CheckpointError(f"{source} holds the replay of step {meta.get('step')}, not {step}")
    for fname, record in meta["files"].items():
        _check_part(source / fname, record, "replay.json")
    return meta


def read_replay(buf: Any, source: Path, step: int, verified: dict[str, Any] | None = None) -> int:
    """Fill a freshly built buffer from `source`; returns the number of transitions restored."""
    meta = verified or verify_replay(source, step)
    for key in ("buffer_size", "n_envs"):
        if meta[key] != int(getattr(buf, key)):
            raise CheckpointError(f"{source}: replay {key} {meta[key]} differs from this config's "
                                  f"{getattr(buf, key)}")
    arrays, _ = _buffer_arrays(buf)
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


# ------------------------------------------------------------------------------------ the whole unit
def save(model: BaseAlgorithm, ckpt: Checkpoint, write_meta: Callable[[Path, dict[str, Any]], None]) -> dict[str, Any]:
    """Write every part, then the meta file that commits the unit. On failure nothing of this step
    stays behind (the previous checkpoint is untouched) and the exception propagates."""
    step = int(model.num_timesteps)
    ckpt.dir.mkdir(parents=True, exist_ok=True)
    try:
        artifacts.atomic_write(ckpt.zip, lambda tmp: model.save(tmp))
        arrays = _Arrays()
        resume_state = runtime_state(model, arrays)
        blob = np.frombuffer(json.dumps(resume_state).encode(), dtype=np.uint8)

        def write_state(tmp: Path) -> None:
            np.savez(tmp, **arrays.data, **{STATE_KEY: blob})
            if mid_write_hook is not None:  # rlexp.training.faults: a signal while the unit is half written
                mid_write_hook()

        artifacts.atomic_write(ckpt.state, write_state)
        manifest: dict[str, Any] = {"format": FORMAT, "step": step, "zip": _part(ckpt.zip),
                                    "state": _part(ckpt.state), "replay": None}
        buf = getattr(model, "replay_buffer", None)
        if isinstance(model, OffPolicyAlgorithm) and buf is not None:
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
        _check_part(ckpt.dir / unit[key]["name"], unit[key], ckpt.meta.name)
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
        arrays = _Arrays({k: npz[k] for k in npz.files})
    state = json.loads(arrays.data.pop(STATE_KEY).tobytes())
    info["exact"] = set_runtime_state(model, state, arrays)
    return info
