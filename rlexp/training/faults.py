"""Fault injection for the tests and bench/faults.py: a run signals itself at a chosen moment.

`RLEXP_FAULT=SIGNAL@STEP[:WHERE]` (e.g. `SIGTERM@1600:update`) sends SIGNAL to the training process
itself once `num_timesteps >= STEP`, WHERE being `step` (right after that env step, the default),
`update` (inside the next gradient step: just before the critic's optimizer step), `checkpoint` (in the middle of
writing the next checkpoint unit: its zip written, its state file half-way) or `eval` (during the final
evaluation). An environment variable, not config: it never enters a run's config, hash or meta
record, so the resumed run is the same run.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from rlexp.errors import ConfigError

ENV_VAR = "RLEXP_FAULT"
WHERE = ("step", "update", "checkpoint", "eval")


def parse(spec: str) -> tuple[signal.Signals, int, str]:
    try:
        sig, rest = spec.split("@", 1)
        step, _, where = rest.partition(":")
        signum = signal.Signals[sig if sig.startswith("SIG") else f"SIG{sig}"]
        where = where or "step"
        if where not in WHERE:
            raise ValueError
        return signum, int(step), where
    except (KeyError, ValueError):
        raise ConfigError(f"{ENV_VAR}={spec!r}: expected SIGNAL@STEP[:{'|'.join(WHERE)}]") from None


def _fire(signum: signal.Signals) -> None:
    os.kill(os.getpid(), signum)


class FaultInjector(BaseCallback):
    """Sends the configured signal to this process once, at the configured moment."""

    def __init__(self, spec: str) -> None:
        super().__init__()
        self.signum, self.step, self.where = parse(spec)
        self.fired = False
        self.armed = False

    def _arm_update(self) -> None:
        """Fires inside the next gradient step, just before the critic's optimizer step (its gradients computed,
        nothing applied yet): the optimizer's step wrapped on the instance for one call. Not a module hook: a
        hook sends FastSAC's update through SB3's module calls for that step (rlexp.fast.sac.hooked)."""
        critic = getattr(self.model, "critic", None)
        opt = getattr(critic, "optimizer", None) or self.model.policy.optimizer
        original = opt.step

        def step(*args: Any, **kwargs: Any) -> Any:
            if not self.fired:
                self.fired = True
                vars(opt).pop("step", None)
                _fire(self.signum)
            return original(*args, **kwargs)

        opt.step = step

    def _arm_checkpoint(self) -> None:
        from rlexp.training import checkpoint

        def hook() -> None:  # called with the zip written and the state's temp file on disk
            if not self.fired:
                self.fired = True
                checkpoint.mid_write_hook = None
                _fire(self.signum)

        checkpoint.mid_write_hook = hook

    def before_eval_episode(self) -> None:
        if self.where == "eval" and not self.fired:
            self.fired = True
            _fire(self.signum)

    def _on_step(self) -> bool:
        if self.fired or self.where == "eval" or self.num_timesteps < self.step:
            return True
        if self.where == "step":
            self.fired = True
            _fire(self.signum)
        elif self.where == "update" and not self.armed:
            self.armed = True
            self._arm_update()
        elif self.where == "checkpoint" and not self.armed:
            self.armed = True
            self._arm_checkpoint()
        return True


def injector() -> FaultInjector | None:
    spec = os.environ.get(ENV_VAR)
    return FaultInjector(spec) if spec else None
