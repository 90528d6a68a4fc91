"""The IMPALA-CNN policy of the Procgen paper as an RLlib (new API stack) RLModule.

Frames travel as uint8 from the env through RLlib and are cast to float inside `forward`
(RLlib's default CNN encoder does not cast uint8, and float frames would cost 4x the memory
in every sample batch). Residual stacks of (16, 32, 32) channels and a 256-unit layer by
default; presets shrink them for CPU training.

A policy may be restricted to some of Procgen's 15 action ids (`allowed_actions`): the others get a logit of
-1e9, so they are never sampled and carry no probability, entropy or gradient, while the action space, the recorded
ids and every checkpoint keep Procgen's numbering. CoinRun reads only the nine direction combos (ids 0-8); ids 9-14
are keys other Procgen games use, in CoinRun six more NOOPs that a uniform policy picks 40% of the time.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

from rl_agent.coinrun_env import is_action_subset

RLLIB_SELF_DEPRECATION = "RLModule(config=[RLModuleConfig object])"


class _RLlibSelfDeprecationFilter(logging.Filter):
    """Drops the one deprecation line RLlib 2.60 logs about itself: `RLModule.__init__` builds the deprecated
    `RLModuleConfig` for every module, whatever API the module was built with (this one gets observation_space,
    action_space and model_config, the current way), so the line told users of every `genie agent train` to change
    code that is not theirs. Installed where the module is imported: in every process that builds one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return RLLIB_SELF_DEPRECATION not in record.getMessage()


_deprecation_logger = logging.getLogger("ray._common.deprecation")
if not any(isinstance(f, _RLlibSelfDeprecationFilter) for f in _deprecation_logger.filters):
    _deprecation_logger.addFilter(_RLlibSelfDeprecationFilter())


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


MASKED_LOGIT = -1e9  # an action the policy may not choose: probability exactly 0 in float32, entropy term 0


def action_mask(num_actions: int, allowed_actions: tuple[int, ...]) -> torch.Tensor:
    """(A,) bool: True where the policy may choose the action id (every id when `allowed_actions` is empty)."""
    if not allowed_actions:
        return torch.ones(num_actions, dtype=torch.bool)
    if not is_action_subset(allowed_actions, num_actions):
        raise ValueError(f"allowed_actions must be at least two distinct ids in [0, {num_actions}), "
                         f"got {list(allowed_actions)}")
    mask = torch.zeros(num_actions, dtype=torch.bool)
    mask[list(allowed_actions)] = True
    return mask


def _build_heads(owner: nn.Module, frame_shape: tuple[int, ...], num_actions: int, channels: tuple[int, ...],
                 hidden: int, blocks: int, allowed_actions: tuple[int, ...] = ()) -> None:
    """Give `owner` the trunk and both heads, under the names a saved state dict uses (encoder, pi, vf), and the
    action mask (a buffer outside the state dict: it comes from the settings, so older weights still load)."""
    if len(frame_shape) != 3 or frame_shape[-1] != 3:
        raise ValueError(f"the IMPALA-CNN policy expects (H, W, 3) frames, got observation shape {tuple(frame_shape)}")
    owner.register_buffer("action_mask", action_mask(num_actions, tuple(allowed_actions)), persistent=False)
    owner.encoder = ImpalaCNN(tuple(frame_shape), tuple(channels), hidden, blocks)
    owner.pi = nn.Linear(hidden, num_actions)
    owner.vf = nn.Linear(hidden, 1)
    nn.init.orthogonal_(owner.pi.weight, gain=0.01)
    nn.init.zeros_(owner.pi.bias)
    nn.init.orthogonal_(owner.vf.weight, gain=1.0)
    nn.init.zeros_(owner.vf.bias)


def _policy_logits(owner: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """(B, hidden) features -> (B, A) logits, MASKED_LOGIT where the action is not allowed."""
    return owner.pi(features).masked_fill(~owner.action_mask, MASKED_LOGIT)


class ImpalaPolicyNet(nn.Module):
    """The policy without RLlib: what collectors and `genie agent eval` load (plain torch weights + a JSON
    description, rl_agent/ppo_policy.py). Same parameter names as ImpalaCNNModule, so weights move between them."""

    def __init__(self, frame_shape: tuple[int, ...], num_actions: int, channels: tuple[int, ...] = (16, 32, 32),
                 hidden: int = 256, blocks: int = 2, allowed_actions: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.frame_shape, self.num_actions = tuple(frame_shape), num_actions
        _build_heads(self, frame_shape, num_actions, channels, hidden, blocks, allowed_actions)

    def policy_and_value(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, A) and values (B,) for uint8 frames (B, H, W, C)."""
        features = self.encoder(frames)
        return _policy_logits(self, features), self.vf(features).squeeze(-1)


class ImpalaCNNModule(TorchRLModule, ValueFunctionAPI):
    """Shared IMPALA-CNN trunk with a policy head (15 logits) and a value head, for RLlib's training.

    model_config: channels (list of ints), hidden (int), blocks (residual blocks per stack), allowed_actions
    (list of action ids the policy may choose; empty or absent: all).
    """

    def setup(self) -> None:
        config = self.model_config or {}
        _build_heads(self, tuple(self.observation_space.shape), self.action_space.n, **self.net_config(config))

    @staticmethod
    def net_config(model_config: dict[str, Any]) -> dict[str, Any]:
        """The network's size from an RLlib model_config (RLlib adds keys of its own, ignored here)."""
        return {"channels": tuple(model_config.get("channels", (16, 32, 32))),
                "hidden": int(model_config.get("hidden", 256)), "blocks": int(model_config.get("blocks", 2)),
                "allowed_actions": tuple(int(a) for a in model_config.get("allowed_actions", ()) or ())}

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        features = self.encoder(batch[Columns.OBS])  # (B, hidden)
        return {Columns.ACTION_DIST_INPUTS: _policy_logits(self, features)}  # (B, 15)

    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        features = self.encoder(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: _policy_logits(self, features), Columns.EMBEDDINGS: features}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self.encoder(batch[Columns.OBS])
        return self.vf(embeddings).squeeze(-1)  # (B,)

    policy_and_value = ImpalaPolicyNet.policy_and_value
