"""PPO speed on this machine, and trained-agent collection vs random-agent collection, in one run.

1. PPO (the `tiny` preset's settings, or --preset): env steps/s over a few training iterations,
   split into sampling and learning time from RLlib's own timers.
2. Collection: `collect_dataset` frames/s with the random agent vs the PPO agent (the
   checkpoint trained in step 1, or --checkpoint), same workers, envs and episode count.

    python benchmarks/bench_agent.py [--iterations 3] [--episodes 64] [--checkpoint RUN]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--checkpoint", default=None,
                        help="a trained run to collect with (default: the one trained here)")
    args = parser.parse_args()

    import ray

    from cluster.presets import load_preset
    from rl_agent.collection import CollectConfig, collect_dataset
    from rl_agent.ppo_config import PPOSettings, build_ppo_config

    settings = PPOSettings.from_dict(load_preset(args.preset)["agent"])
    scratch = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        algo = build_ppo_config(settings).build_algo()
        algo.train()  # warm-up: first iteration pays for imports and env creation
        steps, sample, learn, wall = 0, 0.0, 0.0, 0.0
        for _ in range(args.iterations):
            began = time.perf_counter()
            result = algo.train()
            wall += time.perf_counter() - began
            steps += int(result["env_runners"]["num_env_steps_sampled"])
            timers = result["timers"]
            sample, learn = timers["env_runner_sampling_timer"], timers["learner_update_timer"]
        checkpoint = args.checkpoint or str(scratch / "ckpt")
        if args.checkpoint is None:
            algo.save_to_path(checkpoint)
        algo.stop()
        share = sample / (sample + learn)
        print(f"PPO ({args.preset}: {settings.num_env_runners} runners x {settings.envs_per_runner} envs, batch "
              f"{settings.train_batch_size}, {settings.epochs} epochs, channels {list(settings.channels)}): "
              f"{steps / wall:,.0f} env steps/s; per iteration sampling {sample:.1f}s ({share:.0%}), learning "
              f"{learn:.1f}s ({1 - share:.0%})")

        rates = {}
        for agent in ("random", "ppo"):
            config = CollectConfig(agent=agent, checkpoint=checkpoint if agent == "ppo" else None,
                                   episodes=args.episodes,
                                   episodes_per_shard=max(1, args.episodes // 4), envs_per_shard=16, workers=2)
            start = time.perf_counter()
            manifest = collect_dataset(config, scratch / agent, show_progress=False)
            rates[agent] = manifest.num_frames / (time.perf_counter() - start)
            print(f"collect {agent}: {manifest.num_frames:,} frames, {rates[agent]:,.0f} frames/s")
        print(f"RATIO PPO-agent collection / random-agent collection = {rates['ppo'] / rates['random']:.2f}x")
    finally:
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
