"""Launcher configs of rlexp's launchers (launchers.py) and their registration with Hydra.

`hydra/launcher=sequential|local|slurm` are our names (rlexp/conf/config.yaml makes `sequential` the default,
so a plain `-m` uses it); `submitit_local|submitit_slurm`, the stock plugin's names, are pointed at our
launchers too. Stored when Hydra's plugin scan imports this module, and once more after the
scan by the RlexpLauncherNames search-path hook, so the stock plugin cannot re-register over them.
"""

from dataclasses import dataclass

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.config_store import ConfigStore
from hydra.plugins.search_path_plugin import SearchPathPlugin
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf, SlurmQueueConf


@dataclass
class RlexpSequentialConf:
    """hydra/launcher=sequential (the default): Hydra's basic launcher, jobs one after another in this process,
    plus what every rlexp launcher does: the job list in the sweep dir, one line per job, a closing table."""

    _target_: str = "hydra_plugins.rlexp_launchers.launchers.RlexpSequentialLauncher"


@dataclass
class RlexpLocalConf(LocalQueueConf):
    """hydra/launcher=local (= submitit_local): parallel runs on this machine, at most max_parallel at once.

    A run stopped by SIGUSR2/SIGTERM checkpoints and is restarted from that checkpoint (up to max_num_timeout
    times). Logs: <sweep dir>/.submitit/<job id>/.
    """

    _target_: str = "hydra_plugins.rlexp_launchers.launchers.RlexpLocalLauncher"
    max_parallel: int = 2
    max_num_timeout: int = 3
    timeout_min: int = 10080  # submitit kills a local job after this many minutes (7 days)
    cpus_per_task: int | None = 1  # also each job's torch threads (OMP_NUM_THREADS, unless already set)


@dataclass
class RlexpSlurmConf(SlurmQueueConf):
    """hydra/launcher=slurm (= submitit_slurm): a sweep as array jobs within MaxArraySize; every field is an override.

    Per-site defaults without editing files: RLEXP_SLURM_PARTITION, RLEXP_SLURM_ACCOUNT, RLEXP_SLURM_QOS.
    SLURM sends USR2 signal_delay_s before the time limit; the run checkpoints and stops, the job is requeued
    (at most max_num_timeout times) and resumes from its last checkpoint.
    """

    _target_: str = "hydra_plugins.rlexp_launchers.launchers.RlexpSlurmLauncher"
    partition: str | None = "${oc.env:RLEXP_SLURM_PARTITION,null}"
    account: str | None = "${oc.env:RLEXP_SLURM_ACCOUNT,null}"
    qos: str | None = "${oc.env:RLEXP_SLURM_QOS,null}"
    timeout_min: int = 1440  # per job; a 2M-step Push run does not fit in one day on CPU: requeues continue it
    cpus_per_task: int | None = 2
    mem_gb: int | None = 8
    array_parallelism: int = 32  # jobs of the sweep running at once, over all its arrays
    # Jobs per array; null: the cluster's MaxArraySize (`scontrol show config`). A larger sweep is submitted as
    # several arrays, all at once, sharing array_parallelism (hydra_plugins/rlexp_launchers/arrays.py).
    max_array_size: int | None = None
    signal_delay_s: int = 300  # USR2 this long before the limit: time to write the checkpoint + replay buffer
    max_num_timeout: int = 20  # requeues after a timeout; each one resumes from the last checkpoint
    # false: submit the array and return at once (Hydra issue #2479), printing `python -m rlexp status DIR`;
    # the jobs record their progress in the sweep dir themselves. true: print each job's line as it ends.
    wait: bool = True


def store_launcher_configs() -> None:
    """Our names, and the plugin's own names pointed at ours, so `hydra/launcher=submitit_slurm` also
    checkpoints and requeues, and `submitit_local` does not start every job of a sweep at once."""
    names = {"sequential": RlexpSequentialConf, "local": RlexpLocalConf, "submitit_local": RlexpLocalConf,
             "slurm": RlexpSlurmConf, "submitit_slurm": RlexpSlurmConf}
    for name, node in names.items():
        ConfigStore.instance().store(group="hydra/launcher", name=name, node=node, provider="rlexp")


class RlexpLauncherNames(SearchPathPlugin):
    """Stores our launcher configs again once Hydra's plugin scan is over.

    The scan re-executes every plugin module (`load_module`), so hydra-submitit-launcher's config module may
    re-register its stock `submitit_*` entries after ours. Hydra builds the config search path, calling this,
    after the scan and before it composes any config: storing here makes our entries the final ones.
    """

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        store_launcher_configs()


store_launcher_configs()
