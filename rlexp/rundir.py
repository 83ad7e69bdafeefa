"""The run directory: the one place that knows its layout, and the lock that gives it one writer.

    model.zip, model.meta.json     final model and its record
    eval.json                      the book's evaluation of model.zip
    checkpoints/step_N.zip         a checkpoint unit: SB3 weights and optimizer state ...
    checkpoints/step_N.state.npz   ... random states, env states, what SB3 keeps between steps ...
    checkpoints/step_N.replay/     ... replay buffer (off-policy; arrays + replay.json, two latest checkpoints) ...
    checkpoints/step_N.meta.json   ... and its record, written last: the commit mark of the unit
    checkpoints/best_model.zip     best_model.zip as of the latest checkpoint (hard link; + .meta.json)
    checkpoints/damaged/step_N/    a unit that failed verification, moved aside by the resume that skipped it
    tb/run_1/                      TensorBoard events
    progress.csv                   the same logged scalars as CSV (SB3's logger format)
    trackers.json                  logger=wandb/mlflow: each tracker's run id and the last step sent to it
    wandb/                         logger=wandb: W&B's own files (offline-run-* with mode=offline)
    monitor/N.monitor.csv          SB3 Monitor: one row per finished training episode of sub-env N
    evaluations.csv                periodic evaluations (eval.freq): step, wall time, success, return, ...
    evaluations.npz                ... the same in SB3 EvalCallback's format (per-episode returns, lengths)
    best_model.zip, .meta.json     the periodic evaluation's best model so far (success, then return)
    pruned.json                    an Optuna trial its pruner stopped: step, value, trial, study (rlexp.hpo)
    videos/                        `rlexp video` output
    .hydra/                        composed config and overrides (written when the run starts)
    .rlexp.lock                    flock held by the process training here (`pid N on host H since T`)
    .rlexp.lease/G.json            the lease, visible from every node: host, pid, start; mtime = heartbeat
"""

from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import logging
import os
import re
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from rlexp.errors import LeaseLost
from rlexp.lease import Holder, lease_settings

log = logging.getLogger("rlexp")

MODEL = "model.zip"
META = "model.meta.json"
EVAL = "eval.json"
CKPT_DIR = "checkpoints"
TB_DIR = "tb"
TB_RUN = "run_1"  # one TensorBoard run per run directory; a resumed run continues it
VIDEOS = "videos"
PROGRESS = "progress.csv"
TRACKERS = "trackers.json"
# Trackers' own folders (logger=mlflow's default file store beside the run directory, logger=wandb's in it): an
# MLflow artifact copy of eval.json or model.meta.json there is not a run.
TRACKER_DIRS = ("mlruns", "wandb")
MONITOR_DIR = "monitor"
EVALUATIONS = "evaluations.csv"
EVALUATIONS_NPZ = "evaluations.npz"
BEST = "best_model.zip"
PRUNED = "pruned.json"
HYDRA = ".hydra"
LOCK = ".rlexp.lock"
LEASE = ".rlexp.lease"
DAMAGED = "damaged"
_STEP_META = re.compile(r"^step_(\d+)\.meta\.json$")
_STEP_PART = re.compile(r"^step_(\d+)\.")


CHECKPOINT_FORMAT = 1  # the checkpoint unit's layout (meta manifest, state.npz, replay.json)


def meta_of(zip_path: Path) -> Path:
    """`x.zip` -> `x.meta.json` by string ops: `with_suffix` would mangle stems like `g0.95` (book ch5 pitfall)."""
    return zip_path.parent / (zip_path.name[: -len(".zip")] + ".meta.json")


