"""Shared test helpers (the only module tests import helpers from): run the real entry points in subprocesses.

On sys.path through pyproject's [tool.pytest.ini_options] pythonpath, so every test, also in subfolders,
imports them as `from helpers import ...`.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# Small, fast settings for real end-to-end runs on 2 CPU cores.
FAST = ["progress=false", "eval.n_episodes=3", "diagnostics.freq=0"]
# Tiny PPO dense-Reach runs (add total_steps=N): a checkpoint every 128 steps, so a stop has one to
# resume from.
# Tiny SAC+HER on sparse Reach: 2 envs, small networks, updates from step 100 (first episodes end at 100).
HER_TINY = [
    "+experiment=ch05_her_reach",
    "n_envs=2",
    "algo.learning_starts=100",
    "algo.buffer_size=5000",
    "algo.batch_size=32",
    "+algo.policy_kwargs.net_arch=[32,32]",
    "checkpoint_freq=200",
    "progress=false",
    "eval.n_episodes=2",
    "diagnostics.freq=0",
]
PPO_TINY = [
    "+experiment=ch03_ppo_reach_dense",
    "n_envs=2",
    "algo.n_steps=64",
    "algo.batch_size=64",
    "checkpoint_freq=128",
    "progress=false",
    "eval.n_episodes=2",
    "diagnostics.freq=0",
]


# Variables read while the libraries are imported: a command whose value differs from the zygote's gets a
# fresh interpreter. Everything else (RLEXP_*, HYDRA_FULL_ERROR, ...) is read at run time.
_IMPORT_TIME = ("OMP_", "MKL_", "OPENBLAS_", "MUJOCO_", "PYOPENGL_", "PYTHON", "TORCH", "LD_", "CUDA", "EGL")


def _import_time(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_IMPORT_TIME)}


# Their values when pytest started. Code a test runs in this process changes some (MuJoCo's renderer sets
# PYOPENGL_PLATFORM, importing cv2 sets LD_LIBRARY_PATH): the commands tests start keep these, or every later
# command of that worker would start a fresh interpreter.
_STARTED_WITH = _import_time(os.environ)


def _env() -> dict[str, str]:
    """The environment of a command a test starts: this process's, with the import-time variables it started with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_IMPORT_TIME)} | _STARTED_WITH
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def run_py(*overrides: str, timeout: float = 600, multirun: bool = False, cwd: Path = ROOT,
           env: dict[str, str | None] | None = None, fresh: bool = False, shim: Path | None = None,
           hostname: str | None = None) -> subprocess.CompletedProcess:
    """`python run.py OVERRIDES` from the project root (or `cwd`), output captured. Forked from the zygote
    unless `fresh` (a new interpreter: what it imports and prints while importing counts). `shim`, `hostname`:
    as in start_py."""
    proc = start_py(*overrides, multirun=multirun, cwd=cwd, env=env, fresh=fresh, stderr=subprocess.PIPE,
                    shim=shim, hostname=hostname)
    return _finish(proc, timeout)


def rlexp_cli(*args: str, timeout: float = 600, fresh: bool = False) -> subprocess.CompletedProcess:
    """`python -m rlexp ARGS` from the project root (`fresh`: as in run_py)."""
    proc = _start("module", "rlexp", list(args), ROOT, _env(), fresh, subprocess.PIPE, subprocess.PIPE, False)
    return _finish(proc, timeout)


def start_py(*overrides: str, multirun: bool = False, cwd: Path = ROOT, env: dict[str, str | None] | None = None,
             fresh: bool = False, stdout: int = subprocess.PIPE, stderr: int = subprocess.STDOUT,
             start_new_session: bool = False, shim: Path | None = None, hostname: str | None = None,
             fork: bool = False) -> subprocess.Popen[str] | Forked:
    """Start `python run.py OVERRIDES` without waiting: a Popen (text mode) or the same interface for a command
    forked from the zygote (`fresh`: as in run_py). stdout/stderr: PIPE, STDOUT (stderr only) or a file descriptor.
    `env` adds to the test environment; a None value removes that variable. `shim`: run `python SHIM run.py
    OVERRIDES` instead (a script that patches something, then runs its first argument with runpy). `hostname`: in
    its own UTS namespace with that hostname, as `unshare --uts` (needs root). `fork`: from the zygote although
    `env` changes a variable read at import time: for a launching process whose jobs (fresh interpreters) read it."""
    args = [*(["-m"] if multirun else []), *overrides]
    target = str(ROOT / "run.py")
    if shim is not None:
        target, args = str(shim), [target, *args]
    full = {k: v for k, v in {**_env(), **(env or {})}.items() if v is not None}
    return _start("script", target, args, cwd, full, fresh, stdout, stderr, start_new_session, hostname, fork)


