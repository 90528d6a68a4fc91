"""Evaluation throughput (test episodes/s) at `tiny` on CPU with 1 vs 2 Ray workers, in one run.

The world model is an untrained `tiny` GenieRedux-G (speed does not depend on the weights); the
test set is a fresh random-agent CoinRun collection. Each evaluation is end to end as `genie eval`
runs it (actors start, load the model, evaluate fixed batches): autoregressive + teacher-forced
rollouts, ΔtPSNR and the controllability rollouts. 10 MaskGIT steps by default (not the paper's 25)
so that the benchmark runs in a few minutes on 2 cores; cost grows about linearly with the steps.
Both runs must give identical numbers (same seed), which is checked.

    python benchmarks/bench_eval.py [--episodes 8] [--horizon 10] [--maskgit-steps 10]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--context", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--maskgit-steps", type=int, default=10)
    parser.add_argument("--control-steps", type=int, default=2)
    args = parser.parse_args()

    import ray
    import torch

    from rl_agent.coinrun_env import CoinRunConfig
    from rl_agent.collection import CollectConfig, collect_dataset
    from world_model.config import load_preset
    from world_model.dynamics import Dynamics
    from world_model.evaluation import EvalConfig, evaluate
    from world_model.runs import export_world_model
    from world_model.tokenizer import Tokenizer

    torch.manual_seed(0)
    preset = load_preset("tiny")
    scratch = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    os.environ.setdefault("GENIE_CACHE_DIR", str(scratch / "cache"))
    run = export_world_model(scratch / "run", Tokenizer(preset.tokenizer), Dynamics(preset.dynamics))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        data = scratch / "test"
        collect_dataset(CollectConfig(agent="random", episodes=args.episodes, seed=5, episodes_per_shard=args.episodes,
                                      envs_per_shard=4, workers=1, split="test",
                                      env=CoinRunConfig(max_episode_frames=80)), data, show_progress=False)
        rates, results = {}, {}
        for workers in (1, 2):
            config = EvalConfig(model=str(run), data=str(data), context=args.context, horizon=args.horizon,
                                maskgit_steps=args.maskgit_steps, episodes=args.episodes, workers=workers,
                                batch_size=args.batch_size, control_steps=args.control_steps, samples=0,
                                show_progress=False)
            start = time.perf_counter()
            results[workers] = evaluate(config)
            seconds = time.perf_counter() - start
            episodes = len(results[workers]["episodes"])
            rates[workers] = episodes / seconds
            print(f"workers={workers}: {episodes} episodes in {seconds:.1f}s = {rates[workers]:.3f} episodes/s "
                  f"(context {args.context}, horizon {args.horizon}, MaskGIT {args.maskgit_steps}, batch "
                  f"{args.batch_size})")
    finally:
        ray.shutdown()
    same = results[1]["metrics"] == results[2]["metrics"]
    print(f"speed-up 2 vs 1 workers: {rates[2] / rates[1]:.2f}x on {os.cpu_count()} cores; identical numbers: {same}")


if __name__ == "__main__":
    main()
