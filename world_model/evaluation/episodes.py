"""Which test windows are evaluated: chosen from the seed alone, so every run with the same seed,
data and window length scores exactly the same frames (whatever the number of workers).

Shapes: B windows read together, T frames of a window, H x W x C pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rl_agent.store.errors import DatasetError
from rl_agent.store.reader import EpisodeStore


@dataclass(frozen=True)
class Window:
    episode: int  # index into the EpisodeStore
    episode_id: str
    start: int
    level_seed: int

    def to_json(self) -> dict:
        return {"episode": self.episode, "id": self.episode_id, "start": self.start, "level_seed": self.level_seed}


def select_windows(store: EpisodeStore, length: int, episodes: int | None, seed: int) -> list[Window]:
    """Up to `episodes` windows of `length` frames, one per episode, episodes and starts drawn from `seed`.

    One window per episode (not many from one long episode), so the average weighs levels equally.
    """
    eligible = np.flatnonzero(store.lengths >= length)
    if len(eligible) == 0:
        raise DatasetError(
            f"no test episode has {length} frames (context + horizon); the longest has {int(store.lengths.max())}. "
            f"Use a shorter --context/--horizon or a test set with longer episodes"
        )
    rng = np.random.default_rng([seed, 0])
    chosen = np.sort(rng.permutation(eligible)[: episodes or len(eligible)])
    starts = rng.integers(0, store.lengths[chosen] - length + 1)  # (len(chosen),)
    return [
        Window(int(e), store.episodes[e].episode.id, int(s), int(store.episodes[e].episode.level_seed))
        for e, s in zip(chosen, starts)
    ]


def read_windows(store: EpisodeStore, windows: list[Window], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Frames (B, T, H, W, C) uint8 and actions (B, T-1) int8 of the B windows."""
    return store.windows([w.episode for w in windows], [w.start for w in windows], length)
