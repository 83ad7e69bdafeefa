"""A lease on a folder that every node sharing the file system sees: who holds it, and whether they still live.

`flock` alone is not enough on clusters: on Lustre without the `flock` mount option it fails with ENOSYS, and
with node-local locking (`localflock`, many NFS setups) each node grants its own lock, so two nodes could train
one run directory at once. The lease is plain files, which every node reads the same way.

Layout: a folder (`.rlexp.lease/` in a run directory) of generations `1.json`, `2.json`, ...; the highest one
is the lease. Each is a JSON record (host, pid, the pid's start time and the boot id of its host, since when,
the heartbeat period, a token) written once, complete, before it gets its name. The holder's heartbeat is the
file's mtime, refreshed with `os.utime` (a metadata update: no data block, so it works on a full disk too, and
nothing is rewritten). Releasing rewrites the record with `released: true` (temp file + rename).

Taking the lease, fresh or from a holder that is gone, is one compare-and-swap: create generation g+1 where g
is the highest one seen, with `link(temp, "g+1.json")`, which fails if the name exists. Of two takers that saw
generation g, exactly one creates g+1; the other sees the new holder and is refused. A taker with an older view
(it saw g-3 while g+1 exists) may re-create a generation that was cleaned up; it then finds a higher generation
and backs off. The highest generation is never deleted, so no lease is ever lost; a taker killed half-way
leaves either nothing or a complete lease whose holder is gone, which the next taker takes over. Where hard
links are not supported, `O_CREAT|O_EXCL` creates the generation (a reader may then briefly see it empty: it
counts as held until its mtime is older than the timeout).

A holder is gone when its record says released; on the same host, when its pid is dead, a zombie, or another
process (start time or boot id differ); on another host, when its heartbeat is older than the timeout
(`RLEXP_LEASE_TIMEOUT` seconds, default 300; at least three heartbeat periods of the holder). Node clocks must
agree to well within the timeout (NTP). A holder that finds a higher generation has lost the lease: it stops
writing (rlexp.errors.LeaseLost).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("rlexp")

HEARTBEAT_ENV = "RLEXP_LEASE_HEARTBEAT"  # seconds between heartbeats of a holder (default 30)
TIMEOUT_ENV = "RLEXP_LEASE_TIMEOUT"  # seconds without a heartbeat after which another host's lease is stale
DEFAULT_HEARTBEAT_S = 30.0
DEFAULT_TIMEOUT_S = 300.0
_GEN = re.compile(r"^(\d+)\.json$")


def _seconds(name: str, default: float) -> float:
    from rlexp.errors import ConfigError

    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ConfigError(f"{name}={raw!r}: expected a number of seconds > 0")
    return value


def heartbeat_s() -> float:
    return _seconds(HEARTBEAT_ENV, DEFAULT_HEARTBEAT_S)


def timeout_s() -> float:
    return _seconds(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)


def lease_settings() -> tuple[float, float]:
    """(heartbeat period, timeout) in seconds from the environment; ConfigError for a bad value."""
    return heartbeat_s(), timeout_s()


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) of a process from /proc, None if unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0], fields[19]


def alive_here(pid: int, pid_start: str | None = None, boot_id: str | None = None) -> bool:
    """Whether process `pid` of this host still runs (and is the same process: start time and boot id)."""
    if boot_id and (here := _boot_id()) and here != boot_id:
        return False  # the host rebooted since
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        return True
    state, start = stat
    return state != "Z" and (not pid_start or start == pid_start)


@dataclass(frozen=True)
class Lease:
    """One generation of a lease as read from disk."""

    gen: int
    path: Path
    host: str
    pid: int
    since: str
    age_s: float  # seconds since the last heartbeat (the file's mtime)
    released: bool = False
    token: str = ""
    pid_start: str | None = None
    boot_id: str | None = None
    heartbeat_s: float = DEFAULT_HEARTBEAT_S

    def describe(self) -> str:
        """`pid N on host H since T, last heartbeat S s ago`: the words a refusal prints."""
        return f"pid {self.pid} on host {self.host} since {self.since}, last heartbeat {self.age_s:.0f} s ago"

    def gone(self, timeout: float | None = None) -> str | None:
        """Why the holder no longer holds this lease, or None if it may still be alive."""
        if self.released:
            return "released"
        limit = max(timeout if timeout is not None else timeout_s(), 3 * self.heartbeat_s)
        if self.host == socket.gethostname() and self.pid > 0:
            if not alive_here(self.pid, self.pid_start, self.boot_id):
                return f"pid {self.pid} is gone"
            return None
        if self.age_s > limit:
            return f"no heartbeat for {self.age_s:.0f} s (timeout {limit:.0f} s)"
        return None


def generations(folder: Path) -> list[int]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := _GEN.match(n)))


def read(folder: Path, gen: int) -> Lease | None:
    """Generation `gen`, or None if it is not there. A record that does not parse (being created without hard
    links, or damaged) reads as an unknown holder whose heartbeat is the file's mtime."""
    path = folder / f"{gen}.json"
    try:
        age = time.time() - path.stat().st_mtime
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a record")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return Lease(gen, path, "unknown", 0, "?", max(0.0, age))
    return Lease(gen, path, str(data.get("host")), int(data.get("pid") or 0), str(data.get("since")),
                 max(0.0, age), bool(data.get("released")), str(data.get("token") or ""), data.get("pid_start"),
                 data.get("boot_id"), float(data.get("heartbeat_s") or DEFAULT_HEARTBEAT_S))


