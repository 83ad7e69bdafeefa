"""A pre-imported Python that forks one process per `run.py` / `python -m rlexp` command a test starts.

Every fresh interpreter pays ~5 s before a run does anything: importing torch, torch._dynamo (which torch's
optimizers import at their first step), SB3, gymnasium-robotics and Hydra. A test suite that starts a few
hundred commands pays that hundreds of times. The zygote imports those libraries once per pytest worker and
forks a child per command: the child is its own process (own pid, signals, exit code, stdout and stderr) and
runs the real entry point (`run.py` as `__main__`, a shim script that patches something and then runs
`run.py`, or `python -m rlexp`); it shares nothing with other commands but modules already imported.
`helpers.run_py` / `helpers.start_py` / `helpers.rlexp_cli` use it unless a command's environment differs in a
variable read at import time (then, and with RLEXP_TEST_ZYGOTE=0, a fresh interpreter runs it). Tests about
what a command imports start their own interpreter. A request may ask for its own session (Popen's
start_new_session) or its own hostname (a UTS namespace, as `unshare --uts`: another node of a cluster).

Protocol (one SOCK_SEQPACKET connection per command): the client sends a JSON request with the write ends of
its stdout and stderr pipes attached (SCM_RIGHTS); the zygote answers "pid N" once the child is forked and
"exit CODE" (a negative CODE: killed by that signal) when it has ended.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import runpy
import select
import signal
import socket
import sys
import traceback


def preload() -> None:
    """Import what nearly every command imports, and run one optimizer step (it imports torch._dynamo)."""
    import gymnasium_robotics  # noqa: F401
    import hydra  # noqa: F401
    import stable_baselines3  # noqa: F401
    import torch
    import torch.utils.tensorboard  # noqa: F401

    import rlexp.app  # noqa: F401
    import rlexp.builder  # noqa: F401
    import rlexp.cli  # noqa: F401
    import rlexp.evaluate  # noqa: F401
    import rlexp.training.train  # noqa: F401

    try:  # searches (hparams_search=..., hydra/sweeper=optuna); optuna is the `hpo` extra
        import optuna  # noqa: F401

        import hydra_plugins.rlexp_optuna  # noqa: F401
    except ImportError:
        pass

    layer = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(layer.parameters())
    layer(torch.zeros(1, 2)).sum().backward()
    opt.step()


def _child(request: dict, fds: list[int], inherited: list[int], ready: int) -> None:
    """In the forked child: become the command, then exit the way the interpreter would. `ready`: closed once the
    child is set up (session, hostname, signal handlers), which is when the zygote reports its pid."""
    for fd in inherited:
        try:
            os.close(fd)
        except OSError:
            pass
    if request.get("setsid"):  # Popen(start_new_session=True): its own session and process group
        os.setsid()
    if request.get("hostname"):  # `unshare --uts` + `hostname NAME`: another node, as far as the run can tell
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x04000000) != 0:  # CLONE_NEWUTS (os.unshare needs Python 3.12)
            os.write(fds[1], f"unshare: {os.strerror(ctypes.get_errno())}\n".encode())
            os._exit(1)
        socket.sethostname(request["hostname"])
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.close(ready)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in (null, *fds):
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import numpy as np

    np.random.seed()  # a fresh interpreter's global numpy state differs per process; so must each child's
    sys.argv = [request["target"], *request["args"]]
    code: object = 0
    try:
        if request["kind"] == "module":
            sys.path[0] = os.getcwd()  # what `python -m` puts first
            runpy.run_module(request["target"], run_name="__main__", alter_sys=True)
        else:
            sys.path[0] = os.path.dirname(os.path.abspath(request["target"]))
            runpy.run_path(request["target"], run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    except BaseException:  # what the interpreter prints for an uncaught exception, and its exit code
        traceback.print_exc()
        code = 1
    _exit(code)


def _exit(code: object) -> None:
    """Exit as the interpreter does (atexit handlers, flushed streams, the same code), without its teardown of
    every imported module: that alone takes ~1 s with torch loaded, and a fresh process pays it too, but only once."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    try:
        atexit._run_exitfuncs()  # noqa: SLF001  CPython's own exit path; no public equivalent
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status & 0xFF)


def serve(path: str) -> None:
    """Accept commands on the UNIX socket `path` until the parent goes away."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, socket.socket] = {}
    print("ready", flush=True)
    parent = os.getppid()
    while True:
        ready, _, _ = select.select([listener, wake_r], [], [], 5.0)
        if os.getppid() != parent:  # the pytest worker is gone: so are its commands' clients
            return
        if wake_r in ready:
            os.read(wake_r, 4096)
        if listener in ready:
            conn, _ = listener.accept()
            try:
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
                request = json.loads(msg)
            except (OSError, ValueError):
                conn.close()
                continue
            ready_r, ready_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                _child(request, fds, [listener.fileno(), wake_r, wake_w, conn.fileno(), ready_r,
                                      *(c.fileno() for c in children.values())], ready_w)
            os.close(ready_w)
            os.read(ready_r, 1)  # EOF once the child is set up (or gone)
            os.close(ready_r)
            for fd in fds:
                os.close(fd)
            try:
                conn.send(f"pid {pid}".encode())
            except OSError:
                pass
            children[pid] = conn
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = children.pop(pid, None)
            if conn is not None:
                code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                try:
                    conn.send(f"exit {code}".encode())
                except OSError:
                    pass
                conn.close()


if __name__ == "__main__":
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout, as run.py has it
    preload()
    serve(sys.argv[1])
