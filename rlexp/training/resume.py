"""Where a run starts: fresh, from a checkpoint (in place or as a fork), evaluation only, or skipped.

Decided once, read-only, before anything is written, so a refused command leaves every run directory as
it was. The rules:
- A run directory that already holds this config continues itself: finished -> skipped; model.zip at
  total_steps without eval.json -> evaluated; checkpoints -> resumed from the latest (sweep re-runs,
  SLURM requeues). The same directory holding another config is refused.
- `resume=DIR|ZIP` runs the checkpoint's own recorded config. Only total_steps (to extend) and run-only
  keys may change; any other key the command types that changes a value is refused with the list of keys. A
  retyped `+experiment=NAME` is accepted when it is the run's own experiment: only the keys typed are compared.
- `resume=DIR` on a finished run (eval.json) that asks for no more steps than it trained is `finished`: nothing
  to do, nothing written. Asking for more extends it, as a fork, from the unit written when training ended
  (bitwise equal to a run asked for the larger total_steps from the start); a run finished before such units
  existed extends from its model.zip (weights only).
- It continues in place when the checkpoint is the latest of an unfinished run and no other
  `hydra.run.dir` was asked for; otherwise it is a fork: the new directory gets the continued run
  (model, eval, checkpoints, TensorBoard history up to the checkpoint) and the original is not touched.
- A run directory resumes from its newest checkpoint that verifies (every part's size and sha256): newer,
  damaged units are listed in `Start.damaged`, and training moves them into `checkpoints/damaged/` once it
  holds the lock (a fork's source is only named, never changed). Only when no unit verifies is the start
  refused. A checkpoint named explicitly (`resume=.../step_N.zip`) is used or refused as it is: the user asked
  for that one, and a silent substitute would continue from elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlexp import artifacts
from rlexp.components import current_target
from rlexp.config import RUN_ONLY_KEYS, check_recorded_targets, config_hash, flatten, to_container
from rlexp.errors import CheckpointError, ConfigError
from rlexp.rundir import Checkpoint, RunDir
from rlexp.spec import RunSpec
from rlexp.training import checkpoint

# May differ between a checkpoint's recorded config and the command resuming it.
RESUME_MAY_CHANGE = ("total_steps", *RUN_ONLY_KEYS)


@dataclass
class Start:
    kind: str  # fresh | resume | evaluate | skip | finished (resume= of a finished run: nothing to train)
    spec: RunSpec  # what this run computes (a resumed run's own recorded config)
    run_dir: RunDir  # where this run writes
    checkpoint: Checkpoint | None = None  # resume from this verified checkpoint ...
    meta: dict[str, Any] | None = None  # ... whose meta record this is
    fork: bool = False  # the checkpoint belongs to another run directory, which stays untouched
    finished: dict[str, Any] | None = None  # skip/finished: eval.json and the meta record of the finished run
    damaged: list[tuple[Checkpoint, str]] = field(default_factory=list)  # newer units that failed to verify, why

    @property
    def cfg(self) -> DictConfig:
        return self.spec.cfg


def _read(path: Path, what: str) -> dict[str, Any]:
    try:
        return artifacts.read_json(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not a readable {what} ({exc.__class__.__name__}: {exc}); "
                          f"move it away to {'evaluate' if what == 'evaluation' else 'run'} again") from None


def newest_sound(run: RunDir) -> tuple[Checkpoint | None, dict[str, Any] | None, list[tuple[Checkpoint, str]]]:
    """The newest checkpoint that verifies, its meta record, and the newer ones that do not (with why).

    Raises CheckpointError when the run has checkpoints and none of them verifies."""
    damaged: list[tuple[Checkpoint, str]] = []
    for ckpt in reversed(run.checkpoints()):
        try:
            return ckpt, checkpoint.verify(ckpt), damaged
        except CheckpointError as exc:
            damaged.append((ckpt, str(exc)))
    if damaged:
        why = "; ".join(f"{c.stem}: {reason}" for c, reason in damaged[:3])
        raise CheckpointError(f"no checkpoint of {run.root} verifies ({why}); move {run.ckpt_dir} away to start "
                              "the run over")
    return None, None, []


def find_checkpoint(spec: str | Path) -> tuple[Checkpoint, list[tuple[Checkpoint, str]]]:
    """`resume=` takes a run directory (its newest checkpoint that verifies, else model.zip) or a checkpoint
    .zip (that one, verified or not). Also returns the damaged units skipped on the way."""
    path = Path(spec).expanduser()
    if path.is_dir():
        run = RunDir(path)
        latest, _, damaged = newest_sound(run)
        if run.is_finished() and run.model.exists():  # finished before final units existed: its model.zip is newer
            final = model_checkpoint(run)
            if all(c.step < final.step for c in run.checkpoints()):  # (a damaged final unit: the exact fallback)
                return final, []
        if latest is not None:
            return latest, damaged
        if run.model.exists():
            return model_checkpoint(run), []
        raise ConfigError(f"resume: no checkpoint in {path} (looked for checkpoints/step_*.zip and model.zip)")
    if not path.exists():
        raise ConfigError(f"resume: checkpoint not found: {path}")
    if path.suffix != ".zip":
        raise ConfigError(f"resume: expected a run directory or a .zip checkpoint, got {path}")
    run = RunDir.of_checkpoint_zip(path)
    if path.resolve() == run.model:
        return model_checkpoint(run), []
    for ckpt in run.checkpoints():
        if ckpt.zip == path.resolve():
            return ckpt, []
    raise ConfigError(f"resume: {path} is not a complete checkpoint (no {path.name[:-4]}.meta.json beside it)")


def model_checkpoint(run: RunDir) -> Checkpoint:
    """model.zip as a (weights-only) checkpoint at the step its meta records."""
    if not run.meta.exists():
        raise ConfigError(f"resume: {run.meta} missing; cannot tell which config {run.model} was trained with")
    steps = _read(run.meta, "meta record").get("total_steps")
    return Checkpoint(run.root, int(steps or 0), name="model")


def _current_targets(flat: dict[str, Any]) -> dict[str, Any]:
    """Moved classes under their current path, so a run recorded before a move compares equal."""
    return {k: current_target(v) if k.rsplit(".", 1)[-1] == "_target_" else v for k, v in flat.items()}


def _may_change(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in RESUME_MAY_CHANGE)


def override_keys(overrides: list[str]) -> set[str]:
    keys = set()
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if not key.startswith("hydra.") and key != "hydra":
            keys.add(key)
    return keys


def recorded_experiment(run: RunDir, meta: dict[str, Any]) -> str | None:
    """The `+experiment=NAME` a run was started with: its meta record's, else its .hydra/hydra.yaml's choice."""
    if meta.get("experiment"):
        return str(meta["experiment"])
    hydra_yaml = run.hydra / "hydra.yaml"
    if hydra_yaml.is_file():
        try:
            choice = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.runtime.choices.experiment")
        except Exception:  # noqa: BLE001 - unreadable: the experiment is unknown, keys are still compared
            return None
        return str(choice) if choice else None
    return None


def _typed_experiment(overrides: list[str] | None) -> str | None:
    for o in overrides or ():
        key, _, value = o.partition("=")
        if key.lstrip("+~") == "experiment" and value:
            return value
    return None


def config_for_resume(cfg: DictConfig, meta: dict[str, Any], overrides: list[str] | None,
                      experiment: str | None = None) -> DictConfig:
    """The checkpoint's recorded config with the command's total_steps and run-only keys.

    `experiment`: the run's own `+experiment=` (recorded_experiment); a command that names another is refused."""
    recorded = meta.get("config")
    if not isinstance(recorded, dict):
        raise ConfigError("resume: the checkpoint's meta record has no config; was it written by rlexp?")
    check_recorded_targets(recorded, "resume: the checkpoint's meta record")
    typed = _typed_experiment(overrides)
    if typed is not None and experiment is not None and typed != experiment:
        raise ConfigError(f"resume: the run is +experiment={experiment}, the command names +experiment={typed}. A "
                          "resumed run keeps its config: drop +experiment=, or start a new run without resume=")
    given = override_keys(overrides) if overrides is not None else None
    old, new = _current_targets(flatten(recorded)), _current_targets(flatten(to_container(cfg)))
    # Compare only what the command types: a key, or a group's whole node (`env=push` -> env.*). A retyped
    # +experiment=NAME is not a key: what it sets by default is the run's own unless typed again (the Python
    # API, with no override list, sets everything).
    scopes = None if given is None else given - {"experiment"}
    differ = sorted(k for k in set(old) | set(new) if not _may_change(k) and old.get(k) != new.get(k)
                    and (scopes is None or any(k == g or k.startswith(g + ".") for g in scopes)))
    if differ:
        shown = "; ".join(f"{k}: run {old.get(k)!r} vs command {new.get(k)!r}" for k in differ[:8])
        more = f" (+{len(differ) - 8} more)" if len(differ) > 8 else ""
        raise ConfigError(
            f"resume: {len(differ)} key(s) differ from the run's recorded config: {shown}{more}. A resumed run "
            f"keeps its config; only {', '.join(RESUME_MAY_CHANGE)} may change. Drop those overrides, or "
            "start a new run without resume=")
    merged = OmegaConf.create(recorded)
    for key in RESUME_MAY_CHANGE:
        if given is None or key in given:
            value = OmegaConf.select(cfg, key)
            OmegaConf.update(merged, key, OmegaConf.to_container(value) if OmegaConf.is_config(value) else value,
                             merge=False, force_add=True)  # `logger=mlflow` replaces the recorded choice
    return merged


