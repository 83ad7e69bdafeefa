"""The one seam for speed: everything that replaces SB3's or gymnasium-robotics' own code to run faster.

The builder asks `Speedups.of(cfg)` once and uses what it returns; evaluation envs take the same
`Speedups.env_kwargs`. The one other entry is the env factory's `fast_obs` flag (rlexp/components/envs.py), which
calls `fetch_index.install` inside each env process. Turned off (`fast=false`, `overlap=false`), a run is
plain SB3 classes, bitwise.

- `fast=true` (opt-in): `FastSAC` (rlexp/fast/sac.py) for SB3's exact `SAC` class (the same update, fewer
  operations, within float tolerance) and Fetch envs stepped by index (rlexp/fast/fetch_index.py, bitwise).
- `overlap=true`: SAC/TD3 step the envs in a worker process while the gradient step runs
  (rlexp/fast/overlap.py; action t+1 is chosen one update earlier).

The recorded config keeps naming SB3's classes (so config hashes and run names do not depend on speed);
`model.meta.json`'s `ran` field names the classes that really ran (`Speedups.provenance`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

# SB3 classes (exactly these, not subclasses, which may change what they override) and their fast versions.
FAST_CLASSES = {"stable_baselines3.sac.sac.SAC": "rlexp.fast.sac.FastSAC"}
# The env factory whose Fetch envs can step by index.
FACTORY = "rlexp.components.envs.make_vec_env"


def _name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@dataclass(frozen=True)
class Speedups:
    """Which accelerations a run uses: read from the run-only keys `fast` and `overlap`."""

    fast: bool = True
    overlap: bool = False

    @classmethod
    def of(cls, cfg: DictConfig) -> Speedups:
        return cls(fast=bool(cfg.get("fast", True)), overlap=bool(cfg.get("overlap", False)))

    def env_kwargs(self, env_node: Any) -> dict[str, Any]:
        """Extra arguments of the env factory: Fetch stepped by index (bitwise the same observations)."""
        return {"fast_obs": True} if self.fast and env_node.get("_target_") == FACTORY else {}

    def make_train_env(self, env_node: dict[str, Any], extra: dict[str, Any], threads: int | str | None) -> Any | None:
        """The training VecEnv when an acceleration makes it (overlap: all envs in one worker), else None."""
        if not self.overlap:
            return None
        from rlexp.fast.overlap import OverlapVecEnv, reserve_core

        reserve_core(threads)
        return OverlapVecEnv(env_node, extra)

    def algo_class(self, cls: type) -> type:
        """The class to instantiate for the configured algorithm class `cls`."""
        if self.fast and _name(cls) in FAST_CLASSES:
            from hydra.utils import get_class

            cls = get_class(FAST_CLASSES[_name(cls)])
        if self.overlap:
            from rlexp.fast.overlap import overlapped

            cls = overlapped(cls)
        return cls

    def provenance(self, model: Any, env_node: Any) -> dict[str, Any]:
        """What really ran, for model.meta.json (the recorded config names SB3's classes either way)."""
        cls = type(model)
        if self.overlap:  # overlapped(C) is (OverlapMixin, C) under C's name
            cls = cls.__mro__[2]
        buffer = getattr(model, "replay_buffer", None)
        indexed = bool(self.env_kwargs(env_node))
        envs = getattr(model.get_env(), "envs", None)  # a DummyVecEnv's own envs; others build them elsewhere
        if indexed and envs:
            from rlexp.fast.fetch_index import indexed as is_indexed

            indexed = is_indexed(envs[0])
        return {"algo": _name(cls), "replay_buffer": _name(type(buffer)) if buffer is not None else None,
                "fetch_by_index": indexed, "overlap": self.overlap}


def algo_name(model: Any) -> str:
    """The algorithm's name as its config names it: `SAC` for FastSAC (and for the overlapped class)."""
    for cls in type(model).__mro__:
        if _name(cls) in FAST_CLASSES or not cls.__module__.startswith("rlexp."):
            return cls.__name__
    return type(model).__name__
