"""CoinRun (Procgen) as a vector environment and as a Gymnasium environment.

Why a wrapper of our own: Procgen resets an environment by itself when an episode ends and
never shows the terminal frame, has no per-environment reset, and its own time limit (1000
steps) is longer than the paper's 500-frame cap. The collectors need exact episode
boundaries, the level seed of every episode and a cap recorded as truncation, so this module
owns those rules in one place:

* A natural episode end (Procgen's ``first`` flag) is a termination; the observation that
  comes back is already the first frame of the next level.
* When an episode reaches ``max_episode_frames`` observed frames it is truncated: its last
  frame is returned as ``final_obs`` and the slot is moved to a fresh level by restoring a
  saved Procgen state (``set_state``), which is exact and costs ~0.1 ms.
* Fresh levels come from the Procgen level generator itself (a small helper env whose
  initial states are new levels), so level seeds follow the same distribution as Procgen's
  own resets and stay reproducible from the seed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from genie_common.config import dataclass_from_dict, option  # the first re-exported: the agent's configs' loader
from genie_common.errors import ConfigError  # re-exported: `rl_agent.coinrun_env.ConfigError` is the same class

_MAX_STATE_SIZE = 2**20  # procgen.env.MAX_STATE_SIZE
FRAME_SHAPE = (64, 64, 3)  # (H, W, C) uint8, Procgen's native resolution
NUM_ACTIONS = 15
# Procgen's 15 button combinations, in action-id order (procgen.env.BaseProcgenEnv.get_combos).
ACTION_NAMES = (
    "LEFT+DOWN", "LEFT", "LEFT+UP", "DOWN", "NOOP", "UP", "RIGHT+DOWN", "RIGHT", "RIGHT+UP",
    "D", "A", "W", "S", "Q", "E",
)
DISTRIBUTION_MODES = ("easy", "hard", "extreme", "memory", "exploration")


def is_action_subset(ids: tuple[int, ...], num_actions: int = NUM_ACTIONS) -> bool:
    """Whether `ids` can restrict a policy: at least two distinct action ids, each in [0, num_actions)."""
    return len(set(ids)) >= 2 and all(0 <= a < num_actions for a in ids)


def derive_seed(*parts: int) -> int:
    """A 31-bit seed from integer parts, stable across runs, platforms and processes."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


@dataclass(frozen=True)
class CoinRunConfig:
    """Options of the CoinRun environment that change what the frames look like or which levels appear.

    Recorded in every dataset manifest: a replay of an episode must use the same options.
    """

    distribution_mode: str = option("easy", help="Procgen difficulty",
                                    choices=tuple(m for m in DISTRIBUTION_MODES if m != "exploration"))
    # the paper's cap: 500
    max_episode_frames: int = option(500, help="frame cap per episode, recorded as truncation", range="positive")
    # levels are drawn at random by Procgen
    num_levels: int = option(0, help="number of distinct levels (0 = unlimited)", range="non_negative")
    start_level: int = option(0, help="first level seed when --num-levels > 0", range="non_negative")
    use_backgrounds: bool = option(True, help="plain backgrounds instead of Procgen's images", flag="--no-backgrounds")
    restrict_themes: bool = False
    use_monochrome_assets: bool = False
    center_agent: bool = True

    def __post_init__(self) -> None:
        if self.distribution_mode not in DISTRIBUTION_MODES:
            raise ConfigError(
                f"unknown distribution_mode {self.distribution_mode!r}; choose one of {', '.join(DISTRIBUTION_MODES)}"
            )
        if self.distribution_mode == "exploration":
            raise ConfigError("CoinRun has no 'exploration' distribution mode; use 'easy' or 'hard'")
        if self.max_episode_frames < 2:
            raise ConfigError(f"max_episode_frames must be at least 2, got {self.max_episode_frames}")
        if self.num_levels < 0 or self.start_level < 0:
            raise ConfigError("num_levels and start_level must be non-negative")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "CoinRunConfig":
        return dataclass_from_dict(cls, values, "CoinRun option")

    def procgen_kwargs(self, rand_seed: int, num_levels: int | None = None,
                       start_level: int | None = None) -> dict[str, Any]:
        return dict(
            env_name="coinrun",
            distribution_mode=self.distribution_mode,
            num_levels=self.num_levels if num_levels is None else num_levels,
            start_level=self.start_level if start_level is None else start_level,
            use_backgrounds=self.use_backgrounds,
            restrict_themes=self.restrict_themes,
            use_monochrome_assets=self.use_monochrome_assets,
            center_agent=self.center_agent,
            rand_seed=int(rand_seed),
        )


