"""DDP's static graph against its default, on the `tiny` study's two-worker CPU training step.

The training loop wraps each stage in DistributedDataParallel (Ray Train's `prepare_model`) with
`static_graph=True` (world_model/training/loop.py): every step uses every parameter the same way, so DDP
may fix its gradient buckets after the first step. This prints what that buys, on real CoinRun windows:
two processes on gloo, 1 torch thread each (a tiny Ray Train worker), the dynamics from frames as the
tiny study trains GenieRedux-G (the tokenizer and the scroll registration inside every step) and the
tokenizer stage, each wrapped both ways in turns (default, static, default, ...: a busy machine slows
both alike); the median step time of the turns and the ratio. Random weights: a step's cost does not
depend on them. (2026-12-02, run Q's data, an idle 2-core machine: 1.06-1.13x for the dynamics, 1.10x for
the tokenizer; in `genie train` itself, 118 vs 100 frames/s for GenieRedux-G, 93 vs 86 for the tokenizer.)

    python benchmarks/bench_ddp.py [--data FOLDER] [--episodes 32] [--steps 30] [--turns 3]

Without --data a small random-agent dataset is collected first (the project's collection code).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_token_cache's collect and build_models
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository's packages

from cluster.ray_session import free_port


def worker(rank: int, world: int, port: int, data: str, stage: str, steps: int, turns: int, results) -> None:
    """One of the two processes: builds the stage as a run does, then times `steps` steps per wrapping per turn."""
    from bench_token_cache import build_models

    from world_model.config import load_preset
    from world_model.optim import Optimization
    from world_model.steps import DynamicsTrainee, TraineeLoss, accumulated_step
    from world_model.tokenizer import Tokenizer
    from world_model.training.windows import WindowPlan, open_stores

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    preset = load_preset("tiny")
    store = open_stores([data])[0]
    store.decode_all()
    torch.manual_seed(0)  # the same weights in both processes
    if stage == "dynamics":
        tokenizer, _, dynamics = build_models(preset, store, "ground_truth")
        trainee = DynamicsTrainee(dynamics, tokenizer, None)
        length = preset.dynamics.frames
    else:
        trainee = Tokenizer(preset.tokenizer).train()
        length = preset.tokenizer.frames
    optimization = Optimization(trainee, preset.optim)
    plan = WindowPlan(preset.batch_size, length, world, seed=0)
    models = {  # both wrap the same parameters; each step prepares only its own wrapper's gradient hooks
        "default": torch.nn.parallel.DistributedDataParallel(TraineeLoss(trainee), find_unused_parameters=False),
        "static": torch.nn.parallel.DistributedDataParallel(TraineeLoss(trainee), find_unused_parameters=False,
                                                             static_graph=True),
    }

    def run(model, first: int, count: int) -> float:  # seconds per step
        dist.barrier()
        start = time.perf_counter()
        for step in range(first, first + count):
            frames, actions = plan.worker_batch(store, step, rank)  # (B/2, T, H, W, C), (B/2, T-1)
            accumulated_step(model, optimization, torch.from_numpy(frames), torch.from_numpy(actions))
        dist.barrier()
        return (time.perf_counter() - start) / count

    for name, model in models.items():  # warm-up: first-call costs, DDP's first (recording) step
        run(model, 0, 2)
    times: dict[str, list[float]] = {name: [] for name in models}
    step = 2
    for _ in range(turns):
        for name, model in models.items():
            times[name].append(run(model, step, steps))
            step += steps
    if rank == 0:
        results.put(times)
    dist.destroy_process_group()


def main() -> None:
    from bench_token_cache import collect

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a dataset folder to read (default: collect a small one)")
    parser.add_argument("--episodes", type=int, default=32, help="episodes to collect without --data")
    parser.add_argument("--stages", default="dynamics,tokenizer", help="comma-separated: dynamics, tokenizer")
    parser.add_argument("--steps", type=int, default=30, help="train steps per turn")
    parser.add_argument("--turns", type=int, default=3, help="turns of each wrapping, alternated")
    args = parser.parse_args()

    data = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench-ddp-")) / "data"
    if not args.data:
        print(f"collecting {args.episodes} random-agent episodes into {data} ...", flush=True)
        collect(data, args.episodes)
    context = mp.get_context("spawn")
    print(f"data: {data}; preset tiny, global batch 8 over 2 processes (gloo), 1 torch thread each")
    for stage in args.stages.split(","):
        results = context.Queue()
        mp.start_processes(worker, args=(2, free_port(), str(data), stage, args.steps, args.turns, results),
                           nprocs=2, start_method="spawn")
        times = {name: statistics.median(values) for name, values in results.get().items()}
        print(f"\n{stage} ({'from frames: the tokenizer inside every step' if stage == 'dynamics' else 'frames'})")
        for name in ("default", "static"):
            print(f"  {name:8s} {1000 * times[name]:7.1f} ms/step")
        print(f"  static graph / default: {times['default'] / times['static']:.2f}x the steps/s")


if __name__ == "__main__":
    main()
