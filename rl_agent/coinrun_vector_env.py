"""CoinRun as a Gymnasium `VectorEnv`, so RLlib steps many Procgen games in one call.

RLlib's env runners accept a ready vector env (`gym_env_vectorize_mode="vector_entry_point"`)
and expect Gymnasium's NEXT_STEP autoreset: after an episode ends, the next `step` returns
that env's first observation and ignores its action. Procgen steps every game at once and
resets by itself, so an env that must "wait" for its reset is stepped anyway and then put
back to its saved start state (`restore_slot`, exact and ~0.1 ms): the agent sees exactly
the first frame of the new level and the game is exactly there.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector.utils import batch_space

from rl_agent.coinrun_env import FRAME_SHAPE, NUM_ACTIONS, CoinRunConfig, CoinRunVecEnv


class CoinRunGymVectorEnv(gym.vector.VectorEnv):
    metadata = {"autoreset_mode": gym.vector.AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 8, config: CoinRunConfig | dict | None = None, seed: int | None = None) -> None:
        if not isinstance(config, CoinRunConfig):
            config = CoinRunConfig.from_dict(dict(config or {}))
        self.num_envs = num_envs
        self.config = config
        self.single_observation_space = gym.spaces.Box(0, 255, shape=FRAME_SHAPE, dtype=np.uint8)
        self.single_action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._seed = seed
        self._vec: CoinRunVecEnv | None = None
        self._pending: dict[int, bytes] = {}  # slot -> saved start state of its next episode

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        base = seed if seed is not None else self._seed
        if base is None:
            base = int(self.np_random.integers(0, 2**31 - 1))
        self._seed = None  # a later unseeded reset draws new levels
        self._vec = CoinRunVecEnv(self.num_envs, self.config, seed=base)
        self._pending = {}
        return self._vec.observe(), {}

    def step(self, actions):
        if self._vec is None:
            raise RuntimeError("call reset() before step()")
        out = self._vec.step(np.asarray(actions).reshape(self.num_envs))
        obs, reward = out.obs, out.reward
        terminated, truncated = out.terminated.copy(), out.truncated.copy()
        for slot, state in self._pending.items():  # envs whose reset step this is
            self._vec.restore_slot(slot, state)
        if self._pending:
            slots = np.fromiter(self._pending, dtype=np.int64)
            obs[slots] = self._vec.observe()[slots]
            reward[slots] = 0.0
            terminated[slots] = truncated[slots] = False
        ended = np.flatnonzero(terminated | truncated)
        self._pending = {int(slot): self._vec.slot_state(int(slot)) for slot in ended}
        for slot, final in out.final_obs.items():
            if truncated[slot]:
                obs[slot] = final  # the real last frame (value bootstrapping needs it)
        infos: dict[str, Any] = {}
        return obs, reward, terminated, truncated, infos

    def close_extras(self, **kwargs) -> None:
        self._vec = None
