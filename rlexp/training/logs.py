"""The CSV logs beside TensorBoard, kept consistent with checkpoints the way TensorBoard's history is.

- `monitor/N.monitor.csv`: SB3's Monitor file of sub-env N (one row per finished training episode);
- `progress.csv`: the scalars SB3's logger records (SB3's CSV format), one row per dump;
- `evaluations.csv` / `evaluations.npz` and `best_model.zip`: the periodic evaluation (rlexp.training.periodic_eval).

A fresh run removes what an earlier attempt left. A resumed run first cuts every file back to its
checkpoint's step (a run killed after its last checkpoint wrote rows that the resumed run writes again);
a fork copies the original's files up to that step. The writers then append, each record whole or not at all
(rlexp.diskfull: on a full disk records wait in memory instead of ending the run or leaving half a row).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.logger import (
    Figure,
    FormatUnsupportedError,
    HParam,
    Image,
    KVWriter,
    Video,
    filter_excluded_keys,
)

from rlexp import artifacts, diskfull
from rlexp.diskfull import Appender
from rlexp.rundir import RunDir, meta_of, remove

log = logging.getLogger("rlexp")

# evaluations.csv: one row per periodic evaluation. train_time_s: wall-clock seconds of training from step 0
# to this row's step, summed over resumed segments, without the periodic evaluations' own time.
EVAL_COLUMNS = ("step", "train_time_s", "success_rate", "return_mean", "return_std", "final_distance_mean",
                "ep_len_mean", "n_episodes", "eval_time_s", "best")
STEP_KEY = "time/total_timesteps"  # progress.csv's step column (SB3's)
PROGRESS_KIND = "progress.csv"


class ProgressCSV(KVWriter):
    """SB3's progress.csv (its CSVOutputFormat's format), continuing an existing file, safe on a full disk.

    A row is appended whole or not at all (rlexp.diskfull); rows that find no space wait and are written, in
    order, once there is. A new key pads the earlier rows with an empty column, as SB3 does, but by rewriting
    the file to a temp file and renaming it: a full disk then leaves the old file whole (SB3 rewrites in place).
    """

    def __init__(self, filename: str | Path) -> None:
        self.path = Path(filename)
        lines = _lines(self.path)
        self.keys: list[str] = _row(lines[0]) if lines else []
        self.rows: list[dict[str, Any]] = []  # not written yet (a full disk)
        self.out = Appender(self.path, PROGRESS_KIND)
        self.separator = ","
        self.quotechar = '"'
        diskfull.register(self)

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        key_values = filter_excluded_keys(key_values, key_excluded, "csv")
        for value in key_values.values():
            for kind, cls in (("video", Video), ("figure", Figure), ("image", Image), ("hparam", HParam)):
                if isinstance(value, cls):
                    raise FormatUnsupportedError(["csv"], kind)
        self.rows.append(dict(key_values))
        self.flush()

    def _cell(self, value: Any) -> str:
        if isinstance(value, str):
            q = self.quotechar
            return q + value.replace(q, q + q) + q
        return "" if value is None else str(value)

    def _line(self, row: dict[str, Any], keys: list[str]) -> str:
        return self.separator.join(self._cell(row.get(k)) for k in keys) + "\n"

    def flush(self) -> bool:
        """Write the waiting rows; True once none waits."""
        if not self.rows:
            return True
        new = [k for k in dict.fromkeys(k for row in self.rows for k in row) if k not in self.keys]
        if not new:
            if not self.out.try_append("".join(self._line(row, self.keys) for row in self.rows).encode()):
                return False
        else:
            keys = self.keys + new
            pad = self.separator * len(new)
            text = "".join([self.separator.join(keys) + "\n",
                            *(line[:-1] + pad + "\n" for line in _lines(self.path)[1:]),
                            *(self._line(row, keys) for row in self.rows)])
            try:
                _write_lines(self.path, [text])
            except OSError as exc:
                if not diskfull.is_full(exc):
                    raise
                diskfull.warn_full(PROGRESS_KIND, self.path, exc)
                return False
            self.out.reopen()  # the file was replaced
            self.keys = keys
        self.rows.clear()
        return True

    def close(self) -> None:
        self.flush()
        self.out.reopen()


# ----------------------------------------------------------------------------------------- plumbing
def _lines(path: Path) -> list[str]:
    """Complete lines only: a kill mid-write leaves a last line without its newline, which is dropped."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines(keepends=True)
    return lines if not lines or lines[-1].endswith("\n") else lines[:-1]


