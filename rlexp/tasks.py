"""What run.py can do with a composed config: the task registry, and the book's first two chapters.

`rlexp/conf/task/NAME.yaml` selects a task (`task=NAME`) and holds the settings only that task reads; REGISTRY maps
NAME to the function that runs it and the one-line summary printed at the end. A new task is a function
registered here plus a YAML in rlexp/conf/task/ (tests keep the two sets equal).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from omegaconf import DictConfig

from rlexp import artifacts
from rlexp.components.envs import make_env_from_cfg, register_robotics
from rlexp.errors import ConfigError
from rlexp.evaluate import aggregate, run_episodes
from rlexp.spec import RunSpec
from rlexp.status import Status, Summary

log = logging.getLogger("rlexp")
# Approximate Fetch goal workspace (book ch2): x, y, z in metres.
WORKSPACE_LOW = np.array([1.05, 0.40, 0.42])
WORKSPACE_HIGH = np.array([1.55, 1.10, 0.60])


class RandomPolicy:
    """predict() like an SB3 model, sampling the action space from a seeded generator."""

    def __init__(self, space: gym.Space, seed: int) -> None:
        self.space = space
        self.space.seed(seed)

    def predict(self, _obs: Any, deterministic: bool = False) -> tuple[np.ndarray, None]:
        return self.space.sample(), None


def device_check() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {"device": "cuda", "n_devices": torch.cuda.device_count(), "name": torch.cuda.get_device_name(0)}
    return {"device": "cpu", "n_devices": 0, "name": None, "note": "no CUDA: state-based chapters run on CPU"}


def fetch_envs() -> list[str]:
    register_robotics()
    return sorted(k for k in gym.registry if k.startswith("Fetch"))


def render_frame(cfg: DictConfig, out: Path) -> dict[str, Any]:
    import imageio.v3 as iio

    width, height = cfg.render.width, cfg.render.height
    env = make_env_from_cfg(cfg.env, render_mode="rgb_array", width=width, height=height)
    try:
        env.reset(seed=cfg.seed)
        frame = env.render()
        if frame is None:
            env.step(env.action_space.sample())
            frame = env.render()
    finally:
        env.close()
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.std() == 0:
        raise RuntimeError(f"render produced an empty frame of shape {frame.shape}")
    artifacts.atomic_write(out, lambda tmp: iio.imwrite(tmp, frame, extension=".png"))
    return {"path": str(out), "shape": list(frame.shape), "pixel_std": float(frame.std())}


def proof_of_life(spec: RunSpec, run_dir: Path) -> Summary:
    """Book ch1's four checks; the PPO smoke run is the ordinary training pipeline."""
    cfg = spec.cfg
    from rlexp.training.train import train

    run_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"created_at": artifacts.utc_now(), "versions": artifacts.versions()}
    report["device_check"] = device_check()
    log.info("device: %s", report["device_check"])
    envs = fetch_envs()
    if cfg.env.id not in envs:
        raise RuntimeError(f"{cfg.env.id} missing from the Fetch registry: {envs}")
    report["fetch_envs"] = envs
    log.info("Fetch registry: %d envs (%s ...)", len(envs), ", ".join(envs[:4]))
    report["render"] = render_frame(cfg, run_dir / "smoke_frame.png")
    log.info("rendered frame: %s", report["render"]["path"])
    artifacts.write_json(run_dir / "proof_of_life.json", report)
    summary = train(spec, run_dir)
    report["smoke_run"] = dataclasses.asdict(summary)
    report["passed"] = summary.status == Status.DONE
    artifacts.write_json(run_dir / "proof_of_life.json", report)
    return summary


def _space(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Dict):
        return {k: _space(v) for k, v in space.spaces.items()}
    return {"type": type(space).__name__, "shape": list(space.shape), "dtype": str(space.dtype),
            "low": np.asarray(space.low).tolist(), "high": np.asarray(space.high).tolist()}


def describe(env: gym.Env, seed: int) -> dict[str, Any]:
    obs, info = env.reset(seed=seed)
    base = env.unwrapped
    return {
        "created_at": artifacts.utc_now(), "env_id": env.spec.id, "seed": seed,
        "max_episode_steps": env.spec.max_episode_steps,
        "distance_threshold": float(getattr(base, "distance_threshold", float("nan"))),
        "reward_type": getattr(base, "reward_type", None),
        "action_space": _space(env.action_space), "observation_space": _space(env.observation_space),
        "reset_obs_keys": sorted(obs), "reset_info_keys": sorted(info), "versions": artifacts.versions(),
    }


def expected_reward(base: Any, achieved: np.ndarray, desired: np.ndarray) -> float:
    """The reward formula the book states: dense -d, sparse 0 if d <= threshold else -1 (Fetch uses d > thr)."""
    d = float(np.linalg.norm(achieved - desired, axis=-1))
    if base.reward_type == "dense":
        return -d
    return -float(d > base.distance_threshold)


