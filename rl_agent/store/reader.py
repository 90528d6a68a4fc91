"""Random access to T-frame windows of the episode store, without holding the dataset in RAM.

Shards are compressed for storage (~1 KB/frame); decompressing a window's frames on every
read is ~20x slower than a memory copy. So each shard is decoded once into an uncompressed
`.npy` file in a local cache (keyed by the shard's checksum, written atomically) and then
memory-mapped: windows are slices of the page cache, and the OS, not the process, decides
what stays in memory. Only the small columns (actions, episode offsets) live in RAM.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from rl_agent.coinrun_env import FRAME_SHAPE
from rl_agent.store.decoded_cache import MAPPED_HERE, DecodedCache, cache_cap_bytes
from rl_agent.store.errors import DatasetError
from rl_agent.store.manifest import EpisodeInfo, Manifest, ShardInfo
from rl_agent.store.schema import frames_of
from rl_agent.store.writer import file_sha256, read_shard_batches


def default_cache_dir() -> Path:
    return Path(os.environ.get("GENIE_CACHE_DIR", Path.home() / ".cache" / "genie-redux" / "decoded"))


def _uniform_positions(rng: np.random.Generator, counts: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """`batch` (episode, start) pairs uniform over the windows that `counts` (E,) allows per episode."""
    cumulative = np.cumsum(counts)
    picks = rng.integers(0, int(cumulative[-1]), size=batch)
    episodes = np.searchsorted(cumulative, picks, side="right")
    starts = picks - (cumulative[episodes] - counts[episodes])
    return episodes, starts


@dataclass
class _DecodedShard:
    frames: np.ndarray  # (rows, H, W, C) uint8, memory-mapped
    actions: np.ndarray  # (rows,) int8, in RAM
    batch_offsets: np.ndarray  # (episodes + 1,) row offset of each episode batch


@dataclass(frozen=True)
class EpisodeRef:
    root: Path
    shard: ShardInfo
    episode: EpisodeInfo


class EpisodeStore:
    """Episodes of one or more dataset folders, optionally one split, with window access.

    A window of T frames starting at step t holds frames t..t+T-1 and actions t..t+T-2, so
    action i sits between frame i and frame i+1 (docs/design.md, 'The episode record'); windows never cross episodes.
    """

    def __init__(
        self,
        roots: str | os.PathLike | Sequence[str | os.PathLike],
        split: str | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if isinstance(roots, (str, os.PathLike)):
            roots = [roots]
        self.manifests = [Manifest.load(r) for r in roots]
        self.split = split
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        listed = [(i, EpisodeRef(m.root, shard, episode))
                  for i, m in enumerate(self.manifests) for shard, episode in m.episodes(split)]
        self.episodes: list[EpisodeRef] = [ref for _, ref in listed]
        if not self.episodes:
            where = ", ".join(str(m.root) for m in self.manifests)
            raise DatasetError(f"no episodes{f' in split {split!r}' if split else ''} in {where}")
        self.lengths = np.array([e.episode.length for e in self.episodes], dtype=np.int64)
        # which dataset folder (index into `manifests`, the order given) each episode comes from
        self.sources = np.array([i for i, _ in listed], dtype=np.int64)
        self._decoded: dict[str, _DecodedShard] = {}

    def __len__(self) -> int:
        return len(self.episodes)

    def subset(self, indices: Sequence[int]) -> "EpisodeStore":
        """A store over some of these episodes (e.g. a held-out part), sharing the decoded shards."""
        if not len(indices):
            raise DatasetError("an empty subset of episodes")
        other = object.__new__(EpisodeStore)
        other.manifests, other.split, other.cache_dir = self.manifests, self.split, self.cache_dir
        other.episodes = [self.episodes[i] for i in indices]
        other.lengths = self.lengths[list(indices)]
        other.sources = self.sources[list(indices)]
        other._decoded = self._decoded
        return other

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    # ---- windows -------------------------------------------------------------------------
    def num_windows(self, length: int) -> int:
        return int(np.maximum(self.lengths - length + 1, 0).sum())

    def window(self, episode: int, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames (T, H, W, C) uint8 and actions (T-1,) int8 of one episode, copied out."""
        ref = self.episodes[episode]
        if start < 0 or start + length > ref.episode.length:
            raise IndexError(f"window {start}..{start + length - 1} outside episode {ref.episode.id} of "
                             f"{ref.episode.length} frames")
        decoded = self._shard(ref)
        row = int(decoded.batch_offsets[ref.episode.batch]) + start
        frames = np.array(decoded.frames[row : row + length])  # (T, H, W, C)
        actions = decoded.actions[row : row + length - 1].copy()  # (T-1,)
        return frames, actions

    def episode_frames(self, episode: int) -> np.ndarray:
        return self.window(episode, 0, int(self.lengths[episode]))[0]

    def sample_positions(self, rng: np.random.Generator, batch: int, length: int,
                         shares: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(episode, start) pairs drawn uniformly over all valid T-frame windows: two (B,) int arrays.

        With `shares` (one weight per dataset folder, in the order given, summing to 1), each window first draws
        its folder by those weights, then a window uniformly within it: a small data set (the trained agent's)
        mixed with a large one (the random agent's, replayed against forgetting) keeps the part of each batch it
        is given, instead of its part of the frames."""
        counts = np.maximum(self.lengths - length + 1, 0)
        if int(counts.sum()) == 0:
            raise DatasetError(f"no episode has {length} frames; the longest has {int(self.lengths.max())}")
        if shares is None:
            return _uniform_positions(rng, counts, batch)
        if len(shares) != len(self.manifests):
            raise ValueError(f"{len(shares)} shares for {len(self.manifests)} dataset folders")
        chosen = rng.choice(len(shares), size=batch, p=np.asarray(shares, dtype=np.float64))  # (B,) folder of each
        episodes, starts = np.zeros(batch, dtype=np.int64), np.zeros(batch, dtype=np.int64)
        for source in np.unique(chosen):
            mine = chosen == source
            own = np.where(self.sources == source, counts, 0)  # (E,) windows of this folder's episodes alone
            if int(own.sum()) == 0:
                split = f" in split {self.split!r}" if self.split else ""
                raise DatasetError(f"{self.manifests[source].root}: no episode{split} has {length} frames, yet its "
                                   f"share of each batch is {shares[source]:g}; give it a share of 0 or more data")
            episodes[mine], starts[mine] = _uniform_positions(rng, own, int(mine.sum()))
        return episodes, starts

    def sample_windows(self, rng: np.random.Generator, batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """`batch` windows drawn uniformly over all valid windows: (B, T, H, W, C) uint8 and (B, T-1) int8."""
        return self.windows(*self.sample_positions(rng, batch, length), length)

    def windows(self, episodes: Sequence[int], starts: Sequence[int], length: int) -> tuple[np.ndarray, np.ndarray]:
        """Frames (N, T, H, W, C) uint8 and actions (N, T-1) int8 of the windows (episodes[i], starts[i])."""
        frames = np.empty((len(episodes), length) + FRAME_SHAPE, dtype=np.uint8)
        actions = np.empty((len(episodes), length - 1), dtype=np.int8)
        for i, (episode, start) in enumerate(zip(episodes, starts)):
            frames[i], actions[i] = self.window(int(episode), int(start), length)
        return frames, actions

    def decode_all(self) -> int:
        """Decode every shard this store reads into the decoded cache now, as each one's first touch would later;
        returns how many shards. One process per node does this before training so the node's other workers only
        map the files (they share the cache folder) instead of each decoding the same shards at their first steps."""
        shards = {ref.shard.sha256: ref for ref in self.episodes}
        for ref in shards.values():
            self._shard(ref)
        return len(shards)

    # ---- decoding cache ------------------------------------------------------------------
    def _shard(self, ref: EpisodeRef) -> _DecodedShard:
        key = ref.shard.sha256
        if key not in self._decoded:
            self._decoded[key] = self._decode(ref.root / ref.shard.file, ref.shard)
        return self._decoded[key]

    def _decode(self, path: Path, shard: ShardInfo) -> _DecodedShard:
        if not path.is_file():
            raise DatasetError(
                f"{path}: shard listed in the manifest is missing; run `genie data repair {path.parent}`")
        batches = None
        cache = DecodedCache(self.cache_dir, cache_cap_bytes())
        cache_file = cache.path(shard.sha256)
        for attempt in range(2):  # another process may evict the file between finding and mapping it: decode again
            if cache_file.is_file():
                cache.touch(cache_file)
            else:
                if batches is None:
                    if file_sha256(path) != shard.sha256:
                        raise DatasetError(f"{path}: checksum differs from the manifest (damaged shard); run `genie "
                                           f"data repair {path.parent}`")
                    batches = self._read(path)
                self._write_decoded(cache, cache_file, shard, batches)
            try:
                frames = np.load(cache_file, mmap_mode="r")
                break
            except FileNotFoundError:
                if attempt:
                    raise DatasetError(f"{cache_file}: the decoded shard keeps disappearing (another process evicting "
                                       f"it?); give this run its own GENIE_CACHE_DIR") from None
        MAPPED_HERE.add(cache_file.name)
        if frames.shape != (shard.rows,) + FRAME_SHAPE:
            raise DatasetError(f"{cache_file}: decoded cache has shape {frames.shape}; delete it and retry")
        if batches is None:
            batches = self._read(path, columns=["action"])
        actions = np.concatenate([b.column("action").to_numpy() for b in batches]).astype(np.int8)
        offsets = np.concatenate([[0], np.cumsum([b.num_rows for b in batches])]).astype(np.int64)
        return _DecodedShard(frames=frames, actions=actions, batch_offsets=offsets)

    def _write_decoded(self, cache: DecodedCache, cache_file: Path, shard: ShardInfo,
                       batches: list[pa.RecordBatch]) -> None:
        """Decode a shard's frames into the cache under a temporary name, then rename it into place."""
        shape = (shard.rows,) + FRAME_SHAPE
        cache.make_room(int(np.prod(shape)) + 128)  # + the .npy header
        temp = self.cache_dir / f".{shard.sha256}.{uuid.uuid4().hex[:8]}.npy"
        try:
            out = np.lib.format.open_memmap(temp, mode="w+", dtype=np.uint8, shape=shape)
            cache.allocate(temp)
            row = 0
            for batch in batches:
                out[row : row + batch.num_rows] = frames_of(batch)
                row += batch.num_rows
            out.flush()
            del out
            os.replace(temp, cache_file)
        except BaseException:
            temp.unlink(missing_ok=True)  # a full disk, Ctrl-C: no temporary waits an hour for the next cleanup
            raise

    @staticmethod
    def _read(path: Path, columns: list[str] | None = None) -> list[pa.RecordBatch]:
        try:
            return read_shard_batches(path, columns)
        except (pa.ArrowInvalid, OSError) as err:
            raise DatasetError(f"{path}: cannot read shard ({err}); run `genie data repair {path.parent}`") from err
