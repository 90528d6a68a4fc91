"""Atomic shard writer: a shard appears under its final name only once it is complete and synced.

Shards are Arrow IPC files, one record batch per episode, buffers compressed with zstd
(chosen by `benchmarks/bench_store.py`: ~1 KB/frame, and one episode can be read without
touching the rest of the file). The file is written as a hidden temp file and renamed.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from genie_common.atomic import TEMP_MARKER, is_temp_file, temp_name  # noqa: F401 - the first two re-exported
from rl_agent.store.manifest import EpisodeInfo, ShardInfo
from rl_agent.store.schema import EPISODE_SCHEMA

SHARD_SUFFIX = ".arrow"
COMPRESSION_LEVEL = 3


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def episode_info(batch: pa.RecordBatch, batch_index: int, split: str) -> EpisodeInfo:
    rewards = batch.column("reward").to_numpy()
    return EpisodeInfo(
        id=batch.column("episode_id")[0].as_py(),
        length=batch.num_rows,
        ret=float(rewards.sum(dtype="float64")),
        level_seed=int(batch.column("level_seed")[0].as_py()),
        terminated=bool(batch.column("terminated")[-1].as_py()),
        truncated=bool(batch.column("truncated")[-1].as_py()),
        split=split,
        batch=batch_index,
    )


class ShardWriter:
    """Streams whole episodes into a hidden temp file; `commit()` syncs, checksums and renames it into place.

    Episodes are written (and compressed) as soon as they end, so a collector holds at most one
    episode per env slot in memory. Leaving the `with` block without `commit()` deletes the temp file.
    """

    def __init__(self, out_dir: Path, file_name: str, collection: str, index: int) -> None:
        self.out_dir, self.file_name, self.collection, self.index = out_dir, file_name, collection, index
        self._temp = out_dir / temp_name(file_name)
        self._episodes: list[EpisodeInfo] = []
        self._rows = 0
        self._agent = ""
        self._sink = None
        self._writer = None

    def __enter__(self) -> "ShardWriter":
        options = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", COMPRESSION_LEVEL))
        self._sink = pa.OSFile(str(self._temp), "wb")
        self._writer = pa.ipc.new_file(self._sink, EPISODE_SCHEMA, options=options)
        return self

    def write_episode(self, batch: pa.RecordBatch, split: str) -> None:
        self._writer.write_batch(batch)
        self._episodes.append(episode_info(batch, len(self._episodes), split))
        self._rows += batch.num_rows
        self._agent = self._agent or batch.column("agent")[0].as_py()

    def commit(self) -> ShardInfo:
        if not self._episodes:
            raise ValueError("a shard needs at least one episode")
        self._writer.close()
        self._sink.close()
        with open(self._temp, "rb+") as handle:
            os.fsync(handle.fileno())
        sha = file_sha256(self._temp)
        final = self.out_dir / self.file_name
        os.replace(self._temp, final)
        return ShardInfo(file=self.file_name, collection=self.collection, index=self.index, sha256=sha,
                         bytes=final.stat().st_size, rows=self._rows, agent=self._agent, episodes=self._episodes)

    def __exit__(self, *exc_info) -> None:
        if self._sink is not None and not self._sink.closed:
            self._sink.close()
        self._temp.unlink(missing_ok=True)  # never committed: the temp file must not outlive the writer


def read_shard_batches(path: Path, columns: Sequence[str] | None = None) -> list[pa.RecordBatch]:
    """Episodes of a shard file, optionally only some columns (raises pyarrow errors on damaged files)."""
    options = None
    if columns is not None:
        options = pa.ipc.IpcReadOptions(included_fields=[EPISODE_SCHEMA.get_field_index(c) for c in columns])
    with pa.OSFile(str(path), "rb") as source:  # read, not mmap: batches outlive the file handle
        reader = pa.ipc.open_file(source, options=options)
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]
