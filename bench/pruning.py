"""What pruning saves: the same small Optuna search with each pruner, env steps trained and best value found.

    python bench/pruning.py [--pruners none median successive_halving] [--trials 8] [--steps 3000]
                            [--eval-freq 500] [--objective neg_final_distance] [--json out.json]
                            [--write docs/results.md]

Each pruner runs the same search (hparams_search=her_push_optuna's space on HER FetchReach-v4 with a small network
and batch, learning rate narrowed to 1e-4..1e-3; TPE seeded) into a fresh sweep directory through
the sequential launcher, one trial at a time, every trial evaluated every --eval-freq steps on 5 episodes and
reported to its trial. The median pruner starts after 2 finished trials. The objective defaults to
neg_final_distance (minus the mean final distance to the goal, metres): runs this short rarely succeed, and a
success rate of 0 everywhere gives a pruner nothing to tell apart. Counts, not timings: the env steps all trials
trained (a pruned trial counts up to the checkpoint it stopped at), the trials pruned, and the best value found,
read back from each study and its run directories; a busy machine changes none of them. The same sampler seed
proposes the same first trials under every pruner (TPE then models what it saw).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from docsection import write_section  # beside this script

ROOT = Path(__file__).resolve().parent.parent
SEARCH = [
    "hparams_search=her_push_optuna", "+experiment=ch05_her_reach", "n_envs=2", "algo.learning_starts=200",
    "algo.buffer_size=20000", "algo.batch_size=64", "++algo.policy_kwargs.net_arch=[64,64]",
    "algo.learning_rate=tag(log, interval(1e-4, 1e-3))", "checkpoint_freq=1000", "progress=false",
    "eval.n_episodes=10", "eval.freq_episodes=5", "diagnostics.freq=0", "threads=1", "hydra.sweeper.n_jobs=1",
]


def search(pruner: str, trials: int, steps: int, eval_freq: int, objective: str, sweep: Path) -> dict:
    extra = ["hydra.sweeper.pruner.n_startup_trials=2"] if pruner == "median" else []
    if pruner == "successive_halving":
        extra = [f"hydra.sweeper.pruner.min_resource={eval_freq}", "hydra.sweeper.pruner.reduction_factor=2"]
    cmd = [sys.executable, "run.py", "-m", *SEARCH, f"total_steps={steps}", f"eval.freq={eval_freq}",
           f"objective={objective}", f"hydra/sweeper/pruner={pruner}", *extra, f"hydra.sweeper.n_trials={trials}",
           f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"search with pruner {pruner} failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return tally(sweep)


def tally(sweep: Path) -> dict:
    """Steps trained, trials by state and the best value, from the study and the trials' run directories."""
    import optuna

    sys.path.insert(0, str(ROOT))
    from rlexp import hpo

    study = optuna.load_study(study_name="her_push_optuna", storage=hpo.open_storage(f"sqlite:///{sweep}/optuna.db"))
    steps, states = 0, {}
    for t in study.trials:
        run = sweep / hpo.trial_dir(t.number)
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        if (run / "pruned.json").exists():
            steps += int(json.loads((run / "pruned.json").read_text())["stopped_at"])
        elif (run / "model.meta.json").exists():
            steps += int(json.loads((run / "model.meta.json").read_text())["total_steps"])
    done = [t for t in study.trials if t.value is not None and t.state == optuna.trial.TrialState.COMPLETE]
    best = max(done, key=lambda t: t.value) if done else None
    return {"trials": len(study.trials), "states": states, "env_steps": steps,
            "best_value": best.value if best else None, "best_trial": best.number if best else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pruners", nargs="+", default=["none", "median"])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3000, help="total_steps per trial")
    parser.add_argument("--eval-freq", type=int, default=500)
    parser.add_argument("--objective", default="neg_final_distance")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--write", type=Path, default=None, help="Markdown file whose pruning section to replace")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="pruning_") as tmp:
        for pruner in args.pruners:
            row = {"pruner": pruner, **search(pruner, args.trials, args.steps, args.eval_freq, args.objective,
                                                    Path(tmp) / pruner)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    full = args.trials * args.steps
    cmd = "python bench/pruning.py " + " ".join(sys.argv[1:])
    lines = [f"{args.trials} trials of HER FetchReach-v4 ({args.steps:,} steps each, evaluated every "
             f"{args.eval_freq:,} steps on 5 episodes), `hparams_search=her_push_optuna`'s space, TPE seed 0, "
             f"`objective={args.objective}`, "
             f"one trial at a time: `{cmd}`. Counts, so the machine's load does not change them.", "",
             "| pruner | trials complete / pruned | env steps trained | share of unpruned | best value (trial) |",
             "|---|---|---|---|---|"]
    for r in rows:
        best = f"{r['best_value']:.4f} (#{r['best_trial']})" if r["best_value"] is not None else "-"
        lines.append(f"| {r['pruner']} | {r['states'].get('complete', 0)} / {r['states'].get('pruned', 0)} | "
                     f"{r['env_steps']:,} | {r['env_steps'] / full:.0%} | {best} |")
    body = "\n".join(lines) + "\n"
    print(body)
    if args.write:
        write_section(args.write, "hpo-pruning", "Hyperparameter search: what pruning saves", body)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": None, "write": None}, "rows": rows},
                                        indent=1, default=str))


if __name__ == "__main__":
    main()
