"""Turns the vector env's step stream into whole episodes that obey the alignment rule.

Each slot keeps the frames it has seen and the actions it took after each frame. An episode
closes on termination (the terminating action's frame is never shown: the last recorded
frame gets action -1 and the final reward) or on truncation (the capped last frame is
appended with action -1 and reward 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rl_agent.agents import AgentOutput
from rl_agent.coinrun_env import VecStep
from rl_agent.store.schema import NO_ACTION


@dataclass
class Episode:
    frames: np.ndarray  # (L, H, W, C) uint8
    actions: np.ndarray  # (L,) int64, last = -1
    rewards: np.ndarray  # (L,) float32
    terminated: bool
    truncated: bool
    level_seed: int
    logp: np.ndarray | None = None  # (L,) float32
    value: np.ndarray | None = None  # (L,) float32


@dataclass
class _SlotBuffer:
    level_seed: int
    frames: list[np.ndarray] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    logp: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)


class EpisodeRecorder:
    """Accumulates per-slot buffers; `record` returns the (slot, Episode) pairs that closed this step."""

    def __init__(self, first_obs: np.ndarray, level_seeds: np.ndarray) -> None:  # first_obs: (E, H, W, C)
        self._slots = [_SlotBuffer(int(s), [f]) for f, s in zip(first_obs, level_seeds)]

    def record(self, policy: AgentOutput, step: VecStep, level_seeds: np.ndarray) -> list[tuple[int, Episode]]:
        closed: list[tuple[int, Episode]] = []
        for slot, buffer in enumerate(self._slots):
            buffer.actions.append(int(policy.actions[slot]))
            buffer.rewards.append(float(step.reward[slot]))
            if policy.logp is not None:
                buffer.logp.append(float(policy.logp[slot]))
                buffer.value.append(float(policy.value[slot]))
            if step.terminated[slot]:
                closed.append((slot, self._close(buffer, terminated=True)))
            elif step.truncated[slot]:
                buffer.frames.append(step.final_obs[slot])
                buffer.rewards.append(0.0)
                if policy.logp is not None:
                    buffer.logp.append(np.nan)
                    buffer.value.append(np.nan)
                closed.append((slot, self._close(buffer, terminated=False)))
            else:
                buffer.frames.append(step.obs[slot])
                continue
            self._slots[slot] = _SlotBuffer(int(level_seeds[slot]), [step.obs[slot]])
        return closed

    @staticmethod
    def _close(buffer: _SlotBuffer, terminated: bool) -> Episode:
        length = len(buffer.frames)
        actions = np.array(buffer.actions[: length - 1] + [NO_ACTION], dtype=np.int64)
        optional = lambda xs: np.array(xs[:length], np.float32) if xs else None  # noqa: E731
        return Episode(
            frames=np.stack(buffer.frames),
            actions=actions,
            rewards=np.array(buffer.rewards[:length], dtype=np.float32),
            terminated=terminated,
            truncated=not terminated,
            level_seed=buffer.level_seed,
            logp=optional(buffer.logp),
            value=optional(buffer.value),
        )
