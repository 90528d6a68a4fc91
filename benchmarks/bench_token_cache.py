"""Dynamics training windows/s from the token cache vs from frames, on real CoinRun windows, `tiny` preset.

From frames, every step runs the frozen tokenizer over its windows (and, for GenieRedux, the frozen
LAM; for the preset's scrolled copy path, the scroll registration and the tokenizer again over each
frame's shifted predecessor) before the dynamics' own forward/backward; from the token cache
(world_model/token_cache.py) it reads all of those encoded once. Both paths train the same model on
the same windows (WindowPlan, seeded per step) with the in-process `train_step` a Ray Train worker
runs; they are measured in turns (frames, cache, frames, cache, ...) so a busy machine slows both
alike, and the median of the turns is printed with the ratio. The one-time cost of building the
cache is printed too. Random weights (the cost of a step does not depend on them).

    python benchmarks/bench_token_cache.py [--data FOLDER] [--episodes 32] [--steps 20] [--turns 3] [--threads 1]

Without --data a small random-agent dataset is collected first (the project's collection code).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch


def collect(out: Path, episodes: int) -> None:
    import ray

    from rl_agent.coinrun_env import CoinRunConfig
    from rl_agent.collection import CollectConfig, collect_dataset

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        config = CollectConfig(agent="random", episodes=episodes, seed=5, episodes_per_shard=16, envs_per_shard=8,
                               workers=2, env=CoinRunConfig(max_episode_frames=200), val_fraction=0.1,
                               test_fraction=0.0)
        collect_dataset(config, out, show_progress=False)
    finally:
        ray.shutdown()


def build_models(preset, store, actions: str):
    """The frozen tokenizer (codebook seeded from real frames, as after training), the frozen LAM for
    GenieRedux, and a fresh dynamics: what `genie train dynamics` builds at the preset's sizes."""
    from world_model.dynamics import Dynamics
    from world_model.lam import LatentActionModel
    from world_model.tokenizer import Tokenizer
    from world_model.training.job import TrainJob
    from world_model.training.trainee import dynamics_config

    torch.manual_seed(0)
    tokenizer = Tokenizer(preset.tokenizer).train()
    with torch.no_grad():
        tokenizer(torch.as_tensor(store.window(0, 0, preset.tokenizer.frames)[0][None]).float() / 255)
    lam = LatentActionModel(preset.lam) if actions == "latent" else None
    job = TrainJob(stage="dynamics", data=[str(store.manifests[0].root)], out=tempfile.mkdtemp(), tokenizer="unused",
                   lam="unused" if lam else None, actions=actions, wandb=False)
    return tokenizer.eval(), lam, Dynamics(dynamics_config(job, preset, tokenizer, lam))


def windows_per_s(trainee, optimization, next_batch, first_step: int, steps: int, batch: int) -> float:
    from world_model.steps import train_step

    start = time.perf_counter()
    for step in range(first_step, first_step + steps):
        torch.manual_seed(step)
        train_step(trainee, optimization, next_batch(step))
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    from cluster.arguments import conditioning

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a dataset folder to read (default: collect a small one)")
    parser.add_argument("--episodes", type=int, default=32, help="episodes to collect without --data")
    parser.add_argument("--actions", type=conditioning, choices=["ground_truth", "latent", "both"], default="both",
                        help="GenieRedux-G (ground_truth: the agent's actions), GenieRedux (latent: the frame path "
                             "also runs the LAM), or both; 'true', the older word for ground_truth, is still accepted")
    parser.add_argument("--steps", type=int, default=20, help="train steps per turn")
    parser.add_argument("--turns", type=int, default=3, help="turns of each path, alternated")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a tiny Ray Train worker has 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from world_model.config import load_preset
    from world_model.optim import Optimization
    from world_model.steps import DynamicsTrainee
    from world_model.token_cache import ensure_token_cache
    from world_model.training.windows import WindowPlan, open_stores

    work = Path(tempfile.mkdtemp(prefix="bench-token-cache-"))
    data = Path(args.data) if args.data else work / "data"
    if not args.data:
        print(f"collecting {args.episodes} random-agent episodes into {data} ...", flush=True)
        collect(data, args.episodes)
    preset = load_preset("tiny")
    store = open_stores([str(data)])[0]
    length = preset.dynamics.frames
    print(f"data: {data} ({len(store)} training episodes, {store.num_frames:,} frames); preset tiny: batch "
          f"{preset.batch_size} windows of {length} frames; {args.threads} torch thread(s); "
          f"{torch.get_num_threads()} used")
    store.episode_frames(0)  # decode the shards (the store's own cache), as a run does before it starts
    for episode in range(len(store)):
        store.episode_frames(episode)

    for actions in (["ground_truth", "latent"] if args.actions == "both" else [args.actions]):
        name = "GenieRedux-G (the agent's actions)" if actions == "ground_truth" else "GenieRedux (latent actions)"
        tokenizer, lam, dynamics = build_models(preset, store, actions)
        began = time.perf_counter()
        cache = ensure_token_cache(work / f"cache-{actions}", tokenizer, lam, store, progress=False,
                                   note=lambda text: None, **dynamics.cached_references())
        build_s = time.perf_counter() - began
        trainee = DynamicsTrainee(dynamics, tokenizer, lam)
        optimization = Optimization(trainee, preset.optim)
        plan = WindowPlan(preset.batch_size, length, 1, seed=0)
        latent = actions == "latent"
        paths = {
            "frames": lambda step: plan.worker_batch(store, step, 0),
            "cache": lambda step: plan.worker_tokens(cache, store, step, 0, latent),
        }
        for path in paths.values():  # warm-up (allocations, first-call costs)
            windows_per_s(trainee, optimization, path, 0, 2, plan.batch)
        speeds: dict[str, list[float]] = {"frames": [], "cache": []}
        step = 2
        for _ in range(args.turns):
            for key, path in paths.items():
                speeds[key].append(windows_per_s(trainee, optimization, path, step, args.steps, plan.batch))
                step += args.steps
        frames_speed, cache_speed = (statistics.median(speeds[k]) for k in ("frames", "cache"))
        print(f"\n{name}")
        print(f"  building the cache: {build_s:.1f} s for {store.num_frames:,} frames "
              f"({store.num_frames / build_s:,.0f} frames/s, once per run)")
        print(f"  from frames:     {frames_speed:7.1f} windows/s  (turns: "
              f"{', '.join(f'{s:.1f}' for s in speeds['frames'])})")
        print(f"  from the cache:  {cache_speed:7.1f} windows/s  (turns: "
              f"{', '.join(f'{s:.1f}' for s in speeds['cache'])})")
        print(f"  ratio cache / frames: {cache_speed / frames_speed:.2f}x; the cache pays for itself after "
              f"~{build_s / max(1e-9, plan.batch / frames_speed - plan.batch / cache_speed):.0f} steps")


if __name__ == "__main__":
    main()
