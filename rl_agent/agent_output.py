"""What an agent returns for a batch of frames: shared by every agent (`agents`, `ppo_policy`) and the recorder."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AgentOutput:
    actions: np.ndarray  # (E,) int64
    logp: np.ndarray | None = None  # (E,) float32, the policy's log-probability of each action
    value: np.ndarray | None = None  # (E,) float32, the value estimate
