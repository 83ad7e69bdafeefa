"""One training run: build (or resume), learn with checkpoints and diagnostics, save, evaluate."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from rlexp import artifacts
from rlexp.builder import algo_class, algo_kwargs, build, make_train_env
from rlexp.components.callbacks import (
    REPLAY,
    CheckpointCallback,
    ReplayDiagnosticsCallback,
    StopFlag,
    checkpoint_steps,
)
from rlexp.config import config_hash, parse_seeds, to_container, validate
from rlexp.errors import ConfigError
from rlexp.evaluate import evaluate, meta_path

log = logging.getLogger("rlexp")
TB_NAME = "run"  # SB3 writes tb/run_1; a resumed run keeps writing there
# Keys that must match between a checkpoint and the config that resumes it.
RESUME_KEYS = ("algo._target_", "env.id", "buffer._target_", "encoder._target_", "routing", "n_envs")


def _select(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def find_resume_checkpoint(path: str | Path) -> Path:
    """`resume=` accepts a run directory (latest periodic checkpoint, else model.zip) or a .zip."""
    path = Path(path).expanduser()
    if path.is_dir():
        steps = checkpoint_steps(path / artifacts.CKPT_DIR)
        if steps:
            return steps[-1][1]
        if (path / artifacts.MODEL).exists():
            return path / artifacts.MODEL
        raise ConfigError(f"resume: no checkpoint in {path} (looked for checkpoints/step_*.zip and {artifacts.MODEL})")
    if not path.exists():
        raise ConfigError(f"resume: checkpoint not found: {path}")
    if path.suffix != ".zip":
        raise ConfigError(f"resume: expected a run directory or a .zip checkpoint, got {path}")
    return path


def check_resume_compatible(cfg: DictConfig, zip_path: Path) -> dict[str, Any]:
    meta_file = meta_path(zip_path)
    if not meta_file.exists():
        raise ConfigError(f"resume: {meta_file.name} missing beside {zip_path}; cannot verify it matches this config")
    meta = artifacts.read_json(meta_file)
    old, new = meta.get("config", {}), to_container(cfg)
    bad = [f"{k}: checkpoint {_select(old, k)!r} vs config {_select(new, k)!r}"
           for k in RESUME_KEYS if _select(old, k) != _select(new, k)]
    if bad:
        raise ConfigError(
            "resume: checkpoint is incompatible with this config (" + "; ".join(bad) + "). "
            "Re-run with the overrides it was trained with (see its run directory's .hydra/overrides.yaml)."
        )
    return meta


def finished_summary(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """A run directory whose eval.json carries this config's hash is done: re-running skips it."""
    eval_file = run_dir / artifacts.EVAL
    if not eval_file.exists():
        return None
    result = artifacts.read_json(eval_file)
    if result.get("config_hash") != config_hash(cfg):
        raise ConfigError(f"{run_dir} already holds a finished run of a different config "
                          f"(hash {result.get('config_hash')} vs {config_hash(cfg)}); choose another hydra.run.dir")
    meta = artifacts.read_json(run_dir / artifacts.META) if (run_dir / artifacts.META).exists() else {}
    agg = result["aggregate"]
    return {"status": "skipped", "run_dir": str(run_dir), "step": meta.get("total_steps"),
            "steps_per_sec": meta.get("steps_per_sec"),
            **{k: agg[k] for k in ("success_rate", "return_mean", "return_std", "final_distance_mean")}}


def own_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """An interrupted run left checkpoints in its own directory (sweep re-run, SLURM requeue): resume them."""
    steps = checkpoint_steps(run_dir / artifacts.CKPT_DIR)
    if not steps:
        return None
    zip_path = steps[-1][1]
    meta_file = meta_path(zip_path)
    old_hash = artifacts.read_json(meta_file).get("config_hash") if meta_file.exists() else None
    if old_hash != config_hash(cfg):
        raise ConfigError(f"{run_dir} holds checkpoints of a different config (hash {old_hash} vs "
                          f"{config_hash(cfg)}); choose another hydra.run.dir or pass resume= explicitly")
    return zip_path


