"""The book's SAC+HER FetchPush-v4 recipe in plain stable-baselines3: no rlexp, the baseline of bench/throughput.py.

    python bench/plain_sb3.py --steps 12000            # trains, prints env steps/s after learning_starts

Hyperparameters are those of rlexp/conf/experiment/ch05_her_push.yaml (book ch5): 8 envs, batch 256,
buffer 1M, learning_starts 1000, lr 3e-4, gamma 0.95, tau 0.005, ent_coef 0.05, one gradient step per
step of the 8 envs (train_freq 1, gradient_steps 1), HER with 4 "future" goals; SB3's defaults for the
rest (MultiInputPolicy, 256x256 networks).
One torch thread, as rlexp runs beside each other on this machine.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import gymnasium_robotics
import torch
from stable_baselines3 import SAC, HerReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

N_ENVS = 8
LEARNING_STARTS = 1000


def make_model(device: str = "cpu", seed: int = 0) -> SAC:
    gym.register_envs(gymnasium_robotics)
    env = make_vec_env("FetchPush-v4", n_envs=N_ENVS, seed=seed, monitor_kwargs={"info_keywords": ("is_success",)})
    return SAC(
        "MultiInputPolicy",
        env,
        learning_rate=3e-4,
        buffer_size=1_000_000,
        learning_starts=LEARNING_STARTS,
        batch_size=256,
        tau=0.005,
        gamma=0.95,
        train_freq=1,
        gradient_steps=1,
        ent_coef=0.05,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={"n_sampled_goal": 4, "goal_selection_strategy": "future", "copy_info_dict": False},
        seed=seed,
        device=device,
        verbose=0,
    )


class StepTimer(BaseCallback):
    """Wall and process CPU time from the first env step at or after `start` to the end of training."""

    def __init__(self, start: int) -> None:
        super().__init__()
        self.start = start
        self.t0: tuple[float, float, int] | None = None

    def _on_step(self) -> bool:
        if self.t0 is None and self.num_timesteps >= self.start:
            self.t0 = (time.perf_counter(), time.process_time(), self.num_timesteps)
        return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12_000, help="env steps timed after learning_starts + 1000")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = make_model(args.device)
    timer = StepTimer(LEARNING_STARTS + 1000)
    model.learn(LEARNING_STARTS + 1000 + args.steps, callback=timer, progress_bar=False)
    assert timer.t0 is not None
    wall, cpu = time.perf_counter() - timer.t0[0], time.process_time() - timer.t0[1]
    steps = model.num_timesteps - timer.t0[2]
    print(f"{steps} steps: {steps / wall:.0f} env steps/s, {cpu / steps * 1000:.2f} CPU s per 1k steps")


if __name__ == "__main__":
    main()
