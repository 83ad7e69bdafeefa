"""Reproduce the book's headline learning runs on this machine and tabulate them into docs/results.md.

    python bench/learning.py run ppo_reach      # one run (see RUNS), artifacts under bench/out/NAME
    python bench/learning.py table [--write docs/results.md]   # Markdown table of the finished runs
    python bench/learning.py table --fast [--write docs/measurements.md]   # the fast-path and overlap runs
    python bench/learning.py solve [--write docs/results.md]   # time to solve Push (push_* runs and records)
    python bench/learning.py plot push_overlap_s0 --out docs/img/push_overlap_curve.png   # success over steps

Each run is a plain `python run.py +experiment=...` subprocess, so the numbers come from the same path
users take. Not part of the test suite: these take minutes to hours on CPU.

Run directories (bench/out/, untracked: GBs of replay-buffer checkpoints) do not outlive the machine. `--write`
copies the small files the tables read into bench/records/NAME (tracked), with the machine the run is on, and
the tables read a run from bench/out/NAME if it is here, else from its record. Rows of runs that have neither
(runs from before the records) are carried over from the doc verbatim, never dropped. A section has one
header, the same whatever was rebuilt: each row names its machine, and NOTES says how each run ran (what
shared the cores, stops and resumes), as a bullet under the table.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

from docsection import carry_over, swap_in, write_section  # beside this script

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
RECORDS = ROOT / "bench" / "records"
# What a record keeps of a run: what table() and solve_row() read, plus success.csv (the TensorBoard curve) and
# machine.txt (machine() where the run directory was).
RECORD_FILES = ("model.meta.json", "eval.json", "evaluations.csv", ".hydra/overrides.yaml")
# name -> (experiment, total_steps, book reference, target, seed, extra overrides)
Run = tuple[str, int, str, str, int, tuple[str, ...]]
# The first five ran with SB3's own classes, before the fast path existed, and have their own section of
# docs/results.md (learning-bench); the rest ran with fast=true, with and without overlap=true
# (learning-fast, in docs/measurements.md). One torch thread per run: two runs share the 2 cores (a 2-thread
# PPO update beside another run ran at 1/8 speed).
ONE = ("threads=1",)
EVAL = ("eval.freq=100000",)  # periodic eval on the 100 book episodes: when a run first reaches 90%
OVERLAP = ("overlap=true", "threads=1")
RUNS: dict[str, Run] = {
    "ppo_reach": ("ch03_ppo_reach_dense", 500_000, "100% at 500k", ">= 90%", 0, ()),
    "sac_reach": ("ch04_sac_reach_dense", 500_000, "100% (after ~300k)", ">= 95%", 0, ()),
    "her_reach": ("ch05_her_reach", 300_000, "100% at 1M (hockey stick after ~100k)", "100%", 0, ()),
    "her_push": ("ch05_her_push", 1_000_000, "40-80% at 1M", "learning curve", 0, ()),
    "her_push_2m": ("ch05_her_push", 2_000_000, "99% ± 1% at 2M (3 seeds)", "learning curve", 0, ()),
    "ppo_reach_fast": ("ch03_ppo_reach_dense", 500_000, "100% at 500k", ">= 90%", 0, ONE),
    "her_reach_s0": ("ch05_her_reach", 300_000, "100% at 1M", "100%", 0, EVAL + ONE),
    "her_reach_s1": ("ch05_her_reach", 300_000, "100% at 1M", "100%", 1, EVAL + ONE),
    "her_reach_overlap_s0": ("ch05_her_reach", 300_000, "100% at 1M", "100%", 0, EVAL + OVERLAP),
    "her_reach_overlap_s1": ("ch05_her_reach", 300_000, "100% at 1M", "100%", 1, EVAL + OVERLAP),
    "push_overlap_s0": ("ch05_her_push", 2_000_000, "99% ± 1% at 2M (3 seeds)", ">= 90%", 0, OVERLAP + EVAL),
    "push_overlap_s1": ("ch05_her_push", 2_000_000, "99% ± 1% at 2M (3 seeds)", ">= 90%", 1, OVERLAP + EVAL),
    # the book's Push recipe on the fast path without overlap, one core
    "push_fast_s0": ("ch05_her_push", 2_000_000, "99% ± 1% at 2M (3 seeds)", ">= 90%", 0, EVAL + ONE),
}
BEFORE_FAST = ("ppo_reach", "sac_reach", "her_reach", "her_push", "her_push_2m")
# name -> the run it continues: a copy of that run's directory resumed to the longer target (resume=),
# so the 2M Push run reuses the 1M run's weights, optimizer state and replay buffer instead of starting over.
CONTINUES = {"her_push_2m": "her_push"}
# name -> how the run ran, as a bullet under its table (RUNS, and push_* runs started by hand for the solve
# table): what a row's numbers need to be read right (stops and resumes, threads, a run alone on the cores). The
# section header is the same for every run, so these facts go here, never into the header.
NOTES = {
    "her_push_2m": "continues her_push from its 1M checkpoint (weights, optimizer, replay buffer) with `resume=`: "
    "its wall time and steps/s are those of steps 1M-2M.",
    "ppo_reach_fast": "2 torch threads for its first 164k steps; stopped and resumed twice, the row adds up the "
    "three segments.",
    "push_overlap_s0": "alone on the 2 cores except for its first ~8 min.",
    "push_overlap_s1": "stopped at 1,597,152 steps and resumed, the row adds up both segments; other jobs shared "
    "the cores for part of each segment.",
    "push_overlap_s1_direct": "push_overlap_s1's command on a later version of the fast path, stopped after its "
    "1.4M evaluation; its periodic evaluations equal push_overlap_s1's digit for digit. Resumed once; alone but "
    "for a few minutes.",
    "push_fast_s0": "no overlap, one core, the other core busy most of the time; an earlier version of the fast "
    "path, equal to the current one within float tolerance.",
    "push_tqc_s0_intel": "one core, the other core busy about half the time; stopped right after its first "
    "evaluation >= 90%. A lone 256x256 GEMM runs at 193 GFLOP/s on one thread of its machine, 84 on the AMD EPYC "
    "one.",
    "push_crossq_s0_threads2": "2 torch threads; other jobs shared the cores for its first ~15 min (22 steps/s), "
    "then it ran alone at 93 steps/s.",
}
# push_* runs the solve table leaves out: a later row of the same recipe and seed ran further (push_tqc_s0:
# push_tqc_s0_intel; push_crossq_s0, stopped before its first evaluation: push_crossq_s0_threads2).
SOLVE_LEFT_OUT = ("push_crossq_s0", "push_tqc_s0")
NOTES_CAPTION = "How each run ran:"


def command(name: str, seed: int | None = None) -> list[str]:
    exp, steps, _, _, run_seed, extra = RUNS[name]
    resume = [f"resume=bench/out/{name}"] if name in CONTINUES else []
    return [
        sys.executable,
        "run.py",
        f"+experiment={exp}",
        f"total_steps={steps}",
        f"seed={run_seed if seed is None else seed}",
        *extra,
        *resume,
        f"hydra.run.dir=bench/out/{name}",
        "progress=false",
    ]


def run(name: str) -> int:
    if name in CONTINUES and not (OUT / name).exists():
        src = OUT / CONTINUES[name]
        if not (src / "checkpoints").is_dir():
            sys.exit(f"{name} continues {CONTINUES[name]}: run that first (no {src}/checkpoints)")
        shutil.copytree(src, OUT / name)
    cmd = command(name)
    print("$", " ".join(cmd[1:]), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def run_path(name: str) -> Path:
    """The run's directory if it is on this machine, else its record."""
    return OUT / name if (OUT / name).is_dir() else RECORDS / name


