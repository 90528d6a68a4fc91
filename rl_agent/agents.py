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
# one Procgen id per CoinRun effect (world_model.evaluation.config.ACTION_EFFECTS): the keys a held-key run presses
HOLD_KEYS = tuple(ACTION_NAMES.index(n) for n in ("LEFT", "LEFT+UP", "NOOP", "UP", "RIGHT", "RIGHT+UP"))


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


class HeldKeys:
    """Any agent, with runs of a held key mixed in: each step, a game not already holding a key starts holding one
    (uniform over HOLD_KEYS, one id per CoinRun effect) with probability `hold_prob`, for `hold_frames` steps,
    whatever the agent would have pressed; then the agent plays on from where the key left it.

    Why: an explorer presses what wins (the tiny study's PPO agent: RIGHT or RIGHT+UP in 67% of its steps, LEFT in
    6%), so its episodes reach far into levels but never show a key held against the agent's motion, and a world
    model fine-tuned on them has no example of what the forked futures and the held-key table ask it to dream. The
    held steps record the policy's value of the state but no log-probability (NaN): the policy did not choose them.
    """

    def __init__(self, agent, num_envs: int, hold_prob: float, hold_frames: int) -> None:
        self.agent, self.hold_prob, self.hold_frames = agent, hold_prob, hold_frames
        self.name = agent.name
        self._key = np.zeros(num_envs, dtype=np.int64)
        self._left = np.zeros(num_envs, dtype=np.int64)  # steps of the current hold still to play (0: not holding)

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> AgentOutput:  # obs: (E, H, W, C) uint8
        output = self.agent.act(obs, rng)
        start = (self._left == 0) & (rng.random(len(obs)) < self.hold_prob)  # (E,)
        keys = np.asarray(HOLD_KEYS)[rng.integers(0, len(HOLD_KEYS), size=len(obs))]  # drawn for all: deterministic
        self._key = np.where(start, keys, self._key)
        self._left = np.where(start, self.hold_frames, self._left)
        held = self._left > 0  # (E,)
        self._left = np.maximum(self._left - 1, 0)
        actions = np.where(held, self._key, output.actions)
        logp = None if output.logp is None else np.where(held, np.float32(np.nan), output.logp).astype(np.float32)
        return AgentOutput(actions=actions.astype(np.int64), logp=logp, value=output.value)


def check_agent_spec(spec: str, checkpoint: str | None, sticky_prob: float, hold_prob: float = 0.0,
                     hold_frames: int = 1) -> None:
    """Refuse an unusable agent description before anything starts."""
    if spec not in KNOWN_AGENTS:
        raise ConfigError(f"unknown agent {spec!r}; known agents: {', '.join(KNOWN_AGENTS)}")
    if not 0.0 <= sticky_prob < 1.0:
        raise ConfigError(f"sticky_prob must be in [0, 1), got {sticky_prob}")
    if not 0.0 <= hold_prob < 1.0:
        raise ConfigError(f"hold_prob must be in [0, 1), got {hold_prob}")
    if hold_frames < 1:
        raise ConfigError(f"hold_frames must be at least 1, got {hold_frames}")
    if spec == "ppo" and not checkpoint:
        raise ConfigError("--agent ppo needs --checkpoint (a run folder of `genie agent train` or a checkpoint in it)")
    if spec == "ppo" and sticky_prob:
        raise ConfigError("sticky actions apply to the random agent only")
    if spec == "random" and checkpoint:
        raise ConfigError("--checkpoint is only for --agent ppo")


def with_held_keys(agent, num_envs: int, hold_prob: float, hold_frames: int):
    """`agent` itself when `hold_prob` is 0, else the agent with held keys mixed in (HeldKeys)."""
    return HeldKeys(agent, num_envs, hold_prob, hold_frames) if hold_prob > 0 else agent


def make_agent(spec: str, num_envs: int, sticky_prob: float = 0.0, checkpoint: str | None = None):
    """Build an agent from its command-line spec (`random`, or `ppo` with a checkpoint)."""
    check_agent_spec(spec, checkpoint, sticky_prob)
    if spec == "ppo":
        from rl_agent.ppo_policy import PPOAgent

        return PPOAgent(checkpoint)
    return RandomAgent(num_envs, sticky_prob)
