"""A run's spec: the composed config validated once, with what every stage derives from it.

run.py composes, `RunSpec.of` validates (rlexp.validate) and derives (config hash, evaluation seeds, algorithm
class), and the spec travels down: task -> resume planning -> build -> train -> evaluate -> meta. Nothing below
re-validates or re-hashes. A resumed run gets the spec of its own recorded config.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from rlexp import validate
from rlexp.config import config_hash, parse_seeds


@dataclass(frozen=True)
class RunSpec:
    cfg: DictConfig  # resolved values; `cfg.algo` etc. are what the builder instantiates
    hash: str  # config_hash(cfg): what the run computes, run-only keys left out
    eval_seeds: tuple[int, ...]  # episode i of the final evaluation is reset with eval_seeds[i]
    algo_cls: type  # the SB3 class `algo._target_` names

    @classmethod
    def of(cls, cfg: DictConfig | RunSpec) -> RunSpec:
        """Validate a composed config (one ConfigError line on bad input) and derive the rest."""
        if isinstance(cfg, RunSpec):
            return cfg
        validate.check_values(cfg)  # first: a bad value is refused before SB3 and torch are imported (~2-3 s)
        seeds = tuple(parse_seeds(cfg.eval.seeds, cfg.eval.n_episodes))
        return cls(cfg, config_hash(cfg), seeds, validate.algo_class(cfg))
