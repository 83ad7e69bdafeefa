"""Every private API rlexp uses (docs/architecture.md, "Private APIs"), checked against the installed versions.

Each test names the one use it guards: when a new torch, SB3, gymnasium-robotics, Hydra, submitit or TensorBoard
moves or changes it, this file fails with the name of the use, before a run fails somewhere less obvious.
"""

from __future__ import annotations

import inspect
import signal

import torch as th


def test_torch_module_hook_dicts() -> None:
    """rlexp/fast/sac.py `hooked`: torch has no public "has hooks" query."""
    from torch.nn.modules import module

    from rlexp.fast.sac import _GLOBAL_HOOKS, _MODULE_HOOKS, hooked

    for name in _GLOBAL_HOOKS:
        assert isinstance(getattr(module, name), dict), name
    layer = th.nn.Linear(2, 2)
    for name in _MODULE_HOOKS:
        assert isinstance(getattr(layer, name), dict), name
    assert not hooked([layer])
    handle = layer.register_forward_hook(lambda *_: None)
    assert hooked([layer])
    handle.remove()
    handle = th.nn.modules.module.register_module_forward_hook(lambda *_: None)
    assert hooked([layer])
    handle.remove()


def test_gymnasium_robotics_fetch_internals() -> None:
    """rlexp/fast/fetch_index.py replaces these methods on the env instance and reads `_model_names`."""
    from gymnasium_robotics.envs.fetch.fetch_env import MujocoFetchEnv

    for name in ("_get_obs", "_set_action", "_step_callback", "generate_mujoco_observations"):
        assert callable(getattr(MujocoFetchEnv, name, None)), name
    import gymnasium as gym

    from rlexp.components.envs import register_robotics

    register_robotics()
    env = gym.make("FetchReach-v4").unwrapped
    assert any(n.startswith("robot") for n in env._model_names.joint_names)
    env.close()


