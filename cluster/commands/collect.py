"""`genie collect`: record CoinRun episodes with parallel Ray collectors into a dataset."""

from __future__ import annotations

import argparse
import time

ORDER = 1


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import fraction, non_negative_int, positive_float, positive_int, storage_location
    from cluster.arguments import add_address
    from rl_agent.coinrun_env import DISTRIBUTION_MODES

    collect = commands.add_parser(
        "collect",
        help="record CoinRun episodes with parallel Ray collectors into an Arrow dataset",
        description=(
            "Record whole CoinRun episodes (64x64 RGB frames, the agent's actions, rewards, level seeds) with "
            "--workers Ray actors, each stepping its own vector of Procgen games and writing its own shards. "
            "The data depend only on --seed and the data options, not on --workers. Running the same command "
            "again into the same --out completes an interrupted collection without duplicates; a larger "
            "--episodes extends it."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    collect.add_argument("--out", required=True, type=storage_location,
                         help="dataset folder or storage URI (s3://..., file://...), created if missing")
    collect.add_argument("--agent", default="random",
                         help="who plays: 'random' (uniform over the 15 actions) or 'ppo' (needs --checkpoint)")
    collect.add_argument("--checkpoint", default=None, type=storage_location,
                         help="for --agent ppo: a run folder of `genie agent train` (its latest checkpoint) or "
                              "a checkpoint")
    collect.add_argument("--episodes", type=positive_int, default=64,
                         help="episodes the collection should hold in total")
    collect.add_argument("--workers", type=positive_int, default=2, help="collector actors running in parallel")
    collect.add_argument("--seed", type=non_negative_int, default=0,
                         help="seed of levels and actions; names the collection")
    collect.add_argument("--split", default="auto", choices=["train", "val", "test", "auto"],
                         help="split of every episode; 'auto' assigns by a hash of the episode id")
    collect.add_argument("--val-fraction", type=fraction, default=0.05,
                         help="share of episodes in 'val' for --split auto")
    collect.add_argument("--test-fraction", type=fraction, default=0.05,
                         help="share of episodes in 'test' for --split auto")
    collect.add_argument("--distribution-mode", default="easy",
                         choices=[m for m in DISTRIBUTION_MODES if m != "exploration"], help="Procgen difficulty")
    collect.add_argument("--max-episode-frames", type=positive_int, default=500,
                         help="frame cap per episode, recorded as truncation")
    collect.add_argument("--num-levels", type=non_negative_int, default=0,
                         help="number of distinct levels (0 = unlimited)")
    collect.add_argument("--start-level", type=non_negative_int, default=0,
                         help="first level seed when --num-levels > 0")
    collect.add_argument("--no-backgrounds", action="store_true", help="plain backgrounds instead of Procgen's images")
    collect.add_argument("--sticky-prob", type=fraction, default=0.0,
                         help="probability the random agent repeats its last action")
    collect.add_argument("--episodes-per-shard", type=positive_int, default=128,
                         help="episodes per shard file; a shard is one collector's unit of work, so use a smaller "
                              "value to spread a small collection over all workers")
    collect.add_argument("--envs-per-worker", type=positive_int, default=16,
                         help="Procgen games each collector steps at once")
    collect.add_argument("--cpus-per-worker", type=positive_float, default=1.0,
                         help="Ray CPUs reserved by each collector")
    collect.add_argument("--verify", action="store_true",
                         help="also checksum the shards already listed (always: existence and size); bad ones "
                              "are made again")
    collect.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_address(collect)
    collect.set_defaults(handler=run_collect)


def run_collect(args: argparse.Namespace) -> int:
    from cluster.ray_session import ray_session
    from rl_agent.coinrun_env import CoinRunConfig
    from rl_agent.collection import CollectConfig, collect_dataset
    from rl_agent.store.lock import folder_lock

    env = CoinRunConfig(
        distribution_mode=args.distribution_mode,
        max_episode_frames=args.max_episode_frames,
        num_levels=args.num_levels,
        start_level=args.start_level,
        use_backgrounds=not args.no_backgrounds,
    )
    config = CollectConfig(
        agent=args.agent, episodes=args.episodes, seed=args.seed, split=args.split,
        val_fraction=args.val_fraction, test_fraction=args.test_fraction, sticky_prob=args.sticky_prob,
        episodes_per_shard=args.episodes_per_shard, envs_per_shard=args.envs_per_worker,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, env=env, checkpoint=args.checkpoint,
    )
    start = time.monotonic()
    with folder_lock(args.out, "genie collect"), ray_session(args.address):  # a busy --out is refused before Ray starts
        manifest = collect_dataset(config, args.out, show_progress=not args.no_progress, verify=args.verify)
    held = sum(len(s.episodes) for s in manifest.shards_of(config.collection))
    frames = sum(s.rows for s in manifest.shards_of(config.collection))
    print(f"collection {config.collection}: {held} episodes, {frames:,} frames in {args.out} "
          f"({time.monotonic() - start:.1f}s). Next: genie data verify {args.out}")
    return 0