def own_start(spec: RunSpec, run: RunDir, extend: bool = False) -> Start | None:
    """What a run directory that may already hold this config asks for, or None if it holds no run.

    `extend`: `resume=` may have raised total_steps, so its checkpoints match on everything but that.
    """
    cfg, wanted = spec.cfg, spec.hash
    if run.eval.exists():
        result = _read(run.eval, "evaluation")
        if result.get("config_hash") != wanted:
            raise ConfigError(f"{run.root} already holds a finished run of a different config (hash "
                              f"{result.get('config_hash')} vs {wanted}); choose another hydra.run.dir")
        meta = _read(run.meta, "meta record") if run.meta.exists() else {}
        return Start("skip", spec, run, finished={"eval": result, "meta": meta})
    if run.model.exists():
        meta = _read(run.meta, "meta record") if run.meta.exists() else {}
        if meta.get("config_hash") == wanted and int(meta.get("total_steps") or 0) >= int(cfg.total_steps):
            return Start("evaluate", spec, run, meta=meta)
    latest, meta, damaged = newest_sound(run)
    if latest is not None and meta is not None:
        same = (config_hash(meta.get("config") or {}, lineage=True) == config_hash(cfg, lineage=True) if extend
                else meta.get("config_hash") == wanted)
        if not same:
            raise ConfigError(f"{run.root} holds checkpoints of a different config (hash {meta.get('config_hash')} "
                              f"vs {wanted}); choose another hydra.run.dir or pass resume= explicitly")
        return Start("resume", spec, run, latest, meta, damaged=damaged)
    if run.model.exists():
        raise ConfigError(f"{run.root} holds a model.zip of a different config or step count; choose another "
                          "hydra.run.dir")
    return None