def current(folder: Path) -> Lease | None:
    """The highest generation: the lease as it stands."""
    for gen in reversed(generations(folder)):
        lease = read(folder, gen)
        if lease is not None:
            return lease
    return None


def _create(path: Path, data: bytes) -> bool:
    """Give `path` the complete content `data` unless the name exists (False then): temp file + link."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        except OSError as exc:  # a full disk: say which file
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK):
                return _create_excl(path, data)  # no hard links on this file system
            if os.stat(tmp).st_nlink != 2:  # NFS may report a link that happened as failed
                raise
        return True
    finally:
        tmp.unlink(missing_ok=True)


def _create_excl(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


class Holder:
    """This process's side of a lease on `folder`: take it, keep it alive from a daemon thread, give it back.

    The heartbeat runs in a thread because the trainer's own loop stalls for minutes at a time (building envs,
    restoring or writing a multi-GB replay buffer, periodic and final evaluations, a TensorBoard history
    rewrite): a beat from the training loop would let a live run's lease go stale exactly then. The thread
    only touches the file's mtime every `heartbeat_s()` seconds (the GIL is released during the call), dies
    with the process (SIGKILL included) and marks the lease lost when a higher generation appears.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lease: Lease | None = None  # ours, once taken
        self.refused_by: Lease | None = None  # the live holder that kept us out
        self.took_over: tuple[Lease, str] | None = None  # the gone holder we replaced, and why it counts as gone
        self.lost: Lease | None = None  # set by the heartbeat: the lease that replaced ours
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._beat_failed = False

    def live(self) -> Lease | None:
        """The current lease if its holder may be alive (another process's, or ours)."""
        lease = current(self.folder)
        return lease if lease is not None and lease.gone() is None else None

    def take(self, rounds: int = 8) -> bool:
        """True once this process holds the lease; False (with `refused_by`) if a live holder has it.

        A holder on another host that has missed its last heartbeats (none for 3 periods) is most likely dead (a
        node failure, and SLURM requeued the job elsewhere): then this waits, up to the timeout, until it either
        beats again (refused) or counts as gone (taken over), instead of refusing a requeued job at once."""
        self.folder.mkdir(parents=True, exist_ok=True)
        period = heartbeat_s()
        timeout = timeout_s()
        waiting = False
        while rounds > 0:
            gens = generations(self.folder)
            top = read(self.folder, gens[-1]) if gens else None
            why = top.gone(timeout) if top is not None else None
            if top is not None and why is None:
                pause = self._wait_for(top, timeout)
                if pause is None:
                    self.refused_by = top
                    return False
                if not waiting:
                    waiting = True
                    log.warning("waiting for the lease of %s: %s (it beats every %.0f s); taken over after %.0f s "
                                "without a heartbeat unless one comes", self.folder.parent, top.describe(),
                                top.heartbeat_s, max(timeout, 3 * top.heartbeat_s))
                time.sleep(pause)
                continue
            rounds -= 1
            gen = (gens[-1] if gens else 0) + 1
            token = uuid.uuid4().hex
            stat = _proc_stat(os.getpid())
            record: dict[str, Any] = {
                "host": socket.gethostname(), "pid": os.getpid(), "pid_start": stat[1] if stat else None,
                "boot_id": _boot_id(), "since": _now_iso(), "heartbeat_s": period, "token": token,
                "released": False}
            path = self.folder / f"{gen}.json"
            if not _create(path, (json.dumps(record, indent=1) + "\n").encode()):
                continue  # another taker created this generation first: look again
            if any(g > gen for g in generations(self.folder)):  # we acted on an old view: not ours to hold
                path.unlink(missing_ok=True)
                continue
            self.lease = read(self.folder, gen)
            if top is not None and why != "released":
                self.took_over = (top, str(why))
            for old in gens[:-1]:  # keep the one we replaced (for the record); older ones go
                (self.folder / f"{old}.json").unlink(missing_ok=True)
            self._start(period)
            return True
        self.refused_by = current(self.folder)
        return False

    @staticmethod
    def _wait_for(top: Lease, timeout: float) -> float | None:
        """Seconds to wait before looking at a live-looking lease again, or None to refuse now."""
        if top.host == socket.gethostname() or top.age_s <= 3 * top.heartbeat_s:
            return None  # its pid lives (this host), or it beats
        return max(0.1, min(top.heartbeat_s, max(timeout, 3 * top.heartbeat_s) - top.age_s + 0.1))

    def _start(self, period: float) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(period,), name="rlexp-lease-heartbeat", daemon=True)
        self._thread.start()

    def _run(self, period: float) -> None:
        while not self._stop.wait(period):
            if not self.beat():
                return

    def beat(self) -> bool:
        """Refresh the heartbeat; False (and `lost` set) once another process holds the lease."""
        assert self.lease is not None
        newer = [g for g in generations(self.folder) if g > self.lease.gen]
        if newer:
            self.lost = read(self.folder, newer[-1]) or self.lease
            return False
        try:
            os.utime(self.lease.path)
        except FileNotFoundError:
            self.lost = current(self.folder) or self.lease
            return False
        except OSError as exc:  # e.g. a file system hiccup: say so once, keep trying
            if not self._beat_failed:
                self._beat_failed = True
                log.warning("lease heartbeat of %s failed (%s); other nodes may take the run over after %.0f s "
                            "without one", self.lease.path, exc.strerror or exc, timeout_s())
        return True

    def release(self) -> None:
        """Stop the heartbeat and mark the lease released, so the next process on any node starts at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        lease, self.lease = self.lease, None
        if lease is None or self.lost is not None or any(g > lease.gen for g in generations(self.folder)):
            return
        try:
            record = json.loads(lease.path.read_text())
            record["released"] = True
            record["released_at"] = _now_iso()
            tmp = lease.path.parent / f".{lease.path.name}.{uuid.uuid4().hex}.tmp"
            try:
                tmp.write_text(json.dumps(record, indent=1) + "\n")
                os.replace(tmp, lease.path)
            finally:
                tmp.unlink(missing_ok=True)
        except (OSError, ValueError) as exc:  # a full disk: the lease stays until its holder counts as gone
            log.warning("could not mark the lease %s released (%s); the next start takes it over once this pid "
                        "is gone", lease.path, getattr(exc, "strerror", None) or exc)


def _now_iso() -> str:
    import datetime as _dt

    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")

