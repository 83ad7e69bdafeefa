"""Wall time of an 8-job mini-grid through the `local` submitit launcher with 1 vs 2 parallel workers.

    python bench/sweep_scaling.py [--workers 1 2] [--steps 2048] [--json out.json] [--write docs/measurements.md]

Each setting runs the same grid (PPO dense Reach, algo.gamma x seed = 2 x 4 jobs) into a fresh sweep
directory, so nothing is skipped. Prints a Markdown table. Run it on an otherwise idle machine: the
numbers are only meaningful when the cores are not shared with other work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from docsection import write_section  # beside this script

ROOT = Path(__file__).resolve().parent.parent
GRID = [
    "+experiment=ch03_ppo_reach_dense",
    "algo.gamma=0.9,0.99",
    "seed=0,1,2,3",
    "n_envs=2",
    "algo.n_steps=256",
    "algo.batch_size=128",
    "checkpoint_freq=0",
    "progress=false",
    "eval.n_episodes=5",
    "diagnostics.freq=0",
]


def run_grid(workers: int, steps: int, sweep_dir: Path) -> float:
    cmd = [
        sys.executable,
        "run.py",
        "-m",
        *GRID,
        f"total_steps={steps}",
        "hydra/launcher=local",
        f"hydra.launcher.max_parallel={workers}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"grid with {workers} worker(s) failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    n_done = len(list(sweep_dir.glob("*/eval.json")))
    if n_done != 8:
        sys.exit(f"expected 8 finished runs in {sweep_dir}, found {n_done}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=2048, help="total_steps per job (default 2048)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--write", type=Path, default=None, help="Markdown file whose sweep-scaling section to replace")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="sweep_scaling_") as tmp:
        for workers in args.workers:
            wall = run_grid(workers, args.steps, Path(tmp) / f"w{workers}")
            rows.append({"workers": workers, "wall_s": round(wall, 1)})
            print(f"{workers} worker(s): {wall:.1f} s", file=sys.stderr)
    base = rows[0]["wall_s"]
    cmd = "python bench/sweep_scaling.py " + " ".join(sys.argv[1:])
    lines = [
        f"8-job mini-grid (PPO dense Reach, `algo.gamma=0.9,0.99 seed=0,1,2,3`, {args.steps} steps/job, "
        f"5 eval episodes) through `hydra/launcher=local`, measured with `{cmd}` on "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}).",
        "",
        "| workers | wall time (s) | per job (s) | speed-up vs first row |",
        "|---|---|---|---|",
    ]
    for row in rows:
        row["speedup"] = round(base / row["wall_s"], 2)
        lines.append(f"| {row['workers']} | {row['wall_s']:.1f} | {row['wall_s'] / 8:.1f} | {row['speedup']:.2f}x |")
    body = "\n".join(lines) + "\n"
    print(body)
    if args.write:
        write_section(args.write, "sweep-scaling", "Sweeps: local parallel workers", body)
    if args.json:
        args.json.write_text(
            json.dumps({"steps": args.steps, "cpus": os.cpu_count(), "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
