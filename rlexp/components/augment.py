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
