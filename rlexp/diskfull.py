"""Log writes that survive a full disk or quota (ENOSPC, EDQUOT): training goes on, nothing written is damaged.

A run's logs (progress.csv, monitor files, TensorBoard events, run.log, evaluations.csv) are appended record
by record. Through `Appender`, a record is written whole or not at all: a write that fails half-way is cut back
with `ftruncate` (which frees blocks, so it works on a full disk), so no reader ever meets half a row or a
broken TensorBoard record. The records that could not be written wait in memory (up to `PENDING_LIMIT` bytes
per file) and go out, in order, with the next write that finds space, and before every checkpoint and
model.zip (rlexp.training.train calls `retry_all`), so the logs describe the step a checkpoint marks whenever
the disk allows. One warning per kind of file and process says what happened; one line says when it caught up.
Any other OSError is raised as before.

Stdlib only: Hydra's logging config names `LogFileHandler` (run.log) before rlexp's task is imported.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import logging
import os
import re
import threading
import weakref
from pathlib import Path
from typing import Any

log = logging.getLogger("rlexp")

FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
PENDING_LIMIT = 8 << 20  # bytes kept per file while the disk is full; later records are dropped (a gap)
_warned: set[str] = set()
_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()  # writers that may hold records back (register)
_REGISTRY_LOCK = threading.Lock()


def _after_fork_in_child() -> None:
    """A forked child (overlap's env worker) starts with fresh locks: another thread may have held one."""
    global _REGISTRY_LOCK
    _REGISTRY_LOCK = threading.Lock()
    for writer in list(_OPEN):
        if isinstance(writer, Appender):
            writer._lock = threading.RLock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def is_full(exc: BaseException) -> bool:
    """A full disk or an exhausted quota."""
    return isinstance(exc, OSError) and exc.errno in FULL


def warn_once(kind: str, message: str, *args: Any) -> None:
    """Log `message` once per kind of file and process: a full disk would otherwise repeat it every step."""
    if kind not in _warned:
        _warned.add(kind)
        log.warning(message, *args)


def warn_full(kind: str, path: Path, exc: OSError) -> None:
    warn_once(kind, "%s: %s not written (%s); the run goes on, and what could not be written is kept and "
              "written once there is space", kind, path, exc.strerror)


def register(writer: Any) -> None:
    """A writer with a `flush() -> bool` that `retry_all` should call (it holds records back on a full disk)."""
    with _REGISTRY_LOCK:  # run.log's handler may open its file from another thread
        _OPEN.add(writer)


def unregister(writer: Any) -> None:
    with _REGISTRY_LOCK:
        _OPEN.discard(writer)


def retry_all() -> None:
    """Write what every open writer of this process still holds, where there is space again."""
    with _REGISTRY_LOCK:
        writers = list(_OPEN)
    for writer in writers:
        writer.flush()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Appender:
    """Appends records to one file, whole or not at all; on a full disk they wait and the file is untouched.

    `header` is written first when the file is empty (a CSV header). Thread-safe and re-entrant (run.log's
    handler may log its own warning while writing)."""

    def __init__(self, path: str | Path, kind: str, header: bytes = b"", truncate: bool = False) -> None:
        self.path = Path(path)
        self.kind = kind
        self.header = header
        self.pending: list[bytes] = []
        self._size = 0
        self._fd: int | None = None
        self._truncate = truncate
        self._failing = False
        self._lock = threading.RLock()
        register(self)

    def __getstate__(self) -> dict[str, Any]:  # sent to a subprocess env (SubprocVecEnv): no fd, no lock
        state = dict(self.__dict__)
        state.update(_fd=None, _lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()
        register(self)

    def write(self, data: bytes) -> bool:
        """Append `data` (one or more whole records) after the waiting ones; False if it waits for space (or
        was dropped: more than PENDING_LIMIT waits)."""
        with self._lock:
            if self._size + len(data) > PENDING_LIMIT:
                warn_once(f"{self.kind} dropped", "%s: more than %d MB of records wait for disk space; later ones "
                          "are dropped until there is space (the file will have a gap)", self.kind,
                          PENDING_LIMIT >> 20)
                return False
            self.pending.append(data)
            self._size += len(data)
            return self.flush()

    def flush(self) -> bool:
        """Write the waiting records; True once nothing waits."""
        with self._lock:
            if not self.pending:
                return True
            if not self.try_append(b"".join(self.pending)):
                return False
            self.pending.clear()
            self._size = 0
            return True

    def try_append(self, data: bytes) -> bool:
        """One attempt to append `data` whole, keeping nothing: False (the file as it was) on a full disk."""
        with self._lock:
            try:
                fd = self._open()
                start = os.lseek(fd, 0, os.SEEK_END)
                if start == 0 and self.header:
                    data = self.header + data
                try:
                    _write_all(fd, data)
                except OSError:
                    try:
                        os.ftruncate(fd, start)  # no half record stays behind
                    except OSError:
                        pass
                    raise
            except OSError as exc:
                if not is_full(exc):
                    raise
                self._failing = True
                warn_full(self.kind, self.path, exc)
                return False
            if self._failing:
                self._failing = False
                log.info("%s: space again, delayed records written to %s", self.kind, self.path)
            return True

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC if self._truncate else 0)
            self._fd = os.open(self.path, flags, 0o666)
            self._truncate = False
        return self._fd

    def reopen(self) -> None:
        """The file was replaced (renamed over): the next write opens the new one."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def close(self) -> None:
        with self._lock:
            try:
                self.flush()
            finally:
                self.reopen()
                unregister(self)


class _Stream:
    """What logging.FileHandler writes to: one Appender, one record per write call."""

    def __init__(self, appender: Appender, encoding: str, errors: str | None) -> None:
        self.appender = appender
        self.encoding = encoding
        self.errors = errors or "strict"

    def write(self, text: str) -> int:
        self.appender.write(text.encode(self.encoding, self.errors))
        return len(text)

    def flush(self) -> None:
        self.appender.flush()

    def close(self) -> None:
        self.appender.close()


ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")  # CSI, OSC, 2-byte escapes
CONSOLE_ONLY = "rlexp_console_only"  # a log record with this attribute true is not written to run.log


class LogFileHandler(logging.FileHandler):
    """Hydra's run.log handler (rlexp/conf/config.yaml, hydra.job_logging): a full disk skips lines with one
    warning and writes them when there is space, instead of a "--- Logging error ---" traceback per line.
    Terminal escape codes are stripped (a file is read with `less`, `grep`, an editor). Records marked
    `CONSOLE_ONLY` (a command that writes nothing, e.g. resume= of a finished run) are left out."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, CONSOLE_ONLY, False):
            return
        super().emit(record)

    def format(self, record: logging.LogRecord) -> str:
        """The line without terminal escape codes (colours from Optuna's or another library's formatter)."""
        return ANSI.sub("", super().format(record))

    def _open(self) -> Any:
        encoding = self.encoding or "utf-8"
        if encoding == "locale":  # what io.text_encoding(None) says: the locale's
            import locale

            encoding = locale.getpreferredencoding(False)
        return _Stream(Appender(self.baseFilename, Path(self.baseFilename).name, truncate=self.mode == "w"),
                       encoding, self.errors)


class MonitorWriter:
    """SB3 Monitor's results writer (`write_row`, `close`: the interface of stable_baselines3's ResultsWriter)
    with rows appended through an Appender: a full disk delays rows, never cuts one. The `#{json}` header and
    the column line are written when the file is empty (a fresh run; a resume finds them kept)."""

    def __init__(self, path: str | Path, header: dict[str, Any], fieldnames: tuple[str, ...],
                 truncate: bool = False) -> None:
        self.fieldnames = tuple(fieldnames)
        buf = io.StringIO()
        buf.write(f"#{json.dumps(header)}\n")
        csv.DictWriter(buf, fieldnames=self.fieldnames).writeheader()  # SB3's bytes: csv's \r\n line ends
        self.out = Appender(path, "monitor", header=buf.getvalue().encode(), truncate=truncate)

    def write_row(self, epinfo: dict[str, float]) -> None:
        buf = io.StringIO()
        csv.DictWriter(buf, fieldnames=self.fieldnames).writerow(epinfo)
        self.out.write(buf.getvalue().encode())

    def start(self) -> None:
        """Write the header now if the file is new (SB3 writes it when the env is made); the file is closed
        again, so a copy sent to a subprocess env leaves no descriptor behind (the next row reopens it)."""
        self.out.write(b"")
        self.out.reopen()

    def close(self) -> None:
        self.out.close()
