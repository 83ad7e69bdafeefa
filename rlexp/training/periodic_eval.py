"""Periodic evaluation during training (`eval.freq`): the book's protocol on a separate env, a table of
results and the best model so far, without changing what training computes.

Every `eval.freq` env steps (at the first step >= k * freq, as checkpoints), the policy plays
`eval.freq_episodes` episodes (episode i reset with seed seeds[i], the final evaluation's seeds; deterministic
actions unless eval.deterministic=false) on its own env. Training's envs are not touched and every global
random state drawn from (Python, NumPy, torch) is put back, so weights are bitwise those of a run without it.
A stop signal lets a started evaluation finish (at most freq_episodes episodes), so the row of its step exists
exactly when the checkpoint that follows it does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch as th
from omegaconf import DictConfig
from stable_baselines3.common.callbacks import BaseCallback

from rlexp import artifacts, diskfull
from rlexp.rundir import RunDir
from rlexp.training import logs

log = logging.getLogger("rlexp")


class Clock:
    """Training wall time from step 0: summed over resumed segments (`offset`, from the checkpoint's meta
    record), without the periodic evaluations' own time (`excluded`)."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset
        self.t0 = time.time()
        self.excluded = 0.0

    def elapsed(self) -> float:
        return self.offset + (time.time() - self.t0) - self.excluded


class PeriodicEval(BaseCallback):
    """Evaluate every `freq` steps; append to evaluations.csv/.npz, log eval/* scalars, keep best_model.zip."""

    def __init__(self, run_dir: RunDir, cfg: DictConfig, freq: int, seeds: list[int], clock: Clock,
                 write_meta: Callable[[Path, dict[str, Any]], None], rows: list[dict[str, Any]],
                 skip: Callable[[], bool] = lambda: False,
                 on_eval: Callable[[int, dict[str, Any]], None] | None = None) -> None:
        super().__init__()
        self.on_eval = on_eval  # called with each evaluation's step and row (an Optuna trial reports it)
        self.run_dir = run_dir
        self.cfg = cfg
        self.freq = freq
        self.seeds = seeds
        self.deterministic = bool(cfg.eval.deterministic)
        self.clock = clock
        self.write_meta = write_meta
        self.skip = skip
        self.best = logs.best_row(rows)
        self.npz = logs.read_npz(run_dir.evaluations_npz, rows[-1]["step"]) if rows else \
            {"timesteps": [], "results": [], "ep_lengths": [], "successes": []}
        self.npz_ok = len(self.npz["timesteps"]) == len(rows)  # an older table without its npz: CSV only
        self.table = logs.evaluations_appender(run_dir.evaluations)
        self.next_at = 0
        self.env: Any = None

    def _on_training_start(self) -> None:
        self.next_at = (self.num_timesteps // self.freq + 1) * self.freq

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_at:
            self.next_at += self.freq * ((self.num_timesteps - self.next_at) // self.freq + 1)
            if not self.skip():  # a stop's checkpoint is already taken: this row would be dropped on resume
                self.evaluate()
        return True

    def _on_training_end(self) -> None:
        self.table.reopen()  # closes the file; rows still waiting for space stay for rlexp.diskfull.retry_all
        if self.env is not None:
            self.env.close()
            self.env = None

    def _episodes(self) -> list[dict[str, Any]]:
        from rlexp.components.envs import make_env_from_cfg
        from rlexp.evaluate import run_episodes
        from rlexp.fast import Speedups
        from rlexp.training.run_state import Arrays, rng_state, set_rng_state

        arrays = Arrays()
        saved = rng_state(arrays)
        try:
            if not self.deterministic:  # sampled actions: the same draws at this step in any run of this config
                th.manual_seed(int(self.cfg.seed) + int(self.num_timesteps))
            if self.env is None:
                self.env = make_env_from_cfg(self.cfg.env, **Speedups.of(self.cfg).env_kwargs(self.cfg.env))
            return run_episodes(self.model, self.cfg, self.seeds, self.deterministic, env=self.env)
        finally:
            set_rng_state(saved, arrays)

    def _save_best(self, step: int, row: dict[str, Any], n_episodes: int) -> bool:
        try:
            artifacts.atomic_write(self.run_dir.best, lambda tmp: self.model.save(tmp))
            self.write_meta(self.run_dir.best, {"best": {
                "step": step, "success_rate": row["success_rate"], "return_mean": row["return_mean"],
                "n_episodes": n_episodes, "sha256": logs.sha256(self.run_dir.best)}})
        except OSError as exc:
            if not diskfull.is_full(exc):
                raise
            diskfull.warn_once("best_model.zip", "best_model.zip of step %d not written (%s); training goes on, "
                               "the next evaluation that beats the saved one writes it", step, exc.strerror)
            return False
        self.best = row
        return True

    def _write_npz(self) -> None:
        """The whole table each time (it is small): a write that fails on a full disk is caught up by the next."""
        if not self.npz_ok:
            return
        try:
            if not logs.write_npz(self.run_dir.evaluations_npz, self.npz):
                self.npz_ok = False
                log.warning("%s: episode counts differ between rows (eval.freq_episodes changed); only "
                            "evaluations.csv continues", self.run_dir.evaluations_npz.name)
        except OSError as exc:
            if not diskfull.is_full(exc):
                raise
            diskfull.warn_full("evaluations.npz", self.run_dir.evaluations_npz, exc)

    def evaluate(self) -> dict[str, Any]:
        from rlexp.evaluate import aggregate

        step = int(self.num_timesteps)
        train_time = self.clock.elapsed()
        t0 = time.time()
        episodes = self._episodes()
        agg = aggregate(episodes)
        row = {"step": step, "train_time_s": round(train_time, 3), "success_rate": agg["success_rate"],
               "return_mean": agg["return_mean"], "return_std": agg["return_std"],
               "final_distance_mean": agg["final_distance_mean"], "ep_len_mean": agg["ep_len_mean"],
               "n_episodes": len(episodes)}
        new_best = self.best is None or logs.score(row) > logs.score(self.best)
        if new_best and not self._save_best(step, row, len(episodes)):
            new_best = False  # best_model.zip is what was saved: a later evaluation that beats it writes one
        row["best"] = int(new_best)
        self.npz["timesteps"].append(step)
        self.npz["results"].append([e["return"] for e in episodes])
        self.npz["ep_lengths"].append([e["length"] for e in episodes])
        self.npz["successes"].append([bool(e["success"]) for e in episodes])
        self._write_npz()
        row["eval_time_s"] = round(time.time() - t0, 3)
        self.table.write(logs.evaluation_line(row))
        self.clock.excluded += time.time() - t0
        for key, value in (("eval/success_rate", agg["success_rate"]), ("eval/mean_reward", agg["return_mean"]),
                           ("eval/mean_ep_length", agg["ep_len_mean"]),
                           ("eval/final_distance", agg["final_distance_mean"])):
            if value is not None:
                self.logger.record(key, value)
        self.logger.record("time/total_timesteps", step, exclude="tensorboard")
        self.logger.dump(step)
        dist = (f" | final distance {agg['final_distance_mean'] * 1000:.1f} mm"
                if agg["final_distance_mean"] is not None else "")
        log.info("eval @ %s steps: success %.0f%% (%d/%d) | return %.2f%s | %.1f s%s", f"{step:,}",
                 100 * agg["success_rate"], sum(e["success"] for e in episodes), len(episodes), agg["return_mean"],
                 dist, row["eval_time_s"], " | new best" if new_best else "")
        if self.on_eval is not None:
            self.on_eval(step, row)
        return row