def known_runs(pattern: str) -> set[str]:
    """Names of the runs this machine can tabulate: run directories and records."""
    return {d.name for root in (OUT, RECORDS) for d in root.glob(pattern) if d.is_dir() and d.name[0] != "."}


def record(name: str) -> None:
    """Make bench/records/NAME a copy of run bench/out/NAME's small files.

    Built beside and swapped in whole: a record never mixes files of two runs that had the same name (a
    file the run no longer has goes with the old record)."""
    from rlexp.rundir import RunDir

    src = OUT / name
    if not src.is_dir():  # nothing to copy from: the record stays as it is (an interrupted swap finished)
        swap_in(RECORDS / name, {})
        return
    files = {rel: src / rel for rel in RECORD_FILES if (src / rel).is_file()}
    ckpt = RunDir(src).latest_checkpoint()
    if ckpt is not None:  # solve_row's meta: a run stopped before its end has no model.meta.json
        files["checkpoint.meta.json"] = ckpt.meta
    texts = {rel: path.read_text() for rel, path in files.items()}
    if "evaluations.csv" in texts:  # appended by a run that may still be going: whole rows only
        texts["evaluations.csv"] = texts["evaluations.csv"][: texts["evaluations.csv"].rfind("\n") + 1]
    if (src / "tb").is_dir():
        texts["success.csv"] = "step,success_rate\n" + "".join(f"{s},{v!r}\n" for s, v in curve(name))
    if texts:  # a run directory does not outlive the machine it ran on: this one
        texts["machine.txt"] = machine() + "\n"
    swap_in(RECORDS / name, texts)  # no texts (a run just started: nothing to record yet): the record stays


