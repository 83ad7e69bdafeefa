"""The `logger` config group's options and the check that refuses a missing tracker (light: no SB3, no torch).

`logger` lists where a run's scalars go: `tensorboard` (tb/run_1/) and `csv` (progress.csv) are the run
directory's own files (the default: both); `wandb` and `mlflow` are trackers, each an optional extra
(`pip install "rlexp[wandb]"`), run by rlexp.training.tracking.
"""

from __future__ import annotations

import importlib.util

from omegaconf import DictConfig, OmegaConf

from rlexp.errors import ConfigError

FILES = ("tensorboard", "csv")  # written into the run directory
# tracker -> (module it imports, the extra that installs it)
TRACKERS = {"wandb": ("wandb", "rlexp[wandb]"), "mlflow": ("mlflow", "rlexp[mlflow]")}
DEFAULT = ("tensorboard", "csv")  # also what a run recorded before the `logger` group had


def chosen(cfg: DictConfig) -> list[str]:
    """The options of the `logger` group this config chose (`logger=[tensorboard,mlflow]` -> both)."""
    node = cfg.get("logger")
    return list(DEFAULT) if node is None else [str(k) for k in node]


def check(cfg: DictConfig) -> None:
    """Refuse unknown options and trackers whose package is missing (one line, before anything is written)."""
    for name in chosen(cfg):
        if name in FILES:
            continue
        if name not in TRACKERS:
            raise ConfigError(f"unknown logger {name!r}; valid: {', '.join([*FILES, *TRACKERS])}")
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger={name} needs the {module} package, which is not installed: "
                              f"pip install \"{extra}\"")
    mode = OmegaConf.select(cfg, "logger.wandb.mode", default="online")
    if "wandb" in chosen(cfg) and mode not in ("online", "offline", "disabled"):
        raise ConfigError(f"logger.wandb.mode must be online, offline or disabled, got {mode!r}")
