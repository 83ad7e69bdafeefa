"""One trainer per run directory across the nodes of a cluster: the lease beside flock (rlexp/lease.py).

Another node is another hostname (`unshare --uts`, as root); a file system without flock (Lustre without the
`flock` mount option: ENOSYS) or with node-local flock is simulated by a shim that replaces `fcntl.flock` in the
trainer process before run.py starts. Everything else is real: run.py, the run directory, the kernel's view of
processes. A holder is frozen in the middle of training with `RLEXP_FAULT=SIGSTOP@STEP`, so a second trainer
meets it deterministically.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from rlexp.rundir import RunDir

from helpers import ok, read_json, run_py, start_py, wait_for

pytestmark = pytest.mark.slow

# Tiny HER Reach without gradient steps (learning_starts past the end): hundreds of steps per second.
QUICK = ["+experiment=ch05_her_reach", "n_envs=2", "algo.learning_starts=100000", "algo.buffer_size=2000",
         "+algo.policy_kwargs.net_arch=[32,32]", "checkpoint_freq=200", "progress=false", "eval.n_episodes=2",
         "diagnostics.freq=0"]
SHIM = """import errno, fcntl, os, runpy, socket, sys
print("shim on host", socket.gethostname(), file=sys.stderr)
mode = os.environ.get("RLEXP_TEST_FLOCK")
if mode == "enosys":  # a file system without flock (Lustre mounted without -o flock)
    def flock(fd, op):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
    fcntl.flock = flock
elif mode == "local":  # node-local flock: the other node's lock is invisible here
    fcntl.flock = lambda fd, op: None
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""
NO_FLOCK_WARNING = "flock is not supported on the file system"


def _needs_unshare() -> None:
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode:
        pytest.skip("cannot make a UTS namespace here (unshare --uts needs root): no second hostname")


def shim(tmp_path: Path, flock: str | None) -> Path | None:
    """The flock shim (RLEXP_TEST_FLOCK picks the mode), written into tmp_path; None without one."""
    if not flock:
        return None
    path = tmp_path / "flock_shim.py"
    path.write_text(SHIM)
    return path


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "?"


def write_lease(run_dir: Path, host: str, pid: int, age_s: float, gen: int = 1, heartbeat_s: float = 30) -> Path:
    """A lease as another node's trainer leaves it: its record, its heartbeat (mtime) `age_s` seconds ago."""
    folder = run_dir / ".rlexp.lease"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{gen}.json"
    path.write_text(json.dumps({"host": host, "pid": pid, "since": "2026-12-01T00:00:00+00:00",
                                "heartbeat_s": heartbeat_s, "token": "x", "released": False}))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


@pytest.mark.parametrize("flock", ["enosys", "local"])
def test_a_second_node_is_refused_by_the_lease(tmp_path: Path, flock: str) -> None:
    """enosys: flock fails on both nodes; the lease alone keeps nodeB out (warned once by the holder).
    local: nodeB's flock is its own kernel's and succeeds; the lease keeps it out. Either way nodeB exits with
    code 4 naming host, pid and heartbeat age, and the holder finishes undisturbed."""
    _needs_unshare()
    run_dir = tmp_path / "run"
    args = [*QUICK, "total_steps=400", f"hydra.run.dir={run_dir}"]
    first = start_py(*args, shim=shim(tmp_path, "enosys" if flock == "enosys" else None),
                     env={"RLEXP_FAULT": "SIGSTOP@100:step", "RLEXP_TEST_FLOCK": flock})
    try:
        wait_for(lambda: _state(first.pid) == "T", 300, first, "the holder to stop at step 100")
        before = sorted(p.name for p in run_dir.rglob("*"))
        second = run_py(*args, shim=shim(tmp_path, flock), hostname="nodeB", env={"RLEXP_TEST_FLOCK": flock})
        out = second.stdout + second.stderr
        assert second.returncode == 4, out[-3000:]
        assert "shim on host nodeB" in second.stderr, "the second trainer runs under the other node's hostname"
        host = os.uname().nodename
        assert f"is in use: running in pid {first.pid} on host {host} since" in out, out[-2000:]
        assert "last heartbeat" in out and " s ago" in out, out[-2000:]
        assert "Traceback" not in out
        assert sorted(p.name for p in run_dir.rglob("*")) == before, "the refused node wrote nothing"
    finally:
        os.kill(first.pid, signal.SIGCONT)
        text = first.communicate(timeout=600)[0]
    assert first.returncode == 0, text[-3000:]
    assert (run_dir / "eval.json").exists()
    assert text.count(NO_FLOCK_WARNING) == (1 if flock == "enosys" else 0), text[-3000:]