def run_dir_of(zip_path: Path) -> Path:
    return zip_path.parent.parent if zip_path.parent.name == artifacts.CKPT_DIR else zip_path.parent


def load_for_resume(cfg: DictConfig, zip_path: Path, meta: dict[str, Any], run_dir: Path) -> BaseAlgorithm:
    """Weights, optimizer state and step counter from the zip; replay buffer from checkpoints/replay.pkl."""
    cls = algo_class(cfg)
    env = make_train_env(cfg)
    kwargs = algo_kwargs(cfg, env, run_dir)
    try:
        model = cls.load(str(zip_path), env=env, device=cfg.device,
                         tensorboard_log=kwargs["tensorboard_log"])
    except Exception as exc:
        env.close()
        raise ConfigError(f"resume: cannot load {zip_path} as {cls.__name__}: {exc}") from None
    if isinstance(model, OffPolicyAlgorithm):
        replay = meta.get("replay_buffer") or {}
        replay_file = zip_path.parent / replay.get("path", REPLAY)
        if replay and replay.get("step") == model.num_timesteps and replay_file.exists():
            model.load_replay_buffer(str(replay_file))
            log.info("resume: replay buffer restored (%d transitions)",
                     model.replay_buffer.size() * model.replay_buffer.n_envs)
        else:
            # Fresh buffer: hold off updates until it has data again (book pitfall §7.5 with HER).
            model.learning_starts = model.num_timesteps + int(cfg.algo.get("learning_starts", 0) or 0)
            log.warning("resume: no replay buffer saved for step %d; starting with an empty buffer",
                        model.num_timesteps)
    return model


