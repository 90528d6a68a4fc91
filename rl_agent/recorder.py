"""Turns the vector env's step stream into whole episodes that obey the alignment rule.

Each slot keeps the frames it has seen and the actions it took after each frame. An episode
closes on termination (the terminating action's frame is never shown: the last recorded
frame gets action -1 and the final reward) or on truncation (the capped last frame is
appended with action -1 and reward 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rl_agent.agent_output import AgentOutput
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


class EpisodeRecorder:
    """Records E env slots into preallocated (E, cap, ...) arrays, vectorised over slots.

    `record` returns the (slot, Episode) pairs that ended this step; their arrays are views into
    the recorder's buffers, valid until `restart(slots, ...)` reuses those slots, which the caller
    does after consuming the episodes. `capacity` is the longest possible episode (the frame cap).
    """

    # first_obs: (E, H, W, C)
    def __init__(self, first_obs: np.ndarray, level_seeds: np.ndarray, capacity: int) -> None:
        num_envs = len(first_obs)
        self.frames = np.empty((num_envs, capacity) + first_obs.shape[1:], dtype=np.uint8)  # (E, cap, H, W, C)
        self.actions = np.empty((num_envs, capacity), dtype=np.int64)
        self.rewards = np.empty((num_envs, capacity), dtype=np.float32)
        self.logp = np.full((num_envs, capacity), np.nan, dtype=np.float32)
        self.value = np.full((num_envs, capacity), np.nan, dtype=np.float32)
        self.lengths = np.zeros(num_envs, dtype=np.int64)  # frames recorded per slot
        self.level_seeds = np.zeros(num_envs, dtype=np.int64)
        self._slots = np.arange(num_envs)
        self.restart(self._slots, first_obs, level_seeds)

    def restart(self, slots: np.ndarray, obs: np.ndarray, level_seeds: np.ndarray) -> None:
        """Begin new episodes in `slots` from their current frames obs[slots]."""
        self.frames[slots, 0] = obs[slots]
        self.lengths[slots] = 1
        self.level_seeds[slots] = level_seeds[slots]

    def record(self, policy: AgentOutput, step: VecStep) -> list[tuple[int, Episode]]:
        t = self.lengths - 1  # (E,) index of the frame each action was taken after
        self.actions[self._slots, t] = policy.actions
        self.rewards[self._slots, t] = step.reward
        if policy.logp is not None:
            self.logp[self._slots, t] = policy.logp
            self.value[self._slots, t] = policy.value
        ended = step.terminated | step.truncated
        going = np.flatnonzero(~ended)
        self.frames[going, self.lengths[going]] = step.obs[going]
        self.lengths[going] += 1
        closed: list[tuple[int, Episode]] = []
        for slot in np.flatnonzero(ended):
            if step.truncated[slot]:
                end = self.lengths[slot]
                self.frames[slot, end] = step.final_obs[int(slot)]
                self.rewards[slot, end] = 0.0
                self.logp[slot, end] = self.value[slot, end] = np.nan
                self.lengths[slot] += 1
            closed.append((int(slot), self._episode(int(slot), bool(step.terminated[slot]), policy.logp is not None)))
        return closed

    def _episode(self, slot: int, terminated: bool, with_policy: bool) -> Episode:
        length = int(self.lengths[slot])
        actions = self.actions[slot, :length].copy()
        actions[-1] = NO_ACTION
        return Episode(
            frames=self.frames[slot, :length],  # view: valid until the slot is restarted
            actions=actions,
            rewards=self.rewards[slot, :length],
            terminated=terminated,
            truncated=not terminated,
            level_seed=int(self.level_seeds[slot]),
            # no action on the last row
            logp=np.append(self.logp[slot, : length - 1], np.float32(np.nan)) if with_policy else None,
            value=self.value[slot, :length] if with_policy else None,
        )
