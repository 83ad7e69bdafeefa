"""`overlap=true`: step the envs in a worker process while the gradient step runs.

SB3's off-policy loop is sequential: act, step the envs, store the transition, take the gradient step(s),
repeat. Here the step is split: right after storing transition t (and the checkpoint point that follows),
action t+1 is chosen with the current weights and sent to a worker process holding all the envs
(one process with a DummyVecEnv inside, not SB3's SubprocVecEnv with one process per env), and update t
runs while the worker steps. What changes, exactly: action t+1 is computed before update t, i.e. with
weights one gradient step (one `train()` call) older. Everything else -- counts, order of stored
transitions, warm-up, HER bookkeeping, when updates happen, what they sample -- is as before; with no
gradient steps (warm-up, or `algo.gradient_steps=0`) a run is bitwise equal to `overlap=false`.

Checkpoints and stops happen only when no step is in flight: `collect_rollouts` first finishes and stores
the step in flight, then calls `on_rollout_start` (where rlexp checkpoints), then launches the next one.
The envs' states come back from the worker for the checkpoint, so a resumed overlapped run is bitwise
equal to the uninterrupted overlapped run. The worker ignores the stop signals (the trainer handles them
and closes it) and dies with the trainer (PR_SET_PDEATHSIG, and end-of-file on its pipe).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import multiprocessing as mp
import os
import signal
import traceback
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from stable_baselines3.common.type_aliases import RolloutReturn, TrainFreq
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

from rlexp.errors import ConfigError

log = logging.getLogger("rlexp")
_LIVE: weakref.WeakSet[OverlapVecEnv] = weakref.WeakSet()  # workers to kill at exit if nobody closed them
# Env methods answered by a local copy of env 0 instead of the worker: pure functions of their arguments.
# HER calls compute_reward inside every gradient step, i.e. while the worker is busy stepping.
LOCAL_METHODS = ("compute_reward",)


# ------------------------------------------------------------------------------------------- worker
def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this process when the trainer dies, even by SIGKILL."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # elsewhere: end-of-file on the pipe still ends the worker


def _worker(conn: Any, parent_end: Any, env_node: dict[str, Any], extra: dict[str, Any], parent: int) -> None:
    parent_end.close()  # forked with the trainer's end open: close it, so the trainer's exit reads as end-of-file
    _die_with_parent()
    if os.getppid() != parent:  # the trainer died before prctl took effect
        return
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, signal.SIG_IGN)  # a stop is the trainer's to handle; it closes this worker
    from hydra.utils import instantiate

    from rlexp.components import with_current_target
    from rlexp.errors import unwrap_config_errors
    from rlexp.training import run_state as ck

    try:
        with unwrap_config_errors():
            venv = instantiate(with_current_target(OmegaConf.create(env_node)), _convert_="all", _recursive_=False,
                               **extra)
        conn.send(("ok", (venv.num_envs, venv.observation_space, venv.action_space)))
    except ConfigError as exc:  # bad env config: the trainer reports it as its own one-line error
        conn.send(("config", str(exc)))
        return
    except Exception:  # noqa: BLE001 - reported to the trainer, which raises it
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            cmd, data = conn.recv()
        except (EOFError, OSError):  # the trainer is gone
            break
        try:
            if cmd == "step":
                venv.step_async(data)
                result: Any = venv.step_wait()
            elif cmd == "reset":
                venv._seeds, venv._options = data
                result = venv.reset()
            elif cmd == "get_attr":
                result = venv.get_attr(*data)
            elif cmd == "set_attr":
                result = venv.set_attr(*data)
            elif cmd == "env_method":
                name, args, kwargs, indices = data
                result = venv.env_method(name, *args, indices=indices, **kwargs)
            elif cmd == "env_is_wrapped":
                result = venv.env_is_wrapped(*data)
            elif cmd == "get_images":
                result = venv.get_images()
            elif cmd == "get_states":  # data: the trainer's action-space RNG (it draws the warm-up actions)
                ck.set_space_rngs(venv.action_space, data)
                arrays = ck.Arrays()
                result = ([ck.env_state(e, arrays) for e in venv.envs], arrays.data)
            elif cmd == "set_states":
                states, arrays = data
                for env, state in zip(venv.envs, states, strict=True):
                    ck.set_env_state(env, state, ck.Arrays(arrays))
                result = ck.space_rngs(venv.action_space)
            elif cmd == "close":
                venv.close()
                conn.send(("ok", None))
                break
            else:
                raise ValueError(f"unknown command {cmd!r}")
            conn.send(("ok", result))
        except Exception:  # noqa: BLE001
            conn.send(("error", traceback.format_exc()))


def _map_arrays(value: Any, fn: Any) -> Any:
    """The encoded state with every {"__array__": key} reference replaced by fn(reference)."""
    if isinstance(value, dict):
        if "__array__" in value:
            return fn(value)
        return {k: _map_arrays(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_arrays(v, fn) for v in value]
    return value


@atexit.register  # before multiprocessing's exit hook, which joins daemon children it can only SIGTERM
def _kill_unclosed() -> None:
    for venv in list(_LIVE):
        if venv.process.is_alive():
            venv.process.kill()


class OverlapVecEnv(VecEnv):
    """All envs in one worker process; `step_async` returns at once, `step_wait` collects the result.

    Any other call to the worker first collects a step in flight (kept for `step_wait`). `env_states` /
    `set_env_states` are what rlexp.training.checkpoint saves and restores instead of a DummyVecEnv's envs.
    """

    def __init__(self, env_node: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
        """`env_node`: the resolved `env` config; `extra`: further factory arguments (builder.make_train_env)."""
        self.env_node = env_node
        ctx = mp.get_context("fork")  # fast, and no re-import of an unguarded __main__ (the child never runs torch)
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker, args=(child, self._conn, env_node, dict(extra or {}), os.getpid()),
                                   daemon=True, name="rlexp-overlap-envs")
        self.process.start()
        child.close()
        _LIVE.add(self)
        self._waiting = False
        self._arrived: VecEnvStepReturn | None = None
        self._local: Any = None
        self.closed = False
        num_envs, obs_space, act_space = self._recv()
        super().__init__(num_envs, obs_space, act_space)
        log.info("overlap: %d envs step in worker process %d while the gradient step runs", num_envs,
                 self.process.pid)

    # ---- pipe
    def _recv(self) -> Any:
        try:
            status, result = self._conn.recv()
        except (EOFError, OSError):
            raise RuntimeError(f"the overlap env worker (pid {self.process.pid}) died "
                               f"(exit code {self.process.exitcode})") from None
        if status == "config":
            self.process.join(timeout=10)
            raise ConfigError(result)
        if status == "error":
            raise RuntimeError(f"in the overlap env worker:\n{result}")
        return result

    def _call(self, cmd: str, data: Any = None) -> Any:
        self._collect()
        self._conn.send((cmd, data))
        return self._recv()

    def _collect(self) -> None:
        if self._waiting:
            self._waiting = False
            self._arrived = self._recv()

    @property
    def in_flight(self) -> bool:
        return self._waiting or self._arrived is not None

    # ---- VecEnv API
    def step_async(self, actions: np.ndarray) -> None:
        if self.in_flight:
            raise RuntimeError("step_async with a step already in flight")
        self._conn.send(("step", np.asarray(actions)))
        self._waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        self._collect()
        result, self._arrived = self._arrived, None
        if result is None:
            raise RuntimeError("step_wait without step_async")
        return result

    def reset(self) -> VecEnvObs:
        if self.in_flight:
            self.step_wait()  # a reset discards the step in flight
        obs = self._call("reset", (self._seeds, self._options))
        self._reset_seeds()
        self._reset_options()
        return obs

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._call("close")
        except (RuntimeError, OSError, ValueError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._conn.close()
        if self._local is not None:
            self._local.close()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return self._call("get_attr", (attr_name, indices))

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        self._call("set_attr", (attr_name, value, indices))

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        if method_name in LOCAL_METHODS:
            if self._local is None:
                from rlexp.components.envs import make_env_from_cfg

                self._local = make_env_from_cfg(self.env_node)
            method = self._local.get_wrapper_attr(method_name)
            return [method(*method_args, **method_kwargs) for _ in self._get_indices(indices)]
        return self._call("env_method", (method_name, method_args, method_kwargs, indices))

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        return self._call("env_is_wrapped", (wrapper_class, indices))

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self._call("get_images")

    # ---- checkpoint protocol (rlexp.training.run_state.runtime_state / set_runtime_state)
    def env_states(self, arrays: Any) -> list[dict[str, Any]]:
        """Every env's state, as a DummyVecEnv's envs would give it; only when no step is in flight."""
        from rlexp.training.run_state import space_rngs

        if self.in_flight:
            raise RuntimeError("checkpoint with an env step in flight: it would not describe one step")
        states, data = self._call("get_states", space_rngs(self.action_space))
        return _map_arrays(states, lambda ref: arrays.put(data[ref["__array__"]]))

    def set_env_states(self, states: list[dict[str, Any]], arrays: Any) -> None:
        from rlexp.training.run_state import set_space_rngs

        data: dict[str, np.ndarray] = {}

        def grab(ref: dict[str, str]) -> dict[str, str]:
            data[ref["__array__"]] = arrays.get(ref)
            return ref

        _map_arrays(states, grab)
        set_space_rngs(self.action_space, self._call("set_states", (states, data)))


# -------------------------------------------------------------------------------------------- mixin
class OverlapMixin:
    """collect_rollouts for an OffPolicyAlgorithm whose env is an OverlapVecEnv (see the module docstring).

    One call: finish the step in flight and store it (as SB3 does after `env.step`), `on_rollout_start`
    (checkpoint/stop point: nothing in flight), choose the next action with the current weights and launch
    it. The learn loop then runs `train()` while the worker steps.
    """

    _overlap_actions: tuple[np.ndarray, np.ndarray] | None = None  # (actions, buffer_actions) in flight

    def _setup_learn(self, *args: Any, **kwargs: Any) -> Any:
        env = getattr(self, "env", None)
        if self._overlap_actions is not None and isinstance(env, OverlapVecEnv):
            env.step_wait()  # a learn() that ended in an exception: its step was never stored
        self._overlap_actions = None
        return super()._setup_learn(*args, **kwargs)  # type: ignore[misc]

    def collect_rollouts(self, env: VecEnv, callback: Any, train_freq: TrainFreq, replay_buffer: Any,
                         action_noise: Any = None, learning_starts: int = 0,
                         log_interval: int | None = None) -> RolloutReturn:
        if not isinstance(env, OverlapVecEnv):
            return super().collect_rollouts(env, callback, train_freq, replay_buffer,  # type: ignore[misc]
                                            action_noise, learning_starts, log_interval)
        algo: Any = self
        algo.policy.set_training_mode(False)
        num_collected_episodes = 0
        if self._overlap_actions is not None:
            actions, buffer_actions = self._overlap_actions
            self._overlap_actions = None
            new_obs, rewards, dones, infos = env.step_wait()
            algo.num_timesteps += env.num_envs
            num_collected_steps = 1  # noqa: F841 - SB3's local name, for callbacks reading locals
            callback.update_locals(locals())
            if not callback.on_step():
                return RolloutReturn(env.num_envs, num_collected_episodes, continue_training=False)
            algo._update_info_buffer(infos, dones)
            algo._store_transition(replay_buffer, buffer_actions, new_obs, rewards, dones, infos)
            algo._update_current_progress_remaining(algo.num_timesteps, algo._total_timesteps)
            algo._on_step()
            for idx, done in enumerate(dones):
                if done:
                    num_collected_episodes += 1
                    algo._episode_num += 1
                    if action_noise is not None:
                        action_noise.reset(**(dict(indices=[idx]) if env.num_envs > 1 else {}))
                    if log_interval is not None and algo._episode_num % log_interval == 0:
                        algo.dump_logs()
        callback.on_rollout_start()  # nothing in flight: checkpoints describe one step
        if algo.num_timesteps < algo._total_timesteps:
            actions, buffer_actions = algo._sample_action(learning_starts, action_noise, env.num_envs)
            env.step_async(actions)
            self._overlap_actions = (actions, buffer_actions)
        callback.on_rollout_end()
        # One step's worth, as SB3 with train_freq=1 reports it (gradient_steps=-1 reads it). The first call
        # after a restore stored nothing here: its step was stored before the checkpoint.
        return RolloutReturn(env.num_envs, num_collected_episodes, continue_training=True)


def reserve_core(threads: int | str | None) -> None:
    """With `threads=auto` (or unset), leave the worker a core: one torch thread per core makes the update's
    threads wait on each other at every op while the worker holds one core (measured: 10-20x slower)."""
    if threads not in (None, "auto"):
        return
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if torch.get_num_threads() > max(1, cores - 1):
        torch.set_num_threads(max(1, cores - 1))
        log.info("overlap: torch uses %d thread(s), leaving a core to the env worker (set threads= to choose)",
                 torch.get_num_threads())


_COMPOSED: dict[type, type] = {}


def overlapped(algo_cls: type) -> type:
    """`algo_cls` with OverlapMixin in front; same name, so meta records and logs read as before."""
    if algo_cls not in _COMPOSED:
        _COMPOSED[algo_cls] = type(algo_cls.__name__, (OverlapMixin, algo_cls),
                                   {"__module__": __name__, "__qualname__": algo_cls.__qualname__})
    return _COMPOSED[algo_cls]
