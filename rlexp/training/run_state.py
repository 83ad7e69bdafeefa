"""What a checkpoint's `state.npz` holds besides weights and replay: everything SB3 and the envs keep between
two steps, so that a resumed run continues bitwise (random states, SB3's loop state, every sub-env's MuJoCo data,
goal, random generators and wrapper counters). Values become JSON with arrays collected beside it (`Arrays`);
nothing is pickled.
"""

from __future__ import annotations

import logging
import random
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv

from rlexp.errors import CheckpointError

log = logging.getLogger("rlexp")
# What SB3 keeps on the model between steps, besides weights and the env.
RUNTIME_SCALARS = ("num_timesteps", "_n_updates", "_episode_num", "_current_progress_remaining")
RUNTIME_ARRAYS = ("_last_obs", "_last_original_obs", "_last_episode_starts")
# Wrapper attributes that are configuration or references, not state.
_SKIP_ATTRS = {"env", "_saved_kwargs", "_action_space", "_observation_space", "_metadata", "_cached_spec",
               "_reward_range", "spec", "model", "data", "mujoco_renderer", "_ezpickle_args", "_ezpickle_kwargs",
               "results_writer"}  # Monitor's open monitor.csv: a resumed run reopens it (rlexp.training.logs)


# ------------------------------------------------------------------------------------------ encoding
class Arrays:
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


def _encode(value: Any, arrays: Arrays) -> tuple[bool, Any]:
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


def _decode(value: Any, arrays: Arrays) -> Any:
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
def rng_state(arrays: Arrays) -> dict[str, Any]:
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


def set_rng_state(state: dict[str, Any], arrays: Arrays) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, arrays.get(keys), pos, has_gauss, cached))
    th.set_rng_state(th.from_numpy(np.array(arrays.get(state["torch"]))))
    if state.get("cuda") and th.cuda.is_available():
        th.cuda.set_rng_state_all([th.from_numpy(np.array(arrays.get(s))) for s in state["cuda"]])


def space_rngs(space: gym.Space) -> dict[str, Any]:
    """A space's generator and its sub-spaces' (Dict.sample draws from each sub-space's own)."""
    out: dict[str, Any] = {"rng": _generator_state(space._np_random)}
    if isinstance(space, gym.spaces.Dict):
        out["sub"] = {k: space_rngs(s) for k, s in space.spaces.items()}
    elif isinstance(space, gym.spaces.Tuple):
        out["sub"] = {str(i): space_rngs(s) for i, s in enumerate(space.spaces)}
    return out


def set_space_rngs(space: gym.Space, state: dict[str, Any]) -> None:
    space._np_random = _generator(state["rng"])
    subs = state.get("sub") or {}
    if isinstance(space, gym.spaces.Dict):
        for k, s in space.spaces.items():
            set_space_rngs(s, subs[k])
    elif isinstance(space, gym.spaces.Tuple):
        for i, s in enumerate(space.spaces):
            set_space_rngs(s, subs[str(i)])


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


def env_state(env: gym.Env, arrays: Arrays) -> dict[str, Any]:
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
        own_spaces = {k: space_rngs(getattr(layer, k)) for k in ("_action_space", "_observation_space")
                      if isinstance(layer, gym.Wrapper) and getattr(layer, k, None) is not None}
        layers.append({"class": type(layer).__name__, "attrs": attrs, "spaces": own_spaces})
    base = env.unwrapped
    out: dict[str, Any] = {"layers": layers, "spaces": {"action": space_rngs(base.action_space),
                                                        "observation": space_rngs(base.observation_space)}}
    data = getattr(base, "data", None)
    if data is not None and hasattr(data, "qpos"):  # MuJoCo: all of mjData, derived quantities included
        # (Fetch reads body positions computed by the previous mj_step before the next one recomputes them.)
        out["mujoco"] = {"time": float(data.time), "fields": {n: arrays.put(getattr(data, n).copy())
                                                             for n in _mj_fields(data)}}
    return out


def set_env_state(env: gym.Env, state: dict[str, Any], arrays: Arrays) -> None:
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
            set_space_rngs(getattr(layer, name), rngs)
    base = env.unwrapped
    set_space_rngs(base.action_space, state["spaces"]["action"])
    set_space_rngs(base.observation_space, state["spaces"]["observation"])
    if "mujoco" in state:
        data = base.data
        data.time = state["mujoco"]["time"]
        for name, ref in state["mujoco"]["fields"].items():
            target, value = getattr(data, name), arrays.get(ref)
            if target.shape == value.shape:  # arena-backed arrays (contacts, constraints) are recomputed
                target[...] = value


# ------------------------------------------------------------------------------------ runtime states
def runtime_state(model: BaseAlgorithm, arrays: Arrays) -> dict[str, Any]:
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


def set_runtime_state(model: BaseAlgorithm, state: dict[str, Any], arrays: Arrays) -> bool:
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
