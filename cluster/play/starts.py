"""Where a game starts, and the real game beside the dream.

A start is a real CoinRun moment: the first frame of a fresh Procgen level, the start of a random
test-set episode, or any step of a chosen episode (then the frames just before it, with the
recorded actions between them, become the dream's context). Every start names its level seed, so
the real game can be rebuilt beside the dream by the replay rule (docs/design.md, 'The episode record': a fresh env with
`num_levels=1, start_level=seed`, fed the recorded actions, reproduces the episode exactly).

The real game of every session runs in ONE shared Procgen env per set of env options: a session
keeps only its Procgen state (~40 KB) and swaps it in for each step (`set_state`, ~0.1 ms),
because a Procgen env of its own costs ~36 MB and ~150 ms to create.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genie_common.errors import ConfigError
from rl_agent.coinrun_env import NUM_ACTIONS, CoinRunConfig, make_procgen, make_replay_env
from rl_agent.store.errors import DatasetError
from rl_agent.store.reader import EpisodeStore

MAX_LEVEL_SEED = 2**31 - 1


class StartError(ConfigError):
    """A start that cannot be made (no data, unknown episode, step out of range); the message says why."""


@dataclass(frozen=True)
class Start:
    """Real frames to start dreaming from, and how to rebuild the real game at the last of them."""

    frames: np.ndarray  # (Tc, H, W, C) uint8 real context frames, the last is what the player sees first
    actions: np.ndarray  # (Tc-1,) int64 recorded CoinRun actions between the context frames
    source: str  # e.g. "fresh level 123", "episode random-s7-000012 step 0"
    level_seed: int | None  # None for an uploaded frame: no real game then
    env_config: CoinRunConfig = field(default_factory=CoinRunConfig)
    replay_actions: tuple[int, ...] = ()  # actions from the level's first frame to frames[-1]
    initial_state: bytes | None = None  # Procgen state at the level's first frame (None: no real game)


def fresh_level(seed: int, env_config: CoinRunConfig | None = None) -> Start:
    """The first frame of Procgen level `seed` (any int in [0, 2^31-1))."""
    if not 0 <= int(seed) < MAX_LEVEL_SEED:
        raise StartError(f"level seed must lie in [0, {MAX_LEVEL_SEED}), got {seed}")
    env_config = env_config or CoinRunConfig()
    state, frame = level_start(env_config, int(seed))
    return Start(frame[None], np.zeros(0, np.int64), f"fresh level {seed}", int(seed), env_config, (), state)


def level_start(env_config: CoinRunConfig, seed: int) -> tuple[bytes, np.ndarray]:
    """Procgen state (bytes) and uint8 frame (H, W, C) at the first frame of level `seed` (~150 ms)."""
    env = make_replay_env(env_config, seed)
    _, obs, _ = env.observe()
    frame = np.array(obs["rgb"][0], dtype=np.uint8)  # (H, W, C)
    state = env.get_state()[0]
    del env
    return state, frame


def uploaded(frame: np.ndarray) -> Start:
    """A player's own 64x64 frame: dreams only (no level seed, so no real game)."""
    return Start(frame[None], np.zeros(0, np.int64), "uploaded frame", None)


