"""Fault benchmark: runs stopped (SIGTERM) or killed (SIGKILL) at random moments, resumed to completion, and
compared bit for bit with the same run never interrupted.

    python bench/faults.py --trials 20 --workers 2 --write docs/results.md

Per algorithm (PPO, SAC, SAC+HER, a tiny pixel SAC+HER run): one uninterrupted reference, then `--trials`
faults at random steps (half SIGTERM, at a random env step or inside a gradient step; half SIGKILL, at a
random env step or in the middle of a checkpoint write), each re-run with the same command until it
finishes. Faults come from RLEXP_FAULT (rlexp/training/faults.py): the run signals itself at the chosen moment.

    python bench/faults.py --cluster --trials 5 --workers 1 --algos PPO SAC SAC+HER --write docs/results.md

`--cluster`: what a cluster adds, each fault a run killed (SIGKILL) at a random step and then, before the same
command is re-run until it finishes: the latest checkpoint unit damaged (a random part truncated to half, one
byte of it flipped, or deleted), so the run must fall back to the unit before it; or the lease lost, its holder
killed on this host (pid gone) or on "another host" (the killed run ran under `unshare --uts` as host nodeB, so
the re-run must wait out its heartbeat, `RLEXP_LEASE_TIMEOUT=4`, then take the run over). Kinds cycle through
the trials; steps, parts and bytes are drawn from `--seed`. Section `faults-cluster`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from docsection import write_section  # noqa: E402

from helpers import tensors  # noqa: E402

COMMON = ["progress=false", "eval.n_episodes=5", "diagnostics.freq=0", "n_envs=2", "device=cpu", "threads=1"]
OFF = ["algo.learning_starts=200", "algo.buffer_size=5000", "algo.batch_size=32",
       "+algo.policy_kwargs.net_arch=[64,64]"]
ALGOS = {
    "PPO": (["+experiment=ch03_ppo_reach_dense", "total_steps=2048", "algo.n_steps=128", "algo.batch_size=64",
             "algo.n_epochs=2", "checkpoint_freq=512"], 2048),
    "SAC": (["+experiment=ch04_sac_reach_dense", "total_steps=1600", "checkpoint_freq=400", *OFF], 1600),
    "SAC+HER": (["+experiment=ch05_her_reach", "total_steps=1600", "checkpoint_freq=400", *OFF], 1600),
    "pixel SAC+HER": (["+experiment=ch09_step2_critic_encoder", "total_steps=400", "checkpoint_freq=100",
                       "algo.learning_starts=100", "algo.buffer_size=1000", "algo.batch_size=8",
                       "env.kwargs.width=32", "env.kwargs.height=32", "env.pixels.image_size=32",
                       "env.pixels.frame_stack=2"], 400),
}


@dataclass
class Trial:
    algo: str
    fault: str
    attempts: int = 0
    completed: bool = False
    equal: bool = False
    json_ok: bool = True
    redone: int = 0  # steps trained again: from the checkpoint resumed to where the fault hit
    waited: int = 0  # SIGTERM: steps from the signal to the checkpoint it saved
    disk_mb: float = 0.0
    said: bool = False  # --cluster: the fallback to an earlier unit / the takeover of the lease was said and done
    notes: list[str] = field(default_factory=list)


def run(args: list[str], run_dir: Path, fault: str | None = None, host: str | None = None,
        extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """run.py with COMMON into run_dir; `fault` as RLEXP_FAULT; `host`: under that hostname (`unshare --uts`)."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    env.pop("RLEXP_FAULT", None)
    if fault:
        env["RLEXP_FAULT"] = fault
    cmd = [sys.executable, "run.py", *args, *COMMON, f"hydra.run.dir={run_dir}"]
    if host:
        cmd = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', host, *cmd]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)


def same_final(a: Path, b: Path) -> bool:
    import torch

    ta, tb = tensors(a / "model.zip"), tensors(b / "model.zip")
    same = ta.keys() == tb.keys() and all(
        torch.equal(ta[k], tb[k]) if torch.is_tensor(ta[k]) else ta[k] == tb[k] for k in ta)
    ea, eb = (json.loads((d / "eval.json").read_text())["per_episode"] for d in (a, b))
    return same and ea == eb


def _after(text: str, marker: str) -> int | None:
    for line in text.splitlines():
        if marker in line:
            return int(line.split(marker, 1)[1].split()[0].strip(":,."))
    return None


