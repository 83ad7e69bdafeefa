"""The book's evaluation protocol: N episodes, episode i reset with seed i, deterministic by default."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.base_class import BaseAlgorithm
from tqdm import tqdm

from rlexp import artifacts
from rlexp.config import check_recorded_targets
from rlexp.errors import ConfigError
from rlexp.rundir import RunDir, meta_of

KNOWN_ALGOS = ("stable_baselines3.PPO", "stable_baselines3.SAC", "stable_baselines3.TD3")


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory means its final model.zip; a .zip is taken as is. Missing -> ConfigError."""
    path = Path(path)
    if path.is_dir():
        run = RunDir(path)
        if not run.model.exists():
            latest = run.latest_checkpoint()
            hint = f" (periodic checkpoints exist, e.g. {latest.zip})" if latest else ""
            raise ConfigError(f"no {run.model.name} in run directory {path}{hint}")
        return run.model
    if not path.exists():
        raise ConfigError(f"checkpoint not found: {path}")
    if path.suffix != ".zip":
        raise ConfigError(f"checkpoint must be a run directory or an SB3 .zip file, got {path}")
    return path


def load_run_config(zip_path: Path) -> DictConfig:
    """The resolved config a checkpoint was trained with, from the meta file written beside it."""
    meta = meta_of(zip_path)
    if not meta.exists():
        raise ConfigError(f"{meta.name} missing beside {zip_path}: cannot tell which env and algo it was trained on")
    try:
        data = artifacts.read_json(meta)
    except ValueError as exc:
        raise ConfigError(f"{meta} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "config" not in data:
        raise ConfigError(f"{meta} has no 'config' entry; was it written by rlexp?")
    check_recorded_targets(data["config"], meta)
    return OmegaConf.create(data["config"])


def inference_config(cfg: DictConfig, device: str) -> DictConfig:
    """The recorded config shrunk to what acting needs: one env, a tiny replay buffer, no logging."""
    small = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(small, False)
    small.n_envs = 1
    small.env.n_envs = 1
    small.env.vec_env = "dummy"
    small.overlap = False  # acting only: no env worker process (rlexp.fast.overlap)
    small.device = device
    small.resume = None
    if "buffer_size" in small.algo:
        small.algo.buffer_size = 1000
    return small


def load_model(zip_path: Path, cfg: DictConfig, device: str = "auto") -> BaseAlgorithm:
    """Rebuild the model from its recorded config and load only tensors from the zip.

    Safe for files a user is handed: SB3's `load` would unpickle the zip's serialized fields (code runs);
    here nothing is unpickled (`rlexp.training.checkpoint.load_weights`).
    """
    from rlexp.builder import build
    from rlexp.training.checkpoint import load_weights

    model = build(inference_config(cfg, device))
    try:
        load_weights(model, zip_path)
    except BaseException:
        model.get_env().close()
        raise
    meta = meta_of(zip_path)
    model.num_timesteps = int(artifacts.read_json(meta).get("total_steps") or 0) if meta.exists() else 0
    return model


def ground_truth(env: Any) -> dict[str, Any] | None:
    """The env's own goal dict when a wrapper (pixels without goal keys) hides it from the policy."""
    try:
        raw = env.get_wrapper_attr("last_raw_obs")
    except AttributeError:
        return None
    return raw if isinstance(raw, dict) and "achieved_goal" in raw else None


class EvaluationStopped(Exception):
    """A stop was requested (signal) between evaluation episodes."""


def run_episodes(
    model: BaseAlgorithm, cfg: DictConfig, seeds: list[int], deterministic: bool = True, progress: bool = False,
    stop: Callable[[], bool] | None = None, env: Any = None,
) -> list[dict[str, Any]]:
    """One dict per episode. `env`: an evaluation env to reuse (kept open); None builds one from cfg.env."""
    from rlexp.components.envs import make_env_from_cfg
    from rlexp.fast import Speedups

    own = env is None
    env = make_env_from_cfg(cfg.env, **Speedups.of(cfg).env_kwargs(cfg.env)) if own else env
    episodes = []
    try:
        # disable=None: tqdm turns itself off when stderr is not a terminal (sweep logs, redirected output),
        # where its carriage-return redraws would fill the log with one line per episode
        for seed in tqdm(seeds, desc="eval", unit="ep", disable=None if progress else True, leave=False):
            if stop is not None and stop():
                raise EvaluationStopped
            obs, _ = env.reset(seed=int(seed))
            total, length, success, tts, actions = 0.0, 0, 0, None, []
            done = False
            info: dict[str, Any] = {}
            while not done:
                action, _ = model.predict(obs, deterministic=deterministic)
                obs, reward, terminated, truncated, info = env.step(action)
                total += float(reward)
                length += 1
                actions.append(np.asarray(action, dtype=np.float64).ravel())
                if tts is None and info.get("is_success", 0) > 0:
                    tts = length
                done = bool(terminated or truncated)
            success = int(info.get("is_success", 0) > 0)  # book: success on the LAST step
            acts = np.stack(actions)
            smooth = float(np.sum(np.sum(np.diff(acts, axis=0) ** 2, axis=1))) if len(acts) > 1 else 0.0
            final_distance = None
            goals = obs if isinstance(obs, dict) and "achieved_goal" in obs else ground_truth(env)
            if goals is not None:
                final_distance = float(np.linalg.norm(
                    np.asarray(goals["achieved_goal"], np.float32) - np.asarray(goals["desired_goal"], np.float32)))
            episodes.append({
                "seed": int(seed), "return": total, "length": length, "success": success,
                "final_distance": final_distance, "time_to_success": tts,
                "action_smoothness": smooth, "action_max_abs": float(np.max(np.abs(acts))),
            })
    finally:
        if own:
            env.close()
    return episodes


def aggregate(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    def stat(key: str) -> np.ndarray:
        return np.array([e[key] for e in episodes if e[key] is not None], dtype=np.float64)

    def mean(x: np.ndarray) -> float | None:
        return float(x.mean()) if x.size else None

    def std(x: np.ndarray) -> float | None:
        return float(x.std()) if x.size else None  # ddof 0, as the book's eval

    ret, dist, ln, tts = stat("return"), stat("final_distance"), stat("length"), stat("time_to_success")
    return {
        "success_rate": float(stat("success").mean()),
        "return_mean": mean(ret), "return_std": std(ret),
        "final_distance_mean": mean(dist), "final_distance_std": std(dist),
        "ep_len_mean": mean(ln), "ep_len_std": std(ln),
        "action_smoothness_mean": mean(stat("action_smoothness")),
        "action_max_abs_mean": mean(stat("action_max_abs")),
        # Over episodes that reached the goal at some step (null when none did).
        "time_to_success_mean": mean(tts),
        "n_reached": int(tts.size),
    }


def evaluate(
    model: BaseAlgorithm,
    cfg: DictConfig,
    seeds: list[int],
    deterministic: bool = True,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    stop: Callable[[], bool] | None = None,
    config_hash: str | None = None,
) -> dict[str, Any]:
    """The eval JSON: the book's ch3 schema plus time-to-success and the config hash.

    Args:
        model: the policy to act with (its `predict`); any SB3 algorithm.
        cfg: the run's config; `cfg.env` builds the single evaluation env (no Monitor, same wrappers).
        seeds: episode i is reset with seeds[i] (the book's protocol: 0..N-1).
        deterministic: the policy's mean action (the book's default) or sampled actions.
        checkpoint: the model file evaluated, recorded in the JSON.
        progress: a tqdm bar over episodes, on a terminal only.
        stop: called before each episode; True raises EvaluationStopped (a signal arrived).
        config_hash: the run's hash if the caller has it (RunSpec.hash), else computed from cfg.
    """
    from rlexp import config
    from rlexp.fast import algo_name

    episodes = run_episodes(model, cfg, seeds, deterministic, progress, stop)
    return {
        "created_at": artifacts.utc_now(),
        "algo": algo_name(model),
        "env_id": cfg.env.id,
        "checkpoint": str(Path(checkpoint).resolve()) if checkpoint else None,
        "device": str(model.device),
        "n_episodes": len(seeds),
        "seeds": [int(s) for s in seeds],
        "deterministic": bool(deterministic),
        "config_hash": config_hash or config.config_hash(cfg),
        "aggregate": aggregate(episodes),
        "per_episode": episodes,
        "versions": artifacts.versions(),
    }
