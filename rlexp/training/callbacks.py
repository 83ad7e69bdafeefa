"""Training callbacks: checkpoints (periodic and on a stop request), graceful stop on signals, replay diagnostics."""

from __future__ import annotations

import logging
import shutil
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm

from rlexp.rundir import RunDir

log = logging.getLogger("rlexp")


class StopFlag:
    """Turns SIGTERM/SIGINT/SIGUSR1/SIGUSR2 into a request to checkpoint and stop.

    Installed for the whole run (building, training, saving, evaluating), so a signal at any moment is a
    request, never a kill. A second SIGINT restores Python's default (KeyboardInterrupt): Ctrl-C twice
    always stops.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.reason: str | None = None  # a stop asked for by the run itself (request), not by a signal
        self._previous: dict[int, Any] = {}

    def request(self, reason: str) -> None:
        """Checkpoint and stop as on a signal, for `reason` (an Optuna trial its pruner stopped: "pruned")."""
        self.reason = reason

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signum = signum
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __enter__(self) -> StopFlag:
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers, no graceful stop
                break
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @property
    def requested(self) -> bool:
        return self.signum is not None or self.reason is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else self.reason or "stop"


class CheckpointCallback(BaseCallback):
    """Every `freq` env steps, when a stop is requested, and when training reaches `final_at` steps, save a
    checkpoint unit (rlexp.training.checkpoint).

    Saves happen at the start of a rollout, the one moment when weights, optimizer state, step counter,
    replay buffer, envs and random states all describe the same step: SB3 counts a step before `_on_step`
    but stores its transition and takes its gradient steps after. Off-policy runs (one env step per
    rollout) therefore stop after the current step and its gradient step; on-policy runs (PPO) at the end
    of the rollout in progress. A failed write (full disk) skips that checkpoint with a warning and keeps
    training; the previous checkpoint stays complete. `on_saved` runs after each committed checkpoint
    (training links the best model of that step beside it), `before_save` before each (logs held back by a
    full disk are written first), `guard` at every step (raises when another process took the run over).

    Replay buffers of older units are deleted (`keep_replay=False`, the default) except the two newest: if the
    newest unit turns out damaged, a resume falls back to the one before it, which needs its replay buffer to
    continue bitwise. The cost is one more buffer on disk (up to ~543 MB for a full 1M-transition Push buffer).

    The final unit (`final_at`: the run's total_steps) holds the state training ended in, so extending a finished
    run continues from there, bitwise equal to a run asked for more steps from the start. It is saved where a
    longer run would save a unit at that step: at the next rollout start when the loop reaches one (overlap=true
    stores its last step there, before the last update), else when training ends. `final_replay=False` leaves
    its replay buffer out and drops the older units' buffers too: a finished run then keeps none. `on_saved` is
    not called for it: no evaluation follows it, so best_model.zip is already the best as of its step, and
    checkpoints/best_model.zip keeps the best as of the unit before (a fork from that unit recovers it there).
    """

    KEEP_REPLAYS = 2  # the newest unit and the one a resume falls back to

    def __init__(self, run_dir: RunDir, freq: int, write_meta: Callable[[Path, dict[str, Any]], None],
                 stop: StopFlag | None = None, keep_replay: bool = False,
                 on_saved: Callable[[], None] | None = None, guard: Callable[[], None] | None = None,
                 before_save: Callable[[], None] | None = None, final_at: int | None = None,
                 final_replay: bool = True) -> None:
        super().__init__()
        self.final_at = final_at
        self.final_replay = final_replay
        self.guard = guard
        self.before_save = before_save
        self.run_dir = run_dir
        self.freq = freq
        self.write_meta = write_meta
        self.stop = stop
        self.keep_replay = keep_replay
        self.on_saved = on_saved
        self.next_at = 0
        self.pending = False
        self.stopping = False
        self.announced = False
        self.last_saved: int | None = None
        self.stopped_at: int | None = None  # the step a stop request saved (or tried to save) at

    def _on_training_start(self) -> None:
        self.next_at = (self.num_timesteps // self.freq + 1) * self.freq if self.freq else 0

    def _at_final(self) -> bool:
        return self.final_at is not None and not self.stopping and self.num_timesteps >= self.final_at

    def save(self) -> bool:
        from rlexp.training import checkpoint

        ckpt = self.run_dir.checkpoint(self.num_timesteps)
        final = self._at_final()
        replay = self.final_replay or not final
        if self.guard is not None:
            self.guard()
        if self.before_save is not None:
            self.before_save()
        try:
            checkpoint.save(self.model, ckpt, self.write_meta, replay=replay)
        except OSError as exc:
            previous = self.run_dir.latest_checkpoint()
            log.warning("checkpoint at step %d skipped (%s); %s", ckpt.step, exc.strerror or exc,
                        f"the last complete one is {previous.zip}" if previous else "no earlier checkpoint exists")
            return False
        self.last_saved = ckpt.step
        if self.on_saved is not None and not final:  # nothing is evaluated after the final unit: best_model.zip
            # stays the best as of its step, and checkpoints/ keeps the earlier unit's for a fork from that one
            try:
                self.on_saved()
            except OSError as exc:
                log.warning("after the checkpoint at step %d: %s", ckpt.step, exc)
        if not self.keep_replay or not replay:  # the replay buffer can be GBs: keep the two newest units' only
            for old in self.run_dir.checkpoints()[:-self.KEEP_REPLAYS] if replay else self.run_dir.checkpoints():
                if old.replay.exists():  # renamed away first (atomic), so no half-deleted buffer stays named
                    doomed = old.dir / f".pruned.{old.replay.name}"
                    old.replay.rename(doomed)
                    shutil.rmtree(doomed, ignore_errors=True)
        return True

    def _save_pending(self) -> None:
        if self.pending and self.last_saved != self.num_timesteps:
            self.save()
        self.pending = False

    def _on_step(self) -> bool:
        if self.guard is not None:
            self.guard()
        if self.stopping:
            return False  # the checkpoint was taken at the start of this rollout
        if self.freq and self.num_timesteps >= self.next_at:
            self.pending = True
            self.next_at += self.freq * ((self.num_timesteps - self.next_at) // self.freq + 1)
        if self.stop is not None and self.stop.signum is not None and not self.announced:  # a request says itself
            wait = "this rollout ends" if isinstance(self.model, OnPolicyAlgorithm) else "this step's update ends"
            log.warning("%s received at step %d: checkpointing and stopping when %s",
                        self.stop.name, self.num_timesteps, wait)
            self.announced = True
        return True

    def _on_rollout_start(self) -> None:
        if self.stop is not None and self.stop.requested:
            self.pending = True
            self.stopping = True
            self.stopped_at = self.num_timesteps
        self.pending = self.pending or self._at_final()
        self._save_pending()

    def _on_training_end(self) -> None:
        self.pending = self.pending or self._at_final()
        self._save_pending()


class ReplayDiagnosticsCallback(BaseCallback):
    """The replay/* scalars the book reads for SAC: critic Q statistics on sampled pairs, alpha,
    stored-reward statistics and achieved-to-desired goal distances.

    Goal distances use a random sample of stored transitions (the book's script took the oldest
    1000 rows, which describes the warm-up data rather than the current buffer).
    """

    def __init__(self, freq: int = 10_000, n_samples: int = 1000, distance_threshold: float = 0.05) -> None:
        super().__init__()
        self.freq = freq
        self.n_samples = n_samples
        self.threshold = distance_threshold
        self.next_at = 0

    def _on_training_start(self) -> None:
        self.next_at = (self.num_timesteps // self.freq + 1) * self.freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self.next_at += self.freq
            self.log_diagnostics()
        return True

    @th.no_grad()
    def log_diagnostics(self) -> None:
        model = self.model
        buf = getattr(model, "replay_buffer", None)
        # size() counts rows of n_envs transitions each
        if buf is None or buf.size() * buf.n_envs < min(1000, self.n_samples):
            return
        if isinstance(buf, HerReplayBuffer) and not buf.ep_length.any():
            return  # HER samples only from finished episodes
        batch = buf.sample(self.n_samples, env=model._vec_normalize_env)
        critic = getattr(model, "critic", None)
        if critic is not None:
            qs = critic(batch.observations, batch.actions)
            q1, q2 = qs[0].squeeze(-1), qs[-1].squeeze(-1)
            q_min = th.min(q1, q2)
            for name, q in (("q1", q1), ("q2", q2), ("q_min", q_min)):
                self.logger.record(f"replay/{name}_mean", float(q.mean()))
                self.logger.record(f"replay/{name}_std", float(q.std()))
            self.logger.record("replay/q_min_max", float(q_min.max()))
            self.logger.record("replay/q_min_min", float(q_min.min()))
        if getattr(model, "log_ent_coef", None) is not None:
            self.logger.record("replay/ent_coef", float(th.exp(model.log_ent_coef.detach()).item()))
        elif getattr(model, "ent_coef_tensor", None) is not None:
            self.logger.record("replay/ent_coef", float(model.ent_coef_tensor.item()))
        n = buf.buffer_size if buf.full else buf.pos
        rewards = np.asarray(buf.rewards[:n]).ravel()
        self.logger.record("replay/reward_mean", float(rewards.mean()))
        self.logger.record("replay/reward_std", float(rewards.std()))
        self.logger.record("replay/reward_min", float(rewards.min()))
        self.logger.record("replay/reward_max", float(rewards.max()))
        self.logger.record("replay/reward_positive_frac", float((rewards > -0.5).mean()))
        obs = batch.observations
        if isinstance(obs, dict) and "achieved_goal" in obs and "desired_goal" in obs:
            d = th.linalg.norm(obs["achieved_goal"] - obs["desired_goal"], dim=-1).cpu().numpy()
            self.logger.record("replay/goal_distance_mean", float(d.mean()))
            self.logger.record("replay/goal_distance_std", float(d.std()))
            self.logger.record("replay/goal_distance_min", float(d.min()))
            self.logger.record("replay/goal_distance_max", float(d.max()))
            self.logger.record("replay/goal_within_threshold", float((d < self.threshold).mean()))
