"""Which T-frame windows each worker trains on at each step, read straight from the episode store.

Why a per-worker loader over the store and not Ray Data: a batch is a few dozen random windows
from memory-mapped decoded shards, which costs microseconds per window (benchmarks/bench_train_loader.py
measures it against the model's consumption and against a Ray Data pipeline); Ray Data would
add a streaming executor that needs free CPUs (a read that finds none hangs, DESIGN §7) and
would not give uniform random windows without a full shuffle.

Why the positions of a step are drawn globally (from `seed` and the step number) and each worker
reads its slice: the windows of step s are the same for any number of workers, so a run's result does
not depend on how many workers trained it, a resumed run continues with exactly the windows it
would have seen (the data position is the step), and DDP can be checked against one process.
Each worker reads only the windows of its slice, and decodes only the shards those lie in.
The dynamics may read the same windows as token ids from the run's token cache instead
(`worker_tokens`, world_model/token_cache.py).

Shapes: B the global batch of a step (B/workers windows per worker), T frames of a window, H x W x C pixels, h x w
token grid.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from genie_common import storage
from rl_agent.store.errors import DatasetError
from rl_agent.store.reader import EpisodeStore
from world_model.steps import TokenBatch
from world_model.token_cache import TokenCache

HOLDOUT_EVERY = 20  # without a 'val' split, every 20th episode (by id hash) validates


def open_stores(locations: list[str]) -> tuple[EpisodeStore, EpisodeStore, str]:
    """Training and validation stores of the datasets, plus a note on where validation comes from."""
    roots = [storage.local_dataset(location) for location in locations]
    train = EpisodeStore(roots, split="train")
    try:
        return train, EpisodeStore(roots, split="val"), "the datasets' 'val' split"
    except DatasetError:
        pass
    everything = EpisodeStore(roots)
    held = [i for i, e in enumerate(everything.episodes) if zlib.crc32(e.episode.id.encode()) % HOLDOUT_EVERY == 0]
    if not held and len(everything) > 1:
        held = [len(everything) - 1]  # a small dataset: still validate on one unseen episode
    if not held or len(held) == len(everything):
        raise DatasetError(f"{', '.join(locations)}: no 'val' split and too few episodes to hold some out; "
                           f"collect with --split auto (the default) or more episodes")
    kept = sorted(set(range(len(everything))) - set(held))
    return everything.subset(kept), everything.subset(held), f"1 in {HOLDOUT_EVERY} episodes held out (no 'val' split)"


@dataclass(frozen=True)
class WindowPlan:
    """Global batch `batch` of windows of `length` frames per step, split over `world` workers."""

    batch: int
    length: int
    world: int
    seed: int
    # each dataset folder's share of every batch, in --data order (TrainJob.data_shares); None: its share of windows
    shares: tuple[float, ...] | None = None

    def positions(self, store: EpisodeStore, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(episode, start) of the whole global batch of `step`: two (B,) arrays."""
        rng = np.random.default_rng([self.seed, step, 0x5EED])
        return store.sample_positions(rng, self.batch, self.length, self.shares)

    def worker_slice(self, rank: int) -> slice:
        share = self.batch // self.world
        return slice(rank * share, (rank + 1) * share)

    def worker_positions(self, store: EpisodeStore, step: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """(episode, start) of this worker's windows of `step`: two (B/workers,) arrays."""
        episodes, starts = self.positions(store, step)
        part = self.worker_slice(rank)
        return episodes[part], starts[part]

    def worker_batch(self, store: EpisodeStore, step: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
        """This worker's windows of `step`: frames (B/workers, T, H, W, C) uint8 and actions (B/workers, T-1) int8."""
        return store.windows(*self.worker_positions(store, step, rank), self.length)

    def worker_tokens(self, cache: TokenCache, store: EpisodeStore, step: int, rank: int, latent: bool) -> TokenBatch:
        """The same windows as `worker_batch`, from the token cache of `store`: ids (B/workers, T, h, w) int16 and
        action ids (B/workers, T-1) int8 (true actions, or with `latent` the LAM's latent ids), and from a scrolled
        copy path's cache its references (B/workers, T, h, w) and scrolls (B/workers, T, 2)."""
        return TokenBatch(*cache.windows(*self.worker_positions(store, step, rank), self.length, latent=latent))


def validation_positions(store: EpisodeStore, count: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed set of validation windows, the same at every validation (less noise between points)."""
    rng = np.random.default_rng([seed, 0xA11])
    return store.sample_positions(rng, count, length)


class StepPrefetcher:
    """Reads step s+1's windows on a background thread while step s trains, as tensors (pinned for a GPU's
    non-blocking copy): gathering windows from memory maps and, on a GPU, the host-to-device copy then overlap
    the model's work instead of stalling it between steps. The windows of a step depend only on the step
    (WindowPlan), so reading ahead changes no result. One thread owns `fetch`'s store while the loop runs.
    """

    def __init__(self, fetch: Callable[[int], tuple[np.ndarray | None, ...]], pin_memory: bool = False) -> None:
        self.fetch, self.pin_memory = fetch, pin_memory
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="windows")
        self._ahead: dict[int, Future] = {}

    def get(self, step: int, next_step: int | None) -> tuple[torch.Tensor | None, ...]:
        """The arrays `fetch` gives for `step` (inputs, actions and any more; a None stays None), as tensors
        (read ahead if asked for before); starts reading `next_step`."""
        future = self._ahead.pop(step, None) or self._pool.submit(self._load, step)
        if next_step is not None and next_step not in self._ahead:
            self._ahead[next_step] = self._pool.submit(self._load, next_step)
        return future.result()  # a DatasetError of the read surfaces here, in the loop

    def _load(self, step: int) -> tuple[torch.Tensor | None, ...]:
        parts = tuple(None if a is None else torch.from_numpy(np.ascontiguousarray(a)) for a in self.fetch(step))
        if self.pin_memory:
            parts = tuple(None if p is None else p.pin_memory() for p in parts)
        return parts

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
