"""Pixel encoders for manipulation: a small-stride CNN, SpatialSoftmax keypoints, and the SB3 extractor.

NatureCNN (8x8 stride 4 first layer) throws away the few-pixel detail that separates gripper from puck
at 84x84; the manipulation CNN keeps a 21x21 map and SpatialSoftmax turns it into x/y coordinates.
"""

from __future__ import annotations

import gymnasium as gym
import torch as th
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn


class ManipulationCNN(nn.Module):
    """Four 3x3 convs, padding 1, stride 2 in layers 1 and 4: 84 -> 42 -> 42 -> 42 -> 21."""

    def __init__(self, in_channels: int, num_filters: int = 32) -> None:
        super().__init__()
        f = num_filters
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, f, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(f, f, 3, stride=1, padding=1),
            nn.ReLU(),
            nn.Conv2d(f, f, 3, stride=1, padding=1),
            nn.ReLU(),
            nn.Conv2d(f, f, 3, stride=2, padding=1),
            nn.ReLU(),
        )

    def forward(self, x: th.Tensor) -> th.Tensor:
        return self.net(x)


class SpatialSoftmax(nn.Module):
    """(B, C, H, W) -> (B, 2C): per channel, the expected x then y position of its softmax attention.

    Coordinates run from -1 (left/top) to 1 (right/bottom); the temperature is the only parameter.
    """

    def __init__(self, height: int, width: int, channels: int, temperature: float = 1.0) -> None:
        super().__init__()
        self.height, self.width, self.channels = height, width, channels
        self.temperature = nn.Parameter(th.tensor(float(temperature)))
        self.register_buffer("pos_x", th.linspace(-1.0, 1.0, width))
        self.register_buffer("pos_y", th.linspace(-1.0, 1.0, height))

    def forward(self, x: th.Tensor) -> th.Tensor:
        b, c, h, w = x.shape
        attn = th.softmax(x.reshape(b, c, h * w) / self.temperature, dim=-1).reshape(b, c, h, w)
        expected_x = (attn.sum(dim=2) * self.pos_x).sum(dim=-1)  # marginal over rows, (B, C)
        expected_y = (attn.sum(dim=3) * self.pos_y).sum(dim=-1)
        return th.cat([expected_x, expected_y], dim=1)


class ManipulationExtractor(BaseFeaturesExtractor):
    """Image keys -> CNN -> SpatialSoftmax -> LayerNorm -> Tanh (or flatten -> Linear -> LayerNorm -> Tanh);
    vector keys (proprioception, goals) pass through flattened. Push with both goals: 64 + 10 + 3 + 3 = 80.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        spatial_softmax: bool = True,
        num_filters: int = 32,
        flat_features_dim: int = 50,
        normalized_image: bool = False,
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Dict):
            raise ValueError(f"ManipulationExtractor needs a Dict observation space, got {observation_space}")
        heads: dict[str, nn.Module] = {}
        total = 0
        n_images = 0
        for key, space in observation_space.spaces.items():
            if is_image_space(space, check_channels=False, normalized_image=normalized_image):
                n_images += 1
                cnn = ManipulationCNN(space.shape[0], num_filters)
                with th.no_grad():
                    _, c, h, w = cnn(th.zeros(1, *space.shape)).shape
                if spatial_softmax:
                    head = nn.Sequential(cnn, SpatialSoftmax(h, w, c), nn.LayerNorm(2 * c), nn.Tanh())
                    total += 2 * c
                else:
                    head = nn.Sequential(
                        cnn,
                        nn.Flatten(),
                        nn.Linear(c * h * w, flat_features_dim),
                        nn.LayerNorm(flat_features_dim),
                        nn.Tanh(),
                    )
                    total += flat_features_dim
                heads[key] = head
            else:
                heads[key] = nn.Flatten()
                total += int(gym.spaces.utils.flatdim(space))
        if n_images == 0:
            raise ValueError(
                "no image key in the observation space: this encoder is for pixel observations "
                "(use encoder=combined for state observations)"
            )
        super().__init__(observation_space, features_dim=total)
        self.extractors = nn.ModuleDict(heads)
        self.normalized_image = normalized_image

    def forward(self, observations: dict[str, th.Tensor]) -> th.Tensor:
        parts = []
        for key, head in self.extractors.items():
            x = observations[key]
            if x.dtype == th.uint8:  # SB3 normally scales images already; raw uint8 from tests/benches too
                x = x.float() / 255.0
            parts.append(head(x))
        return th.cat(parts, dim=1)