class Run:
    """Writes the meta record for a model file: book fields plus git state, config and its hash."""

    def __init__(self, cfg: DictConfig, run_dir: Path, resumed_from: str | None) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.resumed_from = resumed_from
        self.config = to_container(cfg)
        self.hash = config_hash(cfg)
        self.git = artifacts.git_state()
        self.versions = artifacts.versions()
        self.t0 = time.time()
        self.t_end: float | None = None  # set when learning ends, so eval time is not counted
        self.steps0 = 0
        self.model: BaseAlgorithm | None = None

    def meta(self, zip_path: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        model = self.model
        assert model is not None
        elapsed = (self.t_end or time.time()) - self.t0
        done = model.num_timesteps - self.steps0
        buffer = self.config.get("buffer", {})
        her = isinstance(getattr(model, "replay_buffer", None), HerReplayBuffer)
        hp = {k: v for k, v in self.config["algo"].items() if k not in ("_target_", "policy")}
        data = {
            "created_at": artifacts.utc_now(),
            "algo": type(model).__name__.lower(),
            "env_id": self.cfg.env.id,
            "seed": self.cfg.seed,
            "device": str(model.device),
            "torch_threads": torch.get_num_threads(),
            "n_envs": self.cfg.n_envs,
            "total_steps": int(model.num_timesteps),
            "target_steps": int(self.cfg.total_steps),
            "checkpoint": str(zip_path.resolve()),
            "hyperparams": hp,
            "her": bool(her),
            "her_config": ({k: buffer[k] for k in ("n_sampled_goal", "goal_selection_strategy") if k in buffer}
                           if her else None),
            "encoder": self.config.get("encoder", {}).get("_target_"),
            "training_time_sec": round(elapsed, 2),
            "steps_per_sec": round(done / elapsed, 2) if elapsed > 0 else None,
            "versions": self.versions,
            "git": self.git,
            "config": self.config,
            "config_hash": self.hash,
            "resumed_from": self.resumed_from,
        }
        data.update(extra or {})
        return data

    def write_meta(self, zip_path: Path, extra: dict[str, Any] | None = None) -> None:
        artifacts.write_json(meta_path(zip_path), self.meta(zip_path, extra))


def train(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    """Train to cfg.total_steps, then save model.zip/meta and eval.json into the run directory.

    Returns a summary dict (paths and headline metrics). Raises ConfigError on bad input before training.
    """
    validate(cfg)
    run_dir = Path(run_dir).resolve()
    resumed_from: str | None = None
    resume = cfg.resume
    if not resume:
        done = finished_summary(cfg, run_dir)
        if done is not None:
            return done
        resume = own_checkpoint(cfg, run_dir)
    if resume:
        zip_path = find_resume_checkpoint(resume)
        meta = check_resume_compatible(cfg, zip_path)
        run_dir = run_dir_of(zip_path).resolve()  # artifacts and TensorBoard continue in the original run
        resumed_from = str(zip_path.resolve())
        model = load_for_resume(cfg, zip_path, meta, run_dir)
        if model.num_timesteps >= cfg.total_steps and cfg.resume:
            raise ConfigError(f"resume: checkpoint is at step {model.num_timesteps}, already >= total_steps "
                              f"{cfg.total_steps}; raise total_steps to train further")
        # (An own checkpoint at total_steps means the run was stopped while saving or evaluating: finish it.)
        log.info("resuming %s from step %d in %s", zip_path, model.num_timesteps, run_dir)
    else:
        model = build(cfg, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = Run(cfg, run_dir, resumed_from)
    run.model, run.steps0 = model, model.num_timesteps

    with StopFlag() as stop:
        ckpt = CheckpointCallback(run_dir, cfg.checkpoint_freq, run.write_meta, stop)
        callbacks = [ckpt]
        if isinstance(model, OffPolicyAlgorithm) and cfg.diagnostics.freq:
            callbacks.append(ReplayDiagnosticsCallback(cfg.diagnostics.freq, cfg.diagnostics.n_samples))
        if model.num_timesteps < cfg.total_steps:
            model.learn(
                total_timesteps=cfg.total_steps - model.num_timesteps,
                callback=CallbackList(callbacks),
                reset_num_timesteps=resumed_from is None,
                tb_log_name=TB_NAME,
                progress_bar=bool(cfg.progress),
            )
        run.t_end = time.time()
    if stop.requested and ckpt.stopping:
        model.get_env().close()
        return {"status": "interrupted", "run_dir": str(run_dir), "step": ckpt.last_saved,
                "checkpoint": str(run_dir / artifacts.CKPT_DIR / f"step_{ckpt.last_saved}.zip")}

    final = run_dir / artifacts.MODEL
    artifacts.atomic_write(final, lambda tmp: model.save(tmp))
    run.write_meta(final)
    seeds = parse_seeds(cfg.eval.seeds, cfg.eval.n_episodes)
    result = evaluate(model, cfg, seeds, cfg.eval.deterministic, checkpoint=final, progress=bool(cfg.progress))
    artifacts.write_json(run_dir / artifacts.EVAL, result)
    model.get_env().close()
    agg = result["aggregate"]
    return {"status": "done", "run_dir": str(run_dir), "step": int(model.num_timesteps),
            "steps_per_sec": run.meta(final)["steps_per_sec"], **{k: agg[k] for k in
            ("success_rate", "return_mean", "return_std", "final_distance_mean")}}


def summary_line(summary: dict[str, Any]) -> str:
    if summary["status"] == "skipped":
        return (f"skipped: {summary['run_dir']} already has eval.json for this config "
                f"(success {summary['success_rate']:.0%})")
    if summary["status"] == "interrupted":
        return (f"interrupted at step {summary['step']}: checkpoint {summary['checkpoint']}. "
                f"Continue with: resume={summary['run_dir']}")
    dist = summary["final_distance_mean"]
    dist_s = f" | final distance {dist * 1000:.1f} mm" if dist is not None else ""
    return (f"success {summary['success_rate']:.0%} | return {summary['return_mean']:.2f} "
            f"± {summary['return_std']:.2f}{dist_s} | {summary['step']} steps at "
            f"{summary['steps_per_sec']} steps/s | artifacts: {summary['run_dir']}")
