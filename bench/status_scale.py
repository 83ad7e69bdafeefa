"""`python -m rlexp status` and `report` on sweep directories of thousands of runs: wall time and peak memory.

    python bench/status_scale.py --runs 1000 10000 --write docs/measurements.md

A synthetic sweep made from a real one: first a 2-job sweep of tiny PPO Reach runs through the local launcher
(`bench/out/status_scale/template`, made once; 100 eval episodes, checkpoints, TensorBoard, monitor files, the
launcher's `.rlexp/` and `.submitit/` records), then N jobs cloned from it into `bench/out/status_scale/N`: a
200-config grid (algo.gamma x learning_rate x n_epochs x clip_range) times seeds, in the mix a cluster sweep
has mid-way (70% done, 5% running on other nodes with a fresh lease heartbeat, 10% interrupted at a
checkpoint, 5% failed with an error in their logs, 10% pending). Every file is one the launcher and the runs
write, in their layout; the large ones (weights, checkpoints, events, monitor files, submitit pickles) are
hard links to the template's, and each job's own records (config, meta, eval.json, lease, job record) are
written per job with its values. Each command runs as its own process; its wall time and peak resident memory
(`os.wait4`'s ru_maxrss) are measured, with the load average beside them.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from docsection import write_section  # noqa: E402

from rlexp.sweepdir import JobEvent, PlannedJob, SweepDir  # noqa: E402

TEMPLATE = ["+experiment=ch03_ppo_reach_dense", "n_envs=2", "algo.n_steps=64", "algo.batch_size=64",
            "total_steps=256", "checkpoint_freq=128", "diagnostics.freq=0"]
RUN_ONLY = ["progress=false", "threads=1"]
FACTORS = {"algo.gamma": [0.9, 0.95, 0.98, 0.99], "algo.learning_rate": [0.0001, 0.0003, 0.001, 0.003, 0.01],
           "algo.n_epochs": [5, 10], "algo.clip_range": [0.1, 0.2, 0.3, 0.4, 0.5]}
MIX = (("done", 0.70), ("running", 0.05), ("interrupted", 0.10), ("failed", 0.05), ("pending", 0.10))
Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def make_template(out: Path) -> Path:
    """A real 2-job sweep through the local launcher (seeds 0 and 1), made once."""
    sweep = out / "template"
    if len(list(sweep.glob("*/eval.json"))) == 2:
        return sweep
    shutil.rmtree(sweep, ignore_errors=True)
    cmd = [sys.executable, "run.py", "-m", *TEMPLATE, "seed=0,1", *RUN_ONLY, "hydra/launcher=local",
           "hydra.launcher.max_parallel=1", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if res.returncode != 0 or len(list(sweep.glob("*/eval.json"))) != 2:
        sys.exit(f"template sweep failed:\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return sweep


def _link_tree(src: Path, dst: Path, skip: set[str]) -> None:
    """dst mirrors src with hard links, except the top-level names in `skip`."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        if rel.parts and rel.parts[0] in skip:
            dirnames[:] = []
            continue
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            if not rel.parts and name in skip:
                continue
            os.link(Path(dirpath) / name, dst / rel / name)