def _finish(proc: subprocess.Popen[str] | Forked, timeout: float) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:  # a grandchild (an overlap worker, a launcher's job) may hold the pipes open: do not wait for it
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            out = err = None
        raise subprocess.TimeoutExpired(proc.args, timeout, out, err) from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


# ------------------------------------------------------------------ commands through the zygote (tests/zygote.py)
_zygote: dict[str, Any] = {}


def _start(kind: str, target: str, args: list[str], cwd: Path, env: dict[str, str], fresh: bool, stdout: int,
           stderr: int, start_new_session: bool, hostname: str | None = None,
           fork: bool = False) -> subprocess.Popen[str] | Forked:
    cmd = [sys.executable, *(["-m", target] if kind == "module" else [target]), *args]
    base = None if fresh else _start_zygote()
    if base is None or not fork and _import_time(env) != _import_time(base["env"]):
        if hostname is not None:
            cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', hostname, *cmd]
        return subprocess.Popen(cmd, cwd=cwd, env=env, text=True, stdout=stdout, stderr=stderr,
                                start_new_session=start_new_session)
    request = {"kind": kind, "target": target, "args": args, "cwd": str(cwd), "env": env,
               "setsid": start_new_session, "hostname": hostname}
    return Forked(cmd, base["path"], request, stdout, stderr)


ZYGOTE_LOST = 255  # a forked command's exit code when the zygote died before reporting it


