"""Bad input: a clear message and a non-zero exit before any training, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import rlexp
from rlexp.errors import ConfigError
from rlexp.runner import run_task

from helpers import ROOT, _env, run_py

# Checked in-process (fast): the ConfigError message. (overrides, message)
CONFIG_ERRORS = [
    (["env.id=FetchPusj-v4"], "Did you mean: FetchPush-v4"),
    (["+experiment=ch03_ppo_reach_dense", "buffer=her"], "HER cannot be used with PPO"),
    (["+experiment=ch03_ppo_reach_dense", "buffer=replay"], "PPO is on-policy"),
    (["+experiment=ch05_her_reach", "env.id=Pendulum-v1"], "HER needs a goal-conditioned env"),
    (["encoder=nature_cnn"], "encoder NatureCNN cannot read the observation space"),
    (["total_steps=0"], "total_steps must be a positive integer"),
    (["total_steps=-5"], "total_steps must be a positive integer"),
    (["n_envs=0"], "n_envs must be a positive integer"),
    (["eval.n_episodes=0"], "eval.n_episodes must be a positive integer"),
    (["checkpoint_freq=-1"], "checkpoint_freq must be"),
    (["threads=0"], "threads must be a positive integer or null"),
    (["algo.batch_size=0"], "algo.batch_size must be positive"),
    (["algo._target_=stable_baselines3.NOPE"], "cannot be imported"),
    (["resume=/nonexistent/run"], "checkpoint not found"),
]


@pytest.mark.parametrize("overrides,message", CONFIG_ERRORS, ids=[" ".join(c[0]) for c in CONFIG_ERRORS])
def test_bad_config_raises_before_training(tmp_path: Path, overrides: list[str], message: str) -> None:
    cfg = rlexp.compose(*overrides, "progress=false")
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        run_task(cfg, tmp_path)
    assert not (tmp_path / "tb").exists() and not (tmp_path / "checkpoints").exists()  # nothing trained


# As a user sees them: exit code, one line on stderr, no traceback. (overrides, exit code, message)
CLI_ERRORS = [
    (["+experiment=ch99_nope"], 1, "Available options in 'experiment'"),
    (["algo=nope"], 1, "Available options in 'algo'"),
    (["+experiment=ch03_ppo_reach_dense", "buffer=her"], 2, "error: HER cannot be used with PPO"),
    (["encoder=nature_cnn"], 2, "error: encoder NatureCNN cannot read"),
    (["total_steps=0"], 2, "error: total_steps must be a positive integer"),
]


@pytest.mark.parametrize("overrides,code,message", CLI_ERRORS, ids=[" ".join(c[0]) for c in CLI_ERRORS])
def test_bad_input_on_the_command_line(tmp_path: Path, overrides: list[str], code: int, message: str) -> None:
    proc = run_py(*overrides, "progress=false", f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert message in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("override", ["total_steps=0", "n_envs=0", "eval.n_episodes=0", "threads=0"])
def test_a_bad_value_is_refused_before_torch_is_imported(tmp_path: Path, override: str) -> None:
    """The value checks come first: the refusal costs the config's composition, not torch's and SB3's imports."""
    code = ("import runpy, sys\n"
            "sys.argv = ['run.py', *sys.argv[1:]]\n"
            "try:\n    runpy.run_path('run.py', run_name='__main__')\n"
            "except SystemExit as exc:\n"
            "    print('exit', exc.code, 'torch' in sys.modules, 'stable_baselines3' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code, "+experiment=ch05_her_reach", override,
                           f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=_env())
    assert proc.stdout.split() == ["exit", "2", "False", "False"], proc.stdout + proc.stderr[-2000:]
    assert "must be a positive integer" in proc.stderr


@pytest.mark.parametrize("override,group", [("task=fly", "task"), ("routing=both", "routing")])
def test_unknown_group_option_lists_the_options(override: str, group: str) -> None:
    """Hydra's own message, as for algo=nope on the command line (exit 1): the options in rlexp/conf/GROUP/."""
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match=f"Available options in '{group}'"):
        rlexp.compose(override)
