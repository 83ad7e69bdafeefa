"""Config of rlexp's Optuna sweeper (`hydra/sweeper=optuna`), its samplers and pruners, registered with Hydra.

    hydra/sweeper=optuna                      RlexpOptunaConf (every field an override: hydra.sweeper.n_trials=50)
    hydra/sweeper/sampler=tpe|random          seeded; any other Optuna sampler by `_target_`
    hydra/sweeper/pruner=median|successive_halving|hyperband|none

Stored when Hydra's plugin scan imports this module, and again by the RlexpOptunaNames search-path hook after
the scan, so an installed hydra-optuna-sweeper (which registers the same names) cannot replace them.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import MISSING


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = 0  # + the trials the study already holds: a re-run asks new points, reproducibly
    n_startup_trials: int = 10  # random trials before TPE models the results (RL Zoo's default too)


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = 0


@dataclass
class MedianPrunerConf:
    """Stop a trial whose best evaluation so far is below the median of the other trials' at the same step."""

    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5  # finished trials before any is pruned
    n_warmup_steps: int = 0  # env steps of a trial before it may be pruned
    interval_steps: int = 1


@dataclass
class SuccessiveHalvingPrunerConf:
    """Asynchronous successive halving: at rungs min_resource * reduction_factor^k env steps, keep the top 1/rf."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0


@dataclass
class HyperbandPrunerConf:
    """Hyperband: several successive-halving brackets; max_resource is the trials' total_steps."""

    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3


@dataclass
class NoPrunerConf:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class RlexpOptunaConf:
    """hydra/sweeper=optuna: an Optuna study whose trials are rlexp runs (hydra_plugins/rlexp_optuna/sweeper.py).

    storage: null = `journal` under hydra/launcher=slurm (a file on the shared filesystem), `sqlite` otherwise;
    `sqlite` / `journal`: that file in the sweep directory (optuna.db / optuna.journal); or an Optuna storage URL.
    n_trials is the study's total: re-running the command continues toward it.
    """

    _target_: str = "hydra_plugins.rlexp_optuna.sweeper.RlexpOptunaSweeper"
    # The sampler and pruner reach the sweeper as configs, not objects: the pruner's config goes into the study,
    # where every trial's job builds its own pruner from it; the sampler is built with a seed that moves on.
    _recursive_: bool = False
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "median"}])
    direction: str = "maximize"
    study_name: str | None = None  # null: the sweep directory's name
    storage: str | None = None
    n_trials: int = 20
    n_jobs: int = 2  # trials launched at once (a batch); the launcher runs them (local: max_parallel at a time)
    # null: one run per trial (the config's seed). [0, 1, 2]: one run per seed, the same sampled values; the
    # trial's value is their objectives' mean; the first seed alone reports evaluations to the pruner.
    seeds: list[int] | None = None
    sampler: Any = MISSING  # from hydra/sweeper/sampler (the group's option fills it)
    pruner: Any = MISSING  # from hydra/sweeper/pruner
    params: dict[str, str] | None = None


def store_sweeper_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(group="hydra/sweeper", name="optuna", node=RlexpOptunaConf, provider="rlexp")
    for name, node in (("tpe", TPESamplerConf), ("random", RandomSamplerConf)):
        cs.store(group="hydra/sweeper/sampler", name=name, node=node, provider="rlexp")
    for name, node in (("median", MedianPrunerConf), ("successive_halving", SuccessiveHalvingPrunerConf),
                       ("hyperband", HyperbandPrunerConf), ("none", NoPrunerConf)):
        cs.store(group="hydra/sweeper/pruner", name=name, node=node, provider="rlexp")


class RlexpOptunaNames(SearchPathPlugin):
    """Stores our sweeper configs again once Hydra's plugin scan is over (see RlexpLauncherNames)."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        store_sweeper_configs()


store_sweeper_configs()
