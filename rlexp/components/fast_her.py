"""HER replay sampling with the same batches as stable-baselines3's HerReplayBuffer, at a fraction of the cost.

SB3's `sample` scans the whole buffer (`ep_length > 0`, then `flatnonzero`: 8M cells for a 1M x 8 buffer)
on every gradient step, and gathers every key twice (real and relabelled halves) before concatenating.
FastHerReplayBuffer keeps the sorted list of sampleable transitions until an episode ends or is
overwritten (the only events that change it), scans only the filled rows, and gathers each key once in
the final order, by one flat index into a reshaped view of the (buffer_size, n_envs) grid instead of two
index arrays (a pure copy of the same elements). It makes the same NumPy random draws in the same order
(`np.random.choice` over the same index list, then SB3's own `_sample_goals`), so for the same stored
episodes and seed it returns bitwise the same batch (tests/test_fast_path.py). Stored arrays and
checkpoints are exactly SB3's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples


class FastHerReplayBuffer(HerReplayBuffer):
    """stable_baselines3.HerReplayBuffer with a cached valid-index list and one gather per key."""

    # ((pos, full) it is valid for, flat indices of sampleable transitions). A tuple, not an array attribute:
    # checkpoints save every array attribute of the buffer, and this one is derived, not state.
    _valid_cache: tuple[tuple[int, bool], np.ndarray] | None = None

    def add(  # type: ignore[override]
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        # The valid set changes only when an old episode is overwritten (its lengths zeroed) or one ends.
        changed = bool(np.any(self.ep_length[self.pos] > 0)) or bool(np.any(done))
        super().add(obs, next_obs, action, reward, done, infos)
        cache = self._valid_cache
        self._valid_cache = None if changed or cache is None else ((self.pos, self.full), cache[1])

    def truncate_last_trajectory(self) -> None:
        super().truncate_last_trajectory()  # may end episodes
        self._valid_cache = None

    def valid_indices(self) -> np.ndarray:
        """np.flatnonzero(ep_length > 0), as SB3 computes it, from the filled rows only."""
        key = (self.pos, self.full)
        cache = self._valid_cache
        if cache is None or cache[0] != key:  # also after a checkpoint filled the arrays directly
            rows = self.buffer_size if self.full else self.pos
            cache = self._valid_cache = (key, np.flatnonzero(self.ep_length[:rows] > 0))
        return cache[1]

    def sample(self, batch_size: int, env: Any = None) -> DictReplayBufferSamples:  # type: ignore[override]
        if env is not None or self.copy_info_dict:  # VecNormalize or info copies: SB3's own path
            return super().sample(batch_size, env)
        valid = self.valid_indices()
        if valid.size == 0:
            raise RuntimeError(
                "Unable to sample before the end of the first episode. We recommend choosing a value "
                "for learning_starts that is greater than the maximum number of timesteps in the environment."
            )
        sampled = np.random.choice(valid, size=batch_size, replace=True)
        nb_virtual = int(self.her_ratio * batch_size)
        n_real = batch_size - nb_virtual
        # SB3 returns the real transitions (drawn last) first, then the relabelled ones. `sampled` indexes the
        # (buffer_size, n_envs) grid flat, so each stored array is gathered by one flat index along a reshaped
        # view: the same elements as SB3's arr[rows, envs], without two-array advanced indexing.
        flat = np.concatenate((sampled[nb_virtual:], sampled[:nb_virtual]))

        def gather(arr: np.ndarray) -> np.ndarray:
            if not arr.flags.c_contiguous:  # reshape would copy the whole buffer: index it as SB3 does
                return arr[np.unravel_index(flat, arr.shape[:2])]
            return arr.reshape(arr.shape[0] * arr.shape[1], *arr.shape[2:])[flat]  # explicit: zero-size keys too

        obs = {key: gather(arr) for key, arr in self.observations.items()}
        next_obs = {key: gather(arr) for key, arr in self.next_observations.items()}
        rewards = gather(self.rewards).reshape(-1, 1)
        if nb_virtual:
            batch_indices, env_indices = np.unravel_index(sampled[:nb_virtual], self.ep_length.shape)
            new_goals = self._sample_goals(batch_indices, env_indices)
            obs["desired_goal"][n_real:] = new_goals
            next_obs["desired_goal"][n_real:] = new_goals
            assert self.env is not None, "HerReplayBuffer needs its VecEnv to compute rewards of relabelled goals"
            virtual = self.env.env_method("compute_reward", next_obs["achieved_goal"][n_real:], new_goals,
                                          [{} for _ in range(nb_virtual)], indices=[0])
            rewards[n_real:] = virtual[0].astype(np.float32).reshape(-1, 1)
        # Every array here is a fresh gather: tensors may share its memory (SB3's to_torch copies it again)
        tensor = lambda arr: th.as_tensor(arr, device=self.device)  # noqa: E731
        return DictReplayBufferSamples(
            observations={key: tensor(v) for key, v in obs.items()},
            actions=tensor(gather(self.actions)),
            next_observations={key: tensor(v) for key, v in next_obs.items()},
            dones=tensor(gather(self.dones) * (1 - gather(self.timeouts))).reshape(-1, 1),
            rewards=tensor(rewards),
        )
