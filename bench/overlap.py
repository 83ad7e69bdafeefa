"""overlap=false vs overlap=true side by side: wall-clock env steps/s and CPU seconds of one training run.

    python bench/overlap.py                       # 3 interleaved pairs, ch05_her_push, 12,000 steps
    python bench/overlap.py --pairs 5 --steps 20000 --write docs/results.md   # section overlap-bench

Each run is a plain `python run.py +experiment=ch05_her_push ...` subprocess (8 envs, one torch thread,
the book's hyperparameters except learning_starts=400 so that gradient steps run for most of the budget;
no checkpoints, no diagnostics, 1 eval episode). Steps/s is the run's own `steps_per_sec` (model.meta.json:
build and evaluation excluded); CPU s per 1k steps counts the trainer and its env worker (the whole process
tree, evaluation included). Pairs alternate which mode goes first, so a neighbour's load hits both alike.
The env ceiling: the same 8 envs stepped with random actions in one process, no learning. The load column
is the machine's 1-minute load average when the run ended: overlap needs a second idle core to gain.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from docsection import write_section  # beside this script

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "overlap"


def train(overlap: bool, steps: int, experiment: str, device: str, tag: str) -> dict[str, float]:
    run_dir = OUT / tag
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "run.py", f"+experiment={experiment}", f"total_steps={steps}", "algo.learning_starts=400",
           "threads=1", f"device={device}", "checkpoint_freq=0", "diagnostics.freq=0", "eval.n_episodes=1",
           "progress=false", "tensorboard=false", f"overlap={str(overlap).lower()}", f"hydra.run.dir={run_dir}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    meta = json.loads((run_dir / "model.meta.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"steps_per_sec": meta["steps_per_sec"], "cpu_per_1k": 1000 * cpu / steps, "wall": wall,
            "load": os.getloadavg()[0]}


def ceiling(env_id: str, n_envs: int = 8, steps: int = 4000) -> float:
    """Env steps/s of the bare vectorised env (random actions, one process): what training could reach."""
    code = f"""
import time, numpy as np
from rlexp.components.envs import make_vec_env
env = make_vec_env({env_id!r}, n_envs={n_envs}, seed=0); env.reset()
acts = np.stack([env.action_space.sample() for _ in range({n_envs})])
t = time.perf_counter()
for _ in range({steps} // {n_envs}): env.step(acts)
print({steps} / (time.perf_counter() - t))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=12_000)
    ap.add_argument("--experiment", default="ch05_her_push")
    ap.add_argument("--env-id", default="FetchPush-v4", help="for the env ceiling")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--write", type=Path, help="Markdown file to put the table in (section 'overlap-bench')")
    args = ap.parse_args()
    rows: list[dict[str, float | int | bool]] = []
    ceilings = [ceiling(args.env_id)]
    for pair in range(args.pairs):
        order = (False, True) if pair % 2 == 0 else (True, False)
        for overlap in order:
            r = train(overlap, args.steps, args.experiment, args.device, f"{'overlap' if overlap else 'plain'}_{pair}")
            rows.append({"pair": pair, "overlap": overlap, **r})
            print(f"pair {pair} overlap={overlap!s:5}: {r['steps_per_sec']:7.1f} steps/s, "
                  f"{r['cpu_per_1k']:5.2f} CPU s/1k steps, load {r['load']:.1f}", flush=True)
    ceilings.append(ceiling(args.env_id))
    env_ceiling = statistics.median(ceilings)
    ratios = []
    for pair in range(args.pairs):
        plain, over = (next(r for r in rows if r["pair"] == pair and r["overlap"] is o) for o in (False, True))
        ratios.append(over["steps_per_sec"] / plain["steps_per_sec"])
    lines = [
        f"`python bench/overlap.py --pairs {args.pairs} --steps {args.steps}` ({args.experiment}, 8 envs, "
        f"learning_starts=400, one torch thread, device={args.device}; {platform.node()}, {os.cpu_count()} cores, "
        f"shared with other users' jobs). Env ceiling (8 envs, random actions, one process): "
        f"{env_ceiling:.0f} steps/s.",
        "",
        "| pair | overlap | steps/s | CPU s / 1k steps | fraction of env ceiling | load (1 min) at its end |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['pair']} | {str(r['overlap']).lower()} | {r['steps_per_sec']:.1f} | "
                     f"{r['cpu_per_1k']:.2f} | {r['steps_per_sec'] / env_ceiling:.2f} | {r['load']:.1f} |")
    lines += ["", f"overlap/plain wall-clock steps/s per pair: {', '.join(f'{x:.2f}' for x in ratios)} "
              f"(median {statistics.median(ratios):.2f})"]
    table = "\n".join(lines)
    print(table)
    (OUT / "results.json").write_text(json.dumps({"rows": rows, "ratios": ratios, "env_ceiling": env_ceiling},
                                                 indent=1))
    if args.write:
        write_section(args.write, "overlap-bench", "overlap=true vs overlap=false (wall-clock)", table)


if __name__ == "__main__":
    main()
