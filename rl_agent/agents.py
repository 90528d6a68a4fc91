"""Agents that explore CoinRun for the collectors.

An agent maps a batch of frames to a batch of actions; `name` is what the episode record's
`agent` column holds (`random`, later `ppo:<checkpoint id>`).
"""

from __future__ import annotations

import numpy as np

from genie_common.errors import ConfigError
from rl_agent.agent_output import AgentOutput  # re-exported: the agents' output type
from rl_agent.coinrun_env import ACTION_NAMES, NUM_ACTIONS

KNOWN_AGENTS = ("random", "ppo")


class RandomAgent:
    """Uniform over the 15 actions; with `sticky_prob` p it repeats its previous action (per env).

    Sticky actions make random play move further (a held RIGHT), a cheap way to widen coverage.
    """

    name = "random"

    def __init__(self, num_envs: int, sticky_prob: float = 0.0) -> None:
        self.sticky_prob = sticky_prob
        self._previous = np.zeros(num_envs, dtype=np.int64)

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> AgentOutput:  # obs: (E, H, W, C) uint8
        actions = rng.integers(0, NUM_ACTIONS, size=len(obs))
        if self.sticky_prob > 0:
            keep = rng.random(len(obs)) < self.sticky_prob
            actions = np.where(keep, self._previous, actions)
        self._previous = actions
        return AgentOutput(actions=actions)


class BlindAgent:
    """Never looks: RIGHT or RIGHT+UP (a jump) with equal probability each step. A reference, not an explorer: on
    easy CoinRun it beats the random agent by far, so a trained policy should beat it too."""

    name = "blind"
    ACTIONS = np.array([ACTION_NAMES.index("RIGHT"), ACTION_NAMES.index("RIGHT+UP")])

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> AgentOutput:  # obs: (E, H, W, C) uint8
        return AgentOutput(actions=self.ACTIONS[rng.integers(0, 2, size=len(obs))])


def check_agent_spec(spec: str, checkpoint: str | None, sticky_prob: float) -> None:
    """Refuse an unusable agent description before anything starts."""
    if spec not in KNOWN_AGENTS:
        raise ConfigError(f"unknown agent {spec!r}; known agents: {', '.join(KNOWN_AGENTS)}")
    if not 0.0 <= sticky_prob < 1.0:
        raise ConfigError(f"sticky_prob must be in [0, 1), got {sticky_prob}")
    if spec == "ppo" and not checkpoint:
        raise ConfigError("--agent ppo needs --checkpoint (a run folder of `genie agent train` or a checkpoint in it)")
    if spec == "ppo" and sticky_prob:
        raise ConfigError("sticky actions apply to the random agent only")
    if spec == "random" and checkpoint:
        raise ConfigError("--checkpoint is only for --agent ppo")


def make_agent(spec: str, num_envs: int, sticky_prob: float = 0.0, checkpoint: str | None = None):
    """Build an agent from its command-line spec (`random`, or `ppo` with a checkpoint)."""
    check_agent_spec(spec, checkpoint, sticky_prob)
    if spec == "ppo":
        from rl_agent.ppo_policy import PPOAgent

        return PPOAgent(checkpoint)
    return RandomAgent(num_envs, sticky_prob)
