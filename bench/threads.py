"""torch threads side by side: threads=1, 2 and all cores, on a state and a pixel experiment.

    python bench/threads.py                                      # 2 rounds, SAC+HER Push 4,000 steps, pixel step 2 600
    python bench/threads.py --rounds 3 --write docs/measurements.md   # section threads-bench
    python bench/threads.py --rounds 1 --state-steps 400 --pixel-steps 240  # a smoke run (numbers meaningless)

Each run is a plain `python run.py +experiment=NAME threads=N ...` subprocess on CPU: `ch05_her_push` (8 envs,
the book's hyperparameters except learning_starts=400, so gradient steps run for most of the budget) and
`ch09_step2_critic_encoder` (the pixel recipe, 4 envs, learning_starts=200: its first episodes end there); no
checkpoints, no diagnostics, one eval episode. Steps/s is the run's own `steps_per_sec` (model.meta.json: build
and evaluation excluded); CPU s per 1k steps counts the whole process (all its threads, start-up and evaluation
included: read it side by side, not as the update's cost). Rounds alternate the order of the thread counts, so a
neighbour's load hits each alike; the load column is the 1-minute load average when a run ended. Read it per
experiment against threads=1: steps/s is what one run gets on an otherwise idle machine, steps per CPU-second
what a sweep filling the cores gets. OMP_NUM_THREADS is set to the same N for each run. A pixel step costs
far more than a state step: keep --pixel-steps small, or 0 to leave the pixel experiment out.
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
OUT = ROOT / "bench" / "out" / "threads"
EXPERIMENTS = {
    "state": ("ch05_her_push", ["algo.learning_starts=400"]),
    "pixel": ("ch09_step2_critic_encoder", ["algo.learning_starts=200"]),
}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def train(kind: str, threads: int, steps: int, tag: str) -> dict[str, float]:
    experiment, extra = EXPERIMENTS[kind]
    run_dir = OUT / tag
    shutil.rmtree(run_dir, ignore_errors=True)
    cmd = [sys.executable, "run.py", f"+experiment={experiment}", *extra, f"total_steps={steps}",
           f"threads={threads}", "device=cpu", "checkpoint_freq=0", "checkpoint_final=noreplay", "diagnostics.freq=0",
           "eval.n_episodes=1", "progress=false", "tensorboard=false", f"hydra.run.dir={run_dir}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    meta = json.loads((run_dir / "model.meta.json").read_text())
    assert meta["execution"]["threads"] == threads, meta["execution"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"steps_per_sec": meta["steps_per_sec"], "cpu_per_1k": 1000 * cpu / steps, "wall": wall,
            "load": os.getloadavg()[0]}


def kinds(args: argparse.Namespace) -> list[str]:
    """The experiments measured: a step count of 0 leaves one out (a pixel gradient step takes seconds on a small
    CPU)."""
    return [k for k in EXPERIMENTS if (args.state_steps if k == "state" else args.pixel_steps) > 0]


def table(rows: list[dict], args: argparse.Namespace, counts: list[int]) -> str:
    lines = [
        f"`python bench/threads.py --rounds {args.rounds} --state-steps {args.state_steps} --pixel-steps "
        f"{args.pixel_steps}` (device=cpu; {platform.node()}, {platform.processor() or platform.machine()}, "
        f"{cores()} cores). Medians over rounds; the ratio columns are against threads=1 of the same experiment.",
        "",
        "| experiment | steps | threads | steps/s | CPU s / 1k steps | steps/s vs 1 | steps per CPU-s vs 1 | "
        "load (1 min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in kinds(args):
        steps = args.state_steps if kind == "state" else args.pixel_steps
        med = {}
        for n in counts:
            mine = [r for r in rows if r["kind"] == kind and r["threads"] == n]
            med[n] = {k: statistics.median(r[k] for r in mine) for k in ("steps_per_sec", "cpu_per_1k", "load")}
        for n in counts:
            m, one = med[n], med[counts[0]]
            lines.append(f"| {EXPERIMENTS[kind][0]} | {steps:,} | {n} | {m['steps_per_sec']:.1f} | "
                         f"{m['cpu_per_1k']:.2f} | {m['steps_per_sec'] / one['steps_per_sec']:.2f} | "
                         f"{one['cpu_per_1k'] / m['cpu_per_1k']:.2f} | {m['load']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--state-steps", type=int, default=4000)
    ap.add_argument("--pixel-steps", type=int, default=600)
    ap.add_argument("--write", type=Path, help="Markdown file to put the table in (section 'threads-bench')")
    args = ap.parse_args()
    counts = sorted({1, 2, cores()})
    rows: list[dict] = []
    for rnd in range(args.rounds):
        order = counts if rnd % 2 == 0 else counts[::-1]
        for kind in kinds(args):
            steps = args.state_steps if kind == "state" else args.pixel_steps
            for n in order:
                r = train(kind, n, steps, f"{kind}_t{n}_{rnd}")
                rows.append({"round": rnd, "kind": kind, "threads": n, **r})
                print(f"round {rnd} {kind} threads={n}: {r['steps_per_sec']:8.1f} steps/s, "
                      f"{r['cpu_per_1k']:6.2f} CPU s/1k steps, load {r['load']:.1f}", flush=True)
    text = table(rows, args, counts)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps({"rows": rows}, indent=1))
    if args.write:
        write_section(args.write, "threads-bench", "torch threads: 1, 2 and all cores", text)


if __name__ == "__main__":
    main()
