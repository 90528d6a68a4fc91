"""`genie collect`: record CoinRun episodes with parallel Ray collectors into a dataset."""

from __future__ import annotations

import argparse
import time

ORDER = 1

# the fields of CollectConfig and of its CoinRunConfig that are options of `genie collect`, in the order its help
# shows them (the CoinRun options after --test-fraction)
COLLECT_OPTIONS = ("agent", "checkpoint", "episodes", "workers", "seed", "split", "val_fraction", "test_fraction",
                   "sticky_prob", "hold_prob", "hold_frames", "episodes_per_shard", "envs_per_shard", "cpus_per_worker")
ENV_OPTIONS = ("distribution_mode", "max_episode_frames", "num_levels", "start_level", "use_backgrounds")


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import DefaultsHelpFormatter, add_address, storage_location
    from cluster.dataclass_options import add_options
    from rl_agent.coinrun_env import CoinRunConfig
    from rl_agent.collection.config import CollectConfig

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
        formatter_class=DefaultsHelpFormatter,
    )
    collect.add_argument("--out", required=True, type=storage_location,
                         help="dataset folder or storage URI (s3://..., file://...), created if missing")
    add_options(collect, CollectConfig, COLLECT_OPTIONS[:8])
    add_options(collect, CoinRunConfig, ENV_OPTIONS)
    add_options(collect, CollectConfig, COLLECT_OPTIONS[8:])
    collect.add_argument("--verify", action="store_true",
                         help="also checksum the shards already listed (always: existence and size); bad ones "
                              "are made again")
    collect.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_address(collect)
    collect.set_defaults(handler=run_collect)


def run_collect(args: argparse.Namespace) -> int:
    from cluster.dataclass_options import config_from_args
    from cluster.ray_session import ray_session
    from rl_agent.coinrun_env import CoinRunConfig
    from rl_agent.collection import CollectConfig, collect_dataset
    from rl_agent.store.lock import folder_lock

    env = config_from_args(CoinRunConfig, args, ENV_OPTIONS)
    config = config_from_args(CollectConfig, args, COLLECT_OPTIONS, env=env)
    start = time.monotonic()
    with folder_lock(args.out, "genie collect"), ray_session(args.address):  # a busy --out is refused before Ray starts
        manifest = collect_dataset(config, args.out, show_progress=not args.no_progress, verify=args.verify)
    held = sum(len(s.episodes) for s in manifest.shards_of(config.collection))
    frames = sum(s.rows for s in manifest.shards_of(config.collection))
    print(f"collection {config.collection}: {held} episodes, {frames:,} frames in {args.out} "
          f"({time.monotonic() - start:.1f}s). Next: genie data verify {args.out}")
    return 0
