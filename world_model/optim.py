"""The paper's optimiser: AdamW (betas 0.9, 0.99), weight decay on matrices only, warmup + cosine, clip 10.

Why weight decay on matrices only: decaying norms' gains, biases and (1-D) scales pulls them
towards 0, which fights normalisation rather than regularising. Why the schedule ends exactly at
the last step: a cosine shorter than training made the LR rise again in the official code
(docs/design.md, 'Pitfalls'); here the LR reaches `min_lr` at step `total_steps - 1` and stays there.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from world_model.config import OptimConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: parameters with ndim >= 2 (decayed) and the rest (not decayed)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]


def learning_rate(step: int, config: OptimConfig) -> float:
    """LR at optimiser step `step` (0-based): linear warmup to lr, then cosine down to min_lr at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = config.total_steps - 1 - config.warmup_steps
    if decay_steps <= 0:
        return config.min_lr
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1.0 + math.cos(math.pi * progress))


class Optimization:
    """AdamW + per-step LR + gradient clipping, as one object a train step can call."""

    def __init__(self, model: nn.Module, config: OptimConfig) -> None:
        self.config = config
        self.model = model
        self.optimizer = torch.optim.AdamW(
            parameter_groups(model, config.weight_decay), lr=learning_rate(0, config), betas=config.betas
        )
        self.step_count = 0

    @property
    def lr(self) -> float:
        return learning_rate(self.step_count, self.config)

    def step(self, loss: torch.Tensor) -> dict[str, float]:
        """Backward, clip to `grad_clip`, update with this step's LR; returns grad norm and LR."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return self.apply_gradients()

    def apply_gradients(self) -> dict[str, torch.Tensor | float]:
        """Clip the gradients already accumulated in `.grad`, update with this step's LR, clear them.

        Split from `step` so a distributed loop can accumulate several backward passes first.
        """
        used_lr = self.lr
        for group in self.optimizer.param_groups:
            group["lr"] = used_lr
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step_count += 1
        return {"grad_norm": grad_norm.detach(), "lr": used_lr}  # the norm unread (no wait for the device)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = int(state["step_count"])