class EpisodeStarts:
    """Starts from a dataset: the test split when it has one (the paper's held-out levels), else every episode."""

    def __init__(self, root) -> None:
        from genie_common.storage import local_dataset

        root = local_dataset(root)  # a URI: mirrored on this node (a Serve replica may run on any node)
        try:
            self.store = EpisodeStore(root, split="test")
            self.split = "test"
        except DatasetError:
            self.store = EpisodeStore(root)
            self.split = "all"
        self.index = {ref.episode.id: i for i, ref in enumerate(self.store.episodes)}

    def __len__(self) -> int:
        return len(self.store)

    def episode_ids(self, limit: int = 200) -> list[str]:
        return [ref.episode.id for ref in self.store.episodes[:limit]]

    def random(self, rng: np.random.Generator, context: int) -> Start:
        return self.episode(self.store.episodes[int(rng.integers(len(self.store)))].episode.id, 0, context)

    def episode(self, episode_id: str, step: int, context: int) -> Start:
        """Frame `step` of episode `episode_id`, with up to `context`-1 real frames before it."""
        if episode_id not in self.index:
            raise StartError(f"no episode {episode_id!r} in the {self.split} episodes of the data set")
        i = self.index[episode_id]
        ref = self.store.episodes[i]
        if not 0 <= step < ref.episode.length:
            raise StartError(f"episode {episode_id} has steps 0..{ref.episode.length - 1}, got step {step}")
        first = max(0, step - context + 1)
        frames, actions = self.store.window(i, first, step - first + 1)  # (Tc, H, W, C), (Tc-1,)
        _, prefix = self.store.window(i, 0, step + 1)  # (step,) actions from the level start
        manifest = next(m for m in self.store.manifests if m.root == ref.root)
        settings = manifest.collections.get(ref.shard.collection, {})
        env_config = CoinRunConfig.from_dict(settings["env"]) if "env" in settings else CoinRunConfig()
        state, _ = level_start(env_config, int(ref.episode.level_seed))
        return Start(
            frames, actions.astype(np.int64), f"episode {episode_id} step {step}", int(ref.episode.level_seed),
            env_config, tuple(int(a) for a in prefix), state,
        )


@dataclass
class RealGame:
    """One session's real CoinRun: its Procgen state and the actions that led there (for step back)."""

    env_config: CoinRunConfig
    initial_state: bytes  # Procgen state at the level's first frame
    start_actions: tuple[int, ...]  # replayed to reach the start frame
    actions: list[int]  # the player's actions since the start
    state: bytes
    frame: np.ndarray  # (H, W, C) uint8 what the real game shows now
    ended: bool = False  # the level ended (coin or death): Procgen never shows that frame, so the game stops


class RealGames:
    """The real games of all sessions, stepped in one shared Procgen env per set of env options."""

    def __init__(self) -> None:
        self._envs: dict[CoinRunConfig, object] = {}

    def _env(self, config: CoinRunConfig):
        if config not in self._envs:
            self._envs[config] = make_procgen(1, config, rand_seed=0, num_levels=1, start_level=0)
        return self._envs[config]

    def start(self, start: Start) -> RealGame | None:
        """The real game at the start's last frame (None for starts without a level, e.g. uploads)."""
        if start.initial_state is None:
            return None
        initial = start.initial_state
        game = RealGame(start.env_config, initial, start.replay_actions, [], initial, np.zeros(0, np.uint8))
        self._replay(game)
        return game

    def step(self, game: RealGame, action: int) -> None:
        """Feed one CoinRun action (0..14); after the level ends the game keeps its last frame."""
        game.actions.append(int(action))
        if game.ended:
            return
        env = self._env(game.env_config)
        env.set_state([game.state])
        frame, ended = self._act(env, int(action))
        game.state = env.get_state()[0]
        if ended:
            game.ended = True
        else:
            game.frame = frame

    def back(self, game: RealGame) -> None:
        """Undo the last action: replay from the level's start (exact, ~0.06 ms per step)."""
        if game.actions:
            game.actions.pop()
            self._replay(game)

    def reset(self, game: RealGame) -> None:
        game.actions.clear()
        self._replay(game)

    def _replay(self, game: RealGame) -> None:
        env = self._env(game.env_config)
        env.set_state([game.initial_state])
        _, obs, _ = env.observe()
        frame, ended = np.array(obs["rgb"][0], dtype=np.uint8), False
        for action in (*game.start_actions, *game.actions):
            if ended:
                break
            new, ended = self._act(env, action)
            frame = frame if ended else new
        game.frame, game.ended, game.state = frame, ended, env.get_state()[0]

    @staticmethod
    def _act(env, action: int) -> tuple[np.ndarray, bool]:
        if not 0 <= action < NUM_ACTIONS:
            raise ValueError(f"CoinRun actions are 0..{NUM_ACTIONS - 1}, got {action}")
        env.act(np.array([action], dtype=np.int32))
        _, obs, first = env.observe()
        return np.array(obs["rgb"][0], dtype=np.uint8), bool(first[0])
