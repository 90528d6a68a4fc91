"""Forked futures' real half: the real game played RIGHT xk and LEFT xk from a test window's context.

Why a replay: the episode record holds only the one future its agent played. The state at the
context's last frame is rebuilt by the replay rule (docs/design.md, 'The episode record': a fresh env with
`num_levels=1, start_level=level_seed` and the manifest's env options, fed the recorded actions), checked
byte for byte against the recorded frames, then forked: each fork restores that state and holds one action.
A window that cannot be replayed is skipped with the reason, never guessed at.

Shapes: F forks, k frames per fork, H x W x C pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genie_common.errors import ConfigError
from rl_agent.coinrun_env import ACTION_NAMES, CoinRunConfig, make_replay_env
from rl_agent.store.reader import EpisodeStore
from world_model.evaluation.episodes import Window


@dataclass
class RealForks:
    frames: np.ndarray | None  # (F, k, H, W, C) uint8: the frames after the context's last frame, one row per fork
    reason: str | None = None  # why there are none (None when forked)


def env_options(store: EpisodeStore, episode: int) -> tuple[CoinRunConfig | None, str | None]:
    """The CoinRun options the episode was collected with (its manifest's collection), or why there are none."""
    ref = store.episodes[episode]
    manifest = next(m for m in store.manifests if m.root == ref.root)
    collection = manifest.collections.get(ref.shard.collection) or {}
    if "env" not in collection:
        return None, (f"the manifest of {ref.root} records no env options for collection {ref.shard.collection!r}, "
                      f"so its levels cannot be replayed (re-collect with `genie collect`)")
    try:
        return CoinRunConfig.from_dict(collection["env"]), None
    except ConfigError as err:
        return None, f"the env options recorded for collection {ref.shard.collection!r} are unusable ({err})"


def _act(env, action: int) -> tuple[np.ndarray, bool]:
    env.act(np.array([action], np.int32))
    _, obs, first = env.observe()
    return np.array(obs["rgb"][0], dtype=np.uint8), bool(first[0])  # (H, W, C), episode ended


def real_forks(store: EpisodeStore, window: Window, context: int, steps: int, actions: tuple[str, ...]) -> RealForks:
    """Replay `window`'s episode up to its context's last frame, then play each of `actions` `steps` times; none
    when the futures are all the same (nothing to tell apart)."""
    played = held_futures(store, window, context, steps, actions)
    if played.frames is not None and all(np.array_equal(played.frames[0], other) for other in played.frames[1:]):
        return RealForks(None, f"the real game's {' and '.join(actions)} futures are identical (agent boxed in?)")
    return played


def forked_contexts(store: EpisodeStore, windows: list[Window], count: int, context: int, steps: int,
                    actions: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first `count` of `windows` (in order) that the real game forks (`real_forks`), as arrays: context frames
    (N, c, H, W, C) uint8, the ids that drove them (N, c-1) and the real futures (N, F, k, H, W, C) uint8."""
    frames, ids, forks = [], [], []
    for window in windows:
        if len(forks) >= count:
            break
        real = real_forks(store, window, context, steps, actions)
        if real.frames is not None:
            seen, acts = store.window(window.episode, window.start, context)
            frames.append(seen), ids.append(acts), forks.append(real.frames)
    return np.stack(frames), np.stack(ids), np.stack(forks)


def held_futures(store: EpisodeStore, window: Window, context: int, steps: int,
                 actions: tuple[str, ...]) -> RealForks:
    """Replay `window`'s episode up to its context's last frame, then hold each of `actions` `steps` times from
    there (the real game's answer to the controllability check's held keys, and the forks' real half)."""
    config, reason = env_options(store, window.episode)
    if config is None:
        return RealForks(None, reason)
    last = window.start + context - 1  # the context's last frame, in episode steps
    recorded, recorded_actions = store.window(window.episode, 0, last + 1)  # (last+1, H, W, C), (last,)
    env = make_replay_env(config, window.level_seed)
    try:
        _, obs, _ = env.observe()
        frame = np.array(obs["rgb"][0], dtype=np.uint8)
        for t in range(last + 1):
            if t > 0:
                frame, ended = _act(env, int(recorded_actions[t - 1]))
                if ended:
                    return RealForks(None, f"the replay of level {window.level_seed} ended at step {t}, "
                                           "before the record did")
            if not np.array_equal(frame, recorded[t]):
                return RealForks(None, f"the replay of level {window.level_seed} differs from the recorded frame {t} "
                                       f"(env options not those of the collection?)")
        state = env.get_state()
        forks = []
        for name in actions:
            env.set_state(state)
            frames = []
            for j in range(steps):
                frame, ended = _act(env, ACTION_NAMES.index(name))
                if ended:
                    return RealForks(None, f"{name} x{steps} ends the episode (coin or death) at fork frame {j + 1}")
                frames.append(frame)
            forks.append(np.stack(frames))  # (k, H, W, C)
    finally:
        env.close()
    return RealForks(np.stack(forks))  # (F, k, H, W, C)
