"""Pixel Push costs on this machine: env throughput, replay memory per transition, step-2 training speed.

    python bench/pixels.py                          # defaults, prints a Markdown table
    python bench/pixels.py --env-steps 200 --train-steps 30 --batch-size 32 --write docs/measurements.md

--write replaces the section between the pixel-bench markers in that Markdown file (appends it if absent).
Not part of the test suite. Counts are small by default; raise them for steadier numbers.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from docsection import write_section  # noqa: E402  - beside this script

import rlexp  # noqa: E402,F401  - MUJOCO_GL=egl before mujoco loads

PROPRIO = (0, 1, 2, 9, 10, 20, 21, 22, 23, 24)


def env_steps_per_sec(render_size: int, steps: int) -> float:
    """One FetchPush-v4 + PixelObservation(84x84, 4 frames): native render, or render_size + PIL resize."""
    import gymnasium as gym

    from rlexp.components.envs import PixelObservation, register_robotics

    register_robotics()
    base = gym.make("FetchPush-v4", render_mode="rgb_array", width=render_size, height=render_size)
    env = PixelObservation(base, 84, 4, "both", PROPRIO, resize=render_size != 84)
    env.reset(seed=0)
    env.action_space.seed(0)
    for _ in range(5):  # warm up the GL context
        env.step(env.action_space.sample())
    t0 = time.perf_counter()
    for i in range(steps):
        _, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            env.reset(seed=i)
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def bytes_per_transition(size: int = 1000, n_envs: int = 4) -> tuple[float, float]:
    """Full buffers of 50-step episodes, 84x84x3 x 4 frames + 10-D proprio + goals: (ours, SB3 HER)."""
    import gymnasium as gym
    from stable_baselines3 import HerReplayBuffer

    from rlexp.components.buffers import PixelHerReplayBuffer, dict_buffer_nbytes

    space = gym.spaces.Dict(
        {
            "pixels": gym.spaces.Box(0, 255, (12, 84, 84), np.uint8),
            "proprioception": gym.spaces.Box(-np.inf, np.inf, (10,), np.float64),
            "achieved_goal": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
            "desired_goal": gym.spaces.Box(-np.inf, np.inf, (3,), np.float64),
        }
    )
    action = gym.spaces.Box(-1, 1, (4,), np.float32)
    ours = PixelHerReplayBuffer(size, space, action, env=None, device="cpu", n_envs=n_envs)
    obs = {k: np.zeros((n_envs, *s.shape), s.dtype) for k, s in space.spaces.items()}
    for t in range(size // n_envs):
        done = np.full(n_envs, (t + 1) % 50 == 0)
        ours.add(
            obs, obs, np.zeros((n_envs, 4), np.float32), np.zeros(n_envs, np.float32), done, [{}] * n_envs
        )
    sb3 = HerReplayBuffer(size, space, action, env=None, device="cpu", n_envs=n_envs)
    return ours.nbytes() / size, dict_buffer_nbytes(sb3) / size


def train_steps_per_sec(steps: int, batch_size: int, device: str) -> tuple[float, str]:
    """ch09_step2_critic_encoder (critic routing, pixel HER k=8) as configured, learning from a warm buffer.

    Rate = environment steps/s with one gradient step of `batch_size` per env step (n_envs 1).
    """
    from rlexp.builder import build
    from rlexp.config import compose

    warm = 100  # two full episodes before updates start
    cfg = compose(
        "+experiment=ch09_step2_critic_encoder",
        "n_envs=1",
        "algo.buffer_size=2000",
        f"algo.learning_starts={warm}",
        f"algo.batch_size={batch_size}",
        f"device={device}",
        "tensorboard=false",
    )
    model = build(cfg)
    model.learn(warm + 2, progress_bar=False)  # fill, plus the first updates (lazy init)
    t0 = time.perf_counter()
    model.learn(steps, reset_num_timesteps=False, progress_bar=False)
    rate = steps / (time.perf_counter() - t0)
    dev = str(model.device)
    model.get_env().close()
    return rate, dev


def table(args: argparse.Namespace) -> str:
    import torch as th

    native = env_steps_per_sec(84, args.env_steps)
    resized = env_steps_per_sec(480, args.env_steps)
    ours, sb3 = bytes_per_transition()
    train, dev = train_steps_per_sec(args.train_steps, args.batch_size, args.device)
    cpu = f"{platform.processor() or platform.machine()}, {th.get_num_threads()} torch threads"
    rows = [
        "| measurement | value | notes |",
        "|---|---|---|",
        f"| pixel env steps/s, native 84x84 render | {native:.1f} | 1 env, {args.env_steps} steps |",
        f"| pixel env steps/s, 480x480 render + PIL resize | {resized:.1f} | the book's default path |",
        f"| replay bytes/transition, PixelHerReplayBuffer | {ours:,.0f} | 500k: {ours * 5e5 / 1e9:.1f} GB |",
        f"| replay bytes/transition, SB3 HerReplayBuffer | {sb3:,.0f} | 500k: {sb3 * 5e5 / 1e9:.1f} GB |",
        f"| step-2 training env steps/s ({dev}) | {train:.2f} | batch {args.batch_size}, 1 env, "
        f"1 gradient step per env step, {args.train_steps} steps |",
    ]
    cmd = "python bench/pixels.py " + " ".join(sys.argv[1:])
    return "\n".join([f"Measured with `{cmd}` on {cpu}.", "", *rows])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-steps", type=int, default=300)
    p.add_argument("--train-steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=256, help="the book's 256 by default")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--write", type=Path, default=None, help="Markdown file whose pixel-bench section to replace"
    )
    args = p.parse_args()
    body = table(args)
    print(body)
    if args.write:
        write_section(args.write, "pixels-bench", "Pixel Push: throughput and replay memory", body)


if __name__ == "__main__":
    main()