def one(algo: str, fault: str, out: Path, reference: Path) -> Trial:
    args, _ = ALGOS[algo]
    trial = Trial(algo, fault)
    run_dir = out / f"{algo.replace(' ', '_').replace('+', '')}_{fault.replace(':', '_').replace('@', '_')}"
    shutil.rmtree(run_dir, ignore_errors=True)
    trigger = int(fault.split("@")[1].split(":")[0])
    proc = run(args, run_dir, fault)
    trial.attempts = 1
    text = proc.stdout + proc.stderr
    if fault.startswith("SIGTERM"):
        # A stop during the last rollout (PPO) lands in the final evaluation: model.zip is saved at the end.
        stopped = _after(text, "interrupted by SIGTERM at step ") or _after(text, "is saved at step ")
        if proc.returncode == 3 and stopped is not None:
            trial.waited = stopped - trigger
        else:
            trial.notes.append(f"stop exit {proc.returncode}")
    elif proc.returncode != -signal.SIGKILL:
        trial.notes.append(f"kill exit {proc.returncode}")
    while trial.attempts < 4:
        proc = run(args, run_dir)
        trial.attempts += 1
        text = proc.stdout + proc.stderr
        if trial.attempts == 2 and "without eval.json: evaluating it" not in text:
            # the first re-run says where it resumed from (no line: it started over)
            trial.redone = max(0, trigger - (_after(text, "from step ") or 0))
        if proc.returncode == 0:
            break
    trial.completed = proc.returncode == 0 and (run_dir / "eval.json").exists()
    for path in run_dir.rglob("*.json"):
        try:
            json.loads(path.read_text())
        except ValueError:
            trial.json_ok = False
            trial.notes.append(f"bad json {path.name}")
    trial.equal = trial.completed and same_final(run_dir, reference)
    trial.disk_mb = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) / 1e6
    if trial.completed and not trial.notes:
        shutil.rmtree(run_dir, ignore_errors=True)  # keep failures for inspection
    return trial


def faults_for(algo: str, n: int, rng: random.Random) -> list[str]:
    _, total = ALGOS[algo]
    out = []
    for i in range(n):
        step = rng.randrange(2, total - 2, 2)
        if i % 2 == 0:
            out.append(f"SIGTERM@{step}:{rng.choice(['step', 'update'])}")
        else:
            out.append(f"SIGKILL@{step}:{rng.choice(['step', 'step', 'checkpoint'])}")
    return out


# --cluster: the kinds of fault, cycled through the trials
CLUSTER_KINDS = ("truncate", "flip", "delete", "killed", "stale")
KIND_NAMES = {"truncate": "damaged latest unit: a part truncated", "flip": "damaged latest unit: a byte flipped",
              "delete": "damaged latest unit: a part deleted", "killed": "lost lease: holder killed, same host",
              "stale": "lost lease: holder killed on another host"}
LEASE_ENV = {"RLEXP_LEASE_HEARTBEAT": "1", "RLEXP_LEASE_TIMEOUT": "4"}  # a stale heartbeat in seconds, not minutes
OTHER_HOST = "nodeB"


def checkpoint_freq(algo: str) -> int:
    return next(int(a.split("=")[1]) for a in ALGOS[algo][0] if a.startswith("checkpoint_freq="))


def cluster_faults_for(algo: str, n: int, rng: random.Random) -> list[str]:
    """`KIND@STEP:SEED`: killed at STEP; a damaged unit needs two committed ones (one to fall back to)."""
    _, total = ALGOS[algo]
    out = []
    for i in range(n):
        kind = CLUSTER_KINDS[i % len(CLUSTER_KINDS)]
        low = 2 * checkpoint_freq(algo) + 2 if kind in ("truncate", "flip", "delete") else 2
        out.append(f"{kind}@{rng.randrange(low, total - 2, 2)}:{rng.randrange(1 << 30)}")
    return out