def reward_check(env: gym.Env, cfg: DictConfig) -> dict[str, Any]:
    """Step reward == unwrapped.compute_reward == formula, also for relabelled (random) desired goals."""
    a = cfg.anatomy
    base = env.unwrapped
    rng = np.random.default_rng(cfg.seed)
    obs, _ = env.reset(seed=cfg.seed)
    mismatches: list[dict[str, Any]] = []
    n_checks = 0
    for t in range(a.reward_check_steps):
        obs, reward, term, trunc, info = env.step(env.action_space.sample())
        ag, dg = obs["achieved_goal"], obs["desired_goal"]
        computed = float(base.compute_reward(ag, dg, info))
        checks = [("step_vs_compute_reward", float(reward), computed),
                  ("compute_reward_vs_formula", computed, expected_reward(base, ag, dg))]
        # Relabelled goals as HER makes them: the achieved goal itself (must count as success) and
        # random goals in the Fetch workspace (the goal Box is unbounded, so sample the workspace).
        goals = [ag.copy()] + [rng.uniform(WORKSPACE_LOW, WORKSPACE_HIGH).astype(dg.dtype)
                               for _ in range(a.n_random_goals)]
        for goal in goals:
            checks.append(("relabelled_goal", float(base.compute_reward(ag, goal, info)),
                           expected_reward(base, ag, goal)))
        for kind, got, want in checks:
            n_checks += 1
            if abs(got - want) > a.atol:
                mismatches.append({"t": t, "kind": kind, "values": [got, want], "abs_err": abs(got - want)})
        if len(mismatches) >= a.max_mismatches:
            break
        if term or trunc:
            obs, _ = env.reset(seed=cfg.seed + t + 1)
    return {"ok": not mismatches, "reward_type": base.reward_type, "threshold": base.distance_threshold,
            "atol": a.atol, "n_steps": a.reward_check_steps, "n_random_goals": a.n_random_goals,
            "n_checks": n_checks, "mismatches": mismatches}


def env_anatomy(spec: RunSpec, run_dir: Path) -> Summary:
    """Book ch2: describe.json, reward_check.json (status 'failed' -> non-zero exit), random_baseline.json."""
    cfg = spec.cfg
    run_dir.mkdir(parents=True, exist_ok=True)
    env = make_env_from_cfg(cfg.env)  # as configured: wrappers must keep the reward invariant too
    try:
        artifacts.write_json(run_dir / "describe.json", describe(env, cfg.seed))
        check = reward_check(env, cfg)
    finally:
        env.close()
    artifacts.write_json(run_dir / "reward_check.json", check)
    seeds = list(range(cfg.seed, cfg.seed + cfg.anatomy.random_episodes))
    probe = make_env_from_cfg(cfg.env)
    policy = RandomPolicy(probe.action_space, cfg.seed)
    probe.close()
    episodes = run_episodes(policy, cfg, seeds, deterministic=False)  # type: ignore[arg-type]
    baseline = {"created_at": artifacts.utc_now(), "env_id": cfg.env.id, "n_episodes": len(seeds),
                "seed_base": cfg.seed, "aggregate": aggregate(episodes),
                "per_episode": [{"episode": i, **e} for i, e in enumerate(episodes)],
                "versions": artifacts.versions()}
    artifacts.write_json(run_dir / "random_baseline.json", baseline)
    agg = baseline["aggregate"]
    return Summary(Status.DONE if check["ok"] else Status.FAILED, str(run_dir), extra={
        "reward_check": check, "random_success_rate": agg["success_rate"], "random_return_mean": agg["return_mean"],
        "random_final_distance_mean": agg["final_distance_mean"]})


def env_anatomy_line(summary: Summary) -> str:
    check, extra = summary.extra["reward_check"], summary.extra
    verdict = "OK" if check["ok"] else f"FAILED ({len(check['mismatches'])} mismatches)"
    return (f"reward check {verdict}: {check['n_checks']} checks over {check['n_steps']} steps, "
            f"{check['reward_type']} reward, threshold {check['threshold']}, atol {check['atol']} | random policy: "
            f"success {extra['random_success_rate']:.0%}, return {extra['random_return_mean']:.2f} | "
            f"artifacts: {summary.run_dir}")


def train_task(spec: RunSpec, run_dir: Path) -> Summary:
    from rlexp.training import train

    return train.train(spec, run_dir)


def train_line(summary: Summary) -> str:
    from rlexp.training import train

    return train.summary_line(summary)


@dataclass(frozen=True)
class Task:
    """A task: run(spec, run_dir) -> Summary (its status decides the exit code), and its summary line."""

    run: Callable[[RunSpec, Path], Summary]
    summary_line: Callable[[Summary], str]


REGISTRY: dict[str, Task] = {
    "train": Task(train_task, train_line),
    "proof_of_life": Task(proof_of_life, train_line),  # its smoke run is an ordinary training run
    "env_anatomy": Task(env_anatomy, env_anatomy_line),
}


def get(name: str) -> Task:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}; registered tasks: {', '.join(REGISTRY)}") from None