def test_sb3_off_policy_loop_internals() -> None:
    """rlexp/fast/overlap.py re-runs OffPolicyAlgorithm.collect_rollouts' body with these; rlexp/training/run_state.py
    saves the loop's state between steps; rlexp/training/callbacks.py reads `_vec_normalize_env`."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
    from stable_baselines3.common.vec_env import DummyVecEnv

    from rlexp.fast.overlap import OverlapMixin
    from rlexp.training.run_state import RUNTIME_ARRAYS, RUNTIME_SCALARS

    for name in ("_store_transition", "_sample_action", "_update_info_buffer", "_on_step",
                 "_update_current_progress_remaining", "_setup_learn", "_excluded_save_params",
                 "_update_learning_rate"):
        assert callable(getattr(OffPolicyAlgorithm, name, None)), name
    ours = inspect.signature(OverlapMixin.collect_rollouts).parameters
    assert list(inspect.signature(OffPolicyAlgorithm.collect_rollouts).parameters) == list(ours)
    model = SAC("MlpPolicy", DummyVecEnv([lambda: __import__("gymnasium").make("Pendulum-v1")]), buffer_size=100)
    model._setup_learn(10)
    for name in (*RUNTIME_SCALARS, *RUNTIME_ARRAYS, "_total_timesteps", "_stats_window_size", "_vec_normalize_env"):
        assert hasattr(model, name), name
    venv = model.get_env()
    assert isinstance(venv._seeds, list) and isinstance(venv._options, list)


def test_hydra_internals() -> None:
    """hydra_plugins/rlexp_launchers: BasicLauncher (the sequential launcher's base; Hydra exposes it nowhere else)
    and get_overrides_dirname (a job's directory name before the job runs, exactly as Hydra makes it);
    rlexp/config.py sweep_jobs: BasicSweeper.split_arguments (the same expansion as `-m`)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.plugins.launcher import Launcher

    assert issubclass(BasicLauncher, Launcher)
    parsed = OverridesParser.create().parse_overrides(["seed=1", "algo.gamma=0.9", "threads=1"])
    assert get_overrides_dirname(overrides=parsed, exclude_keys=["threads"], item_sep=",", kv_sep="=") == \
        "algo.gamma=0.9,seed=1"
    jobs = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(["seed=0,1", "x=2"]), None)[0]
    assert jobs == [["seed=0", "x=2"], ["seed=1", "x=2"]]
    from rlexp.config import BASIC_SWEEPER  # the sweeper `_target_` sweep_jobs recognises

    assert f"{BasicSweeper.__module__}.{BasicSweeper.__qualname__}" == BASIC_SWEEPER


def test_hydra_args_parser() -> None:
    """rlexp/app.py `main`: Hydra's own parser of the command line, read before @hydra.main runs."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(["-m", "seed=0,1", "+experiment=x"])
    assert args.multirun and args.overrides == ["seed=0,1", "+experiment=x"]
    assert (args.config_path, args.config_name, args.config_dir) == (None, None, None)


def test_submitit_internals() -> None:
    """hydra_plugins/rlexp_launchers/launchers.py: the watcher's poll delay, submitit's requeue handler (called
    once our checkpoint is on disk) and the signal submitit requeues on."""
    import submitit
    from submitit.core.job_environment import SignalHandler
    from submitit.slurm.slurm import SlurmJob

    assert isinstance(SlurmJob.watcher._delay_s, int | float)
    assert callable(SignalHandler.checkpoint_and_try_requeue)
    assert isinstance(getattr(signal, "SIG" + submitit.JobEnvironment.USR_SIG), signal.Signals)


def test_tensorboard_event_files(tmp_path) -> None:  # noqa: ANN001
    """rlexp/training/tblog.py rewrites a run's event history with TensorBoard's own reader and writer, and
    writes a run's events as TFRecords framed by TensorBoard's RecordWriter (read back by its loader here)."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from rlexp.training.tblog import EventsWriter

    assert callable(LegacyEventFileLoader.Load) and callable(EventFileWriter.add_event)
    writer = EventsWriter(tmp_path)
    writer.write({"a/b": 1.5, "c": 2}, {"a/b": None, "c": ("tensorboard",)}, step=7)
    writer.close()
    [path] = tmp_path.glob("events.out.tfevents.*")
    events = list(LegacyEventFileLoader(str(path)).Load())
    assert events[0].file_version == "brain.Event:2"
    assert [(e.step, v.tag, v.simple_value) for e in events[1:] for v in e.summary.value] == [(7, "a/b", 1.5)]


def test_sb3_monitor_results_writer(tmp_path) -> None:  # noqa: ANN001
    """rlexp/components/envs.py gives each Monitor a rlexp.diskfull.MonitorWriter as `results_writer`: SB3's Monitor
    calls its `write_row` at every episode end and `close` when closed, and keeps `t_start` for the header."""
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    from rlexp.diskfull import MonitorWriter

    env = Monitor(gym.make("Pendulum-v1", max_episode_steps=2))
    assert env.results_writer is None and isinstance(env.t_start, float)
    env.results_writer = MonitorWriter(tmp_path / "0.monitor.csv", {"t_start": env.t_start}, ("r", "l", "t"))
    env.reset(seed=0)
    for _ in range(2):
        env.step(env.action_space.sample())
    env.close()
    lines = (tmp_path / "0.monitor.csv").read_text().splitlines()
    assert lines[0].startswith('#{"t_start"') and lines[1] == "r,l,t" and lines[2].split(",")[1] == "2"


def test_atexit_run_exitfuncs() -> None:
    """tests/zygote.py: a forked command runs its exit handlers through atexit's own runner, then os._exit.
    (In a child interpreter: in this one it would run pytest's handlers too.)"""
    import subprocess
    import sys

    code = "import atexit, os; atexit.register(print, 'ran'); atexit._run_exitfuncs(); os._exit(0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout == "ran\n", f"atexit._run_exitfuncs no longer runs the registered handlers: {out}"
