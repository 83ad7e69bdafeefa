"""Replay buffers of the `buffer` group (rlexp/conf/buffer/): HER for stacked pixels, DrQ augmentation.

DrQ random-shift augmentation is applied when a batch is sampled (never to what is stored). With HER the batch
is relabelled (new goals, recomputed rewards) first and augmented after; only the image key changes, so rewards
stay consistent with the goals.

PixelHerReplayBuffer stores each rendered frame once. SB3's HER buffer keeps the full obs and next_obs stacks
per transition: 2 x 4 x 3 x 84 x 84 bytes, about 169 KB, so the book's 500k buffer needs ~85 GB. Consecutive
stacks share all but one frame, so here a transition stores only the newest frame of its next observation, and
each episode stores the stack it started from. Stacks are rebuilt at sample time: ~23 KB per transition, with
batches identical to SB3's.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples

from rlexp.errors import ConfigError

# DrQ augmentation


def random_shift(images: th.Tensor, pad: int = 4, generator: th.Generator | None = None) -> th.Tensor:
    """Shift each image by its own integer offset in [-pad, pad] (rows and columns drawn separately).

    Replicate-pad by `pad` (edge rows/columns concatenated, so uint8 needs no float copy), then crop each
    image back to H x W at its own offset: a slice copy per image, much faster than 4-D fancy indexing.
    """
    if pad <= 0:
        return images
    n, _, h, w = images.shape
    top, bottom = images[:, :, :1].expand(-1, -1, pad, -1), images[:, :, -1:].expand(-1, -1, pad, -1)
    padded = th.cat([top, images, bottom], dim=2)
    left, right = padded[..., :1].expand(-1, -1, -1, pad), padded[..., -1:].expand(-1, -1, -1, pad)
    padded = th.cat([left, padded, right], dim=3)
    # Drawn on the CPU (the per-image loop reads them there anyway), so a CPU generator works for any device.
    offsets = th.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    out = th.empty_like(images)
    for i, (oy, ox) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, oy : oy + h, ox : ox + w]
    return out


def augment_batch(
    batch: DictReplayBufferSamples, image_keys: tuple[str, ...], pad: int
) -> DictReplayBufferSamples:
    """New batch with obs and next_obs images shifted by independent draws; everything else untouched."""
    obs = dict(batch.observations)
    nxt = dict(batch.next_observations)
    for key in image_keys:
        obs[key] = random_shift(obs[key], pad)
        nxt[key] = random_shift(nxt[key], pad)
    return batch._replace(observations=obs, next_observations=nxt)


class DrQHerReplayBuffer(HerReplayBuffer):
    """SB3's HER buffer (full obs/next_obs stacks per transition) with DrQ shift at sample time."""

    def __init__(
        self, *args: Any, drq_pad: int = 4, image_keys: tuple[str, ...] = ("pixels",), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.drq_pad = int(drq_pad)
        self.image_keys = tuple(image_keys)

    def sample(self, batch_size: int, env: Any = None) -> DictReplayBufferSamples:  # type: ignore[override]
        return augment_batch(super().sample(batch_size, env), self.image_keys, self.drq_pad)


# HER for stacked pixel observations


def _warn_if_too_big(nbytes: float) -> None:
    """Linux allocates lazily, so a too-big buffer only fails when it fills, hours in (book pitfall 7.7)."""
    try:
        import psutil
    except ImportError:
        return
    available = psutil.virtual_memory().available
    if nbytes > available:
        warnings.warn(
            f"PixelHerReplayBuffer will need ~{nbytes / 1e9:.1f} GB of frames when full but only "
            f"{available / 1e9:.1f} GB is available: lower algo.buffer_size",
            stacklevel=3,
        )


class PixelHerReplayBuffer(HerReplayBuffer):
    """HerReplayBuffer whose `image_key` stacks are rebuilt from single frames; other keys as in SB3.

    Same RNG draws as SB3's HER buffer (rebuilding draws nothing), so for the same stored episodes and
    numpy seed it returns the same batch. `drq_pad` > 0 adds DrQ random shift after HER relabelling.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Dict,
        action_space: spaces.Space,
        env: Any,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        n_sampled_goal: int = 4,
        goal_selection_strategy: str = "future",
        copy_info_dict: bool = False,
        frame_stack: int | None = None,
        image_key: str = "pixels",
        drq_pad: int = 0,
    ) -> None:
        if image_key not in observation_space.spaces:
            raise ConfigError(
                f"PixelHerReplayBuffer: observation has no {image_key!r} key "
                f"(keys: {list(observation_space.spaces)}); use buffer=her for state observations"
            )
        image_space = observation_space.spaces[image_key]
        shape = image_space.shape
        if frame_stack is None:  # RGB frames: the stack depth is the channel count over 3
            frame_stack = shape[0] // 3 if len(shape) == 3 and shape[0] % 3 == 0 else 0
        if len(shape) != 3 or frame_stack < 1 or shape[0] % frame_stack:
            raise ConfigError(
                f"PixelHerReplayBuffer: {image_key} shape {shape} is not a CHW stack of "
                f"{frame_stack} frames (set buffer.frame_stack to the wrapper's frame_stack)"
            )
        vector_space = spaces.Dict({k: s for k, s in observation_space.spaces.items() if k != image_key})
        super().__init__(
            buffer_size,
            vector_space,
            action_space,
            env,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
            n_sampled_goal=n_sampled_goal,
            goal_selection_strategy=goal_selection_strategy,
            copy_info_dict=copy_info_dict,
        )
        self.full_observation_space = observation_space
        self.image_key = image_key
        self.frame_stack = int(frame_stack)
        self.frame_shape = (shape[0] // frame_stack, *shape[1:])
        # frames[t, e]: newest frame of next_obs of transition t. start_stacks[(t, e)]: the obs stack of an
        # episode's first transition t, kept whole so an episode entered mid-way (after resume) stays exact.
        frames_shape = (self.buffer_size, self.n_envs, *self.frame_shape)
        need = float(np.prod(frames_shape)) * np.dtype(image_space.dtype).itemsize
        _warn_if_too_big(need * (1 + self.frame_stack / 50))  # + one start stack per ~50-step episode
        try:
            self.frames = np.zeros(frames_shape, dtype=image_space.dtype)
        except MemoryError:
            raise ConfigError(
                f"PixelHerReplayBuffer: cannot allocate {need / 1e9:.1f} GB of frames for "
                f"{self.buffer_size * self.n_envs} transitions; lower algo.buffer_size"
            ) from None
        self.start_stacks: dict[tuple[int, int], np.ndarray] = {}
        self.drq_pad = int(drq_pad)

    def add(
        self,
        obs: dict[str, np.ndarray],
        next_obs: dict[str, np.ndarray],
        action: np.ndarray,  # type: ignore[override]
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        c = self.frame_shape[0]
        images = np.asarray(obs[self.image_key]).reshape(
            self.n_envs, *self.full_observation_space[self.image_key].shape
        )
        next_images = np.asarray(next_obs[self.image_key]).reshape(images.shape)
        for e in range(self.n_envs):
            self.start_stacks.pop((self.pos, e), None)
            if self._current_ep_start[e] == self.pos:
                self.start_stacks[(self.pos, e)] = images[e].copy()
        self.frames[self.pos] = next_images[:, -c:]
        super().add(obs, next_obs, action, reward, done, infos)

    def _stacks(self, batch_indices: np.ndarray, env_indices: np.ndarray, offset: int) -> np.ndarray:
        """Stacks (B, N*C, H, W) of obs (offset 0) or next_obs (offset 1) of the given transitions."""
        n, c = self.frame_stack, self.frame_shape[0]
        ep_start = self.ep_start[batch_indices, env_indices]
        step = (batch_indices - ep_start) % self.buffer_size + offset  # index of the obs in its episode
        j = step[:, None] - (n - 1) + np.arange(n)[None, :]  # frame index per slot, oldest first
        out = np.empty((len(batch_indices), n, *self.frame_shape), dtype=self.frames.dtype)
        later = j >= 1  # frames produced by steps of this episode
        rows = (ep_start[:, None] + j - 1) % self.buffer_size
        envs = np.broadcast_to(env_indices[:, None], j.shape)
        out[later] = self.frames[rows[later], envs[later]]
        for b, k in zip(*np.nonzero(~later), strict=False):
            start = self.start_stacks[(int(ep_start[b]), int(env_indices[b]))]
            slot = n - 1 + j[b, k]
            out[b, k] = start[slot * c : (slot + 1) * c]
        return out.reshape(len(batch_indices), n * c, *self.frame_shape[1:])

    def _with_pixels(
        self, data: DictReplayBufferSamples, batch_indices: np.ndarray, env_indices: np.ndarray
    ) -> DictReplayBufferSamples:
        def full(part: dict[str, th.Tensor], offset: int) -> dict[str, th.Tensor]:
            pixels = self.to_torch(self._stacks(batch_indices, env_indices, offset))
            return {
                k: (pixels if k == self.image_key else part[k]) for k in self.full_observation_space.spaces
            }

        return data._replace(
            observations=full(data.observations, 0), next_observations=full(data.next_observations, 1)
        )

    def _get_real_samples(
        self, batch_indices: np.ndarray, env_indices: np.ndarray, env: Any = None
    ) -> DictReplayBufferSamples:
        return self._with_pixels(
            super()._get_real_samples(batch_indices, env_indices, env), batch_indices, env_indices
        )

    def _get_virtual_samples(
        self, batch_indices: np.ndarray, env_indices: np.ndarray, env: Any = None
    ) -> DictReplayBufferSamples:
        data = super()._get_virtual_samples(batch_indices, env_indices, env)
        return self._with_pixels(data, batch_indices, env_indices)

    def sample(self, batch_size: int, env: Any = None) -> DictReplayBufferSamples:  # type: ignore[override]
        batch = super().sample(batch_size, env)
        return augment_batch(batch, (self.image_key,), self.drq_pad) if self.drq_pad > 0 else batch

    def extra_state(self) -> dict[str, np.ndarray]:
        """Episode start stacks for checkpoints (rlexp.training.checkpoint saves the per-transition arrays itself)."""
        keys = sorted(self.start_stacks)
        stack_shape = self.full_observation_space[self.image_key].shape
        values = [self.start_stacks[k] for k in keys]
        return {
            "start_stack_keys": np.asarray(keys, dtype=np.int64).reshape(len(keys), 2),
            "start_stacks": np.stack(values) if values else np.zeros((0, *stack_shape), self.frames.dtype),
        }

    def load_extra_state(self, arrays: dict[str, np.ndarray]) -> None:
        keys, values = arrays["start_stack_keys"], arrays["start_stacks"]
        self.start_stacks = {(int(t), int(e)): values[i].copy() for i, (t, e) in enumerate(keys)}

    def nbytes(self) -> int:
        """Bytes held for stored data: numpy arrays plus the per-episode start stacks."""
        arrays = [
            self.frames,
            self.actions,
            self.rewards,
            self.dones,
            self.timeouts,
            self.ep_start,
            self.ep_length,
            self.infos,
            *self.observations.values(),
            *self.next_observations.values(),
        ]
        return int(sum(a.nbytes for a in arrays) + sum(s.nbytes for s in self.start_stacks.values()))


def dict_buffer_nbytes(buffer: Any) -> int:
    """The same count for SB3's (HER) dict buffer, for comparison."""
    arrays = [
        buffer.actions,
        buffer.rewards,
        buffer.dones,
        buffer.timeouts,
        *buffer.observations.values(),
        *buffer.next_observations.values(),
    ]
    for name in ("ep_start", "ep_length", "infos"):
        if hasattr(buffer, name):
            arrays.append(getattr(buffer, name))
    return int(sum(a.nbytes for a in arrays))
