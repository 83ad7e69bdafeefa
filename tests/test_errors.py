"""Bad input: one `error:` line naming the fix, exit code 2, before any training, and nothing left on disk."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import rlexp
from rlexp.errors import ConfigError
from rlexp.runner import run_task

from helpers import ROOT, _env, run_py

PPO = "+experiment=ch03_ppo_reach_dense"
# Checked in-process (fast): the ConfigError message, and that the run directory stays empty. (overrides, message)
CONFIG_ERRORS = [
    (["env.id=FetchPusj-v4"], "Did you mean: FetchPush-v4"),
    ([PPO, "buffer=her"], "HER cannot be used with PPO"),
    ([PPO, "buffer=replay"], "PPO is on-policy"),
    (["+experiment=ch05_her_reach", "env.id=Pendulum-v1"], "HER needs a goal-conditioned env"),
    (["+experiment=ch05_her_reach", "algo.learning_starts=10"], "is too small for HER"),
    (["encoder=nature_cnn"], "encoder NatureCNN cannot read the observation space"),
    (["total_steps=0"], "total_steps must be a positive integer"),
    (["total_steps=-5"], "total_steps must be a positive integer"),
    (["n_envs=0"], "n_envs must be a positive integer"),
    (["eval.n_episodes=0"], "eval.n_episodes must be a positive integer"),
    (["checkpoint_freq=-1"], "checkpoint_freq must be"),
    (["threads=0"], "threads must be a positive integer or auto"),
    (["algo.batch_size=0"], "algo.batch_size must be positive"),
    (["algo._target_=stable_baselines3.NOPE"], "cannot be imported"),
    (["resume=/nonexistent/run"], "checkpoint not found"),
    # Constructor arguments, by the class's signature, before the env is built
    ([PPO, "+algo.foo=1"], "algo.foo is not an argument of PPO"),
    ([PPO, "+algo.tau=0.01"], "`tau` is a key of algo=sac/td3/tqc; this config uses algo=ppo"),
    (["+experiment=ch05_her_reach", "+buffer.n_sampled_goal_=8"], "did you mean buffer.n_sampled_goal?"),
    (["+encoder.cnn_output=64"], "did you mean encoder.cnn_output_dim?"),
    (["+algo.policy_kwargs.net_arc=[64,64]"], "did you mean algo.policy_kwargs.net_arch?"),
]


@pytest.mark.parametrize("overrides,message", CONFIG_ERRORS, ids=[" ".join(c[0]) for c in CONFIG_ERRORS])
def test_bad_config_raises_before_training(tmp_path: Path, overrides: list[str], message: str) -> None:
    cfg = rlexp.compose(*overrides, "progress=false")
    with pytest.raises(ConfigError, match=re.escape(message)):
        run_task(cfg, tmp_path)
    assert list(tmp_path.iterdir()) == [], "a refused run writes nothing (no .hydra/, lock or monitor files)"


def test_known_constructor_arguments_pass() -> None:
    from rlexp.spec import RunSpec

    RunSpec.of(rlexp.compose("+experiment=ch05_her_push", "+algo.policy_kwargs.net_arch=[64,64]",
                             "+algo.optimize_memory_usage=false"))


def test_compose_from_python_says_what_run_py_says() -> None:
    with pytest.raises(ConfigError, match=re.escape("algo has no key `lerning_rate`; did you mean "
                                                    "algo.learning_rate=1e-3?")):
        rlexp.compose(PPO, "algo.lerning_rate=1e-3")


# As a user sees them: `python run.py` in an empty directory, without hydra.run.dir (Hydra would make its
# outputs/DATE/TIME there). First the mistakes Hydra itself reported in many lines with exit 1, then refusals
# that left a run directory behind (.hydra/, lock, monitor files) or an empty outputs/DATE/TIME. (overrides, text)
CLI_ERRORS = [
    (["+experiment=ch03_ppo_reach_dens"], "no experiment 'ch03_ppo_reach_dens'; did you mean "
                                          "+experiment=ch03_ppo_reach_dense?"),
    ([PPO, "algo.lerning_rate=1e-3"], "did you mean algo.learning_rate=1e-3?"),
    ([PPO, "algo.tau=0.01"], "`tau` is a key of algo=sac/td3/tqc; this experiment uses algo=ppo"),
    ([PPO, "buffer.n_sampled_goal=8"], "`n_sampled_goal` is a key of buffer=her/her_drq/pixel_her; this experiment "
                                       "uses buffer=default"),
    (["experiment=ch05_her_push"], "experiment is added with +experiment=NAME: +experiment=ch05_her_push"),
    (["algo=sacc"], "no algo option 'sacc'; did you mean algo=sac? (options: crossq, ppo, sac, td3, tqc)"),
    (["seed=0,1"], "seed=0,1 is a sweep: add -m"),
    ([PPO, "buffer=her"], "HER cannot be used with PPO"),
    (["+experiment=ch05_her_reach", "algo.learning_starts=10"], "is too small for HER"),
    (["total_steps=0"], "total_steps must be a positive integer"),
]


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _error_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("overrides,text", CLI_ERRORS, ids=[" ".join(c[0]) for c in CLI_ERRORS])
def test_bad_input_on_the_command_line(tmp_path: Path, overrides: list[str], text: str) -> None:
    before = _listing(tmp_path)
    proc = run_py(*overrides, "progress=false", cwd=tmp_path, timeout=120, fresh=True)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = _error_line(proc.stderr)
    assert text in line, line
    assert not re.search(r"\+\+?(algo\.lerning_rate|algo\.tau|buffer\.n_sampled_goal)", line), \
        "never a hint to append a key the config does not have"
    assert _listing(tmp_path) == before, "nothing written: no run directory, no empty outputs/DATE/TIME"


@pytest.mark.parametrize("sweep,text", [("algo=sac,sacc", "did you mean algo=sac?"),
                                        ("total_steps=64,0", "total_steps must be a positive integer")])
def test_a_bad_value_in_a_sweep_is_refused_before_any_job_starts(tmp_path: Path, sweep: str, text: str) -> None:
    proc = run_py(PPO, sweep, "progress=false", multirun=True, cwd=tmp_path, timeout=120, fresh=True)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert text in _error_line(proc.stderr)
    assert _listing(tmp_path) == [], "no sweep directory: no job started"


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


@pytest.mark.parametrize("override,options", [("task=fly", "env_anatomy, proof_of_life, train"),
                                              ("routing=both", "actor, critic, default, separate")])
def test_unknown_group_option_lists_the_options(override: str, options: str) -> None:
    """As for algo=nope on the command line (exit 2): the options in rlexp/conf/GROUP/."""
    with pytest.raises(ConfigError, match=f"options: {options}"):
        rlexp.compose(override)


def test_a_job_refused_in_a_sweep_is_reported_as_refused(tmp_path: Path) -> None:
    """A refusal only the env can tell (HER's warm-up): the job leaves no run directory, its record and
    `rlexp status` say `refused` with the error line, and the sequential sweep stops there (exit 2)."""
    from rlexp.analysis.status import sweep_status

    sweep = tmp_path / "sweep"
    proc = run_py("+experiment=ch05_her_reach", "seed=0,1", "algo.learning_starts=10", "progress=false",
                  f"hydra.sweep.dir={sweep}", multirun=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "refused" in proc.stdout and "is too small for HER" in proc.stdout, proc.stdout
    states = {j.num: j for j in sweep_status(sweep)[0]}
    assert (states[0].state, states[1].state) == ("refused", "pending"), states
    assert "is too small for HER" in (states[0].error or "")
    assert not (sweep / states[0].subdir).exists()