def _procgen_env_class():
    """Import Procgen lazily (reading datasets never needs it), without the legacy-gym notice.

    Procgen's gym3 dependency imports the old `gym` package, which prints a deprecation notice
    into every collector's log; genie-redux itself only uses Gymnasium, so the notice is noise.
    """
    try:
        import gym_notices.notices

        gym_notices.notices.notices = {}
    except ImportError:
        pass
    from procgen import ProcgenGym3Env

    return ProcgenGym3Env


def make_procgen(num: int, config: CoinRunConfig, rand_seed: int, **overrides: Any):
    """A raw `ProcgenGym3Env` of `num` CoinRun games."""
    ProcgenGym3Env = _procgen_env_class()
    return ProcgenGym3Env(num=num, **config.procgen_kwargs(rand_seed, **overrides))


def make_replay_env(config: CoinRunConfig, level_seed: int):
    """The env of the replay rule (docs/design.md, 'The episode record'): exactly one level, `level_seed`, same
    options."""
    return make_procgen(1, config, rand_seed=0, num_levels=1, start_level=int(level_seed))


class FreshLevelSource:
    """Hands out Procgen states that sit at the first frame of a new level.

    A helper env of `batch` slots is created per batch; its initial states are new levels
    drawn by Procgen's own generator (within the configured level range).
    """

    def __init__(self, config: CoinRunConfig, seed: int, batch: int = 16) -> None:
        self._config, self._seed, self._batch = config, seed, batch
        self._states: list[bytes] = []
        self._batches_made = 0

    def next_state(self) -> bytes:
        if not self._states:
            helper = make_procgen(self._batch, self._config, derive_seed(self._seed, self._batches_made))
            self._batches_made += 1
            self._states = list(reversed(helper.get_state()))
            del helper
        return self._states.pop()


@dataclass
class VecStep:
    """What one step of `CoinRunVecEnv` returns; arrays have one entry per slot (E,)."""

    obs: np.ndarray  # (E, H, W, C) uint8: the frame to act on next (first frame of a new episode after an end)
    reward: np.ndarray  # (E,) float32: reward for the action just taken
    terminated: np.ndarray  # (E,) bool: the episode ended in the game (coin or death); its end frame is never shown
    truncated: np.ndarray  # (E,) bool: the episode hit max_episode_frames; its last frame is in final_obs
    # slot -> (H, W, C) last frame of a truncated episode
    final_obs: dict[int, np.ndarray] = field(default_factory=dict)
    level_complete: np.ndarray | None = None  # (E,) bool: for terminated slots, whether the coin was reached