def record_all(names: list[str]) -> None:
    """Record each of `names` whose run directory is on this machine."""
    for name in names:
        if (OUT / name).is_dir():
            record(name)


def curve(name: str) -> list[tuple[int, float]]:
    """rollout/success_rate over steps, every segment of a resumed run included (rlexp's TensorBoard reader);
    a record's success.csv where the run directory is not here."""
    from rlexp.analysis.tb import read_scalars

    if not (OUT / name / "tb").is_dir():
        rec = RECORDS / name / "success.csv"
        if not rec.is_file():
            return []
        rows = [line.split(",") for line in rec.read_text().splitlines()[1:] if line]
        return [(int(s), float(v)) for s, v in rows]
    steps, values = read_scalars(OUT / name / "tb", ["rollout/success_rate"])["rollout/success_rate"]
    return [(int(s), float(v)) for s, v in zip(steps, values, strict=True)]


def crossing(pts: list[tuple[int, float]], level: float) -> str:
    step = next((s for s, v in pts if v >= level), None)
    return "never" if step is None else f"{step:,}"


def milestones(pts: list[tuple[int, float]], every: int = 100_000) -> str:
    """rollout/success_rate (mean of the last 100 training episodes) at the first logged step past each mark."""
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


def train_minutes(name: str, meta: dict) -> float:
    """Training wall time: over every resumed segment for a run re-run into its own directory (a stop and a
    resume), the segment alone for a run that continues another (CONTINUES, labelled by `segment`)."""
    if name in CONTINUES:
        return meta["training_time_sec"] / 60
    return meta.get("train_time_total_sec", meta["training_time_sec"]) / 60


def steps_per_sec(name: str, meta: dict) -> float:
    """Over the same time as `train_minutes` (meta's own steps_per_sec covers the last process only)."""
    if name in CONTINUES or "train_time_total_sec" not in meta:
        return meta["steps_per_sec"]
    return meta["total_steps"] / meta["train_time_total_sec"]


def reached(hit: dict) -> str:
    """An evaluations.csv row as env steps and training time to it."""
    return f"{int(hit['step']):,} steps, {hit['train_time_s'] / 60:.1f} min"