def _set(tree: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


class Template:
    """The template sweep's files, read once."""

    def __init__(self, sweep: Path) -> None:
        self.sweep = sweep
        plan = SweepDir(sweep).read_plan()
        assert plan is not None, f"{sweep}: no job list"
        self.job = plan[0][0]
        self.run = sweep / str(self.job.subdir)
        self.base_overrides = [o for o in self.job.overrides if not o.startswith("seed=")]
        od = yaml.load((self.run / ".hydra" / "hydra.yaml").read_text(), Loader=Loader)["hydra"]["job"]["config"]
        self.exclude = set(od["override_dirname"]["exclude_keys"])  # run-only keys: not in folder names
        self.config = yaml.load((self.run / ".hydra" / "config.yaml").read_text(), Loader=Loader)
        self.hydra = yaml.load((self.run / ".hydra" / "hydra.yaml").read_text(), Loader=Loader)
        self.meta = json.loads((self.run / "model.meta.json").read_text())
        self.eval = json.loads((self.run / "eval.json").read_text())
        self.submitit = sweep / ".submitit" / str(self.job.job_id)


def build(template: Template, n: int, dest: Path, seed: int = 0) -> tuple[dict[str, int], list[Path]]:
    """A sweep of `n` jobs at `dest` in the MIX of states; returns the count per state and the leases of the
    running jobs (their heartbeat is refreshed before each measurement)."""
    rng = random.Random(seed)
    shutil.rmtree(dest, ignore_errors=True)
    sweep = SweepDir(dest)
    dest.mkdir(parents=True)
    shutil.copy(template.sweep / "multirun.yaml", dest / "multirun.yaml")
    grid = [dict(zip(FACTORS, values, strict=True)) for values in itertools.product(*FACTORS.values())]
    states = [s for s, share in MIX for _ in range(round(n * share))][:n]
    states += ["done"] * (n - len(states))
    rng.shuffle(states)
    jobs: list[PlannedJob] = []
    beating: list[Path] = []
    other_host = "node" + socket.gethostname()[-3:] + "x"
    for num in range(n):
        factors, seed_ = grid[num % len(grid)], num // len(grid)
        overrides = [*template.base_overrides, *(f"{k}={v}" for k, v in factors.items()), f"seed={seed_}"]
        subdir = ",".join(sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+") not in template.exclude))
        job_id = f"{4_000_000 + num}"
        jobs.append(PlannedJob(num=num, subdir=subdir, overrides=overrides, job_id=job_id))
        state = states[num]
        if state == "pending":
            continue
        run = dest / subdir
        if state == "failed":
            (run / ".hydra").mkdir(parents=True)
        else:
            skip = {"eval.json", "model.meta.json", ".hydra", ".rlexp.lease"}
            if state != "done":
                skip |= {"model.zip", "best_model.zip", "best_model.meta.json"}
            _link_tree(template.run, run, skip)
        (run / ".hydra").mkdir(parents=True, exist_ok=True)
        config = copy.deepcopy(template.config)
        for k, v in {**factors, "seed": seed_}.items():
            _set(config, k, v)
        (run / ".hydra" / "config.yaml").write_text(yaml.dump(config, Dumper=Dumper, sort_keys=False))
        hydra = copy.deepcopy(template.hydra)
        hydra["hydra"]["overrides"]["task"] = [*overrides, *RUN_ONLY]
        hydra["hydra"]["job"]["override_dirname"] = subdir
        hydra["hydra"]["runtime"]["output_dir"] = str(run)
        (run / ".hydra" / "hydra.yaml").write_text(yaml.dump(hydra, Dumper=Dumper, sort_keys=False))
        (run / ".hydra" / "overrides.yaml").write_text(yaml.dump([*overrides, *RUN_ONLY], Dumper=Dumper))
        config_hash = hashlib.sha256(subdir.rsplit(",seed=", 1)[0].encode()).hexdigest()[:16]
        logs = dest / ".submitit" / job_id
        logs.mkdir(parents=True)
        for part in template.submitit.iterdir():
            os.link(part, logs / part.name.replace(str(template.job.job_id), job_id))
        event = JobEvent(num=num, event="started", subdir=subdir, job_id=job_id)
        if state == "done":
            meta = copy.deepcopy(template.meta)
            for k, v in {**factors, "seed": seed_}.items():
                _set(meta["config"], k, v)
            meta["config_hash"], meta["seed"] = config_hash, seed_
            (run / "model.meta.json").write_text(json.dumps(meta, indent=1))
            ev = copy.deepcopy(template.eval)
            ev["config_hash"] = config_hash
            ev["aggregate"]["success_rate"] = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0])
            ev["aggregate"]["return_mean"] = rng.uniform(-50, -1)
            (run / "eval.json").write_text(json.dumps(ev, indent=1))
            event.event, event.success_rate = "done", ev["aggregate"]["success_rate"]
            event.return_mean, event.wall_s = ev["aggregate"]["return_mean"], rng.uniform(600, 7200)
        lease = run / ".rlexp.lease"
        if state in ("done", "interrupted", "running"):
            lease.mkdir()
            record = {"host": socket.gethostname(), "pid": 1_000_000 + num, "pid_start": "1", "boot_id": None,
                      "since": "2026-12-07T01:00:00+00:00", "heartbeat_s": 30.0, "token": f"{num:032x}",
                      "released": state != "running"}
            if state == "running":
                record["host"] = other_host  # another node: alive while its heartbeat (mtime) is fresh
                event.host, event.pid = other_host, record["pid"]
            (lease / "1.json").write_text(json.dumps(record, indent=1) + "\n")
            if state == "running":
                beating.append(lease / "1.json")
        if state == "interrupted":
            event.event = "interrupted"
        if state == "failed":
            event.event, event.error = "failed", "exit (exit code 1)"
            err = next((p for p in logs.iterdir() if p.name.endswith("_log.err")), None)
            if err is not None:
                err.unlink()
                err.write_text("Traceback (most recent call last):\n  File \"run.py\", line 1\n"
                               "RuntimeError: CUDA error: out of memory\n")
        sweep.record(event)
    sweep.write_plan(jobs, launcher="RlexpLocalLauncher", max_parallel=2)
    return {s: states.count(s) for s, _ in MIX}, beating


