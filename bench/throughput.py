"""Throughput of the book's SAC+HER FetchPush-v4 recipe: plain SB3 vs rlexp (`fast=false`, the default, and
`fast=true`), with and without `overlap=true`, side by side.

    python bench/throughput.py --repeats 3 --steps 12000 --write docs/results.md
    python bench/throughput.py --device cuda --write docs/measurements.md  # on a GPU machine
    python bench/throughput.py --candidates --repeats 2 --steps 6000       # each fast-path piece on its own
    python bench/throughput.py --concurrent 6 --seconds 60 --write docs/results.md  # plain and rlexp at once
    python bench/throughput.py --pieces 3 --seconds 45 --write docs/measurements.md  # each piece's worth, A/B

Every measurement is its own process (one torch thread), run one after another and interleaved across
repeats, so all modes see the same machine load. Each trains the same recipe (bench/plain_sb3.py: 8 envs,
ch05_her_push hyperparameters, seed 0) for learning_starts + 1000 steps untimed, then `--steps` env steps
timed (one gradient step per step of the 8 envs: 8 transitions). Reported per mode: env steps/s (wall),
CPU seconds per 1k env steps
(the process and its children: what a sweep filling every core pays), and the fraction of the env
ceiling: the same 8 Fetch envs stepped with random actions, no learning. Ratios against plain SB3 are
medians of per-repeat ratios. rlexp rows build the model with rlexp.builder.build and call SB3's learn,
as rlexp.training does (without its checkpoint and TensorBoard callbacks).

On a shared VM the host's load moves by tens of percent within a minute, more than the differences measured.
`--concurrent N` therefore runs N pairs of plain SB3 and `fast=true` *at the same time*, one pinned to
each core (swapped every pair), each timed over the same `--seconds` of wall clock: both see the same host at
the same moment, as two runs of a sweep filling both cores do.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from docsection import write_section  # noqa: E402

LEARNING_STARTS = 1000
PARTS = ("obs", "adam", "lean")  # the fast path's pieces (--candidates measures each alone, --pieces each one's worth)
PART_NAMES = {
    "obs": "Fetch stepped by index: observations, action, gripper block (rlexp/fast/fetch_index.py)",
    "adam": "fused Adam (FastSAC, `optimizer_kwargs`)",
    "lean": "lean train(): no critic weight grads in the actor loss, features once, direct MLPs, one sync, flat "
            "set_training_mode, acting without distribution objects (FastSAC)",
}


# ------------------------------------------------------------------------------------------- child side
def cpu_seconds() -> float:
    """User + system CPU of this process and its live children (env or overlap workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def timer_callback(start: int, seconds: float = 0.0) -> Any:
    from stable_baselines3.common.callbacks import BaseCallback

    class Timer(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.t0: tuple[float, float, int] | None = None

        def _on_step(self) -> bool:
            if self.t0 is None and self.num_timesteps >= start:
                if os.environ.get("RLEXP_BENCH_BARRIER"):  # --concurrent: start the clock when the other run does
                    print("READY", flush=True)
                    sys.stdin.readline()
                self.t0 = (time.perf_counter(), cpu_seconds(), self.num_timesteps)
            return not (seconds and self.t0 and time.perf_counter() - self.t0[0] >= seconds)

    return Timer()


def rlexp_model(device: str, parts: set[str], overlap: bool) -> Any:
    import rlexp
    from rlexp.builder import build

    overrides = ["+experiment=ch05_her_push", f"device={device}", f"fast={str(bool(parts)).lower()}"]
    model = build(rlexp.compose(*overrides, *(["overlap=true"] if overlap else [])))
    if parts and set(PARTS) - parts:  # a candidate alone: switch the other pieces back to SB3's code
        from stable_baselines3 import SAC

        from rlexp.fast.sac import FastSAC

        if "obs" not in parts:
            for env in model.get_env().envs:
                for name in ("_get_obs", "_set_action", "_step_callback"):
                    vars(env.unwrapped).pop(name, None)
        FastSAC.fused_adam, FastSAC.skip_critic_grads = "adam" in parts, "lean" in parts
        FastSAC.shared_features = "lean" in parts
        if "adam" not in parts:  # the model was built before the switch: SB3's Adam flags back
            for opt in (model.actor.optimizer, model.critic.optimizer):
                for group in opt.param_groups:
                    group["fused"] = None
        if "lean" not in parts:  # SB3's recursive set_training_mode and module-call acting back
            vars(model.policy).pop("set_training_mode", None)
            vars(model.policy).pop("_predict", None)
        if not parts & {"adam", "lean"}:
            FastSAC.train = SAC.train  # type: ignore[method-assign]
    return model


def ceiling(steps: int, fast_obs: bool) -> dict[str, float]:
    """The same 8 envs (SB3's make_vec_env, Monitor) stepped with uniform random actions."""
    import gymnasium as gym
    import gymnasium_robotics
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env

    gym.register_envs(gymnasium_robotics)
    venv = make_vec_env("FetchPush-v4", n_envs=8, seed=0, monitor_kwargs={"info_keywords": ("is_success",)})
    if fast_obs:
        from rlexp.fast.fetch_index import install

        for env in venv.envs:
            install(env)
    venv.reset()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps // 8 + 1, 8, 4)).astype(np.float32)
    t0, c0 = time.perf_counter(), cpu_seconds()
    for a in actions[: steps // 8]:
        venv.step(a)
    return {"wall": time.perf_counter() - t0, "cpu": cpu_seconds() - c0, "steps": steps // 8 * 8}


def child(mode: str, steps: int, device: str, seconds: float = 0.0) -> dict[str, float]:
    import torch

    torch.set_num_threads(1)
    if mode.startswith("ceiling"):
        return ceiling(steps, fast_obs=mode == "ceiling_fast")
    if mode == "plain":
        from plain_sb3 import make_model

        model = make_model(device)
    else:  # rlexp | rlexp_overlap (fast=true, every piece) or rlexp:PARTS | rlexp_overlap:PARTS (only those)
        named = set(filter(None, mode.partition(":")[2].split(",")))
        parts = set(PARTS) if mode in ("rlexp", "rlexp_overlap") else named
        model = rlexp_model(device, parts, overlap=mode.startswith("rlexp_overlap"))
    warm = LEARNING_STARTS + 1000
    timer = timer_callback(warm, seconds)
    model.learn(warm + (steps if not seconds else 10**9), callback=timer, progress_bar=False)
    wall, cpu = time.perf_counter() - timer.t0[0], cpu_seconds() - timer.t0[1]
    out = {"wall": wall, "cpu": cpu, "steps": model.num_timesteps - timer.t0[2]}
    model.get_env().close()
    return out


# ------------------------------------------------------------------------------------------ parent side
def child_env(**extra: str) -> dict[str, str]:
    """A measurement child's environment: one OpenMP thread, this checkout importable (the caller's path kept)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
                **extra)


def run_child(mode: str, steps: int, device: str) -> dict[str, float]:
    env = child_env()
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(steps), "--device", device],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"throughput: {mode} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def run_pair(modes: tuple[str, str], seconds: float, device: str, cores: tuple[int, int]) -> list[dict[str, float]]:
    """Both modes at once, each pinned to one core; after both finish their untimed warm-up (a barrier), each is
    timed over the same `seconds` of wall clock."""
    import tempfile

    env = child_env(RLEXP_BENCH_BARRIER="1")
    errs = [tempfile.TemporaryFile(mode="w+") for _ in modes]  # a full stderr pipe must not stall a timed run
    procs = [subprocess.Popen(["taskset", "-c", str(core), sys.executable, __file__, "--child", mode, "--seconds",
                               str(seconds), "--device", device], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=err, text=True, env=env, cwd=ROOT)
             for mode, core, err in zip(modes, cores, errs, strict=True)]

    def fail(mode: str, proc: subprocess.Popen, err: Any) -> None:
        for other in procs:
            other.kill()
        err.seek(0)
        sys.exit(f"throughput: {mode} failed (exit {proc.wait()}):\n{err.read()[-3000:]}")

    for mode, proc, err in zip(modes, procs, errs, strict=True):
        line = proc.stdout.readline()  # type: ignore[union-attr]
        while line and line.strip() != "READY":
            line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            fail(mode, proc, err)
    for proc in procs:
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    out = []
    for mode, proc, err in zip(modes, procs, errs, strict=True):
        stdout, _ = proc.communicate()
        lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            fail(mode, proc, err)
        out.append(json.loads(lines[-1][len("RESULT "):]))
    return out


def concurrent_table(pairs: int, seconds: float, device: str, against: str = "plain") -> tuple[str, float]:
    """`fast=true` and `against` (plain SB3, or `fast=true` without one piece) side by side
    at the same moment; the table and the median ratio."""
    b = "plain" if against == "plain" else "without"
    rows = [f"| pair | cores ({b}, rlexp) | {b} steps/s | rlexp steps/s | {b} CPU s/1k | rlexp CPU s/1k "
            f"| x {b}, steps per CPU-s |", "|---|---|---:|---:|---:|---:|---:|"]
    ratios = []
    for i in range(pairs):
        cores = (0, 1) if i % 2 == 0 else (1, 0)
        plain, fast = run_pair((against, "rlexp"), seconds, device, cores)
        ratio = (fast["steps"] / fast["cpu"]) / (plain["steps"] / plain["cpu"])
        ratios.append(ratio)
        rows.append(f"| {i + 1} | {cores[0]}, {cores[1]} | {plain['steps'] / plain['wall']:.0f} | "
                    f"{fast['steps'] / fast['wall']:.0f} | {plain['cpu'] / plain['steps'] * 1000:.2f} | "
                    f"{fast['cpu'] / fast['steps'] * 1000:.2f} | {ratio:.2f} |")
        print(rows[-1], flush=True)
    return "\n".join(rows), statistics.median(ratios)


def write_concurrent(args: argparse.Namespace, table: str, ratio: float, load: float) -> None:
    import stable_baselines3
    import torch

    body = (f"The recipe of the table above; plain SB3 and rlexp with `fast=true` run at the same time, one pinned "
            f"to each core (swapped every pair), each timed over {args.seconds:g} s of wall clock after "
            f"{LEARNING_STARTS + 1000:,} untimed steps; learner on `{args.device}`, one torch thread each. Machine: "
            f"{machine(args.device)}; load average {load:.1f} at start. torch {torch.__version__}, SB3 "
            f"{stable_baselines3.__version__}, {time.strftime('%Y-%m-%d', time.gmtime())}.\n\n"
            f"`python bench/throughput.py --concurrent {args.concurrent} --seconds {args.seconds:g}`\n\n"
            f"{table}\n\nMedian over the pairs: **{ratio:.2f}x** plain SB3's env steps per CPU-second.\n")
    kind = args.device.split(":")[0]
    write_section(args.write, f"throughput-{kind}-concurrent",
                  f"Throughput: plain SB3 and rlexp at the same moment, one per core ({args.device})", body)
    print(f"wrote {args.write}")


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    desc = f"{cpu}, {os.cpu_count()} cores"
    if device.startswith("cuda"):
        import torch

        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12_000, help="timed env steps per measurement (after warm-up)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda (the learner's device; envs are on the CPU)")
    ap.add_argument("--candidates", action="store_true", help="also measure each fast-path piece alone")
    ap.add_argument("--write", type=Path, help="put the table into this Markdown file "
                    "(docs/results.md; --pieces and cuda: docs/measurements.md)")
    ap.add_argument("--concurrent", type=int, default=0, metavar="N",
                    help="instead: N pairs of plain SB3 and fast=true run at the same time, one per core")
    ap.add_argument("--seconds", type=float, default=0.0, help="with --concurrent: timed wall seconds per run (60)")
    ap.add_argument("--pieces", type=int, default=0, metavar="N",
                    help="instead: for each fast-path piece, N pairs of fast=true and fast=true "
                         "without that piece at the same time, one per core (what each piece buys end to end)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.steps, args.device, args.seconds)), flush=True)
        return
    if args.concurrent:
        args.seconds = args.seconds or 60.0
        load = os.getloadavg()[0]
        table, ratio = concurrent_table(args.concurrent, args.seconds, args.device)
        print(table)
        print(f"median: {ratio:.2f}x plain's env steps per CPU-second")
        if args.write:
            write_concurrent(args, table, ratio, load)
        return

    if args.pieces:
        args.seconds = args.seconds or 45.0
        load = os.getloadavg()[0]
        rows = ["| piece | pairs: x without it, steps per CPU-s | median | kept (>= 1.03) |", "|---|---|---:|---|"]
        for part in PARTS:
            without = "rlexp:" + ",".join(p for p in PARTS if p != part)
            table, ratio = concurrent_table(args.pieces, args.seconds, args.device, without)
            pair_ratios = [line.rsplit("|", 2)[-2].strip() for line in table.splitlines()[2:]]
            rows.append(f"| {PART_NAMES[part]} | {', '.join(pair_ratios)} | **{ratio:.2f}** | "
                        f"{'yes' if ratio >= 1.03 else 'no'} |")
            print(rows[-1], flush=True)
        if args.write:
            import torch

            body = (f"For each piece of the fast path: `fast=true` and the same path without that piece run "
                    f"at the same time, one pinned to each core (swapped every pair), each timed over "
                    f"{args.seconds:g} s of wall clock after {LEARNING_STARTS + 1000:,} untimed steps of the SAC+HER "
                    f"FetchPush-v4 recipe (ch05_her_push's hyperparameters, 8 envs, batch 256); one torch thread "
                    f"each. A piece stays only if it buys at least 3% (1.03x). Machine: "
                    f"{machine(args.device)}; load average {load:.1f} at start. torch {torch.__version__}, "
                    f"{time.strftime('%Y-%m-%d', time.gmtime())}.\n\n`python bench/throughput.py --pieces "
                    f"{args.pieces} --seconds {args.seconds:g}`\n\n" + "\n".join(rows) + "\n")
            write_section(args.write, "throughput-pieces", "Throughput: what each fast-path piece buys, side by "
                          "side (cpu)", body)
            print(f"wrote {args.write}")
        return

    modes = ["plain", "rlexp:", "rlexp", "rlexp_overlap:", "rlexp_overlap", "ceiling", "ceiling_fast"]
    if args.candidates:
        modes += [f"rlexp:{p}" for p in PARTS]
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    load = os.getloadavg()[0]
    for r in range(args.repeats):
        for mode in modes:
            res = run_child(mode, args.steps, args.device)
            results[mode].append(res)
            print(f"repeat {r + 1}/{args.repeats} {mode:14s} {res['steps'] / res['wall']:7.0f} steps/s  "
                  f"{res['cpu'] / res['steps'] * 1000:6.2f} CPU s/1k steps", flush=True)

    def rate(res: dict[str, float]) -> float:
        return res["steps"] / res["wall"]

    def per_cpu(res: dict[str, float]) -> float:
        return res["steps"] / res["cpu"]

    ceil = statistics.median(rate(x) for x in results["ceiling"])
    labels = {"plain": "plain SB3 (bench/plain_sb3.py)", "rlexp:": "rlexp default (fast=false: SB3's classes)",
              "rlexp": "rlexp fast=true", "rlexp_overlap:": "rlexp overlap=true",
              "rlexp_overlap": "rlexp overlap=true fast=true",
              **{f"rlexp:{p}": f"only {PART_NAMES[p]}" for p in PARTS}}
    rows = ["| mode | env steps/s (wall) | CPU s per 1k steps | x plain, wall | x plain, steps per CPU-s "
            "| fraction of env ceiling |", "|---|---:|---:|---:|---:|---:|"]
    for mode in [m for m in modes if not m.startswith("ceiling")]:
        runs = results[mode]
        wall_ratio = statistics.median(rate(x) / rate(p) for x, p in zip(runs, results["plain"], strict=True))
        cpu_ratio = statistics.median(per_cpu(x) / per_cpu(p) for x, p in zip(runs, results["plain"], strict=True))
        med = statistics.median(rate(x) for x in runs)
        cpu_k = statistics.median(x["cpu"] / x["steps"] * 1000 for x in runs)
        rows.append(f"| {labels[mode]} | {med:.0f} | {cpu_k:.2f} | {wall_ratio:.2f} | {cpu_ratio:.2f} "
                    f"| {med / ceil:.2f} |")
    for mode, what in (("ceiling", "env ceiling: 8 envs, random actions"),
                       ("ceiling_fast", "env ceiling, Fetch stepped by index")):
        med = statistics.median(rate(x) for x in results[mode])
        cpu_k = statistics.median(x["cpu"] / x["steps"] * 1000 for x in results[mode])
        rows.append(f"| {what} | {med:.0f} | {cpu_k:.2f} | | | {med / ceil:.2f} |")
    per_repeat = []  # the spread behind each median ratio
    for mode, what, fn in (("rlexp", "fast=true's steps per CPU-second", per_cpu),
                           ("rlexp_overlap:", "overlap=true's wall-clock steps/s", rate),
                           ("rlexp_overlap", "overlap=true fast=true's wall-clock steps/s", rate)):
        if mode in results:
            ratios = ", ".join(f"{fn(x) / fn(p):.2f}" for x, p in zip(results[mode], results["plain"], strict=True))
            per_repeat.append(f"{what} {ratios}")
    table = "\n".join(rows) + ("\n\nPer repeat, x plain SB3: " + "; ".join(per_repeat) + "." if per_repeat else "")
    print(table)
    if args.write:
        import stable_baselines3
        import torch

        cmd = "python bench/throughput.py " + " ".join(a for a in sys.argv[1:] if not a.startswith("--write")
                                                      and a != str(args.write))
        body = (f"SAC+HER FetchPush-v4 with ch05_her_push's hyperparameters (8 envs, batch 256, one gradient step "
                f"per step of the 8 envs), learner on `{args.device}`, one torch thread per process; "
                f"{args.steps:,} timed "
                f"env steps after {LEARNING_STARTS + 1000:,} untimed ones, {args.repeats} interleaved repeats "
                f"(medians). Machine: {machine(args.device)}; load average {load:.1f} at start (a shared machine: "
                f"absolute numbers are noisy, ratios were measured side by side). torch {torch.__version__}, "
                f"SB3 {stable_baselines3.__version__}, {time.strftime('%Y-%m-%d', time.gmtime())}.\n\n"
                f"`{cmd.strip()}`\n\n{table}\n")
        kind = args.device.split(":")[0] + ("-candidates" if args.candidates else "")
        title = "each fast-path piece alone" if args.candidates else "plain SB3 vs rlexp"
        write_section(args.write, f"throughput-{kind}", f"Throughput: {title}, SAC+HER FetchPush-v4 ({args.device})",
                      body)
        print(f"wrote {args.write}")


if __name__ == "__main__":
    main()