def run_machine(run_dir: Path) -> str:
    """The machine a run ran on, as a table's cell: this one for a run directory here, the one its record
    names for a record."""
    if run_dir.parent != RECORDS:
        return machine_label(machine())
    rec = run_dir / "machine.txt"
    return machine_label(rec.read_text().strip()) if rec.is_file() else "not recorded"


def machine_label(desc: str) -> str:
    """`machine()`'s line as a short cell: '2 cores (Intel(R) Xeon(R) Processor), Linux, ...' -> 'Intel Xeon,
    2 cores'."""
    m = re.match(r"(\d+) cores \((.*)\), ", desc)
    if m is None:
        return desc
    cpu = " ".join(re.sub(r"\((R|TM)\)|\b(Processor|CPU)\b|@.*|\d+-Core", " ", m[2]).split())
    return f"{cpu}, {m[1]} cores"


def notes(names: list[str]) -> list[str]:
    """NOTES of `names` as a captioned bullet list (the caption alone when none has a note)."""
    return ["", NOTES_CAPTION, "", *[f"- {n}: {NOTES[n]}" for n in names if n in NOTES]]


# key -> (section, title, header) of `table`'s two sections: the fast-path runs (`--fast`) and the ones before
LEARNING = {
    False: (
        "learning-bench",
        "Learning runs: the book's headline experiments",
        "`python bench/learning.py table --write docs/results.md` builds this table from each run's directory "
        "(bench/out/NAME) or record (bench/records/NAME); `python bench/learning.py run NAME` trains a run. These "
        "runs were made with SB3's own classes, before the fast path existed (`fast=false` runs the same classes), "
        "one torch thread each (OMP_NUM_THREADS=1), each beside another run on the 2 cores: steps/s and wall times "
        "are not throughput figures.",
    ),
    True: (
        "learning-fast",
        "Learning checks on the fast path and with overlap=true",
        "`python bench/learning.py table --fast --write docs/measurements.md` builds this table from each run's "
        "directory (bench/out/NAME) or record (bench/records/NAME); `python bench/learning.py run NAME` trains a "
        "run. These runs are on the fast path, with and without `overlap=true`: add `fast=true` to a command to "
        "repeat it (the commands leave it out; it was the default then). Other jobs shared the 2 cores unless a "
        "run's bullet (*How each run ran*, below) says it ran alone: steps/s and wall times are not throughput "
        "figures; the throughput sections measure speed.",
    ),
}


def table(names: list[str], header: str = "") -> str:
    solve = any(set(EVAL) <= set(RUNS[n][5]) for n in names)
    rows = [
        "| run | command | machine | seed | steps | wall time (train) | steps/s | success | return | final dist (mm) "
        + ("| first periodic eval >= 90% (steps, train time) " if solve else "")
        + "| book |",
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if solve else ""),
    ]
    done = []
    for name in names:
        steps, book = RUNS[name][1], RUNS[name][2]
        meta_p, eval_p = run_path(name) / "model.meta.json", run_path(name) / "eval.json"
        if not (meta_p.exists() and eval_p.exists()):
            continue
        meta, ev = json.loads(meta_p.read_text()), json.loads(eval_p.read_text())
        if meta.get("target_steps", steps) != steps:  # a continued run still holding its source's results
            continue
        done.append(name)
        agg = ev["aggregate"]
        cmd = "python " + " ".join(command(name)[1:-2])
        rows.append(
            f"| {name} | `{cmd}` | {run_machine(run_path(name))} | {meta['seed']} | {meta['total_steps']:,} | "
            f"{train_minutes(name, meta):.1f} min{segment(name, meta)} | "
            f"{steps_per_sec(name, meta):.0f} | {agg['success_rate']:.0%} ({ev['n_episodes']} ep) | "
            f"{agg['return_mean']:.2f} ± {agg['return_std']:.2f} | {agg['final_distance_mean'] * 1000:.1f} | "
            + (f"{solved(name)} | " if solve else "")
            + f"{book} |"
        )
    lines = [
        *([header, ""] if header else []),
        *rows,
        "",
        "Training success (`rollout/success_rate`, last 100 training episodes, stochastic policy) "
        "from each run's TensorBoard events:",
        "",
    ]
    curves = {name: pts for name in done if (pts := curve(name))}
    lines += [f"- {name}: {m}" for name, pts in curves.items() if (m := milestones(pts))]
    lines += ["", "Take-off: the first logged step where training success reached 50% and 90%:", ""]
    lines += [f"- {name}: {crossing(pts, 0.5)} / {crossing(pts, 0.9)}" for name, pts in curves.items()]
    lines += notes(done)
    return "\n".join(lines) + "\n"


