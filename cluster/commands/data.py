"""`genie data verify|repair|stats|compare`: check, mend and describe episode datasets."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genie_common.errors import ConfigError, DatasetError

ORDER = 2


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import DefaultsHelpFormatter, add_address, non_negative_int, output_file, storage_location
    from cluster.dataclass_options import add_options
    from rl_agent.collection.config import CollectConfig

    data = commands.add_parser("data", help="check and describe datasets",
                               description="Check and describe episode datasets.")
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
    verify.add_argument("dir", type=storage_location, help="dataset folder or storage URI")
    verify.set_defaults(handler=run_verify)
    repair = data_commands.add_parser(
        "repair",
        help="make missing or damaged shards again (checksums every listed shard)",
        description=(
            "Check every shard listed in DIR/manifest.json (existence, size, checksum) and make the missing or "
            "damaged ones again from their collection's recorded settings: shards are deterministic, so the "
            "dataset ends up byte for byte as collected. PPO collections need --checkpoint (the same policy)."
        ),
    )
    repair.add_argument("dir", type=storage_location, help="dataset folder or storage URI")
    repair.add_argument("--checkpoint", default=None, type=storage_location,
                        help="the PPO agent that played its PPO collections")
    add_options(repair, CollectConfig, ["workers"])  # the collections' own setting: it shapes no data
    repair.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_address(repair)
    repair.set_defaults(handler=run_repair)
    stats = data_commands.add_parser(
        "stats",
        help="episodes, lengths, returns, success, actions, level progress; table + PNG",
        description=(
            "Describe a dataset: episodes and frames, bytes per frame on disk, episode length and return "
            "distributions, success rate, action histogram, and level progress (how far right into each level the "
            "agent got, in 64-px screens, measured by registering consecutive frames). Prints a table and "
            "writes a PNG figure."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    stats.add_argument("dir", type=storage_location, help="dataset folder or storage URI")
    stats.add_argument("--plot", type=output_file, default=None,
                       help="PNG path (default: DIR-stats.png beside the dataset folder, which stays as it is; for a "
                            "URI, <name>-stats.png here)")
    stats.add_argument("--progress-episodes", type=non_negative_int, default=200,
                       help="episodes sampled for level progress")
    stats.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    stats.set_defaults(handler=run_stats)
    compare = data_commands.add_parser(
        "compare",
        help="two datasets side by side: return, success, length, level progress, action entropy, frame diversity",
        description="Compare the diversity of two datasets (e.g. random agent vs PPO agent) as a table and "
                    "a PNG figure.",
        formatter_class=DefaultsHelpFormatter,
    )
    compare.add_argument("dir_a", type=storage_location, help="dataset folder or storage URI")
    compare.add_argument("dir_b", type=storage_location, help="dataset folder or storage URI")
    compare.add_argument("--plot", type=output_file, default=Path("compare.png"), help="PNG path")
    compare.add_argument("--progress-episodes", type=non_negative_int, default=200,
                         help="episodes sampled for level progress")
    compare.set_defaults(handler=run_compare)


def run_verify(args: argparse.Namespace) -> int:
    from genie_common import storage
    from rl_agent.store.verify import verify_dataset

    if not storage.is_uri(args.dir):
        report = verify_dataset(args.dir)
    else:  # mirrored afresh: what is checked is what the storage holds now; messages name the URI, not the mirror
        mirror = storage.local_copy(args.dir, refresh=True)
        try:
            report = verify_dataset(mirror)
        except DatasetError as err:
            raise DatasetError(str(err).replace(str(mirror), args.dir.rstrip("/"))) from None
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"OK {report.root if not storage.is_uri(args.dir) else args.dir}: {report.shards} shards, {report.episodes} "
          f"episodes, {report.frames:,} frames verified")
    return 0


def run_repair(args: argparse.Namespace) -> int:
    from cluster.ray_session import ray_session
    from rl_agent.collection import repair_dataset
    from rl_agent.store.lock import folder_lock

    with folder_lock(args.dir, "genie data repair"), ray_session(args.address):
        remade = repair_dataset(args.dir, args.checkpoint, args.workers, show_progress=not args.no_progress)
    files = [f for names in remade.values() for f in names]
    print(f"{args.dir}: {len(files)} shard(s) made again{': ' + ', '.join(files) if files else ''}. "
          f"Next: genie data verify {args.dir}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from cluster.arguments import check_output_file
    from genie_common import storage
    from rl_agent.store.stats import compute_stats, format_table, plot_stats

    if args.plot:
        plot = args.plot
    elif storage.is_uri(args.dir):
        # a figure is written here, not to the bucket
        plot = Path(f"{args.dir.rstrip('/').rsplit('/', 1)[-1]}-stats.png")
    else:
        plot = Path(args.dir).resolve().parent / f"{Path(args.dir).resolve().name}-stats.png"
    try:
        check_output_file(plot)  # before the computation, not after it
    except argparse.ArgumentTypeError as err:
        raise ConfigError(f"--plot: {err}") from None
    stats = compute_stats(storage.local_dataset(args.dir), progress_episodes=args.progress_episodes)
    print(format_table(stats))
    plot = plot_stats(stats, plot, title=f"dataset {args.dir}")
    if args.json:
        print(json.dumps(stats.summary(), indent=1))
    print(f"figure: {plot}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    from genie_common import storage
    from rl_agent.store.compare import compare, format_rows, plot_comparison

    rows, results = compare(storage.local_dataset(args.dir_a), storage.local_dataset(args.dir_b),
                            progress_episodes=args.progress_episodes)
    print(format_rows(rows, args.dir_a, args.dir_b))
    print(f"figure: {plot_comparison(results, args.plot)}")
    return 0
