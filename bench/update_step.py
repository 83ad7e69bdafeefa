"""Where one SAC gradient step's time goes on this CPU: SB3's `train()` and rlexp's FastSAC, with and without its
direct network calls.

    python bench/update_step.py --rounds 8 --steps 50 --write docs/measurements.md

One process, one torch thread, the book's ch05_her_push networks and update (256x256 actor and twin critics
on FetchPush-v4's dict observations, batch 256, gamma 0.95, fixed entropy coefficient 0.05). Every model
trains on the same fixed random batch (no replay sampling, no env), rounds interleaved across the models so
all see the same machine load;
reported: median process-CPU milliseconds per gradient step. A torch.profiler pass over FastSAC splits its
step into matrix multiplies (aten::mm/addmm: forward and backward GEMMs) and everything else (elementwise
ops, autograd bookkeeping, optimizer, Python). A 256x256x256 float32 GEMM timed alone gives this core's
matrix rate. Every model is checked against SB3 (same weights after three steps, float tolerance) before it
is timed.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from docsection import write_section  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else ():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def fixed_batch(space: Any, n: int) -> Any:
    import torch as th
    from stable_baselines3.common.type_aliases import DictReplayBufferSamples

    g = th.Generator().manual_seed(0)

    def obs() -> dict[str, th.Tensor]:
        return {k: th.randn((n, *s.shape), generator=g) for k, s in space.spaces.items()}

    return DictReplayBufferSamples(observations=obs(), actions=th.rand((n, 4), generator=g) * 2 - 1,
                                   next_observations=obs(), dones=(th.rand((n, 1), generator=g) < 0.1).float(),
                                   rewards=-(th.rand((n, 1), generator=g) < 0.7).float())


def models(batch_size: int) -> dict[str, Any]:
    import torch as th
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure

    from rlexp.components.envs import register_robotics
    from rlexp.fast.sac import FastSAC

    register_robotics()
    venv = make_vec_env("FetchPush-v4", n_envs=1)
    kwargs = dict(learning_starts=0, batch_size=batch_size, gamma=0.95, ent_coef=0.05, seed=0,
                  learning_rate=3e-4, policy_kwargs={"net_arch": [256, 256]})  # ch05_her_push's networks
    built = {"SB3 SAC.train": SAC, "rlexp FastSAC (fast=true)": FastSAC,
             "FastSAC without its direct calls (SB3's module calls and distributions)": FastSAC}
    out = {name: cls("MultiInputPolicy", venv, **kwargs) for name, cls in built.items()}
    calls = out["FastSAC without its direct calls (SB3's module calls and distributions)"]
    calls.shared_features = False
    vars(calls.policy).pop("set_training_mode", None)  # SB3's recursive one
    vars(calls.policy).pop("_predict", None)  # SB3's module-call acting
    first = next(iter(out.values()))
    batch = fixed_batch(venv.observation_space, batch_size)
    start = {k: v.clone() for k, v in first.policy.state_dict().items()}
    for model in out.values():
        model.policy.load_state_dict(start)
        model.replay_buffer.sample = lambda *a, **k: batch  # the same batch, every step
        model.set_logger(configure(None, []))
        th.manual_seed(7)
        model.train(3, batch_size)
    ref = first.policy.state_dict()
    for name, model in out.items():  # a comparison of different updates would mean nothing
        for key, value in model.policy.state_dict().items():
            if not th.allclose(ref[key], value, rtol=1e-4, atol=1e-5):
                sys.exit(f"{name}: {key} differs from SB3's after 3 steps by {(ref[key] - value).abs().max():.2e}")
    return out


def gemm_rate() -> float:
    """GFLOP/s of a 256x256x256 float32 matmul on this thread."""
    import torch as th

    a, b = th.randn(256, 256), th.randn(256, 256)
    for _ in range(50):
        a @ b
    n, t = 400, time.process_time()
    for _ in range(n):
        a @ b
    return 2 * 256**3 * n / (time.process_time() - t) / 1e9


def profile_split(model: Any, steps: int, batch_size: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        model.train(steps, batch_size)
    rows = prof.key_averages()
    total = sum(r.self_cpu_time_total for r in rows) / 1e3 / steps
    gemm = [r for r in rows if r.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")]
    return {"total": total, "gemm": sum(r.self_cpu_time_total for r in gemm) / 1e3 / steps,
            "gemm_calls": sum(r.count for r in gemm) / steps, "gflop": sum(r.flops for r in gemm) / 1e9 / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50, help="gradient steps per model per round")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--write", type=Path, help="put the table into this Markdown file")
    args = parser.parse_args()
    import torch as th

    th.set_num_threads(1)
    built = models(args.batch_size)
    times: dict[str, list[float]] = {name: [] for name in built}
    for _ in range(args.rounds):
        for name, model in built.items():
            t = time.process_time()
            model.train(args.steps, args.batch_size)
            times[name].append((time.process_time() - t) / args.steps * 1e3)
    ms = {name: statistics.median(v) for name, v in times.items()}
    base = ms["SB3 SAC.train"]
    split = profile_split(built["rlexp FastSAC (fast=true)"], args.steps, args.batch_size)
    rate = gemm_rate()
    lines = [
        f"`python bench/update_step.py --rounds {args.rounds} --steps {args.steps}` on {platform.machine()} "
        f"({cpu_model()}), one torch thread, torch {th.__version__}, batch {args.batch_size}, "
        f"{time.strftime('%Y-%m-%d')}. Median of {args.rounds} interleaved rounds of {args.steps} gradient steps "
        "on one fixed batch (no replay sampling, no env).",
        "",
        "| update | CPU ms per gradient step | x SB3 |",
        "|---|---:|---:|",
        *(f"| {name} | {v:.2f} | {base / v:.2f} |" for name, v in ms.items()),
        "",
        f"Under torch.profiler, FastSAC's step spends {split['gemm']:.2f} of {split['total']:.2f} ms "
        f"({split['gemm'] / split['total']:.0%}) in {split['gemm_calls']:.0f} matrix multiplies (forward and "
        f"backward GEMMs): {split['gflop']:.2f} GFLOP per step, at {split['gflop'] / split['gemm'] * 1e3:.0f} GFLOP/s "
        f"(profiler time); a 256x256x256 GEMM alone runs at {rate:.0f} GFLOP/s on this thread.",
    ]
    text = "\n".join(lines)
    print(text)
    if args.write:
        write_section(args.write, "update-step", "Where a SAC gradient step's time goes (cpu)", text)


if __name__ == "__main__":
    main()