class Forked:
    """A command forked from the zygote, with the part of `subprocess.Popen`'s interface tests use (text mode,
    UTF-8 with replacement characters, stdin /dev/null, no `with` block).

    The child is the zygote's, not ours: its exit code comes over the request's socket, read by a thread. The pid
    arrives once the child has set itself up (its own session, its hostname), so a signal can follow at once."""

    def __init__(self, args: list[str], path: str, request: dict, stdout: int, stderr: int) -> None:
        self.args, self.returncode = args, None
        ours: list[int] = []  # write ends we made: closed here once the child has its copies

        def end(spec: int) -> tuple[int | None, int]:  # (our read end or None, the child's write end)
            if spec == subprocess.PIPE:
                r, w = os.pipe()
                ours.append(w)
                return r, w
            if spec == subprocess.DEVNULL:
                ours.append(os.open(os.devnull, os.O_WRONLY))
                return None, ours[-1]
            return None, spec

        out_r, out_w = end(stdout)
        err_r, err_w = (None, out_w) if stderr == subprocess.STDOUT else end(stderr)
        self.stdout = None if out_r is None else open(out_r, encoding="utf-8", errors="replace")  # noqa: SIM115
        self.stderr = None if err_r is None else open(err_r, encoding="utf-8", errors="replace")  # noqa: SIM115
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._conn.connect(path)
            socket.send_fds(self._conn, [json.dumps(request).encode()], [out_w, err_w])
            self.pid = int(self._conn.recv(64).decode().split()[1])
        finally:
            for fd in ours:
                os.close(fd)
        self._done = threading.Event()
        threading.Thread(target=self._await_exit, daemon=True).start()
        self._chunks: dict[str, str] = {}
        self._readers: list[threading.Thread] | None = None  # communicate()'s, started at its first call

    def _await_exit(self) -> None:
        try:
            reply = self._conn.recv(64).decode()
            # No reply: the zygote itself is gone (its log: the `log` file beside its socket).
            self.returncode = int(reply.split()[1]) if reply.startswith("exit ") else ZYGOTE_LOST
        finally:
            self._conn.close()
            self._done.set()

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str | None, str | None]:
        """Read stdout/stderr to their end and wait for the exit, as Popen.communicate does."""
        if self._readers is None:
            self._readers = [threading.Thread(target=self._drain, args=(name,), daemon=True)
                             for name in ("stdout", "stderr") if getattr(self, name) is not None]
            for t in self._readers:
                t.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._readers:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self._chunks.get("stdout"), self._chunks.get("stderr")

    def _drain(self, name: str) -> None:
        stream = getattr(self, name)
        self._chunks[name] = stream.read()
        stream.close()

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # ended, its exit code not here yet (Popen ignores this too)
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _start_zygote() -> dict[str, Any] | None:
    """This pytest worker's zygote, started at the first command (None: RLEXP_TEST_ZYGOTE=0)."""
    if os.environ.get("RLEXP_TEST_ZYGOTE", "1") == "0":
        return None
    if not _zygote:
        folder = Path(tempfile.mkdtemp(prefix="rlexp-zygote-"))
        env = _env()
        proc = subprocess.Popen([sys.executable, "-u", str(ROOT / "tests" / "zygote.py"), str(folder / "sock")],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=open(folder / "log", "wb"))
        assert proc.stdout.readline() == b"ready\n", (folder / "log").read_text()[-3000:]
        atexit.register(shutil.rmtree, folder, True)  # its socket and log: after the kill below (atexit is LIFO)
        atexit.register(proc.kill)
        _zygote.update(path=str(folder / "sock"), env=env, proc=proc)
    return _zygote


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (f"exit {proc.returncode}\nSTDOUT:\n{proc.stdout[-3000:]}\n"
                                  f"STDERR:\n{proc.stderr[-5000:]}")
    return proc


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:  # noqa: ANN001
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(
                f"process exited ({proc.returncode}) before {what}:\n{proc.stdout.read()[-4000:]}"
            )
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def checkpoints(run_dir: Path) -> list[Path]:
    """Periodic checkpoints of a run, oldest first (by step, not by name)."""
    from rlexp.rundir import RunDir

    return [c.zip for c in RunDir(run_dir).checkpoints()]


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """TensorBoard scalars of a run's single event directory: {tag: [(step, value), ...]}."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_dirs = sorted((run_dir / "tb").iterdir())
    assert [d.name for d in event_dirs] == ["run_1"], "one TensorBoard run per run directory"
    acc = EventAccumulator(str(event_dirs[0]), size_guidance={"scalars": 0})
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


class PixelsOnly(gym.ObservationWrapper):
    """The `pixels` image of a PixelObservation env as a plain Box observation (what NatureCNN reads).

    For configs: env.wrappers=[{_target_:helpers.PixelsOnly}].
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = env.observation_space["pixels"]

    def observation(self, observation: dict[str, np.ndarray]) -> np.ndarray:
        return observation["pixels"]


# ------------------------------------------------------------------ comparing runs bit for bit
def tensors(zip_path: Path) -> dict[str, Any]:
    """Every tensor of an SB3 zip (policy, optimizer states, log_ent_coef), flattened, read without unpickling."""
    import torch
    from stable_baselines3.common.save_util import load_from_zip_file

    _, params, variables = load_from_zip_file(str(zip_path), load_data=False, device="cpu")
    out: dict[str, Any] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, list | tuple):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        elif torch.is_tensor(value):
            out[prefix] = value
        else:
            out[prefix] = torch.tensor(float(value)) if isinstance(value, int | float) else value

    walk("", params)
    walk("vars", variables or {})
    return out


def assert_same_tensors(a: Path, b: Path) -> None:
    import torch

    ta, tb = tensors(a), tensors(b)
    assert ta.keys() == tb.keys()
    differ = [k for k in ta if not (torch.equal(ta[k], tb[k]) if torch.is_tensor(ta[k]) else ta[k] == tb[k])]
    assert not differ, f"{len(differ)} tensors differ between {a} and {b}, e.g. {differ[:4]}"


def assert_same_final(a: Path, b: Path) -> None:
    assert_same_tensors(a / "model.zip", b / "model.zip")
    assert read_json(a / "eval.json")["per_episode"] == read_json(b / "eval.json")["per_episode"]


def assert_tb_monotonic(run_dir: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = run_dir / "tb"
    assert [p.name for p in tb.iterdir()] == ["run_1"], "one TensorBoard run, no stale folders"
    acc = EventAccumulator(str(tb / "run_1"), size_guidance={"scalars": 0})
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps == sorted(set(steps)), f"{tag}: repeated or backward steps {steps}"


