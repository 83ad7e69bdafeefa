"""The trackers of the `logger` config group (rlexp.trackers): W&B and MLflow runs beside the run directory.

A tracker gets exactly the scalars TensorBoard gets (SB3's logger, through a KVWriter), at the
env step of each dump, then the final evaluation's aggregate as `final/*`; MLflow also gets eval.json and
model.meta.json as artifacts.

One tracker run per run directory: its id is kept in the run directory's trackers.json, so a resumed, requeued or
re-run command continues the same W&B / MLflow run. The steps a run killed after its last checkpoint already
sent are not sent again: trackers.json holds the last step sent, written before each dump is sent (a kill may
drop the one dump in flight from a tracker, and W&B's service writes asynchronously, so a SIGKILL may lose what it
had not written yet; never a repeated step; TensorBoard and progress.csv keep every one).
A tracker that cannot start or fails while the run trains (no login, network, a full disk) is warned about once
and dropped: it never stops the training.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from stable_baselines3.common.logger import KVWriter

from rlexp import artifacts
from rlexp.config import flatten
from rlexp.trackers import chosen

if TYPE_CHECKING:
    from rlexp.status import Summary
    from rlexp.training.resume import Start

log = logging.getLogger("rlexp")

FILE_STORE_OPT_IN = "MLFLOW_ALLOW_FILE_STORE"  # MLflow 3's documented opt-out of its file-store refusal


def _scalars(key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...] | None]) -> dict[str, float]:
    """What TensorBoard gets of a dump: numbers not excluded from it (SB3 leaves time/total_timesteps out)."""
    out = {}
    for key, value in key_values.items():
        excluded = key_excluded.get(key)
        if excluded is not None and "tensorboard" in excluded:
            continue
        if isinstance(value, bool) or not hasattr(value, "__float__") or isinstance(value, str | bytes):
            continue
        out[key] = float(value)
    return out


class Tracker:
    """One tracker's run for one run directory; the KVWriter face is `Writer` below."""

    name = ""

    def __init__(self, settings: dict[str, Any], state: dict[str, Any], context: Context,
                 save: Callable[[], None]) -> None:
        self.settings, self.state, self.context, self.save = settings, state, context, save

    def identity(self) -> dict[str, Any]:
        """What must stay the same for a later command to continue this tracker run."""
        return {}

    def new_run(self) -> dict[str, Any]:
        """What a new tracker run records before it starts (an id chosen here survives a kill during the start)."""
        return {}

    def open(self, resumed: bool) -> None:
        raise NotImplementedError

    def log(self, scalars: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def artifacts(self, paths: list[Path]) -> None:
        """Files of the finished run (MLflow keeps them; W&B gets the numbers only)."""

    def close(self, status: str) -> None:
        raise NotImplementedError

    def where(self) -> str:
        raise NotImplementedError


class Context:
    """What every tracker records about the run, computed once."""

    def __init__(self, cfg: DictConfig, run_dir: Path, config_hash: str, experiment: str | None,
                 sweep_dir: Path | None) -> None:
        from rlexp.config import to_container

        self.cfg = cfg
        self.config = to_container(cfg)
        self.run_dir = run_dir
        self.config_hash = config_hash
        self.experiment = experiment
        self.sweep_dir = sweep_dir
        self.git = artifacts.git_state()


class WandbTracker(Tracker):
    """Weights & Biases through its public SDK: wandb.init with our own run id, run.log at env steps."""

    name = "wandb"

    def new_run(self) -> dict[str, Any]:
        return {"id": uuid.uuid4().hex[:12]}  # W&B run ids: lowercase letters and digits

    def open(self, resumed: bool) -> None:
        import wandb

        s, c = self.settings, self.context
        group = s.get("group") or (c.sweep_dir.name if c.sweep_dir is not None else None)
        mode = s.get("mode") or "online"
        self.run = wandb.init(
            project=s.get("project"), entity=s.get("entity"), group=group, name=s.get("name") or c.run_dir.name,
            tags=list(s.get("tags") or []) or None, mode=mode, dir=str(c.run_dir), id=self.state["id"],
            # offline: each process writes its own offline-run-* folder with this id; `wandb sync --id ID` replays them
            # in order of start time into one run (W&B ignores `resume` offline, with a warning)
            resume="allow" if mode == "online" else None,
            # console="off": run.log stays rlexp's own; W&B's banner lines stay off stderr (one error line stays one)
            settings=wandb.Settings(console="off", silent=True))
        self.run.config.update({"config": c.config, "config_hash": c.config_hash, "git": c.git,
                                "run_dir": str(c.run_dir)}, allow_val_change=True)

    def log(self, scalars: dict[str, float], step: int) -> None:
        self.run.log(scalars, step=step)

    def close(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)

    def where(self) -> str:
        mode = self.settings.get("mode") or "online"
        if mode == "offline":
            return (f"W&B run {self.state['id']} offline in {self.context.run_dir / 'wandb'} (upload: wandb sync --id "
                    f"{self.state['id']} {self.context.run_dir / 'wandb'}/offline-run-*)")
        return f"W&B run {self.state['id']} ({mode})"


class MlflowTracker(Tracker):
    """MLflow through MlflowClient: params from the resolved config (flattened) once, metrics at env steps."""

    name = "mlflow"
    PARAM_LIMIT = 6000  # MLflow's longest param value

    def uri(self) -> str:
        """The tracking URI; by default a file store `mlruns/` beside the run directory (in a multirun: the
        sweep directory's, shared by its jobs)."""
        uri = self.settings.get("tracking_uri")
        return str(uri) if uri else (self.context.run_dir.resolve().parent / "mlruns").as_uri()

    def identity(self) -> dict[str, Any]:
        return {"tracking_uri": self.uri()}

    def open(self, resumed: bool) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        c = self.context
        if self.uri().startswith("file:"):
            # MLflow 3.x keeps its file store in maintenance mode and refuses it unless this documented opt-out is set
            os.environ.setdefault(FILE_STORE_OPT_IN, "true")
        self.client = MlflowClient(tracking_uri=self.uri())
        if self.state.get("run_id"):
            self.client.update_run(self.state["run_id"], status="RUNNING")
            return
        name = self.settings.get("experiment_name") or c.experiment or "rlexp"
        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                experiment_id = self.client.create_experiment(name)
            except (MlflowException, OSError):  # another job of the sweep created it meanwhile
                experiment = self.client.get_experiment_by_name(name)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
        tags = {"rlexp.config_hash": c.config_hash, "rlexp.run_dir": str(c.run_dir),
                "mlflow.source.git.commit": c.git.get("commit") or "", "rlexp.git_dirty": str(c.git.get("dirty")),
                **{str(k): str(v) for k, v in (self.settings.get("tags") or {}).items()}}
        run = self.client.create_run(experiment_id, run_name=self.settings.get("run_name") or c.run_dir.name,
                                     tags=tags)
        self.state.update(run_id=run.info.run_id, experiment_id=experiment_id)
        self.save()
        self._params()

    def _params(self) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[: self.PARAM_LIMIT]) for k, v in sorted(flatten(self.context.config).items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.state["run_id"], params=params[i:i + 100])

    def log(self, scalars: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.state["run_id"], metrics=[Metric(k, v, now, step) for k, v in scalars.items()])

    def artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            if path.exists():
                self.client.log_artifact(self.state["run_id"], str(path))

    def close(self, status: str) -> None:
        self.client.set_terminated(self.state["run_id"], status=status)

    def where(self) -> str:
        return f"MLflow run {self.state.get('run_id')} in {self.uri()}"


