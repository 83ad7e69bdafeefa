"""Training progress: SB3's bar on a terminal, plain lines in a file.

A bar redraws itself with escape codes; written to a file (stdout redirected, a SLURM job's log) it shows up
once, at the end, so a long run's log said nothing for hours. Without a terminal the run logs one line every
`progress_percent` percent of its steps or `progress_minutes` minutes, whichever comes first. Both count the
steps that will really be trained (the header's number: whole rollouts, all envs stepping together), not
`total_steps`.
"""

from __future__ import annotations

import logging
import sys
import time

from stable_baselines3.common.callbacks import BaseCallback, ProgressBarCallback

log = logging.getLogger("rlexp")


class ProgressBar(ProgressBarCallback):
    """SB3's rich progress bar over the steps this process will train (SB3's own counts the steps asked for)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total

    def _on_training_start(self) -> None:
        from tqdm.rich import tqdm  # SB3's bar: ProgressBarCallback checked at init that tqdm and rich exist

        self.pbar = tqdm(total=self.total)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressLines(BaseCallback):
    """One log line every `percent` % of `total` steps or every `minutes` minutes (0 turns either off): steps
    done of the total, steps/s since this process started training, ETA, and the success rate of the last
    finished episodes when the env reports one."""

    def __init__(self, total: int, percent: float = 10, minutes: float = 5) -> None:
        super().__init__()
        self.total = total
        self.percent = percent
        self.minutes = minutes
        self.start_step = 0
        self.t0 = self.last_t = 0.0
        self.next_step = 0

    def _on_training_start(self) -> None:
        self.start_step = self.num_timesteps
        self.t0 = self.last_t = time.monotonic()
        self._plan_next()

    def _plan_next(self) -> None:
        done = self.num_timesteps - self.start_step
        if self.percent <= 0:
            self.next_step = sys.maxsize
            return
        chunk = max(1, round(self.total * self.percent / 100))
        self.next_step = self.start_step + (done // chunk + 1) * chunk

    def _on_step(self) -> bool:
        now = time.monotonic()
        if self.num_timesteps >= self.next_step or (self.minutes > 0 and now - self.last_t >= self.minutes * 60):
            self.last_t = now
            log.info("%s", self.line(now))
            self._plan_next()
        return True

    def line(self, now: float) -> str:
        done = self.num_timesteps - self.start_step
        elapsed = now - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"progress {done:,}/{self.total:,} steps ({done / self.total:.0%})" if self.total else
                 f"progress {done:,} steps", f"{rate:,.0f} steps/s"]
        if rate > 0 and done < self.total:
            parts.append(f"ETA {_duration((self.total - done) / rate)}")
        success = getattr(self.model, "ep_success_buffer", None)
        if success:
            parts.append(f"success {sum(success) / len(success):.0%} (last {len(success)} episodes)")
        return " | ".join(parts)


def callback(total: int, percent: float, minutes: float) -> BaseCallback:
    """The bar on a terminal, lines otherwise (stdout is where both go)."""
    if sys.stdout.isatty():
        return ProgressBar(total)
    return ProgressLines(total, percent, minutes)
