"""The IMPALA-CNN policy of the Procgen paper as an RLlib (new API stack) RLModule.

Frames travel as uint8 from the env through RLlib and are cast to float inside `forward`
(RLlib's default CNN encoder does not cast uint8, and float frames would cost 4x the memory
in every sample batch). Residual stacks of (16, 32, 32) channels and a 256-unit layer by
default; presets shrink them for CPU training.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn


class ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class ConvSequence(nn.Module):
    """conv 3x3 -> max-pool 3x3 stride 2 -> residual blocks: halves H and W."""

    def __init__(self, in_channels: int, out_channels: int, blocks: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.blocks = nn.Sequential(*[ResidualBlock(out_channels) for _ in range(blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, Cin, H, W) -> (B, Cout, H/2, W/2)
        return self.blocks(self.pool(self.conv(x)))


class ImpalaCNN(nn.Module):
    """uint8 frames (B, H, W, C) -> (B, hidden) features."""

    def __init__(self, frame_shape: tuple[int, int, int], channels: tuple[int, ...], hidden: int, blocks: int) -> None:
        super().__init__()
        height, width, in_channels = frame_shape
        stacks = []
        for out_channels in channels:
            stacks.append(ConvSequence(in_channels, out_channels, blocks))
            in_channels = out_channels
            height, width = (height + 1) // 2, (width + 1) // 2
        self.stacks = nn.Sequential(*stacks)
        self.fc = nn.Linear(in_channels * height * width, hidden)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).float() / 255.0  # (B, C, H, W) in [0, 1]
        x = self.stacks(x)  # (B, C', H', W')
        return torch.relu(self.fc(torch.relu(x).flatten(1)))  # (B, hidden)


class ImpalaCNNModule(TorchRLModule, ValueFunctionAPI):
    """Shared IMPALA-CNN trunk with a policy head (15 logits) and a value head.

    model_config: channels (list of ints), hidden (int), blocks (residual blocks per stack).
    """

    def setup(self) -> None:
        shape = tuple(self.observation_space.shape)
        if len(shape) != 3 or shape[-1] != 3:
            raise ValueError(f"ImpalaCNNModule expects (H, W, 3) frames, got observation shape {shape}")
        config = self.model_config or {}
        channels = tuple(config.get("channels", (16, 32, 32)))
        hidden = int(config.get("hidden", 256))
        self.encoder = ImpalaCNN(shape, channels, hidden, int(config.get("blocks", 2)))
        self.pi = nn.Linear(hidden, self.action_space.n)
        self.vf = nn.Linear(hidden, 1)
        nn.init.orthogonal_(self.pi.weight, gain=0.01)
        nn.init.zeros_(self.pi.bias)
        nn.init.orthogonal_(self.vf.weight, gain=1.0)
        nn.init.zeros_(self.vf.bias)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        features = self.encoder(batch[Columns.OBS])  # (B, hidden)
        return {Columns.ACTION_DIST_INPUTS: self.pi(features)}  # (B, 15)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        features = self.encoder(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: self.pi(features), Columns.EMBEDDINGS: features}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self.encoder(batch[Columns.OBS])
        return self.vf(embeddings).squeeze(-1)  # (B,)

    def policy_and_value(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, 15) and values (B,) for uint8 frames (B, H, W, C): the collectors' entry point."""
        features = self.encoder(frames)
        return self.pi(features), self.vf(features).squeeze(-1)