def _write_lines(path: Path, lines: list[str]) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text("".join(lines))

    artifacts.atomic_write(path, write)


def _row(line: str) -> list[str]:
    return next(csv.reader([line]), [])


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _copy(src: Path, dst: Path) -> None:
    if src.resolve() != dst.resolve():
        artifacts.atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------- monitor.csv
def keep_monitor(src: Path, dst: Path, env_steps: int, header: dict[str, Any], columns: list[str]) -> int:
    """Monitor rows of episodes that ended by sub-env step `env_steps` (the cumulative sum of `l`), from src
    into dst; a missing or headless src gives a file with a fresh header. Returns the rows kept."""
    lines = _lines(src)
    if len(lines) < 2 or not lines[0].startswith("#"):
        lines = [f"#{json.dumps(header)}\n", ",".join(columns) + "\n"]
    names = _row(lines[1])
    kept, steps = lines[:2], 0
    for line in lines[2:]:
        record = dict(zip(names, _row(line), strict=False))
        length = _int(record.get("l"))
        if length is None or steps + length > env_steps:
            break
        steps += length
        kept.append(line)
    _write_lines(dst, kept)
    return len(kept) - 2


# ------------------------------------------------------------------------------------ progress.csv
def keep_progress(src: Path, dst: Path, step: int) -> int:
    """progress.csv rows up to the first one logged after `step` (rows are in time order)."""
    lines = _lines(src)
    if not lines:
        remove(dst)
        return 0
    names = _row(lines[0])
    kept = lines[:1]
    for line in lines[1:]:
        at = _int(dict(zip(names, _row(line), strict=False)).get(STEP_KEY))
        if at is not None and at > step:
            break
        kept.append(line)
    _write_lines(dst, kept)
    return len(kept) - 1


# ------------------------------------------------------------------------------- evaluations table
def read_evaluations(path: Path) -> list[dict[str, Any]]:
    """evaluations.csv as dicts (numbers parsed; empty cells None)."""
    lines = _lines(path)
    if not lines:
        return []
    rows = []
    for record in csv.DictReader(io.StringIO("".join(lines))):
        row: dict[str, Any] = {}
        for key, value in record.items():
            if key is None:
                continue
            row[key] = None if value in (None, "") else (int(value) if key in ("step", "n_episodes", "best")
                                                         else float(value))
        if row.get("step") is not None:
            rows.append(row)
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.1f}"
    return str(value)


def write_evaluations(path: Path, rows: list[dict[str, Any]]) -> None:
    lines = [",".join(EVAL_COLUMNS) + "\n"]
    lines += [",".join(_cell(row.get(k)) for k in EVAL_COLUMNS) + "\n" for row in rows]
    _write_lines(path, lines)


def evaluations_appender(path: Path) -> Appender:
    """evaluations.csv, appended one row at a time (header first if the file is new): a kill loses at most the
    row being written, a full disk delays rows (rlexp.diskfull)."""
    return Appender(path, "evaluations.csv", header=(",".join(EVAL_COLUMNS) + "\n").encode())


def evaluation_line(row: dict[str, Any]) -> bytes:
    return (",".join(_cell(row.get(k)) for k in EVAL_COLUMNS) + "\n").encode()


def write_npz(path: Path, npz: dict[str, list]) -> bool:
    """SB3 EvalCallback's evaluations.npz (timesteps, results, ep_lengths, successes); False when the rows have
    different episode counts (eval.freq_episodes changed on a resume) and cannot form arrays."""
    if len({len(r) for r in npz["results"]}) > 1:
        return False

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **{k: np.asarray(v) for k, v in npz.items()})

    artifacts.atomic_write(path, write)
    return True


