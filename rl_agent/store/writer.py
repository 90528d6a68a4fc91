"""Atomic shard writer: a shard appears under its final name only once it is complete and synced.

Shards are Arrow IPC files, one record batch per episode, buffers compressed with zstd
(chosen by `benchmarks/bench_store.py`: ~1 KB/frame, and one episode can be read without
touching the rest of the file). The file is written as a hidden temp file and renamed.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Sequence

import pyarrow as pa

from rl_agent.store.manifest import EpisodeInfo, ShardInfo
from rl_agent.store.schema import EPISODE_SCHEMA

SHARD_SUFFIX = ".arrow"
TEMP_MARKER = ".tmp-"
COMPRESSION_LEVEL = 3


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_temp_file(name: str) -> bool:
    return name.startswith(".") and TEMP_MARKER in name


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


def write_shard(
    out_dir: Path,
    file_name: str,
    batches: Sequence[pa.RecordBatch],
    splits: Sequence[str],
    collection: str,
    index: int,
) -> ShardInfo:
    """Write whole episodes to `out_dir/file_name` atomically and describe them for the manifest."""
    if not batches:
        raise ValueError("a shard needs at least one episode")
    final = out_dir / file_name
    temp = out_dir / f".{file_name}{TEMP_MARKER}{uuid.uuid4().hex[:8]}"
    options = pa.ipc.IpcWriteOptions(compression=pa.Codec("zstd", COMPRESSION_LEVEL))
    try:
        with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, EPISODE_SCHEMA, options=options) as writer:
            for batch in batches:
                writer.write_batch(batch)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        sha = file_sha256(temp)
        os.replace(temp, final)
    finally:
        if temp.exists():
            temp.unlink()
    episodes = [episode_info(b, i, s) for i, (b, s) in enumerate(zip(batches, splits))]
    return ShardInfo(
        file=file_name,
        collection=collection,
        index=index,
        sha256=sha,
        bytes=final.stat().st_size,
        rows=sum(b.num_rows for b in batches),
        agent=batches[0].column("agent")[0].as_py(),
        episodes=episodes,
    )


def read_shard_batches(path: Path, columns: Sequence[str] | None = None) -> list[pa.RecordBatch]:
    """Episodes of a shard file, optionally only some columns (raises pyarrow errors on damaged files)."""
    options = None
    if columns is not None:
        options = pa.ipc.IpcReadOptions(included_fields=[EPISODE_SCHEMA.get_field_index(c) for c in columns])
    with pa.OSFile(str(path), "rb") as source:  # read, not mmap: batches outlive the file handle
        reader = pa.ipc.open_file(source, options=options)
        return [reader.get_batch(i) for i in range(reader.num_record_batches)]
