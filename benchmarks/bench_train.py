"""Training on Ray Train at `tiny` on CPU, every figure against a baseline measured in the same run:

1. loader: windows/s the per-worker loader (WindowPlan over the memory-mapped store) delivers vs
   the windows/s the model consumes, and vs a Ray Data pipeline producing the same windows;
2. overhead: Ray Train with 1 worker x 1 thread vs the bare single-process train step (1 thread);
3. scaling: Ray Train with 2 workers x 1 thread vs 1 worker x 1 thread (same global batch).

Ray Train figures are the steady-state frames/s the loop measures (start-up excluded: it is paid
once per run). Keep the machine otherwise idle.

    python benchmarks/bench_train.py [--stage tokenizer] [--steps 60] [--episodes 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import torch


def collect(out: Path, episodes: int) -> None:
    from rl_agent.coinrun_env import CoinRunConfig
    from rl_agent.collection import CollectConfig, collect_dataset

    config = CollectConfig(agent="random", episodes=episodes, seed=5, episodes_per_shard=16, envs_per_shard=8,
                           workers=2, env=CoinRunConfig(max_episode_frames=200), val_fraction=0.1, test_fraction=0.0)
    collect_dataset(config, out, show_progress=False)


def loader_speed(data: Path, batch: int, length: int, seconds: float = 3.0) -> float:
    from world_model.training.windows import WindowPlan, open_stores

    store = open_stores([str(data)])[0]
    plan = WindowPlan(batch, length, 1, seed=0)
    plan.worker_batch(store, 0, 0)  # decode the shards once (the cache), as a run does at its start
    step, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        plan.worker_batch(store, step, 0)
        step += 1
    return step * batch / (time.perf_counter() - start)


def ray_data_speed(data: Path, batch: int, length: int, windows: int = 4000) -> float:
    """The same random windows through Ray Data: shards -> episodes -> random windows -> batches."""
    import ray

    from rl_agent.store.manifest import Manifest
    from rl_agent.store.schema import frames_of
    from rl_agent.store.writer import read_shard_batches

    manifest = Manifest.load(data)
    files = [str(manifest.root / s.file) for s in manifest.shards]
    per_file = windows // len(files) + 1

    def windows_of(row: dict) -> list[dict]:
        rng = np.random.default_rng(abs(hash(row["path"])) % 2**32)
        out = []
        batches = read_shard_batches(Path(row["path"]))
        episodes = [(frames_of(b), b.column("action").to_numpy()) for b in batches]
        for _ in range(per_file):
            frames, actions = episodes[rng.integers(len(episodes))]
            if len(frames) < length:
                continue
            start = int(rng.integers(0, len(frames) - length + 1))
            out.append({"frames": frames[start:start + length], "actions": actions[start:start + length - 1]})
        return out

    dataset = ray.data.from_items([{"path": f} for f in files]).flat_map(windows_of)
    count, start = 0, time.perf_counter()
    for item in dataset.iter_batches(batch_size=batch, batch_format="numpy"):
        count += len(item["frames"])
    return count / (time.perf_counter() - start)


def bare_speed(data: Path, stage: str, steps: int, batch: int) -> float:
    """The single-process train step (the same windows, model and optimiser as a run), 1 thread."""
    from world_model.config import load_preset
    from world_model.lam import LatentActionModel
    from world_model.optim import Optimization
    from world_model.steps import train_step
    from world_model.tokenizer import Tokenizer
    from world_model.training.windows import WindowPlan, open_stores

    torch.set_num_threads(1)
    preset = load_preset("tiny")
    model = {"tokenizer": Tokenizer, "lam": LatentActionModel}[stage](preset.stage_config(stage))
    optimization = Optimization(model, preset.optim)
    store = open_stores([str(data)])[0]
    length = preset.stage_config(stage).frames
    plan = WindowPlan(batch, length, 1, seed=0)
    train_step(model, optimization, plan.worker_batch(store, 0, 0))  # warm-up
    start = time.perf_counter()
    for step in range(1, steps + 1):
        train_step(model, optimization, plan.worker_batch(store, step, 0))
    return steps * batch * length / (time.perf_counter() - start)


def ray_train_speed(data: Path, stage: str, steps: int, batch: int, workers: int, out: Path) -> float:
    from world_model.training.job import TrainJob
    from world_model.training.trainer import run_training

    job = TrainJob(stage=stage, data=[str(data)], out=str(out), steps=steps, batch_size=batch, workers=workers,
                   threads_per_worker=1, wandb=False,
                   overrides=["world_model.train.log_every=10", "world_model.train.val_every=100000",
                              "world_model.train.checkpoint_every=100000", "world_model.train.sample_every=100000",
                              "world_model.train.val_windows=8"])
    result = run_training(job, show_progress=False)
    return result.frames_per_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", default="tokenizer", choices=["tokenizer", "lam"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8, help="global batch (tiny preset: 8)")
    parser.add_argument("--episodes", type=int, default=64)
    args = parser.parse_args()

    import ray

    from world_model.config import load_preset

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    os.environ.setdefault("GENIE_CACHE_DIR", str(work / "cache"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        collect(work / "data", args.episodes)
        length = load_preset("tiny").stage_config(args.stage).frames
        bare = bare_speed(work / "data", args.stage, args.steps, args.batch)
        consumed = bare / length
        delivered = loader_speed(work / "data", args.batch, length)
        via_ray_data = ray_data_speed(work / "data", args.batch, length)
        one = ray_train_speed(work / "data", args.stage, args.steps, args.batch, 1, work / "one")
        two = ray_train_speed(work / "data", args.stage, args.steps, args.batch, 2, work / "two")
    finally:
        ray.shutdown()
    print(f"\n{args.stage} at tiny, global batch {args.batch} windows of {length} frames, CPU, 1 thread per worker")
    print(f"loader:  per-worker loader {delivered:10,.0f} windows/s vs model consumption {consumed:8,.1f} windows/s "
          f"-> {delivered / consumed:,.0f}x headroom")
    print(f"         Ray Data pipeline {via_ray_data:10,.0f} windows/s -> per-worker loader is "
          f"{delivered / via_ray_data:.1f}x faster")
    print(f"overhead: bare train step {bare:8.1f} frames/s; Ray Train 1 worker {one:8.1f} frames/s "
          f"-> Ray Train overhead {100 * (1 - one / bare):+.1f}% (target <= 10%)")
    print(f"scaling: Ray Train 2 workers {two:8.1f} frames/s vs 1 worker {one:8.1f} -> {two / one:.2f}x "
          "(target >= 1.6x)")


if __name__ == "__main__":
    main()
