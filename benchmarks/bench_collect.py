"""Collection throughput: `genie collect` with 2 workers vs bare Procgen stepping, measured in one run.

Baseline: one process stepping a `ProcgenGym3Env` of the same total number of envs with
uniform random actions (no recording). Measured: frames per second that `collect_dataset`
commits to disk (compressed, checksummed, in the manifest), and that figure including a
full `verify` pass. Ray start-up is excluded (paid once per command). Prints the ratios.

    python benchmarks/bench_collect.py [--workers 2] [--envs-per-worker 16] [--episodes 768]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")


def bare_stepping_fps(num_envs: int, seconds: float) -> float:
    from procgen import ProcgenGym3Env

    env = ProcgenGym3Env(num=num_envs, env_name="coinrun", num_levels=0, distribution_mode="easy", rand_seed=0)
    rng = np.random.default_rng(0)
    frames, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.act(rng.integers(0, 15, num_envs).astype(np.int32))
        _, obs, _ = env.observe()
        frames += num_envs
    return frames / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--envs-per-worker", type=int, default=16)
    parser.add_argument("--episodes", type=int, default=768)
    parser.add_argument("--episodes-per-shard", type=int, default=128)
    parser.add_argument("--bare-seconds", type=float, default=10.0)
    args = parser.parse_args()

    import ray

    from rl_agent.collection import CollectConfig, collect_dataset
    from rl_agent.store.verify import verify_dataset

    num_envs = args.workers * args.envs_per_worker
    bare = bare_stepping_fps(num_envs, args.bare_seconds)
    print(f"bare ProcgenGym3Env, {num_envs} envs, 1 process: {bare:,.0f} frames/s")

    ray.init(num_cpus=max(2, args.workers), include_dashboard=False, log_to_driver=False)
    out = Path(tempfile.mkdtemp(prefix="bench-collect-")) / "data"
    config = CollectConfig(agent="random", episodes=args.episodes, seed=0, workers=args.workers,
                           envs_per_shard=args.envs_per_worker, episodes_per_shard=args.episodes_per_shard)
    try:
        start = time.perf_counter()
        manifest = collect_dataset(config, out, show_progress=False)
        collect_seconds = time.perf_counter() - start
        start = time.perf_counter()
        verify_dataset(out)
        verify_seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
    frames = manifest.num_frames
    size = sum(s.bytes for s in manifest.shards)
    collect_fps = frames / collect_seconds
    verified_fps = frames / (collect_seconds + verify_seconds)
    print(f"genie collect, {args.workers} workers x {args.envs_per_worker} envs: {frames:,} frames in "
          f"{collect_seconds:.1f}s = {collect_fps:,.0f} frames/s written; with verify {verified_fps:,.0f} frames/s; "
          f"{size / frames:,.0f} B/frame")
    print(f"RATIO collect/bare = {collect_fps / bare:.2f}x   (collect+verify)/bare = {verified_fps / bare:.2f}x   "
          "target >= 0.5x")
    shutil.rmtree(out.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