def damage(run_dir: Path, how: str, rng: random.Random) -> tuple[int, str]:
    """Damage a random part of the latest committed unit as `how` says; (its step, what was done)."""
    from rlexp.rundir import RunDir

    unit = RunDir(run_dir).latest_checkpoint()
    assert unit is not None, f"{run_dir}: no checkpoint to damage"
    parts = [unit.zip, unit.state, *(sorted(p for p in unit.replay.rglob("*") if p.is_file())
                                     if unit.replay.is_dir() else [])]
    part = rng.choice([p for p in parts if p.stat().st_size > 0])
    if how == "truncate":
        os.truncate(part, part.stat().st_size // 2)
    elif how == "flip":
        offset = rng.randrange(part.stat().st_size)
        with open(part, "r+b") as f:
            f.seek(offset)
            byte = f.read(1)[0]
            f.seek(offset)
            f.write(bytes([byte ^ 0xFF]))
    else:
        part.unlink()
    return unit.step, f"{how} {part.relative_to(run_dir)}"


def one_cluster(algo: str, fault: str, out: Path, reference: Path) -> Trial:
    """Kill at the step, damage the latest unit or leave the lease behind, re-run until it finishes, compare."""
    args, _ = ALGOS[algo]
    trial = Trial(algo, fault)
    kind, rest = fault.split("@")
    step, seed = (int(x) for x in rest.split(":"))
    rng = random.Random(seed)
    run_dir = out / f"{algo.replace(' ', '_').replace('+', '')}_{kind}_{step}"
    shutil.rmtree(run_dir, ignore_errors=True)
    proc = run(args, run_dir, f"SIGKILL@{step}:step", host=OTHER_HOST if kind == "stale" else None,
               extra_env=LEASE_ENV)
    trial.attempts = 1
    if proc.returncode != -signal.SIGKILL:
        trial.notes.append(f"kill exit {proc.returncode}")
    damaged = None
    if kind in ("truncate", "flip", "delete"):
        damaged, what = damage(run_dir, kind, rng)
        trial.notes.append(what)
    seen = False
    while trial.attempts < 6:
        proc = run(args, run_dir, extra_env=LEASE_ENV)
        trial.attempts += 1
        text = proc.stdout + proc.stderr
        if damaged is not None and f"damaged checkpoint step_{damaged} " in text:
            seen = (run_dir / "checkpoints" / "damaged" / f"step_{damaged}" / f"step_{damaged}.meta.json").exists()
        if kind in ("killed", "stale") and "took over the lease of" in text:
            host = OTHER_HOST if kind == "stale" else socket.gethostname()
            seen = f"on host {host} since" in text and ("no heartbeat for" if kind == "stale" else "is gone") in text
        if trial.redone == 0 and (resumed := _after(text, "from step ")) is not None:
            trial.redone = max(0, step - resumed)
        if proc.returncode == 0:
            break
        if proc.returncode == 4:  # the other host's heartbeat was still fresh: it counts as alive for a while
            time.sleep(2)
    trial.completed = proc.returncode == 0 and (run_dir / "eval.json").exists()
    trial.said = seen
    if not seen:
        trial.notes.append("no fallback/takeover line")
    trial.equal = trial.completed and same_final(run_dir, reference)
    trial.disk_mb = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) / 1e6
    if trial.completed and trial.equal and seen and proc.returncode == 0:
        shutil.rmtree(run_dir, ignore_errors=True)  # keep failures for inspection
    return trial


