"""`genie datasets make`: the paper's four data sets, collected by name."""

from __future__ import annotations

import argparse

ORDER = 4


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import DefaultsHelpFormatter, add_address, add_preset, storage_location
    from cluster.dataclass_options import add_options
    from rl_agent.collection.config import CollectConfig

    datasets = commands.add_parser("datasets", help="the paper's four data sets, by name",
                                   description="Make the paper's data sets by name.")
    datasets_commands = datasets.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND", required=True)
    make = datasets_commands.add_parser(
        "make",
        help="collect random-train, agent-train, basic-test and diverse-test (disjoint train/test levels)",
        description=(
            "Collect the paper's data sets into OUT/<name>: random-train (random agent) and agent-train (PPO agent) on "
            "training levels [0, 1e6), basic-test (random agent) and diverse-test (PPO agent) on test levels "
            "[1e6, 2e6). Episode counts come from the preset's `data:` section. Resumable like `genie collect`."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    make.add_argument("--out", required=True, type=storage_location,
                      help="parent folder or storage URI of the data sets")
    make.add_argument("--names", default="random-train,agent-train,basic-test,diverse-test",
                      help="comma-separated data sets to make")
    make.add_argument("--checkpoint", default=None, type=storage_location,
                      help="the PPO agent (needed for agent-train and diverse-test)")
    add_options(make, CollectConfig, ["workers"])
    make.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_preset(make)
    add_address(make)
    make.set_defaults(handler=run_datasets_make)


def base_config(args: argparse.Namespace, data: dict):
    """What every data set of `genie datasets make` shares: --workers, and the shard size of the preset's `data:`."""
    from cluster.dataclass_options import config_from_args
    from rl_agent.collection import CollectConfig

    return config_from_args(CollectConfig, args, ["workers"],
                            episodes_per_shard=int(data.get("episodes_per_shard", CollectConfig.episodes_per_shard)))


def run_datasets_make(args: argparse.Namespace) -> int:
    from cluster.arguments import preset_of
    from cluster.ray_session import ray_session
    from genie_common.storage import join
    from rl_agent.collection import collect_dataset
    from rl_agent.named_datasets import named_dataset, preset_dataset_config

    data = preset_of(args).get("data", {})
    names = [n.strip() for n in args.names.split(",") if n.strip()]
    base = base_config(args, data)
    configs = {n: preset_dataset_config(n, data, args.checkpoint, base) for n in names}
    with ray_session(args.address):
        for name, config in configs.items():
            print(f"{name}: {named_dataset(name).description}, {config.episodes} episodes")
            collect_dataset(config, join(args.out, name), show_progress=not args.no_progress)
    out = args.out.rstrip("/")
    print(f"data sets in {out}: {', '.join(names)}. Next: genie data compare {out}/basic-test {out}/diverse-test")
    return 0