def test_without_flock_a_killed_holder_is_taken_over(tmp_path: Path) -> None:
    """No flock: the lease of a trainer killed with SIGKILL stays on disk; its pid is dead, so the same command
    takes the run over (saying so) and resumes it."""
    args = [*QUICK, "total_steps=400", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {"RLEXP_TEST_FLOCK": "enosys"}
    killed = start_py(*args, shim=shim(tmp_path, "enosys"), env={**env, "RLEXP_FAULT": "SIGKILL@250:step"})
    killed.communicate(timeout=600)
    assert killed.returncode == -signal.SIGKILL
    lease = read_json(tmp_path / "run" / ".rlexp.lease" / "1.json")
    assert lease["pid"] == killed.pid and not lease["released"]
    proc = ok(run_py(*args, shim=shim(tmp_path, "enosys"), env=env))
    out = proc.stdout + proc.stderr
    assert f"took over the lease of {tmp_path / 'run'} from pid {killed.pid} on host" in out, out[-3000:]
    assert f"pid {killed.pid} is gone" in out and "from step 200" in out, out[-3000:]
    assert (tmp_path / "run" / "eval.json").exists()
    assert read_json(tmp_path / "run" / ".rlexp.lease" / "2.json")["released"]


@pytest.mark.parametrize(("age_s", "beat_s"), [(2, 30), (600, 2), (3, 1)], ids=["fresh", "stale", "missed-beats"])
def test_another_hosts_lease_fresh_refuses_stale_is_taken_over(tmp_path: Path, age_s: float, beat_s: float) -> None:
    """A lease left by nodeZ (a pid this host cannot check), with RLEXP_LEASE_TIMEOUT=8. Its heartbeat 2 s old
    (every 30 s): it trains there (exit 4, nothing written), at once. 600 s old: past the timeout, taken over
    with a line.
    3 s old but beating every second: it missed its last beats (a dead node, a requeued job), so the command
    waits until the timeout passes without a beat, then takes over."""
    run_dir = tmp_path / "run"
    write_lease(run_dir, "nodeZ", 4242, age_s, heartbeat_s=beat_s)
    proc = run_py(*QUICK, "total_steps=200", f"hydra.run.dir={run_dir}", env={"RLEXP_LEASE_TIMEOUT": "8"})
    out = proc.stdout + proc.stderr
    if age_s == 2:
        assert proc.returncode == 4, out[-3000:]
        assert "is in use: running in pid 4242 on host nodeZ since 2026-12-01T00:00:00+00:00, last heartbeat" in out
        assert "waiting" not in out
        written = {p.name for p in run_dir.iterdir()} - {".rlexp.lease", ".rlexp.lock"}
        assert written <= {"run.log"}, f"nothing but the refusal's log line: {written}"
        return
    ok(proc)
    line = re.search(rf"took over the lease of {re.escape(str(run_dir))} from pid 4242 on host nodeZ since "
                     r"2026-12-01T00:00:00\+00:00, last heartbeat (\d+) s ago: no heartbeat for (\d+) s "
                     r"\(timeout 8 s\)", out)
    assert line and int(line.group(1)) == int(line.group(2)), out[-3000:]
    assert 600 <= int(line.group(1)) < 900 if age_s == 600 else 8 <= int(line.group(1)) < 18
    assert ("waiting for the lease" in out) == (age_s == 3), out[-3000:]
    assert (run_dir / "eval.json").exists()


def _taker(folder: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue,
           done: multiprocessing.synchronize.Event) -> None:
    import errno
    import fcntl

    def no_flock(fd: int, op: int) -> None:
        raise OSError(errno.ENOSYS, "Function not implemented")

    fcntl.flock = no_flock  # the lease alone decides, as on Lustre without flock
    lock = RunDir(folder).lock()
    barrier.wait()
    got = lock.acquire()
    results.put((os.getpid(), got))
    done.wait(60)
    lock.release()


def test_two_takers_of_a_stale_lease_one_wins(tmp_path: Path) -> None:
    """Six processes take over the same stale lease at the same moment, twenty times: each time exactly one
    holds it afterwards, in the next generation, and every other one is refused naming the winner."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(20):
        run_dir = tmp_path / f"r{round_}"
        write_lease(run_dir, "nodeZ", 4242, 3600)
        barrier, done, results = ctx.Barrier(6), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_taker, args=(str(run_dir), barrier, results, done)) for _ in range(6)]
        for p in procs:
            p.start()
        try:
            got = [results.get(timeout=60) for _ in procs]
        finally:
            done.set()
            for p in procs:
                p.join(60)
        winners = [pid for pid, won in got if won]
        assert len(winners) == 1, got
        lease = read_json(run_dir / ".rlexp.lease" / "2.json")
        assert lease["pid"] == winners[0] and lease["released"]  # released when the winner let go
        assert sorted(p.name for p in (run_dir / ".rlexp.lease").iterdir()) == ["1.json", "2.json"]


def test_heartbeat_keeps_the_lease_fresh_and_notices_a_takeover(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The holder's thread refreshes the heartbeat (the lease file's mtime) while the main thread is busy; a
    higher generation written by another node makes the holder's next check raise LeaseLost."""
    from rlexp.errors import LeaseLost
    from rlexp.lease import current

    monkeypatch.setenv("RLEXP_LEASE_HEARTBEAT", "0.1")
    lock = RunDir(tmp_path).lock()
    assert lock.acquire()
    try:
        path = tmp_path / ".rlexp.lease" / "1.json"
        os.utime(path, (time.time() - 100, time.time() - 100))
        time.sleep(0.5)  # busy, as a long evaluation: no call into rlexp
        assert current(tmp_path / ".rlexp.lease").age_s < 1
        lock.check()
        write_lease(tmp_path, "nodeZ", 4242, 0, gen=2)
        wait_for(lambda: lock.lease.lost is not None, 5, what="the heartbeat to notice")
        with pytest.raises(LeaseLost, match="taken over by pid 4242 on host nodeZ"):
            lock.check()
    finally:
        lock.release()
    assert not read_json(tmp_path / ".rlexp.lease" / "2.json")["released"], "the new holder's lease is left alone"


def test_bad_lease_settings_are_refused_before_anything_is_written(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from rlexp.errors import ConfigError

    monkeypatch.setenv("RLEXP_LEASE_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="RLEXP_LEASE_TIMEOUT='soon'"):
        RunDir(tmp_path / "run").lock().acquire()
    assert not (tmp_path / "run").exists()


def test_status_reads_the_lease_of_any_node(tmp_path: Path) -> None:
    """`rlexp status` shows a trainer on another node from its lease (host, pid, heartbeat age) while the
    heartbeat is fresh, and the run as interrupted once it is older than the timeout."""
    from rlexp.analysis.status import sweep_status

    run = RunDir(tmp_path / "run")
    run.hydra.mkdir(parents=True)
    (run.hydra / "config.yaml").write_text("total_steps: 5000\n")
    lease = write_lease(run.root, "nodeZ", 4242, 12)
    [state], _ = sweep_status(run.root)
    assert state.state == "running" and state.host == "nodeZ" and state.pid == 4242, state
    assert 11 <= state.heartbeat_age_s < 30 and "on nodeZ pid 4242" in state.detail, state
    assert "last heartbeat 12 s ago" in state.detail or "last heartbeat 13 s ago" in state.detail, state.detail
    then = time.time() - 3600
    os.utime(lease, (then, then))
    [state], _ = sweep_status(run.root)
    assert state.state == "interrupted", state
