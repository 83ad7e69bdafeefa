"""Algorithms of the `algo` group beyond the SB3/sb3-contrib classes used as they are.

CrossQ (sb3-contrib, Bhatt et al., ICLR 2024) batches observations and next observations into one critic
forward pass so its batch (re)normalisation sees both distributions; it does that with `torch.cat`, which takes
tensors only, and it registers no `MultiInputPolicy`. The subclass below lets it train on the Fetch tasks'
dict (goal-conditioned) observations, HER included, and changes nothing for array observations.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from sb3_contrib import CrossQ as _CrossQ
from sb3_contrib.crossq.policies import CrossQPolicy
from stable_baselines3.common.policies import BasePolicy


class CatDict(dict):
    """A dict of tensors that `torch.cat` joins key by key (and that stays a dict for the policy's extractor)."""

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.cat:
            parts = args[0]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            return cls({key: torch.cat([part[key] for part in parts], dim=dim) for key in parts[0]})
        return NotImplemented


class CrossQ(_CrossQ):
    """sb3-contrib's CrossQ, also for dict observations: `policy: MultiInputPolicy` with the configured encoder
    (rlexp/conf/encoder; CombinedExtractor by default), replay samples' observation dicts wrapped in CatDict."""

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {**_CrossQ.policy_aliases, "MultiInputPolicy": CrossQPolicy}

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        sample = self.replay_buffer.sample

        def sample_cat(*args: Any, **kwargs: Any) -> Any:
            data = sample(*args, **kwargs)
            if isinstance(data.observations, dict):
                data = data._replace(observations=CatDict(data.observations),
                                     next_observations=CatDict(data.next_observations))
            return data

        self.replay_buffer.sample = sample_cat  # type: ignore[method-assign]
        try:
            super().train(gradient_steps, batch_size)
        finally:
            del self.replay_buffer.sample  # the instance attribute; the class's method again
