"""What every stage's `compute_loss` returns, so one generic train/eval step serves all three."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    loss: torch.Tensor  # () the scalar to minimise
    metrics: dict[str, float] = field(default_factory=dict)  # detached numbers for logging