def remove(path: Path) -> None:
    """A file or a folder (a replay buffer), if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Checkpoint:
    """The files of one checkpoint unit; it exists only once its meta file (written last) does."""

    dir: Path
    step: int
    name: str = ""  # "" for periodic checkpoints (step_N); "model" for a finished run's model.zip

    @property
    def stem(self) -> str:
        return self.name or f"step_{self.step}"

    @property
    def zip(self) -> Path:
        return self.dir / f"{self.stem}.zip"

    @property
    def meta(self) -> Path:
        return self.dir / f"{self.stem}.meta.json"

    @property
    def state(self) -> Path:
        return self.dir / f"{self.stem}.state.npz"

    @property
    def replay(self) -> Path:
        return self.dir / f"{self.stem}.replay"

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.dir if self.name == "model" else self.dir.parent)

    def parts(self) -> list[Path]:
        return [self.zip, self.state, self.replay, self.meta]


class RunDir:
    """Paths of one run directory. Nothing else in rlexp spells out file names inside a run."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and other.root == self.root

    def __hash__(self) -> int:
        return hash(self.root)

    model = property(lambda self: self.root / MODEL)
    meta = property(lambda self: self.root / META)
    eval = property(lambda self: self.root / EVAL)
    ckpt_dir = property(lambda self: self.root / CKPT_DIR)
    tb = property(lambda self: self.root / TB_DIR)
    tb_run = property(lambda self: self.root / TB_DIR / TB_RUN)
    videos = property(lambda self: self.root / VIDEOS)
    progress = property(lambda self: self.root / PROGRESS)
    trackers = property(lambda self: self.root / TRACKERS)
    monitor_dir = property(lambda self: self.root / MONITOR_DIR)
    evaluations = property(lambda self: self.root / EVALUATIONS)
    evaluations_npz = property(lambda self: self.root / EVALUATIONS_NPZ)
    best = property(lambda self: self.root / BEST)
    pruned = property(lambda self: self.root / PRUNED)
    best_committed = property(lambda self: self.root / CKPT_DIR / BEST)
    hydra = property(lambda self: self.root / HYDRA)
    lock_file = property(lambda self: self.root / LOCK)
    lease_dir = property(lambda self: self.root / LEASE)

    def monitor(self, rank: int) -> Path:
        """Sub-env `rank`'s Monitor file, as SB3's make_vec_env(monitor_dir=...) names it."""
        return self.monitor_dir / f"{rank}.monitor.csv"

    def checkpoint(self, step: int) -> Checkpoint:
        return Checkpoint(self.ckpt_dir, int(step))

    def checkpoints(self) -> list[Checkpoint]:
        """Committed checkpoints (their meta file exists), oldest first."""
        if not self.ckpt_dir.is_dir():
            return []
        steps = sorted(int(m.group(1)) for p in self.ckpt_dir.iterdir() if (m := _STEP_META.match(p.name)))
        return [self.checkpoint(s) for s in steps]

    def latest_checkpoint(self) -> Checkpoint | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def is_run(self) -> bool:
        """A directory rlexp trained (or is training) in: it has a meta record, a config or an evaluation."""
        return self.meta.is_file() or (self.hydra / "config.yaml").is_file() or self.eval.is_file()

    def is_finished(self) -> bool:
        return self.eval.exists()

    def remove_uncommitted(self) -> list[Path]:
        """Parts of checkpoints whose write was killed before the meta file: temp files and orphans.

        Only call with the lock held: a live writer's parts look the same.
        """
        removed: list[Path] = []
        if not self.ckpt_dir.is_dir():
            return removed
        committed = {c.step for c in self.checkpoints()}
        for path in self.ckpt_dir.iterdir():
            m = _STEP_PART.match(path.name)
            orphan = m is not None and int(m.group(1)) not in committed
            if path.name.startswith(".") or orphan:
                remove(path)
                removed.append(path)
        return removed

    def set_aside(self, ckpt: Checkpoint) -> Path:
        """Move a damaged unit into `checkpoints/damaged/step_N/` (never deleted: someone may want to look).

        The meta file goes last: a kill half-way leaves a committed unit that still fails verification, and the
        next start moves the rest into the same folder. Returns the folder."""
        base = self.ckpt_dir / DAMAGED / ckpt.stem
        dest, n = base, 1
        while (dest / ckpt.meta.name).exists():  # an earlier unit of this step was set aside already
            n += 1
            dest = base.with_name(f"{base.name}-{n}")
        dest.mkdir(parents=True, exist_ok=True)
        for part in (ckpt.zip, ckpt.state, ckpt.replay, ckpt.meta):
            if part.exists() or part.is_symlink():
                os.replace(part, dest / part.name)
        return dest

    @staticmethod
    def of_checkpoint_zip(zip_path: Path) -> RunDir:
        zip_path = Path(zip_path).resolve()
        return RunDir(zip_path.parent.parent if zip_path.parent.name == CKPT_DIR else zip_path.parent)

    def fingerprint(self) -> tuple:
        """What a start plan reads from this directory: committed checkpoints, model.zip, eval.json. Equal
        fingerprints before and after taking the lock mean the plan made before it still holds."""
        return (tuple(c.step for c in self.checkpoints()), self.model.exists(), self.eval.exists())

    def lock(self) -> RunLock:
        return RunLock(self.lock_file, self.lease_dir)


