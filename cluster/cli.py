"""`genie`: one command line for every stage of genie-redux.

Each subcommand is a thin shell over a plain function that takes a typed config and paths,
so the CLI, the pipeline, Ray jobs and Tune trials all run the same code.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rl_agent.coinrun_env import DISTRIBUTION_MODES, CoinRunConfig, ConfigError
from rl_agent.store.errors import DatasetError

EPILOG = """\
typical flow:
  genie collect --agent random --episodes 200 --workers 2 --out data/random
  genie data verify data/random
  genie data stats data/random

Every command that uses Ray starts a local Ray instance unless --address (or RAY_ADDRESS)
names a cluster to join. Run `genie COMMAND --help` for the options of each command.
"""


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (e.g. 127.0.0.1:6379 or 'auto'); default: RAY_ADDRESS, else a local Ray instance")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genie",
        description="genie-redux: learn a playable world model of CoinRun (GenieRedux / GenieRedux-G) on Ray.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
    collect.add_argument("--out", required=True, type=Path, help="dataset folder (created if missing)")
    collect.add_argument("--agent", default="random", help="who plays: 'random' (uniform over the 15 actions)")
    collect.add_argument("--episodes", type=int, default=64, help="episodes the collection should hold in total")
    collect.add_argument("--workers", type=int, default=2, help="collector actors running in parallel")
    collect.add_argument("--seed", type=int, default=0, help="seed of levels and actions; names the collection")
    collect.add_argument("--split", default="auto", choices=["train", "val", "test", "auto"],
                         help="split of every episode; 'auto' assigns by a hash of the episode id")
    collect.add_argument("--val-fraction", type=float, default=0.05, help="share of episodes in 'val' for --split auto")
    collect.add_argument("--test-fraction", type=float, default=0.05, help="share of episodes in 'test' for --split auto")
    collect.add_argument("--distribution-mode", default="easy", choices=[m for m in DISTRIBUTION_MODES if m != "exploration"],
                         help="Procgen difficulty")
    collect.add_argument("--max-episode-frames", type=int, default=500, help="frame cap per episode, recorded as truncation")
    collect.add_argument("--num-levels", type=int, default=0, help="number of distinct levels (0 = unlimited)")
    collect.add_argument("--start-level", type=int, default=0, help="first level seed when --num-levels > 0")
    collect.add_argument("--no-backgrounds", action="store_true", help="plain backgrounds instead of Procgen's images")
    collect.add_argument("--sticky-prob", type=float, default=0.0, help="probability the random agent repeats its last action")
    collect.add_argument("--episodes-per-shard", type=int, default=128,
                         help="episodes per shard file; a shard is one collector's unit of work, so use a smaller "
                              "value to spread a small collection over all workers")
    collect.add_argument("--envs-per-worker", type=int, default=16, help="Procgen games each collector steps at once")
    collect.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray CPUs reserved by each collector")
    collect.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_address(collect)

    data = commands.add_parser("data", help="check and describe datasets", description="Check and describe episode datasets.")
    data_commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    verify = data_commands.add_parser(
        "verify",
        help="check checksums, schema, alignment invariants and the manifest",
        description=(
            "Check that every shard listed in DIR/manifest.json exists with its checksum, holds whole episodes "
            "in the episode schema (actions in range, -1 on the last row, one end flag), and that the manifest "
            "and the files agree. Exit code 1 and a message naming the bad file on the first problem."
        ),
    )
    verify.add_argument("dir", type=Path, help="dataset folder")
    stats = data_commands.add_parser(
        "stats",
        help="episodes, lengths, returns, success, actions, level progress; table + PNG",
        description=(
            "Describe a dataset: episodes and frames, bytes per frame on disk, episode length and return "
            "distributions, success rate, action histogram, and level progress (how far right into each level the "
            "agent got, in 64-px screens, measured by registering consecutive frames). Prints a table and "
            "writes a PNG figure."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    stats.add_argument("dir", type=Path, help="dataset folder")
    stats.add_argument("--plot", type=Path, default=None, help="PNG path (default: DIR/stats.png)")
    stats.add_argument("--progress-episodes", type=int, default=200, help="episodes sampled for level progress")
    stats.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    return parser


def run_collect(args: argparse.Namespace) -> int:
    from cluster.ray_session import ray_session
    from rl_agent.collection import CollectConfig, collect_dataset

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
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, env=env,
    )
    start = time.monotonic()
    with ray_session(args.address):
        manifest = collect_dataset(config, args.out, show_progress=not args.no_progress)
    held = sum(len(s.episodes) for s in manifest.shards_of(config.collection))
    frames = sum(s.rows for s in manifest.shards_of(config.collection))
    print(f"collection {config.collection}: {held} episodes, {frames:,} frames in {args.out} "
          f"({time.monotonic() - start:.1f}s). Next: genie data verify {args.out}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from rl_agent.store.verify import verify_dataset

    report = verify_dataset(args.dir)
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"OK {report.root}: {report.shards} shards, {report.episodes} episodes, {report.frames:,} frames verified")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from rl_agent.store.stats import compute_stats, format_table, plot_stats

    stats = compute_stats(args.dir, progress_episodes=args.progress_episodes)
    print(format_table(stats))
    plot = plot_stats(stats, args.plot or args.dir / "stats.png", title=f"dataset {args.dir}")
    if args.json:
        print(json.dumps(stats.summary(), indent=1))
    print(f"figure: {plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {"collect": run_collect, ("data", "verify"): run_verify, ("data", "stats"): run_stats}
    key = args.command if args.command != "data" else ("data", args.data_command)
    try:
        return handlers[key](args)
    except (ConfigError, DatasetError) as err:
        print(f"genie: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