def cluster_body(args: argparse.Namespace, trials: list[Trial], minutes: float) -> str:
    rows = []
    for algo in args.algos:
        for kind in CLUSTER_KINDS:
            k = [t for t in trials if t.algo == algo and t.fault.startswith(kind + "@")]
            if not k:
                continue
            redone = [t.redone for t in k]
            rows.append(f"| {algo} | {KIND_NAMES[kind]} | {len(k)} | {sum(t.completed for t in k)} | "
                        f"{sum(t.equal for t in k)} | {sum(t.said for t in k)} | "
                        f"{sum(redone) / len(k):.0f} / {max(redone)} | {max(t.disk_mb for t in k):.1f} |")
    failures = [t for t in trials if not (t.completed and t.equal and t.said)]
    return (
        f"`python bench/faults.py --cluster --trials {args.trials} --workers {args.workers} --seed {args.seed} "
        f"--algos {' '.join(args.algos)}` on this project's 2-core CPU VM; {len(trials)} faults in {minutes:.1f} "
        "min. Each fault is a run killed (SIGKILL) at a random step, then, before the same command is re-run "
        "until the run finishes: *damaged latest unit*: a random part of the newest committed checkpoint unit "
        "(weights zip, state, a replay file) truncated to half, one byte of it flipped, or the part deleted; "
        "the run must resume from the unit before it and move the damaged one into `checkpoints/damaged/`. "
        "*Lost lease*: the killed trainer's lease is left behind; on the same host its pid is gone, and from "
        "another host (the killed run ran under `unshare --uts` as host nodeB) its heartbeat goes stale "
        "(`RLEXP_LEASE_HEARTBEAT=1 RLEXP_LEASE_TIMEOUT=4`), and the re-run must take the run over. *Equal*: "
        "final weights, optimizer states and all eval episodes bitwise equal to the uninterrupted reference. "
        "*Said and done*: the re-run's one warning line names the damaged unit and it is in "
        "`checkpoints/damaged/`, or the takeover line names the old holder's host and why it is gone. "
        "*Redone*: steps trained again (kill step minus the step resumed from), mean / max: a damaged unit "
        "costs one checkpoint interval more than a kill. Tiny runs as above.\n\n"
        "| algo | fault | runs | completed | equal | said and done | redone (steps) | disk (MB, max) |\n"
        "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
        + (f"\nNot equal, not completed or not said: {[(t.algo, t.fault, t.notes) for t in failures]}\n"
           if failures else "")
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=20, help="faults per algorithm (half SIGTERM, half SIGKILL)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--algos", nargs="*", default=list(ALGOS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "faults")
    ap.add_argument("--write", type=Path, default=None, help="Markdown file whose faults section to replace")
    ap.add_argument("--cluster", action="store_true",
                    help="damaged latest checkpoint units and lost leases instead (section faults-cluster)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    refs: dict[str, Path] = {}
    with ThreadPoolExecutor(args.workers) as pool:
        for algo, proc in zip(args.algos, pool.map(
                lambda a: run(ALGOS[a][0], args.out / f"ref_{a.replace(' ', '_').replace('+', '')}"), args.algos),
                strict=True):
            if proc.returncode:
                sys.exit(f"reference {algo} failed:\n{proc.stderr[-3000:]}")
            refs[algo] = args.out / f"ref_{algo.replace(' ', '_').replace('+', '')}"
        make = cluster_faults_for if args.cluster else faults_for
        jobs = [(a, f) for a in args.algos for f in make(a, args.trials, rng)]
        print(f"references done in {(time.time() - t0) / 60:.1f} min; {len(jobs)} faults", file=sys.stderr, flush=True)
        finished = itertools.count(1)  # next() on it is atomic: each of the pool's threads gets its own number

        def trial(job: tuple[str, str]) -> Trial:
            t = (one_cluster if args.cluster else one)(job[0], job[1], args.out, refs[job[0]])
            good = t.completed and t.equal and (t.said if args.cluster else t.json_ok)
            verdict = f"equal {t.notes if args.cluster else ''}" if good else f"FAILED {t.notes}"
            print(f"[{next(finished)}/{len(jobs)}] {t.algo} {t.fault}: {verdict}, {t.attempts} runs "
                  f"({(time.time() - t0) / 60:.1f} min)", file=sys.stderr, flush=True)
            return t

        trials = list(pool.map(trial, jobs))
    if args.cluster:
        body = cluster_body(args, trials, (time.time() - t0) / 60)
        print(body)
        if args.write:
            write_section(args.write, "faults-cluster", "Faults on clusters: damaged checkpoints and lost leases",
                          body)
        return
    rows = []
    for algo in args.algos:
        ts = [t for t in trials if t.algo == algo]
        for kind in ("SIGTERM", "SIGKILL"):
            k = [t for t in ts if t.fault.startswith(kind)]
            if not k:
                continue
            redone = [t.redone for t in k]
            waited = [t.waited for t in k] if kind == "SIGTERM" else None
            rows.append(
                f"| {algo} | {kind} | {len(k)} | {sum(t.completed for t in k)} | {sum(t.equal for t in k)} | "
                f"{sum(t.json_ok for t in k)} | {sum(redone) / len(k):.0f} / {max(redone)} | "
                + (f"{sum(waited) / len(k):.0f} / {max(waited)}" if waited else "-")
                + f" | {max(t.disk_mb for t in k):.1f} |")
    failures = [t for t in trials if not (t.completed and t.equal and t.json_ok)]
    body = (
        f"`python bench/faults.py --trials {args.trials} --workers {args.workers} --seed {args.seed}` on this "
        f"project's 2-core CPU VM; {len(trials)} faults in {(time.time() - t0) / 60:.1f} min. Each fault is a "
        "run signalling itself at a random step (RLEXP_FAULT): SIGTERM at an env step or inside a gradient "
        "step, SIGKILL at an env step or in the middle of a checkpoint write; the same command is then re-run "
        "until the run finishes. *Equal*: final weights, optimizer states and all eval episodes bitwise equal "
        "to the uninterrupted reference. *Redone*: steps trained again (fault step minus the step resumed "
        "from), mean / max. *Waited*: SIGTERM only, steps from the signal to the checkpoint it saved: an "
        "off-policy run finishes the current step, PPO the rollout in progress (a signal in PPO's last rollout "
        "is taken when training ends: model.zip is saved and the re-run only evaluates); a fault `inside a "
        "gradient step` set before learning_starts fires at the first update, which shows as waiting. Tiny "
        "runs: 2 envs, checkpoints every 512 (PPO), 400 (SAC), 100 (pixel) steps.\n\n"
        "| algo | fault | runs | completed | equal | JSON valid | redone (steps) | waited (steps) | disk (MB, max) |\n"
        "|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
        + (f"\nNot equal or not completed: {[(t.algo, t.fault, t.notes) for t in failures]}\n" if failures else "")
    )
    print(body)
    if args.write:
        write_section(args.write, "faults", "Faults: stops and kills at random moments, resumed", body)


if __name__ == "__main__":
    main()
