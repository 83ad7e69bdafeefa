"""One training run, top to bottom: decide where it starts, lock the run directory, build (or restore),
learn with checkpoints and diagnostics, save model.zip, evaluate with the book's protocol."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import CallbackList
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

from rlexp import artifacts, diskfull, execution, hpo, validate
from rlexp.analysis import book
from rlexp.builder import build
from rlexp.components import current_target
from rlexp.config import to_container
from rlexp.errors import ConfigError, LeaseLost
from rlexp.evaluate import EvaluationStopped, evaluate
from rlexp.fast import Speedups, algo_name
from rlexp.rundir import RunDir, RunLock, meta_of, remove
from rlexp.spec import RunSpec
from rlexp.status import ALREADY_FINISHED, Status, Summary
from rlexp.trackers import chosen as chosen_loggers
from rlexp.training import checkpoint, faults, hparams, logs, progress, resume, tblog
from rlexp.training.callbacks import CheckpointCallback, ReplayDiagnosticsCallback, StopFlag
from rlexp.training.periodic_eval import Clock, PeriodicEval
from rlexp.training.tracking import Trackers

log = logging.getLogger("rlexp")


class MetaWriter:
    """Writes the meta record of a model file: book fields plus git state, config, its hash, lineage."""

    def __init__(self, start: resume.Start) -> None:
        self.cfg = start.cfg
        self.config = to_container(start.cfg)
        self.hash = start.spec.hash
        self.resumed_from = str(start.checkpoint.zip) if start.checkpoint else None
        self.forked_from = str(start.checkpoint.run_dir.root) if start.fork and start.checkpoint else None
        # what it is: the command's +experiment=, else the resumed run's own
        self.experiment = _experiment() or (resume.recorded_experiment(start.checkpoint.run_dir, start.meta or {})
                                            if start.checkpoint else None)
        self.git = artifacts.git_state()
        self.versions = artifacts.versions()
        self.t0 = time.time()
        self.t_end: float | None = None  # set when learning ends, so eval time is not counted
        self.steps0 = 0
        self.model: BaseAlgorithm | None = None
        self.clock: Clock | None = None  # training wall time since step 0, across resumes

    def steps_per_sec(self) -> float | None:
        """Training throughput of this process: periodic evaluations' time is not counted (comparable on/off)."""
        assert self.model is not None
        elapsed = (self.t_end or time.time()) - self.t0 - (self.clock.excluded if self.clock else 0.0)
        return round((self.model.num_timesteps - self.steps0) / elapsed, 2) if elapsed > 0 else None

    def meta(self, zip_path: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        model = self.model
        assert model is not None
        buffer = self.config.get("buffer", {})
        her = isinstance(getattr(model, "replay_buffer", None), HerReplayBuffer)
        hp = {k: v for k, v in self.config["algo"].items() if k not in ("_target_", "policy")}
        data = {
            "created_at": artifacts.utc_now(),
            "experiment": self.experiment,
            "algo": algo_name(model).lower(),  # "sac" also on the fast path (FastSAC)
            "env_id": self.cfg.env.id,
            "seed": self.cfg.seed,
            "device": str(model.device),
            "torch_threads": torch.get_num_threads(),
            "execution": execution.record(self.cfg, model.device),  # what changes float rounding (rlexp/execution.py)
            "n_envs": self.cfg.n_envs,
            "total_steps": int(model.num_timesteps),
            "target_steps": int(self.cfg.total_steps),
            "checkpoint": str(zip_path.resolve()),
            "hyperparams": hp,
            "her": bool(her),
            "her_config": ({k: buffer[k] for k in ("n_sampled_goal", "goal_selection_strategy") if k in buffer}
                           if her else None),
            "encoder": self.config.get("encoder", {}).get("_target_"),
            "training_time_sec": round((self.t_end or time.time()) - self.t0, 2),
            "steps_per_sec": self.steps_per_sec(),
            "versions": self.versions,
            "git": self.git,
            "config": self.config,
            # the classes that really ran: the recorded config names SB3's either way (rlexp/fast)
            "ran": Speedups.of(self.cfg).provenance(model, self.cfg.env),
            "config_hash": self.hash,
            "resumed_from": self.resumed_from,
            "forked_from": self.forked_from,
        }
        if self.clock is not None:  # training wall time from step 0 across resumes; periodic evaluations' own
            data["train_time_total_sec"] = round(self.clock.elapsed(), 3)
            data["periodic_eval_sec"] = round(self.clock.excluded, 3)
        data.update(extra or {})
        return data

    def write(self, zip_path: Path, extra: dict[str, Any] | None = None) -> None:
        artifacts.write_json(meta_of(zip_path), self.meta(zip_path, extra))


def _attach_loggers(model: BaseAlgorithm, start: resume.Start, trackers: Trackers) -> None:
    """What `logger` chose: progress.csv (cut back to the checkpoint by logs.prepare), one TensorBoard run per run
    directory (fresh runs start it empty, resumed runs continue it from the checkpoint's step; a fork copies the
    original's history up to there), and the trackers' writers (rlexp.training.tracking)."""
    chosen = chosen_loggers(start.cfg)
    formats: list[KVWriter] = [logs.ProgressCSV(start.run_dir.progress)] if "csv" in chosen else []
    formats.extend(trackers.writers)
    if _tensorboard(start.cfg):
        tb = start.run_dir.tb_run
        if start.checkpoint is None:
            tblog.clear(tb)
        else:
            tblog.keep_until(start.checkpoint.run_dir.tb_run, tb, start.checkpoint.step)
        formats.append(tblog.EventsWriter(tb))
    model.set_logger(Logger(str(start.run_dir.root), formats))


def _prepare_logs(start: resume.Start) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Cut the CSV logs back to where training starts; the evaluation rows kept and the env factory's
    Monitor arguments (only for rlexp's factory: another one may not take them)."""
    cfg, ckpt = start.cfg, start.checkpoint
    keywords = list(cfg.env.get("monitor_keywords") or ("is_success",))
    rows = logs.prepare("fresh" if ckpt is None else "resume", start.run_dir, ckpt.run_dir if ckpt else None,
                        ckpt.step if ckpt else 0, int(cfg.n_envs), str(cfg.env.id), ["r", "l", "t", *keywords])
    ours = current_target(str(cfg.env.get("_target_"))) == "rlexp.components.envs.make_vec_env"
    extra = {"monitor_dir": str(start.run_dir.monitor_dir), "monitor_append": ckpt is not None} if ours else {}
    return rows, extra


def _hold_source(start: resume.Start) -> RunLock | None:
    """A fork reads another run's checkpoint and replay: hold that run's lock (shared) from before this command
    writes anything until they are restored, so its trainer cannot prune them meanwhile; refused while one trains."""
    if not start.fork or start.checkpoint is None:
        return None
    source = start.checkpoint.run_dir.lock()
    if not source.acquire(shared=True):
        raise ConfigError(f"resume: {start.checkpoint.run_dir.root} is in use: running in {source.holder()}; "
                          "fork from it once it stops")
    return source


def _restore(model: BaseAlgorithm, start: resume.Start, source: RunLock | None) -> None:
    assert start.checkpoint is not None and start.meta is not None
    if source is None:  # the plan changed under the lock into a fork
        source = _hold_source(start)
    try:
        info = checkpoint.restore(model, start.checkpoint, start.meta)
    finally:
        if source is not None:
            source.release()
    step = model.num_timesteps
    if info["replay_transitions"] is not None:
        log.info("resume: replay buffer restored (%d transitions)", info["replay_transitions"])
    elif isinstance(model, OffPolicyAlgorithm):
        # An empty buffer: hold off updates until it has whole episodes again (book ch5 pitfall with HER).
        model.learning_starts = step + int(start.cfg.algo.get("learning_starts", 0) or 0)
        log.warning("resume: %s has no replay buffer (only the latest checkpoint keeps one); continuing with an "
                    "empty buffer, updates from step %d", start.checkpoint.zip.name, model.learning_starts)
    changed = execution.changes(execution.recorded(start.meta), execution.record(start.cfg, model.device))
    if changed and info["exact"]:
        log.warning("resume: %s (checkpoint -> now): the continuation is no longer bitwise equal to an "
                    "uninterrupted run", changed)
    if not info["exact"]:
        model.get_env().seed(int(start.cfg.seed) + step)  # new episodes, not a replay of the first ones
        why = "holds weights only" if start.meta.get("checkpoint_unit") is None else "has no env state (subproc envs)"
        log.warning("resume: %s %s; the envs start new episodes and the continuation is not bitwise equal to an "
                    "uninterrupted run", start.checkpoint.zip.name, why)


def _tensorboard(cfg: DictConfig) -> bool:
    return bool(cfg.tensorboard) and "tensorboard" in chosen_loggers(cfg)


def steps_trained(model: BaseAlgorithm, total_steps: int) -> tuple[int, str | None]:
    """The step count learn() will end at, and why it differs from total_steps (SB3 stops on whole rollouts)."""
    n_envs = model.get_env().num_envs
    if isinstance(model, OffPolicyAlgorithm):
        chunk, why = n_envs, f"the {n_envs} envs step together"
    else:
        chunk = model.n_steps * n_envs
        why = f"{type(model).__name__} trains whole rollouts of {model.n_steps:,} steps x {n_envs} envs = {chunk:,}"
    start = model.num_timesteps
    end = start + -(-(total_steps - start) // chunk) * chunk if total_steps > start else start
    return end, (None if end == total_steps else f"{total_steps:,} asked: {why}")


def _experiment() -> str | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get("experiment") if HydraConfig.initialized() else None


def header(start: resume.Start, model: BaseAlgorithm) -> str:
    """What this run is about to do, before the first step: where, what, how long, on what."""
    cfg = start.cfg
    end, why = steps_trained(model, int(cfg.total_steps))
    begin = (f"resumed from {start.checkpoint.zip} at step {model.num_timesteps:,}" if start.checkpoint
             else "fresh") + (f", a fork of {start.checkpoint.run_dir.root}" if start.fork else "")
    buf = getattr(model, "replay_buffer", None)
    storage = type(buf).__name__ if buf is not None else "rollout buffer"
    experiment = _experiment()
    ckpts = f"every {cfg.checkpoint_freq:,} steps and on a stop" if cfg.checkpoint_freq else "on a stop only"
    return "\n".join([
        f"run directory  {start.run_dir.root} ({begin})",
        f"what           {type(model).__name__} + {storage} on {cfg.env.id} x {model.get_env().num_envs} envs"
        + (f" (+experiment={experiment})" if experiment else "") + f", config hash {start.spec.hash}",
        f"steps          {end:,}" + (f" ({why})" if why else ""),
        f"device         {model.device} (torch threads: {torch.get_num_threads()}, "
        f"{execution.header_note(cfg.threads)}); seed {cfg.seed}; final eval {len(start.spec.eval_seeds)} episodes",
        f"checkpoints    {ckpts}",
        f"tensorboard    {f'tensorboard --logdir {start.run_dir.tb}' if _tensorboard(cfg) else 'off'}",
        *([f"periodic eval  every {cfg.eval.freq:,} steps on {len(periodic_seeds(start))} episodes -> "
           f"{start.run_dir.evaluations.name}, {start.run_dir.best.name}"] if cfg.eval.get("freq") else []),
    ])


def periodic_seeds(start: resume.Start) -> list[int]:
    """The first eval.freq_episodes of the final evaluation's seeds (all of them when null)."""
    n = start.cfg.eval.get("freq_episodes")
    return list(start.spec.eval_seeds[: int(n)] if n else start.spec.eval_seeds)


def _summary(status: Status, run_dir: RunDir, **fields: Any) -> Summary:
    return Summary(status, str(run_dir.root), **fields)


def _metrics(agg: dict[str, Any]) -> dict[str, Any]:
    return {k: agg[k] for k in ("success_rate", "return_mean", "return_std", "final_distance_mean")}


def _metrics_of(pruned: dict[str, Any]) -> dict[str, Any]:
    """A pruned run's summary carries the objective of the evaluation that stopped it."""
    return {"objective": pruned.get("value")}


def _hydra_context() -> tuple[list[str] | None, bool, Callable[[RunDir, DictConfig], None] | None]:
    """Under `run.py`: the command line's overrides, whether it chose the run directory, and a writer of
    `.hydra/` (Hydra's own is off, `hydra.output_subdir: null`, so a refused command writes nothing)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return None, True, None
    hc = HydraConfig.get()
    explicit = hc.mode == RunMode.MULTIRUN or any(o.split("=", 1)[0].lstrip("+") == "hydra.run.dir"
                                                  for o in hc.overrides.hydra)

    def record(run: RunDir, cfg: DictConfig) -> None:
        for name, node in (("config.yaml", cfg), ("hydra.yaml", OmegaConf.create({"hydra": hc})),
                           ("overrides.yaml", OmegaConf.create(list(hc.overrides.task)))):
            artifacts.atomic_write(run.hydra / name, lambda tmp, node=node: OmegaConf.save(node, tmp))

    return list(hc.overrides.task), explicit, record


def train(spec: RunSpec | DictConfig, run_dir: str | Path) -> Summary:
    """Train to total_steps, then save model.zip/meta and eval.json into the run directory.

    Args:
        spec: the validated run (rlexp.spec.RunSpec); a composed config is validated into one.
        run_dir: Hydra's output directory for this command. A resume in place writes into the checkpoint's
            own run directory instead (rlexp.training.resume decides, from the command line's overrides and
            whether it set hydra.run.dir).

    Returns the Summary (status done/skipped/interrupted/busy). Raises ConfigError on bad input before
    anything is written.
    """
    spec = RunSpec.of(spec)
    overrides, explicit_dir, record_config = _hydra_context()
    start = resume.plan(spec, RunDir(run_dir), overrides, explicit_dir)  # read-only: refusals write nothing
    if start.kind in ("skip", "finished"):
        return _skipped(start)
    execution.set_threads(start.cfg.threads)  # a resumed run's own (recorded) value unless the command typed one
    if start.kind != "evaluate":
        validate.check_env(start.cfg, start.spec.algo_cls)  # on a throwaway env: refused before anything is written
    run = start.run_dir
    seen = run.fingerprint()
    held_nothing = not run.root.is_dir() or not any(run.root.iterdir())
    source = _hold_source(start)
    lock = run.lock()
    try:
        acquired = lock.acquire()
    except OSError as exc:  # the lease cannot be written: a full disk
        if source is not None:
            source.release()
        if not diskfull.is_full(exc):
            raise
        return _disk_full(run, exc)
    if not acquired:
        if source is not None:
            source.release()
        return _summary(Status.BUSY, run, holder=lock.holder())
    try:
        if run.root.resolve() != Path(run_dir).resolve():
            _log_into(run, Path(run_dir))
        if lock.took_over:
            log.warning("%s", lock.took_over)
        with StopFlag() as stop:
            if run.fingerprint() != seen:  # another process wrote here between the plan and the lock
                start = resume.plan(spec, RunDir(run_dir), overrides, explicit_dir)
            if start.kind == "skip":
                return _skipped(start)
            if start.run_dir != run:  # what we locked finished meanwhile: the plan now points elsewhere
                raise ConfigError(f"{run.root} changed while this command started (another process finished it); "
                                  "run the command again")
            for path in run.remove_uncommitted():
                log.info("removed %s (an interrupted checkpoint write)", path.name)
            _set_aside_damaged(start)
            if start.kind in ("fresh", "resume") and (start.kind == "fresh" or start.fork) and record_config:
                record_config(run, start.cfg)
            with Trackers.open(start) as trackers:  # logger=wandb/mlflow: one tracker run per run directory
                return trackers.ended(_run(start, stop, lock, source, trackers))
    except ConfigError:
        # Refused after writing began (e.g. a checkpoint that fails to restore into a fork): in a directory that
        # held nothing before, everything there is this command's, and no checkpoint or model was made yet.
        if held_nothing and run.latest_checkpoint() is None and not run.model.exists():
            for path in run.root.iterdir():
                remove(path)
        raise
    except LeaseLost as exc:
        log.error("%s", exc)
        return _summary(Status.BUSY, run, holder=exc.holder)
    except OSError as exc:
        if not diskfull.is_full(exc):
            raise
        return _disk_full(run, exc)
    finally:
        lock.release()
        if source is not None:
            source.release()


def _disk_full(run: RunDir, exc: OSError) -> Summary:
    """A write that cannot be skipped (the lease, .hydra/, model.zip, eval.json) on a full disk: one line, exit 1."""
    latest = run.latest_checkpoint()
    return _summary(Status.FAILED, run, error=f"{exc.strerror} writing {exc.filename or 'a file'}",
                    checkpoint=str(latest.zip) if latest else None)


def _set_aside_damaged(start: resume.Start) -> None:
    """Name the newer checkpoint units that failed verification in one warning; move this run's own into
    checkpoints/damaged/ (a fork's source is only named: it is not ours to change)."""
    if not start.damaged or start.checkpoint is None:
        return
    names = ", ".join(c.stem for c, _ in start.damaged)
    why = start.damaged[0][1]
    if all(c.run_dir == start.run_dir for c, _ in start.damaged):
        moved = [start.run_dir.set_aside(c) for c, _ in start.damaged]
        where = f"moved to {', '.join(str(p.relative_to(start.run_dir.root)) for p in moved)}"
    else:
        where = f"left in {start.damaged[0][0].dir}"
    log.warning("damaged checkpoint %s (%s): %s; resuming from %s", names, why, where, start.checkpoint.stem)


def _log_into(run: RunDir, hydra_dir: Path) -> None:
    """A resume in place trains in the checkpoint's run directory, not in the one Hydra made for this command
    (outputs/DATE/TIME): point Hydra's text log there too, so the run's own run.log goes on where it stopped.

    Lines this process already wrote to Hydra's file move with it. Hydra's directory itself stays (empty): a
    command started in the same second shares it, and it may be the working directory (hydra.job.chdir)."""
    target = run.root / "run.log"
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler) or handler.mode != "a":
            continue
        stray = Path(handler.baseFilename)
        if stray.resolve().parent != hydra_dir.resolve() or stray.name != target.name:
            continue
        handler.acquire()
        try:
            ours = handler.stream is not None  # opened by a record of this process (delay=True)
            handler.close()  # mode "a": the next record reopens it, at its new place
            if ours and stray.exists():
                with target.open("a") as out:
                    out.write(stray.read_text())
                stray.unlink()
            handler.baseFilename = str(target)
        finally:
            handler.release()


def _skipped(start: resume.Start) -> Summary:
    """A finished run: re-run into its directory (skip), or `resume=` of it asking for no more steps (finished:
    the command writes nothing, not even Hydra's directory or run.log for it, rlexp.app)."""
    assert start.finished is not None
    meta = start.finished["meta"]
    summary = _summary(Status.SKIPPED, start.run_dir, step=meta.get("total_steps"),
                       steps_per_sec=meta.get("steps_per_sec"), **_metrics(start.finished["eval"]["aggregate"]))
    summary.extra[ALREADY_FINISHED] = start.kind == "finished"
    return summary


def _run(start: resume.Start, stop: StopFlag, lock: RunLock, source: RunLock | None, trackers: Trackers) -> Summary:
    cfg, run = start.cfg, start.run_dir
    fault = faults.injector()
    if start.kind == "evaluate":
        from rlexp.evaluate import load_model

        model = load_model(run.model, cfg, cfg.device)
        steps_per_sec = (start.meta or {}).get("steps_per_sec")
        log.info("%s holds model.zip at step %d without eval.json: evaluating it", run.root, model.num_timesteps)
    else:
        rows, env_extra = _prepare_logs(start)
        model = build(start.spec, env_extra)
        if start.checkpoint is not None:
            _restore(model, start, source)
            log.info("resuming %s from step %d in %s", start.checkpoint.zip, model.num_timesteps, run.root)
        _attach_loggers(model, start, trackers)
        log.info("%s", header(start, model))
        writer = MetaWriter(start)
        writer.model, writer.steps0 = model, model.num_timesteps
        writer.clock = Clock(float((start.meta or {}).get("train_time_total_sec") or 0) if start.checkpoint else 0)
        ckpt = CheckpointCallback(run, cfg.checkpoint_freq, writer.write, stop,
                                  keep_replay=cfg.get("checkpoint_replay") == "all",
                                  on_saved=lambda: logs.commit_best(run), guard=lock.check,
                                  before_save=diskfull.retry_all, final_at=int(cfg.total_steps),
                                  final_replay=cfg.get("checkpoint_final", "full") == "full")
        ckpt.last_saved = start.checkpoint.step if start.checkpoint and not start.fork else None
        callbacks = [ckpt, *([fault] if fault else [])]
        if isinstance(model, OffPolicyAlgorithm) and cfg.diagnostics.freq:
            callbacks.append(ReplayDiagnosticsCallback(cfg.diagnostics.freq, cfg.diagnostics.n_samples))
        trial = hpo.TrialLink.of(cfg)  # an Optuna trial: each evaluation is reported, its pruner may stop the run
        pruned: dict[str, Any] = {}
        if trial is not None:  # evaluations a resumed run keeps that its trial lacks (a stop between the two)
            trial.catch_up(rows)
        if cfg.eval.get("freq"):
            def report(step: int, row: dict[str, Any]) -> None:
                if trial is not None and trial.report(step, row) and not stop.requested:
                    pruned.update(step=step, value=hpo.objective(trial.objective, row), trial=trial.number,
                                  study=trial.study_name, storage=trial.spec, time=artifacts.utc_now())
                    stop.request("pruned")

            callbacks.append(PeriodicEval(run, cfg, int(cfg.eval.freq), periodic_seeds(start), writer.clock,
                                          writer.write, rows, skip=lambda: ckpt.stopping, on_eval=report))
        run.pruned.unlink(missing_ok=True)  # training goes on: a pruned record of an earlier stop is stale
        if cfg.progress:  # over the steps really trained: the header's count
            callbacks.append(progress.callback(steps_trained(model, int(cfg.total_steps))[0] - model.num_timesteps,
                                               float(cfg.get("progress_percent", 10)),
                                               float(cfg.get("progress_minutes", 5))))
        if model.num_timesteps < cfg.total_steps:
            model.learn(total_timesteps=cfg.total_steps - model.num_timesteps, callback=CallbackList(callbacks),
                        reset_num_timesteps=start.checkpoint is None)
        writer.t_end = time.time()
        if ckpt.stopping:
            model.get_env().close()
            latest = run.latest_checkpoint()
            if stop.signum is None and stop.reason == "pruned":
                artifacts.write_json(run.pruned, {**pruned, "stopped_at": ckpt.stopped_at})
                return _summary(Status.PRUNED, run, step=ckpt.stopped_at, signal=stop.name,
                                saved=latest is not None and latest.step == ckpt.stopped_at,
                                checkpoint=str(latest.zip) if latest else None, **_metrics_of(pruned))
            return _summary(Status.INTERRUPTED, run, step=ckpt.stopped_at, signal=stop.name,
                            saved=latest is not None and latest.step == ckpt.stopped_at,
                            checkpoint=str(latest.zip) if latest else None)
        lock.check()
        diskfull.retry_all()  # logs held back by a full disk, before model.zip marks the end
        artifacts.atomic_write(run.model, lambda tmp: model.save(tmp))
        writer.write(run.model)
        steps_per_sec = writer.steps_per_sec()
    seeds = list(start.spec.eval_seeds)
    if not cfg.eval.deterministic:  # sampled actions: the same draws whether or not training ran in this process
        torch.manual_seed(int(cfg.seed))
    try:
        result = evaluate(model, cfg, seeds, cfg.eval.deterministic, checkpoint=run.model, progress=bool(cfg.progress),
                          # a signal stops the final evaluation; a prune that came with the last step does not
                          stop=lambda: (fault.before_eval_episode() if fault else None, stop.signum is not None)[1],
                          config_hash=start.spec.hash)
    except EvaluationStopped:
        return _summary(Status.INTERRUPTED, run, step=int(model.num_timesteps), signal=stop.name, saved=True,
                        checkpoint=str(run.model), during="evaluation")
    finally:
        model.get_env().close()
    lock.check()
    artifacts.write_json(run.eval, result)
    trackers.finish(result["aggregate"], int(model.num_timesteps), [run.eval, run.meta])  # final/*, MLflow artifacts
    if _tensorboard(cfg):
        hparams.log_sweep_job(run.tb_run, result["aggregate"], int(model.num_timesteps))  # a multirun job's HParams
    return _summary(Status.DONE, run, step=int(model.num_timesteps), steps_per_sec=steps_per_sec,
                    **_metrics(result["aggregate"]))


def summary_line(summary: Summary) -> str:
    s = summary
    if s.status == Status.SKIPPED and s.extra.get(ALREADY_FINISHED):
        return (f"already finished at {s.step} steps (success {s.success_rate:.0%}): artifacts in {s.run_dir} "
                f"(model.zip, eval.json); to train further: python run.py resume={s.run_dir} total_steps=MORE")
    if s.status == Status.SKIPPED:
        return f"skipped: {s.run_dir} already has eval.json for this config (success {s.success_rate:.0%})"
    if s.status == Status.BUSY:
        return f"skipped: {s.run_dir} is in use: running in {s.holder}"
    if s.status == Status.FAILED:
        if s.checkpoint:
            return (f"failed: {s.error} in {s.run_dir}; the last complete checkpoint is {s.checkpoint}. Free space "
                    "and run the same command again (it resumes)")
        return f"failed: {s.error} in {s.run_dir}; no checkpoint was written. Free space and run the same command again"
    if s.status == Status.PRUNED:
        value = f" (objective {s.objective:.4g})" if s.objective is not None else ""
        return (f"pruned at step {s.step}{value}: its study's pruner stopped this trial; checkpoint {s.checkpoint}. "
                "The search does not run it again")
    if s.status == Status.INTERRUPTED:
        cont = f"Continue with: python run.py resume={s.run_dir}"
        if s.during == "evaluation":
            return (f"interrupted by {s.signal} during evaluation: {s.checkpoint} is saved at step {s.step}. "
                    f"{cont} (it evaluates)")
        if s.saved:
            return f"interrupted by {s.signal} at step {s.step}: checkpoint {s.checkpoint}. {cont}"
        if s.checkpoint:
            return (f"interrupted by {s.signal} at step {s.step}, but its checkpoint could not be written; the last "
                    f"complete one is {s.checkpoint}. {cont}")
        return (f"interrupted by {s.signal} at step {s.step}; no checkpoint could be written. "
                "Re-run the same command to start again")
    dist = f" | final distance {s.final_distance_mean * 1000:.1f} mm" if s.final_distance_mean is not None else ""
    return (f"success {s.success_rate:.0%} | return {s.return_mean:.2f} ± {s.return_std:.2f}{dist} | {s.step} steps "
            f"at {s.steps_per_sec} steps/s | artifacts: {s.run_dir}" + book.summary_note(s.run_dir, s.step))