NO_FLOCK = (errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK)  # flock refused by the file system (Lustre, some NFS)
_warned_no_flock = False


class RunLock:
    """One training process per run directory, on one host and across the nodes of a cluster.

    Two guards. `flock` on `.rlexp.lock` where the file system supports it: released by the kernel when its
    holder dies (SIGKILL, SLURM requeue), and it also excludes a reader (a fork copying this run's replay).
    And the lease in `.rlexp.lease/` (rlexp.lease), which every node sees: host, pid, start time and a
    heartbeat, so a trainer on another node is refused even where flock is node-local, and a lease whose holder
    is gone (its pid dead on this host; no heartbeat for the timeout on another) is taken over. Where flock
    fails with ENOSYS/EOPNOTSUPP/ENOLCK the lease alone protects the run (one warning per process).
    """

    def __init__(self, lock_file: Path, lease_dir: Path) -> None:
        self.path = lock_file
        self.lease = Holder(lease_dir)
        self._fd: int | None = None
        self.held = False

    def holder(self) -> str:
        """Who keeps us out: `pid N on host H since T, last heartbeat S s ago` (else the lock file's words)."""
        lease = self.lease.refused_by or self.lease.live()
        if lease is not None:
            return lease.describe()
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return text or "another process"

    @property
    def took_over(self) -> str | None:
        """A line for the log when this process took the lease from a holder that is gone."""
        if self.lease.took_over is None:
            return None
        old, why = self.lease.took_over
        return f"took over the lease of {self.path.parent} from {old.describe()}: {why}"

    def acquire(self, shared: bool = False) -> bool:
        """True if this process now holds the lock; False if another live process does.

        `shared`: a reader's lock (a fork copying from this run): it excludes a trainer, not other readers;
        it takes no lease (where flock is missing, a reader only checks that no trainer holds one).
        """
        lease_settings()  # a bad RLEXP_LEASE_* value is refused before anything is written
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        assert fd is not None
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as exc:
            os.close(fd)
            if exc.errno not in NO_FLOCK:
                raise
            _warn_no_flock(self.path, exc)
            fd = None
        if shared:
            self.lease.refused_by = self.lease.live()
            if self.lease.refused_by is not None:
                if fd is not None:
                    os.close(fd)
                return False
        elif not self.lease.take():
            if fd is not None:
                os.close(fd)
            return False
        self._fd, self.held = fd, True
        if not shared and fd is not None:
            since = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
            try:
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} since {since}\n".encode())
            except OSError:  # a full disk: the words are for people; the lease says the same
                pass
        return True

    def check(self) -> None:
        """Raise LeaseLost if another process took this run over (our heartbeat stalled past the timeout)."""
        lost = self.lease.lost
        if lost is not None:
            raise LeaseLost(self.path.parent, lost.describe())

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        self.lease.release()
        if self._fd is not None:
            os.close(self._fd)  # the file stays: removing it would race a process opening it
            self._fd = None


def _warn_no_flock(path: Path, exc: OSError) -> None:
    global _warned_no_flock
    if not _warned_no_flock:
        _warned_no_flock = True
        log.warning("flock is not supported on the file system of %s (%s): the lease (%s) alone keeps one trainer "
                    "per run directory", path.parent, exc.strerror or exc, LEASE)