def plan(spec: RunSpec, out_dir: RunDir, overrides: list[str] | None = None, explicit_dir: bool = True) -> Start:
    """Decide how this command starts. Reads only; raises ConfigError for anything it refuses.

    Args:
        spec: the command's validated config (its `resume` key names the checkpoint, if any).
        out_dir: Hydra's run directory for this command.
        overrides: the command line's overrides (None: the Python API; every key then counts as given).
        explicit_dir: the command chose out_dir (hydra.run.dir, or a multirun job's directory).
    """
    if not spec.cfg.get("resume"):
        return own_start(spec, out_dir) or Start("fresh", spec, out_dir)
    source, damaged = find_checkpoint(spec.cfg.resume)
    meta = checkpoint.verify(source)  # a checkpoint named explicitly and damaged: refused (exit 2)
    src_run = source.run_dir
    named_dir = Path(str(spec.cfg.resume)).expanduser().is_dir()
    spec = RunSpec.of(config_for_resume(spec.cfg, meta, overrides, recorded_experiment(src_run, meta)))
    cfg = spec.cfg
    if named_dir and src_run.is_finished():
        result = _read(src_run.eval, "evaluation")
        done = _read(src_run.meta, "meta record") if src_run.meta.exists() else meta
        if int(cfg.total_steps) <= int(done.get("total_steps") or 0):  # nothing to train: say so, write nothing
            return Start("finished", spec, src_run, finished={"eval": result, "meta": done})
    if source.stem == "model" and not src_run.is_finished() and (not explicit_dir or out_dir == src_run):
        own = own_start(spec, src_run, extend=True)  # stopped while evaluating: finish it
        if own is not None and own.kind == "evaluate":
            return own
    try:
        latest, _, newer_damaged = newest_sound(src_run)
    except CheckpointError:  # none verifies: resuming from its model.zip, which did
        latest, newer_damaged = None, []
    continuable = source.stem != "model" and source == latest and not src_run.is_finished()
    if not explicit_dir and continuable:
        out_dir = src_run
    if out_dir == src_run:
        if src_run.is_finished():
            raise ConfigError(f"resume: {src_run.root} is finished; extending it in place would overwrite its "
                              "model.zip and eval.json. Give the continuation its own hydra.run.dir=NEW_DIR (a fork)")
        if not continuable:
            newest = latest.zip.name if latest else "model.zip"
            raise ConfigError(f"resume: {source.zip.name} is not the latest checkpoint of {src_run.root} ({newest} "
                              "is); continuing it in place would overwrite later ones. Set hydra.run.dir=NEW_DIR "
                              "to fork from it")
        return own_start(spec, out_dir, extend=True) or Start("resume", spec, out_dir, source, meta,
                                                              damaged=newer_damaged)
    own = own_start(spec, out_dir, extend=True)
    if own is not None:  # the fork was started before: continue it
        return own
    if source.step >= int(cfg.total_steps):
        raise ConfigError(f"resume: checkpoint is at step {source.step}, already >= total_steps {cfg.total_steps}; "
                          "raise total_steps to train further")
    return Start("resume", spec, out_dir, source, meta, fork=True, damaged=damaged)