def read_npz(path: Path, step: int) -> dict[str, list]:
    out: dict[str, list] = {"timesteps": [], "results": [], "ep_lengths": [], "successes": []}
    if not path.is_file():
        return out
    try:
        with np.load(path, allow_pickle=False) as data:
            keep = np.asarray(data["timesteps"]) <= step
            for key in out:
                if key in data.files:
                    out[key] = [x.tolist() for x in np.asarray(data[key])[keep]]
    except (OSError, ValueError, KeyError) as exc:
        log.warning("%s unreadable (%s): it restarts from this run's next evaluation", path, exc)
        return {k: [] for k in out}
    return out


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Highest success rate, ties broken by mean return; the earliest of equal ones."""
    best = None
    for row in rows:
        if best is None or score(row) > score(best):
            best = row
    return best


def score(row: dict[str, Any]) -> tuple[float, float]:
    ret = row.get("return_mean")
    return float(row["success_rate"]), float(ret) if ret is not None else float("-inf")


def best_step(zip_path: Path) -> int | None:
    """The evaluation step a best_model.zip holds, if its meta record matches its bytes."""
    meta = meta_of(zip_path)
    if not zip_path.is_file() or not meta.is_file():
        return None
    try:
        best = artifacts.read_json(meta).get("best") or {}
    except (OSError, ValueError):
        return None
    return int(best["step"]) if best.get("sha256") == sha256(zip_path) and "step" in best else None


def commit_best(run: RunDir) -> None:
    """After a checkpoint: checkpoints/best_model.zip := best_model.zip (hard links, no copy), so a resume
    from this checkpoint finds the best model of its step even when a later, lost one replaced best_model.zip."""
    for src, dst in ((run.best, run.best_committed), (meta_of(run.best), meta_of(run.best_committed))):
        if not src.exists():
            remove(dst)
            continue
        if dst.exists() and os.path.samefile(src, dst):
            # Committed at an earlier checkpoint, unchanged since. Also: rename() onto a hard link of the same
            # file does nothing and leaves the source name, so linking again would leave `tmp` behind.
            continue
        tmp = dst.parent / f".{dst.name}.link"
        remove(tmp)
        try:
            os.link(src, tmp)
        except OSError:  # no hard links on this file system
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)


# ------------------------------------------------------------------------------------------ a start
def prepare(kind: str, run: RunDir, source: RunDir | None, step: int, n_envs: int, env_id: str,
            monitor_columns: list[str]) -> list[dict[str, Any]]:
    """Make `run`'s CSV logs describe exactly steps 0..`step` before training continues from it.

    kind: "fresh" (remove earlier attempts' files) or "resume" (cut `source`'s files, which may be `run`'s
    own, back to `step` into `run`). Returns the evaluation rows kept.
    """
    if kind == "fresh":
        for path in (run.monitor_dir, run.progress, run.evaluations, run.evaluations_npz, run.best,
                     meta_of(run.best), run.best_committed, meta_of(run.best_committed)):
            remove(path)
        return []
    assert source is not None
    header = {"t_start": time.time(), "env_id": env_id}
    for rank in range(n_envs):
        keep_monitor(source.monitor(rank), run.monitor(rank), step // n_envs, header, monitor_columns)
    if source.progress.exists():
        keep_progress(source.progress, run.progress, step)
    else:
        remove(run.progress)
    rows = [r for r in read_evaluations(source.evaluations) if r["step"] <= step]
    if rows:
        write_evaluations(run.evaluations, rows)
        npz = read_npz(source.evaluations_npz, step)
        if npz["timesteps"] and not write_npz(run.evaluations_npz, npz):
            remove(run.evaluations_npz)
    else:
        remove(run.evaluations)
        remove(run.evaluations_npz)
    _keep_best(run, source, best_row(rows))
    return rows


def _keep_best(run: RunDir, source: RunDir, best: dict[str, Any] | None) -> None:
    """best_model.zip of the best kept evaluation: the current file or the one the checkpoint committed."""
    if best is None:
        for path in (run.best, meta_of(run.best)):
            remove(path)
        return
    for candidate in (source.best, source.best_committed):
        if best_step(candidate) == best["step"]:
            _copy(candidate, run.best)
            _copy(meta_of(candidate), meta_of(run.best))
            return
    for path in (run.best, meta_of(run.best)):
        remove(path)
    log.warning("best_model.zip of step %d (success %.0f%%) could not be recovered; the next evaluation that "
                "beats it writes one", best["step"], 100 * best["success_rate"])

