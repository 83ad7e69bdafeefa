"""Do library versions explain SAC+HER Push's late take-off? The book's ch5 Push recipe in plain SB3 under other
version sets.

    python bench/book_versions.py setup era                    # venv bench/out/venvs/era with the set's pins
    python bench/book_versions.py run era --seed 0 --steps 1500000   # -> bench/out/versions_era_s0
    python bench/book_versions.py table [--write docs/measurements.md]    # every versions_* run, dir or record

The book's repository asks only for minimums (stable-baselines3>=2.4.0, gymnasium>=1.0.0,
gymnasium-robotics>=1.3.0, mujoco>=3.0.0) on top of the NVIDIA PyTorch 25.12 image (book ch1), so the
versions its runs used are not recorded. Its env ids narrow them: FetchPush-v4 is registered from
gymnasium-robotics 1.4.0 on (1.3.1 registers v1 and v3, 1.2.4 v1 and v2), 1.4.0 needs gymnasium >= 1.2.0, and
SB3 accepts gymnasium 1.2 from 2.7.0 on (2.4.0 asks for < 1.1, 2.6.0 for < 1.2). SETS spans what is left:
- `min`: the oldest set that runs FetchPush-v4: SB3 2.7.0, gymnasium 1.2.0, gymnasium-robotics 1.4.0, and an
  older MuJoCo (3.2.7; gymnasium-robotics 1.4 asks only for >= 2.2);
- `era`: what a fresh install got while the book's image was current (SB3 2.7.1 of 2025-12-05, the last SB3
  before the book's repository snapshot of 2026-02-28; SB3 2.7 caps gymnasium below 1.3);
- `ours`: rlexp's own pins (pyproject.toml), in the project's .venv (made by setup.sh): the same script's control.

Each run is bench/plain_sb3.py's model (no rlexp code) trained in the set's venv, one torch thread, with
SB3's CSV logger (training success: `rollout/success_rate`, the book's milestone curve) and the book's
evaluation every `--eval-every` steps: 100 deterministic episodes, episode i reset with seed i, success
= the last step's `is_success` (book ch5). Nothing is checkpointed: a stopped run keeps the rows it wrote.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

from docsection import swap_in, write_section  # beside this script (stdlib only: imports in any set's venv)
from learning import machine

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
RECORDS = ROOT / "bench" / "records"
TORCH = "torch==2.13.0"  # the CPU wheel here; torch only changes float rounding between the sets
SETS: dict[str, tuple[str, ...]] = {
    "min": ("stable-baselines3==2.7.0", "gymnasium==1.2.0", "gymnasium-robotics==1.4.0", "mujoco==3.2.7"),
    "era": ("stable-baselines3==2.7.1", "gymnasium==1.2.2", "gymnasium-robotics==1.4.1", "mujoco==3.4.0"),
    "ours": (),  # the project's .venv as setup.sh makes it
}
PACKAGES = ("stable-baselines3", "gymnasium", "gymnasium-robotics", "mujoco", "torch", "numpy")


def venv_python(name: str) -> Path:
    return ROOT / ".venv" / "bin" / "python" if name == "ours" else OUT / "venvs" / name / "bin" / "python"


def write_atomic(path: Path, text: str) -> None:
    """A reader (a `table` while the run goes on) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def whole_lines(path: Path) -> list[str]:
    """A CSV that a running process appends to, without a last line still being written."""
    text = path.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def setup(name: str) -> int:
    if name == "ours":
        return subprocess.call(["bash", str(ROOT / "setup.sh")])
    py = venv_python(name)
    if not py.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(py.parent.parent)])
    return subprocess.call([str(py), "-m", "pip", "install", "-q", TORCH, *SETS[name]])