def _hydra_job() -> tuple[str | None, Path | None]:
    """The +experiment name and, in a multirun, the sweep directory (None outside Hydra)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    sweep = Path(hc.sweep.dir) if hc.mode == RunMode.MULTIRUN else None
    return hc.runtime.choices.get("experiment"), sweep


KINDS: dict[str, type[Tracker]] = {"wandb": WandbTracker, "mlflow": MlflowTracker}
MLFLOW_STATUS = {"done": "FINISHED", "interrupted": "KILLED", "pruned": "KILLED"}


class Writer(KVWriter):
    """SB3 KVWriter onto one tracker: sends only steps beyond the last one sent (kept in trackers.json)."""

    def __init__(self, tracker: Tracker, after: int, save: Callable[[], None]) -> None:
        self.tracker, self.after, self.save = tracker, after, save
        self.failed = False

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, Any], step: int = 0) -> None:
        if self.failed or step <= self.after:
            return
        scalars = _scalars(key_values, key_excluded)
        if not scalars:
            return
        state = self.tracker.state
        state["step"] = max(int(step), int(state.get("step", -1)))
        self.save()  # first: a kill between the two drops this dump from the tracker, never repeats it
        self.call(self.tracker.log, scalars, int(step))

    def call(self, fn: Callable[..., Any], *args: Any) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - a tracker never stops the training
            self.failed = True
            log.warning("logger=%s failed (%s: %s); the run goes on without it", self.tracker.name,
                        type(exc).__name__, exc)

    def close(self) -> None:
        """SB3's Logger.close: the tracker run is closed by Trackers.close, with the run's outcome."""


class Trackers:
    """The trackers a run chose, open for the run's lifetime (`with Trackers.open(...) as t`)."""

    def __init__(self, path: Path, writers: list[Writer]) -> None:
        self.path = path
        self.writers = writers
        self.state: dict[str, Any] = {}  # trackers.json: each tracker's id, identity and last step sent

    @classmethod
    def open(cls, start: Start) -> Trackers:
        """Start (or continue: same run directory, same config but total_steps) each chosen tracker's run."""
        from rlexp.config import config_hash

        cfg, run_dir = start.cfg, start.run_dir
        names = [n for n in chosen(cfg) if n in KINDS]
        trackers = cls(run_dir.trackers, [])
        if not names:
            return trackers
        try:
            trackers.state = dict(artifacts.read_json(run_dir.trackers)) if run_dir.trackers.exists() else {}
        except (OSError, ValueError):
            trackers.state = {}
        experiment, sweep_dir = _hydra_job()
        context = Context(cfg, run_dir.root, start.spec.hash, experiment, sweep_dir)
        lineage = config_hash(cfg, lineage=True)
        for name in names:
            settings = OmegaConf.to_container(cfg.logger[name], resolve=True) or {}
            state: dict[str, Any] = dict(trackers.state.get(name) or {})
            tracker = KINDS[name](settings, state, context, trackers.save)
            resumed = state.get("lineage") == lineage and all(state.get(k) == v for k, v in tracker.identity().items())
            if not resumed:  # a new tracker run: this run directory's first, or another config's
                state.clear()
                state.update(lineage=lineage, step=-1, **tracker.new_run(), **tracker.identity())
            trackers.state[name] = state
            writer = Writer(tracker, int(state.get("step", -1)), trackers.save)
            trackers.save()  # the id first: a kill inside the tracker's start continues the same run
            writer.call(tracker.open, resumed)
            if not writer.failed:
                log.info("logger=%s: %s%s", name, tracker.where(),
                         f" (continued, steps after {state['step']:,})" if resumed and state["step"] >= 0 else "")
                trackers.writers.append(writer)
        return trackers

    def save(self) -> None:
        try:
            artifacts.write_json(self.path, self.state)
        except OSError as exc:
            log.warning("cannot write %s (%s); a resume may send some steps again", self.path, exc)

    def finish(self, aggregate: dict[str, Any], step: int, files: list[Path]) -> None:
        """The final evaluation's aggregate as `final/*` at the last step, and the run's files (once)."""
        final = {f"final/{k}": float(v) for k, v in aggregate.items()
                 if isinstance(v, int | float) and not isinstance(v, bool)}
        for writer in self.writers:
            if writer.tracker.state.get("final"):
                continue
            writer.tracker.state["final"] = True
            writer.tracker.state["step"] = max(step, int(writer.tracker.state.get("step", -1)))
            self.save()
            writer.call(writer.tracker.log, final, step)
            writer.call(writer.tracker.artifacts, files)

    def ended(self, summary: Summary) -> Summary:
        """Close the trackers' runs with the run's outcome; returns the summary."""
        self.close(str(summary.status))
        return summary

    def close(self, outcome: str) -> None:
        """End each tracker's run: `done`, `interrupted` (resumable), or `failed`."""
        status = MLFLOW_STATUS.get(outcome, "FAILED")
        for writer in self.writers:
            writer.call(writer.tracker.close, status)
        self.writers = []

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self.writers:
            self.close("failed" if exc_type is not None else "interrupted")
