"""DrQ random-shift augmentation, applied when a batch is sampled (never to what is stored).

With HER the batch is relabelled (new goals, recomputed rewards) first and augmented after; only the
image key changes, so rewards stay consistent with the goals.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3 import HerReplayBuffer
from stable_baselines3.common.type_aliases import DictReplayBufferSamples


def random_shift(images: th.Tensor, pad: int = 4, generator: th.Generator | None = None) -> th.Tensor:
    """Shift each image by its own integer offset in [-pad, pad] (rows and columns drawn separately).

    Equivalent to replicate-padding by `pad` and cropping back at a random offset, done by clamped
    index gathering so uint8 batches need no float copy.
    """
    if pad <= 0:
        return images
    n, _, h, w = images.shape
    dev = images.device
    dy = th.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator) - pad
    dx = th.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator) - pad
    rows = (th.arange(h, device=dev)[None, :] + dy[:, None]).clamp_(0, h - 1)  # (N, H)
    cols = (th.arange(w, device=dev)[None, :] + dx[:, None]).clamp_(0, w - 1)  # (N, W)
    idx = th.arange(n, device=dev)[:, None, None, None]
    chans = th.arange(images.shape[1], device=dev)[None, :, None, None]
    return images[idx, chans, rows[:, None, :, None], cols[:, None, None, :]]


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