class CoinRunVecEnv:
    """E CoinRun games stepped together in one process (Procgen threads), with exact episode bookkeeping."""

    def __init__(self, num_envs: int, config: CoinRunConfig | None = None, seed: int = 0) -> None:
        if num_envs < 1:
            raise ConfigError(f"num_envs must be at least 1, got {num_envs}")
        self.num_envs = num_envs
        self.config = config or CoinRunConfig()
        self.seed = seed
        self._env = make_procgen(num_envs, self.config, derive_seed(seed, 0))
        self._fresh = FreshLevelSource(self.config, derive_seed(seed, 1))
        self._frames_in_episode = np.ones(num_envs, dtype=np.int64)
        self.level_seeds = self._read_level_seeds()

    def _read_level_seeds(self) -> np.ndarray:
        return np.array([int(info["level_seed"]) for info in self._env.get_info()], dtype=np.int64)

    def observe(self) -> np.ndarray:
        _, obs, _ = self._env.observe()
        return np.array(obs["rgb"], dtype=np.uint8, copy=True)  # (E, H, W, C)

    def reset_slot(self, slot: int) -> None:
        """Move one slot to the first frame of a fresh level."""
        self.restore_slot(slot, self._fresh.next_state())

    def slot_state(self, slot: int) -> bytes:
        """Procgen's serialised game state of one slot (about 40 KB)."""
        buffer = self._env._ffi.new(f"char[{_MAX_STATE_SIZE}]")
        size = self._env.call_c_func("get_state", slot, buffer, _MAX_STATE_SIZE)
        return bytes(self._env._ffi.buffer(buffer, size))

    def restore_slot(self, slot: int, state: bytes) -> None:
        """Put one slot back into a saved state that sits at the first frame of an episode."""
        self._env.call_c_func("set_state", slot, state, len(state))
        self._frames_in_episode[slot] = 1
        self.level_seeds[slot] = int(self._env.get_info()[slot]["level_seed"])

    def step(self, actions: np.ndarray) -> VecStep:
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} actions, got shape {actions.shape}")
        if actions.min() < 0 or actions.max() >= NUM_ACTIONS:
            raise ValueError(f"actions must be in [0, {NUM_ACTIONS}), got {actions.min()}..{actions.max()}")
        self._env.act(actions.astype(np.int32))
        reward, obs, first = self._env.observe()
        obs = np.array(obs["rgb"], dtype=np.uint8, copy=True)  # (E, H, W, C)
        terminated = np.asarray(first, dtype=bool).copy()
        level_complete = np.zeros(self.num_envs, dtype=bool)
        if terminated.any():  # get_info() costs a Python dict per env: read it only when needed
            infos = self._env.get_info()
            level_complete = np.array([bool(info["prev_level_complete"]) for info in infos]) & terminated
        self._frames_in_episode += 1
        self._frames_in_episode[terminated] = 1
        truncated = self._frames_in_episode >= self.config.max_episode_frames
        final_obs: dict[int, np.ndarray] = {}
        truncated_slots = np.flatnonzero(truncated)
        for slot in truncated_slots:
            final_obs[int(slot)] = obs[slot].copy()
            self.reset_slot(int(slot))
        if len(truncated_slots):
            obs[truncated_slots] = self.observe()[truncated_slots]
        if terminated.any() or truncated.any():
            self.level_seeds = self._read_level_seeds()
        return VecStep(
            obs=obs,
            reward=np.asarray(reward, dtype=np.float32).copy(),
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            level_complete=level_complete,
        )


class CoinRunEnv(gym.Env):
    """CoinRun as a single Gymnasium environment (for RLlib and `check_env`).

    Procgen never shows a terminal frame, so after `terminated` the returned observation is
    the first frame of the next level; `reset()` then simply continues from it. A seeded
    `reset(seed=...)` rebuilds the game so the same seed gives the same level.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(self, config: CoinRunConfig | dict | None = None, render_mode: str | None = None) -> None:
        if isinstance(config, dict) or config is None:
            config = CoinRunConfig.from_dict(dict(config or {}))
        self.config = config
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(0, 255, shape=FRAME_SHAPE, dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(NUM_ACTIONS)
        self._vec: CoinRunVecEnv | None = None
        self._obs: np.ndarray | None = None
        self._needs_reset = True

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self._vec is None or seed is not None:
            base = seed if seed is not None else int(self.np_random.integers(0, 2**31 - 1))
            self._vec = CoinRunVecEnv(1, self.config, seed=base)
            self._obs = self._vec.observe()[0]
        elif not self._needs_reset:
            self._vec.reset_slot(0)  # an explicit reset mid-episode starts a fresh level
            self._obs = self._vec.observe()[0]
        self._needs_reset = False
        return self._obs.copy(), {"level_seed": int(self._vec.level_seeds[0])}

    def step(self, action):
        if self._vec is None:
            raise RuntimeError("call reset() before step()")
        out = self._vec.step(np.array([int(action)]))
        terminated, truncated = bool(out.terminated[0]), bool(out.truncated[0])
        obs = out.final_obs.get(0, out.obs[0])
        self._obs = out.obs[0]
        self._needs_reset = terminated or truncated
        info = {"level_seed": int(self._vec.level_seeds[0])}
        if terminated:
            info["level_complete"] = bool(out.level_complete[0])
        return obs.copy(), float(out.reward[0]), terminated, truncated, info

    def render(self):
        return None if self._obs is None else self._obs.copy()