def solved(name: str, level: float = 0.9) -> str:
    """Env steps and training wall time until the run's periodic evaluation (evaluations.csv) first
    reached `level` success."""
    from rlexp.analysis.runs import evaluations, first_reaching

    rows = evaluations(run_path(name))
    hit = first_reaching(rows, level)
    if hit is None:
        return f"not reached ({len(rows)} evals)" if rows else "n/a"
    return reached(hit)


# Time to solve FetchPush-v4, from every run push_* (directory or record) whatever its recipe
# (`python run.py +experiment=... eval.freq=N hydra.run.dir=bench/out/push_NAME`); a run stopped early with a
# checkpoint still gives a row (steps reached, not reached).
def solve_row(run_dir: Path, level: float = 0.9) -> tuple[str, list[dict]] | None:
    from rlexp.analysis.runs import evaluations, first_reaching
    from rlexp.rundir import RunDir

    run = RunDir(run_dir)
    if run_dir.parent == RECORDS:
        meta_p: Path | None = run_dir / "checkpoint.meta.json"
    else:
        ckpt = run.latest_checkpoint()
        meta_p = ckpt.meta if ckpt is not None else None
    overrides = run.root / ".hydra" / "overrides.yaml"
    if meta_p is None or not meta_p.exists() or not overrides.exists():
        return None
    meta = json.loads(meta_p.read_text())
    args = [line[2:].strip() for line in overrides.read_text().splitlines() if line.startswith("- ")]
    args = [a for a in args if not a.startswith(("progress=", "hydra."))]
    args.append(f"hydra.run.dir=bench/out/{run.root.name}")
    rows = evaluations(run.root)
    hit = first_reaching(rows, level)
    first = f"**{reached(hit)}**" if hit else f"not reached by {meta['total_steps']:,}"
    last = f"{rows[-1]['success_rate']:.0%} at {int(rows[-1]['step']):,}" if rows else "no eval yet"
    row = (
        f"| {run.root.name} | `python run.py {' '.join(args)}` | {run_machine(run_dir)} | {meta['algo']} | "
        f"{meta['seed']} | "
        f"{meta['total_steps']:,} | {train_minutes(run.root.name, meta):.1f} min | "
        f"{steps_per_sec(run.root.name, meta):.0f} | {first} | "
        f"{last} |"
    )
    return row, rows


SOLVE_HEADER = (
    "`python bench/learning.py solve --write docs/results.md` builds this table from every push_* run directory "
    "(bench/out/) and record (bench/records/), whatever its recipe; a run stopped with a checkpoint before its end "
    "has a row too. The SAC rows are on the fast path: add `fast=true` to their commands to repeat them (it was "
    "the default then). Other jobs shared the cores unless a run's bullet (*How each run ran*, below) says it ran "
    "alone: steps/s and training times are not throughput figures."
)