def run_measured(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, peak RSS MB, first line of stdout) of one command in its own process, reaped with os.wait4 so
    the memory is that process's alone (stderr discarded)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(os.devnull, "w") as null:
        t0 = time.perf_counter()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(out_r)
            os.dup2(out_w, 1)
            os.dup2(null.fileno(), 2)
            os.chdir(ROOT)
            os.execvpe(cmd[0], cmd, env)
        os.close(out_w)
        chunks = []
        while chunk := os.read(out_r, 1 << 16):
            chunks.append(chunk)
        os.close(out_r)
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed with exit code {os.waitstatus_to_exitcode(status)}")
    text = b"".join(chunks).decode(errors="replace").strip()
    return wall, usage.ru_maxrss / 1024, text.splitlines()[0] if text else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "status_scale")
    ap.add_argument("--reps", type=int, default=2000, help="report's bootstrap resamples (its default)")
    ap.add_argument("--write", type=Path, default=None, help="Markdown file whose status-scale section to replace")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    template = Template(make_template(args.out))
    rows = []
    for n in args.runs:
        dest = args.out / str(n)
        t0 = time.perf_counter()
        counts, beating = build(template, n, dest)
        made = time.perf_counter() - t0
        print(f"{n} jobs in {dest} ({made:.0f} s): {counts}", file=sys.stderr, flush=True)
        commands = {
            "status": [sys.executable, "-m", "rlexp", "status", str(dest)],
            "status --json": [sys.executable, "-m", "rlexp", "status", "--json", str(dest)],
            "report": [sys.executable, "-m", "rlexp", "report", str(dest), "--reps", str(args.reps),
                       "--out", str(args.out / f"report_{n}")],
        }
        for name, cmd in commands.items():
            for lease in beating:  # the other nodes' trainers beat (a lease older than 300 s is a dead holder's)
                os.utime(lease)
            load = os.getloadavg()[0]
            wall, rss, first = run_measured(cmd)
            print(f"  {name}: {wall:.1f} s, {rss:.0f} MB, load {load:.1f}: {first[:120]}", file=sys.stderr,
                  flush=True)
            rows.append(f"| {n:,} | `{name}` | {wall:.1f} | {rss:.0f} | {load:.1f} |")
    body = (
        f"`python bench/status_scale.py --runs {' '.join(map(str, args.runs))}` on this project's 2-core CPU VM "
        f"({os.cpu_count()} CPUs, local disk, warm page cache). A synthetic sweep directory cloned from a real "
        "2-job sweep (tiny PPO Reach runs, 100 eval episodes, through the local launcher): a 200-config grid "
        "times seeds, 70% done, 5% running on another node (fresh lease heartbeat), 10% interrupted at a "
        "checkpoint, 5% failed, 10% pending; every file in the layout the launcher and the runs write. Each "
        "command runs in its own process: wall time and peak resident memory (ru_maxrss). *Load*: the 1-minute "
        "load average when it started (other work shared the cores: read orders of magnitude).\n\n"
        "| jobs | command | wall (s) | peak memory (MB) | load |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    print(body)
    if args.write:
        write_section(args.write, "status-scale", "Status and report on large sweeps", body)


if __name__ == "__main__":
    main()
