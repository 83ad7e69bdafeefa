"""Reproduce the book's headline learning runs on this machine and tabulate them into docs/results.md.

    python bench/learning.py run ppo_reach      # one run (see RUNS), artifacts under bench/out/NAME
    python bench/learning.py table [--write docs/results.md]   # Markdown table from whatever runs finished
    python bench/learning.py plot her_push docs/img/her_push_curve.png   # rollout/success_rate over steps

Each run is a plain `python run.py +experiment=...` subprocess, so the numbers come from the same path
users take. Not part of the test suite: these take minutes to hours on CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

from docsection import write_section  # beside this script

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
# name -> (experiment, total_steps, book reference, target)
RUNS: dict[str, tuple[str, int, str, str]] = {
    "ppo_reach": ("ch03_ppo_reach_dense", 500_000, "100% at 500k", ">= 90%"),
    "sac_reach": ("ch04_sac_reach_dense", 500_000, "100% (after ~300k)", ">= 95%"),
    "her_reach": ("ch05_her_reach", 300_000, "100% at 1M (hockey stick after ~100k)", "100%"),
    "her_push": ("ch05_her_push", 1_000_000, "40-80% at 1M", "learning curve"),
    "her_push_2m": ("ch05_her_push", 2_000_000, "99% ± 1% at 2M (3 seeds)", "learning curve"),
}
# name -> the run it continues: a copy of that run's directory resumed to the longer target (resume=),
# so the 2M Push run reuses the 1M run's weights, optimizer state and replay buffer instead of starting over.
CONTINUES = {"her_push_2m": "her_push"}


def command(name: str, seed: int = 0) -> list[str]:
    exp, steps, _, _ = RUNS[name]
    resume = [f"resume=bench/out/{name}"] if name in CONTINUES else []
    return [sys.executable, "run.py", f"+experiment={exp}", f"total_steps={steps}", f"seed={seed}", *resume,
            f"hydra.run.dir=bench/out/{name}", "progress=false"]


def run(name: str) -> int:
    if name in CONTINUES and not (OUT / name).exists():
        src = OUT / CONTINUES[name]
        if not (src / "checkpoints").is_dir():
            sys.exit(f"{name} continues {CONTINUES[name]}: run that first (no {src}/checkpoints)")
        shutil.copytree(src, OUT / name)
    cmd = command(name)
    print("$", " ".join(cmd[1:]), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def curve(name: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: list[tuple[int, float]] = []
    for events in sorted((OUT / name / "tb").glob("*/events.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if "rollout/success_rate" in acc.Tags()["scalars"]:
            points += [(e.step, e.value) for e in acc.Scalars("rollout/success_rate")]
    return sorted(points)


def milestones(name: str, every: int = 100_000) -> str:
    """rollout/success_rate (mean of the last 100 training episodes) at the first logged step past each mark."""
    pts = curve(name)
    if not pts:
        return ""
    marks, out = list(range(every, pts[-1][0] + 1, every)), []
    for mark in marks:
        step, value = next(p for p in pts if p[0] >= mark)
        out.append(f"{step // 1000}k {value:.0%}")
    return ", ".join(out)


def segment(name: str, meta: dict) -> str:
    """A continued run's meta times only its own segment: say which steps it covers."""
    if name not in CONTINUES or not meta.get("resumed_from"):
        return ""
    start = int(Path(meta["resumed_from"]).stem.split("_")[-1])
    return f" (steps {start:,}-{meta['total_steps']:,}, resumed)"


def table(note: str = "") -> str:
    rows = ["| run | command | seed | steps | wall time (train) | steps/s | success | return | final dist (mm) "
            "| book |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    done = []
    for name, (_exp, steps, book, _target) in RUNS.items():
        meta_p, eval_p = OUT / name / "model.meta.json", OUT / name / "eval.json"
        if not (meta_p.exists() and eval_p.exists()):
            continue
        meta, ev = json.loads(meta_p.read_text()), json.loads(eval_p.read_text())
        if meta.get("target_steps", steps) != steps:  # a continued run still holding its source's results
            continue
        done.append(name)
        agg = ev["aggregate"]
        cmd = "python " + " ".join(command(name, meta["seed"])[1:-2])
        rows.append(
            f"| {name} | `{cmd}` | {meta['seed']} | {meta['total_steps']:,} | "
            f"{meta['training_time_sec'] / 60:.1f} min{segment(name, meta)} | "
            f"{meta['steps_per_sec']:.0f} | {agg['success_rate']:.0%} ({ev['n_episodes']} ep) | "
            f"{agg['return_mean']:.2f} ± {agg['return_std']:.2f} | {agg['final_distance_mean'] * 1000:.1f} | {book} |")
    lines = ["Machine: " + machine() + ".", *([note] if note else []), "", *rows, "",
             "Training success (`rollout/success_rate`, last 100 training episodes, stochastic policy) "
             "from each run's TensorBoard events:", ""]
    lines += [f"- {name}: {m}" for name in done if (m := milestones(name))]
    return "\n".join(lines) + "\n"


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()}, Python {platform.python_version()}, CPU only"


def plot(name: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = curve(name)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([p[0] for p in pts], [p[1] for p in pts])
    ax.set_xlabel("environment steps")
    ax.set_ylabel("rollout/success_rate")
    ax.set_title(f"{RUNS[name][0]} (seed 0)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("names", nargs="+", choices=list(RUNS))
    t = sub.add_parser("table")
    t.add_argument("--write", type=Path, default=None, help="Markdown file whose learning-bench section to replace")
    t.add_argument("--note", default="", help="a line under the machine line (e.g. what else shared the cores)")
    p = sub.add_parser("plot")
    p.add_argument("name", choices=list(RUNS))
    p.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.cmd == "run":
        sys.exit(max(run(n) for n in args.names))
    elif args.cmd == "table":
        body = table(args.note)
        print(body)
        if args.write:
            write_section(args.write, "learning-bench", "Learning runs: the book's headline experiments", body)
    else:
        plot(args.name, args.out)


if __name__ == "__main__":
    main()