def solve_table() -> str:
    names = sorted(known_runs("push_*") - set(SOLVE_LEFT_OUT))
    found = {n: r for n in names if (r := solve_row(run_path(n)))}
    lines = [
        SOLVE_HEADER,
        "",
        "| run | command | machine | algo | seed | steps reached | training time | steps/s | first periodic eval "
        ">= 90% (steps, training time) | last periodic eval |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[row for row, _ in found.values()],
        "",
        "Periodic evaluation success (and mean final distance, mm) by run:",
        "",
    ]
    for name, (_, rows) in found.items():
        if rows:
            marks = ", ".join(
                f"{int(r['step']) // 1000}k {r['success_rate']:.0%} ({r['final_distance_mean'] * 1000:.0f})"
                for r in rows
            )
            lines.append(f"- {name}: {marks}")
    lines += notes(list(found))
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


# her_push_2m's training success (seed 0, the book recipe before the fast path; docs/results.md, learning-bench
# section): its run directory was not kept, so a comparison plot takes the recorded 100k marks.
HER_PUSH_2M_MARKS = [
    0.05,
    0.04,
    0.07,
    0.09,
    0.10,
    0.11,
    0.10,
    0.09,
    0.03,
    0.08,
    0.04,
    0.11,
    0.28,
    0.56,
    0.74,
    0.80,
    0.84,
    0.90,
    0.94,
    0.93,
]


def plot(names: list[str], out: Path) -> None:
    """rollout/success_rate of each run (solid) and its periodic evaluation success, if any (dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rlexp.analysis.runs import evaluations

    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name in names:
        pts = curve(name)
        line = ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{name}: training success")[0]
        rows = evaluations(run_path(name))
        if rows:
            ax.plot(
                [r["step"] for r in rows],
                [r["success_rate"] for r in rows],
                "o",
                ms=5,
                mfc="white",
                mec=line.get_color(),
                mew=1.5,
                zorder=3,
                label=f"{name}: periodic eval (100 ep)",
            )
    if any(RUNS[n][0] == "ch05_her_push" for n in names) and not {"her_push", "her_push_2m"} & set(names):
        marks = [(i + 1) * 100_000 for i in range(len(HER_PUSH_2M_MARKS))]
        ax.plot(marks, HER_PUSH_2M_MARKS, "k--", lw=1, label="her_push_2m (before the fast path): training success")
    ax.set_xlabel("environment steps")
    ax.set_ylabel("success rate")
    ax.set_title(", ".join(sorted({RUNS[n][0] for n in names})))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("names", nargs="+", choices=list(RUNS))
    t = sub.add_parser("table")
    t.add_argument("--write", type=Path, default=None, help="Markdown file whose section to replace")
    t.add_argument(
        "--fast",
        action="store_true",
        help="the runs on the fast path and with overlap=true (section learning-fast) instead of the runs made "
        "with SB3's classes before it (learning-bench)",
    )
    v = sub.add_parser("solve", help="time to solve Push from the push_* runs and records (section push-solve)")
    v.add_argument("--write", type=Path, default=None, help="Markdown file whose section to replace")
    p = sub.add_parser("plot")
    p.add_argument("names", nargs="+", choices=list(RUNS))
    p.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.cmd == "run":
        sys.exit(max(run(n) for n in args.names))
    elif args.cmd == "table":
        names = [n for n in RUNS if (n in BEFORE_FAST) != args.fast]
        if args.write:
            record_all(names)
        key, title, header = LEARNING[args.fast]
        publish(args.write, key, title, table(names, header), names)
    elif args.cmd == "solve":
        if args.write:
            record_all(sorted(d.name for d in OUT.glob("push_*")))
        body = solve_table()
        publish(args.write, "push-solve", "Time to solve FetchPush-v4", body, [])  # by name
    else:
        plot(args.names, args.out)


def publish(path: Path | None, key: str, title: str, body: str, order: list[str]) -> None:
    """Print the section; with --write, put it into `path`, keeping the rows of runs not rebuilt here."""
    if path:
        body = carry_over(path, key, body, order)
    print(body)
    if path:
        write_section(path, key, title, body)


if __name__ == "__main__":
    main()