# ------------------------------------------------------------------------------------- in the set's venv
def evaluate(model, n: int = 100) -> dict[str, float]:  # noqa: ANN001 (SB3 is not importable outside the venv)
    """The book's protocol: n deterministic episodes, episode i reset with seed i."""
    import gymnasium as gym
    import numpy as np

    env = gym.make("FetchPush-v4")
    succ, rets, dists = [], [], []
    for i in range(n):
        obs, _ = env.reset(seed=i)
        ret, done, info = 0.0, False, {}
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, term, trunc, info = env.step(action)
            ret, done = ret + float(reward), term or trunc
        succ.append(float(info["is_success"]))
        rets.append(ret)
        dists.append(float(np.linalg.norm(obs["achieved_goal"] - obs["desired_goal"])))
    env.close()
    return {"success_rate": float(np.mean(succ)), "return_mean": float(np.mean(rets)),
            "final_distance_mean": float(np.mean(dists))}


def train(name: str, seed: int, steps: int, eval_every: int, out: Path) -> None:
    """Train in this (the set's) interpreter; meta.json says how far the run got, evaluations.csv what it scored."""
    from importlib.metadata import version

    import torch
    from plain_sb3 import make_model  # beside this script: the same model as the throughput baseline
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import configure

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=False)
    meta = {"set": name, "seed": seed, "target_steps": steps, "machine": machine(),
            "versions": {p: version(p) for p in PACKAGES},
            "command": f"python bench/book_versions.py run {name} --seed {seed} --steps {steps} "
                       f"--eval-every {eval_every}", "steps_reached": 0, "train_time_s": 0.0}
    (out / "evaluations.csv").write_text("step,train_time_s,success_rate,return_mean,final_distance_mean,eval_s\n")
    write_atomic(out / "meta.json", json.dumps(meta, indent=1) + "\n")

    class Periodic(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.t0, self.eval_s, self.next = time.perf_counter(), 0.0, eval_every

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next:
                self.next += eval_every
                self.score()
            return True

        def _on_training_end(self) -> None:  # the last stretch, when --steps is not a multiple of --eval-every
            if meta["steps_reached"] < self.num_timesteps:
                self.score()

        def score(self) -> None:
            t = time.perf_counter()
            res = evaluate(self.model)
            self.eval_s += (dt := time.perf_counter() - t)
            train_s = t - self.t0 - (self.eval_s - dt)
            with (out / "evaluations.csv").open("a") as f:
                f.write(f"{self.num_timesteps},{train_s:.1f},{res['success_rate']},{res['return_mean']:.3f},"
                        f"{res['final_distance_mean']:.6f},{dt:.1f}\n")
            meta.update(steps_reached=self.num_timesteps, train_time_s=round(train_s, 1))
            write_atomic(out / "meta.json", json.dumps(meta, indent=1) + "\n")
            print(f"{self.num_timesteps:,} steps, {train_s / 60:.1f} min: eval success {res['success_rate']:.0%}",
                  flush=True)

    model = make_model("cpu", seed)
    model.set_logger(configure(str(out), ["csv"]))
    model.learn(steps, callback=Periodic(), log_interval=40)  # a CSV row every 40 episodes: 2,000 env steps


# ------------------------------------------------------------------------------------------ tabulating
def run_dir(name: str) -> Path:
    return OUT / name if (OUT / name).is_dir() else RECORDS / name


def success_curve(d: Path) -> list[tuple[int, float]]:
    """Training success over steps: SB3's progress.csv in a run, success.csv in a record."""
    if (d / "progress.csv").is_file():  # SB3 rewrites it whole when a new key appears: whole lines only
        return [(int(r["time/total_timesteps"]), float(r["rollout/success_rate"]))
                for r in csv.DictReader(whole_lines(d / "progress.csv")) if r.get("rollout/success_rate")]
    if (d / "success.csv").is_file():
        return [(int(r["step"]), float(r["success_rate"])) for r in csv.DictReader(whole_lines(d / "success.csv"))]
    return []


def record(name: str) -> None:
    """bench/records/NAME: the small files the table reads (bench/out does not outlive the machine), swapped in
    whole (docsection.swap_in); `run` refuses a name that has a record, so only its own run replaces it."""
    src = OUT / name
    texts = {} if not (src / "meta.json").is_file() else {
        "meta.json": (src / "meta.json").read_text(),
        "evaluations.csv": "\n".join(whole_lines(src / "evaluations.csv")) + "\n",
        "success.csv": "step,success_rate\n" + "".join(f"{s},{v!r}\n" for s, v in success_curve(src)),
    }
    swap_in(RECORDS / name, texts)


def table() -> str:
    names = sorted({d.name for root in (OUT, RECORDS) for d in root.glob("versions_*") if d.is_dir()})
    rows, curves, machines = [], [], set()
    for name in names:
        d = run_dir(name)
        if not (d / "meta.json").is_file():
            continue
        meta = json.loads((d / "meta.json").read_text())
        machines.add(meta["machine"])
        evals = list(csv.DictReader(whole_lines(d / "evaluations.csv")))
        v = meta["versions"]
        pts = success_curve(d)
        half = next((s for s, x in pts if x >= 0.5), None)
        hit = next((r for r in evals if float(r["success_rate"]) >= 0.9), None)
        last = pts[-1][0] if pts else 0
        rows.append(
            f"| {name} | SB3 {v['stable-baselines3']}, gymnasium {v['gymnasium']}, gymnasium-robotics "
            f"{v['gymnasium-robotics']}, mujoco {v['mujoco']}, torch {v['torch']} | {meta['seed']} | "
            f"{meta['steps_reached']:,} | {meta['train_time_s'] / 60:.1f} min | "
            + (f"not reached by {last:,}" if half is None else f"{half:,}") + " | "
            + (f"not reached by {meta['steps_reached']:,}" if hit is None else f"{int(hit['step']):,}") + " |")
        marks = ", ".join(f"{int(r['step']) // 1000}k {float(r['success_rate']):.0%} "
                          f"({float(r['final_distance_mean']) * 1000:.0f})" for r in evals)
        train_marks = ", ".join(f"{m // 1000}k {next(x for s, x in pts if s >= m):.0%}"
                                for m in range(100_000, last + 1, 100_000))
        curves += [f"- {name}, periodic evaluation: {marks}", f"- {name}, training success: {train_marks}"]
    return "\n".join([
        "Machine: " + "; ".join(sorted(machines)) + ".",
        "",
        "| run | versions | seed | steps reached (last evaluation) | training time | training success first >= 50% "
        "| periodic eval first >= 90% |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Success by run at each 100k mark (periodic evaluation: success and mean final distance, mm; training "
        "success: the last 100 training episodes):",
        "",
        *curves,
    ]) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup").add_argument("set", choices=list(SETS))
    r = sub.add_parser("run")
    r.add_argument("set", choices=list(SETS))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--steps", type=int, default=1_500_000)
    r.add_argument("--eval-every", type=int, default=100_000)
    r.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # set by `run` for the venv's process
    t = sub.add_parser("table")
    t.add_argument("--write", type=Path, help="replace the section in this Markdown file")
    args = ap.parse_args()
    if args.cmd == "setup":
        return setup(args.set)
    if args.cmd == "run":
        out = OUT / f"versions_{args.set}_s{args.seed}"
        if args.child:
            train(args.set, args.seed, args.steps, args.eval_every, out)
            return 0
        for taken in (out, RECORDS / out.name):
            if taken.exists():
                sys.exit(f"{taken} exists: move it away first (a run is not resumed, and its record is not replaced)")
        if not venv_python(args.set).exists():
            sys.exit(f"no venv for {args.set!r}: run `python bench/book_versions.py setup {args.set}` first")
        return subprocess.call([str(venv_python(args.set)), __file__, "run", args.set, "--seed", str(args.seed),
                                "--steps", str(args.steps), "--eval-every", str(args.eval_every), "--child"])
    if args.write:
        for name in sorted(d.name for d in OUT.glob("versions_*") if d.is_dir()):
            record(name)
    text = table()
    if args.write:
        cmd = "python bench/book_versions.py table --write docs/measurements.md"
        write_section(args.write, "push-versions", "Push's take-off under other library versions",
                      f"`{cmd}`\n\n" + text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
