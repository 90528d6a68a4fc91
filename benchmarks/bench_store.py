"""Episode store: bytes per frame, and random T=16 window reads vs copying from a numpy array in RAM.

Measured in one run on the same episodes and the same window positions:
  * baseline: windows copied out of one (N, 64, 64, 3) uint8 array held in RAM;
  * `EpisodeStore.sample_windows` path (decoded memory-mapped cache, warm), and the cold first
    pass that decodes the shards into the cache;
  * reading each window straight from the compressed shard (no cache), which is why the cache exists;
  * bytes per frame of the shards, and of alternative encodings (Parquet zstd, Arrow IPC lz4).

    python benchmarks/bench_store.py [--data DIR] [--episodes 64] [--windows 4000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

warnings.filterwarnings("ignore")
T = 16


def ensure_dataset(path: Path | None, episodes: int) -> Path:
    if path is not None:
        return path
    import ray

    from rl_agent.collection import CollectConfig, collect_dataset

    out = Path(tempfile.mkdtemp(prefix="bench-store-")) / "data"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        collect_dataset(CollectConfig(episodes=episodes, episodes_per_shard=16, workers=2), out, show_progress=False)
    finally:
        ray.shutdown()
    return out


def timed(fn, n: int) -> float:
    start = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="existing dataset (default: collect one)")
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--windows", type=int, default=4000)
    args = parser.parse_args()

    from rl_agent.store import EpisodeStore
    from rl_agent.store.manifest import Manifest
    from rl_agent.store.schema import EPISODE_SCHEMA, frames_of
    from rl_agent.store.writer import read_shard_batches

    data = ensure_dataset(args.data, args.episodes)
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    manifest = Manifest.load(data)
    frames_total = manifest.num_frames
    print(f"dataset {data}: {manifest.num_episodes} episodes, {frames_total:,} frames")

    # --- positions shared by every method
    store = EpisodeStore(data, cache_dir=cache)
    rng = np.random.default_rng(0)
    episodes, starts = store.sample_positions(rng, args.windows, T)

    # --- baseline: the same frames in one RAM array
    start = time.perf_counter()
    # (N, H, W, C), also warms the cache
    all_frames = np.concatenate([store.episode_frames(i) for i in range(len(store))])
    cold_decode_fps = frames_total / (time.perf_counter() - start)
    offsets = np.concatenate([[0], np.cumsum(store.lengths)])
    rows = offsets[episodes] + starts

    def ram_copy(n):
        for i in range(n):
            r = rows[i % len(rows)]
            _ = all_frames[r : r + T].copy()

    def store_read(n):
        for i in range(n):
            j = i % len(rows)
            store.window(int(episodes[j]), int(starts[j]), T)

    shard_paths = {ref.shard.sha256: data / ref.shard.file for ref in store.episodes}

    def compressed_read(n):
        for i in range(n):
            ref = store.episodes[int(episodes[i % len(rows)])]
            with pa.OSFile(str(shard_paths[ref.shard.sha256]), "rb") as source:
                batch = pa.ipc.open_file(source).get_batch(ref.episode.batch)
            s = int(starts[i % len(rows)])
            _ = frames_of(batch)[s : s + T].copy()

    ram = timed(ram_copy, args.windows)
    warm = timed(store_read, args.windows)
    direct = timed(compressed_read, max(200, args.windows // 20))
    print(f"RAM copy        {ram:>10,.0f} windows/s (T={T})")
    print(f"EpisodeStore    {warm:>10,.0f} windows/s  warm cache   RATIO {warm / ram:.2f}x  (target >= 0.25x)")
    print(f"compressed file {direct:>10,.0f} windows/s  no cache     RATIO {direct / ram:.3f}x")
    print(f"cold decode     {cold_decode_fps:>10,.0f} frames/s into the cache (once per shard per machine)")

    # --- bytes per frame, ours vs alternatives on the same episodes
    size = sum(s.bytes for s in manifest.shards)
    print(f"bytes/frame     Arrow IPC zstd-3 (ours): {size / frames_total:,.0f} B  (raw 12,288 B)")
    batches = [b for s in manifest.shards for b in read_shard_batches(data / s.file)]
    table = pa.Table.from_batches(batches, schema=EPISODE_SCHEMA)
    scratch = Path(tempfile.mkdtemp(prefix="bench-formats-"))
    def write_ipc(path: Path, codec: pa.Codec) -> None:
        with pa.ipc.new_file(str(path), EPISODE_SCHEMA, options=pa.ipc.IpcWriteOptions(compression=codec)) as writer:
            for batch in batches:
                writer.write_batch(batch)

    for name, write in [
        ("Arrow IPC zstd-3", lambda p: write_ipc(p, pa.Codec("zstd", 3))),
        ("Arrow IPC lz4", lambda p: write_ipc(p, pa.Codec("lz4"))),
        ("Parquet zstd-3", lambda p: pq.write_table(table, p, compression="zstd", compression_level=3)),
    ]:
        target = scratch / name.replace(" ", "_")
        start = time.perf_counter()
        write(target)
        seconds = time.perf_counter() - start
        print(f"bytes/frame     {name}: {os.path.getsize(target) / frames_total:,.0f} B  (write "
              f"{frames_total / seconds:,.0f} frames/s)")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    if args.data is None:
        shutil.rmtree(data.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
