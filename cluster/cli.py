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

from cluster.arguments import (LOCAL_FILE, GenieParser, check_output_file, fraction, local_path, non_negative_float,
                              non_negative_int, output_file, positive_float, positive_int, storage_location)
from genie_common.errors import ConfigError, DatasetError, StorageError
from rl_agent.coinrun_env import DISTRIBUTION_MODES, CoinRunConfig

EPILOG = """\
typical flow:
  genie collect --agent random --episodes 200 --workers 2 --out data/random
  genie data verify data/random
  genie data stats data/random
  genie agent train --preset tiny --out runs/agent
  genie agent eval --checkpoint runs/agent --episodes 512
  genie collect --agent ppo --checkpoint runs/agent --episodes 200 --out data/ppo
  genie data compare data/random data/ppo
  genie datasets make --preset tiny --checkpoint runs/agent --out data

Every command that uses Ray starts a local Ray instance unless --address (or RAY_ADDRESS)
names a cluster to join. Run `genie COMMAND --help` for the options of each command.
"""


def add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (e.g. 127.0.0.1:6379 or 'auto'); default: RAY_ADDRESS, else a local Ray instance")


def build_parser() -> argparse.ArgumentParser:
    parser = GenieParser(
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
    collect.add_argument("--out", required=True, type=storage_location, help="dataset folder or storage URI (s3://..., file://...), created if missing")
    collect.add_argument("--agent", default="random",
                         help="who plays: 'random' (uniform over the 15 actions) or 'ppo' (needs --checkpoint)")
    collect.add_argument("--checkpoint", default=None, type=storage_location,
                         help="for --agent ppo: a run folder of `genie agent train` (its latest checkpoint) or a checkpoint")
    collect.add_argument("--episodes", type=positive_int, default=64, help="episodes the collection should hold in total")
    collect.add_argument("--workers", type=positive_int, default=2, help="collector actors running in parallel")
    collect.add_argument("--seed", type=non_negative_int, default=0, help="seed of levels and actions; names the collection")
    collect.add_argument("--split", default="auto", choices=["train", "val", "test", "auto"],
                         help="split of every episode; 'auto' assigns by a hash of the episode id")
    collect.add_argument("--val-fraction", type=fraction, default=0.05, help="share of episodes in 'val' for --split auto")
    collect.add_argument("--test-fraction", type=fraction, default=0.05, help="share of episodes in 'test' for --split auto")
    collect.add_argument("--distribution-mode", default="easy", choices=[m for m in DISTRIBUTION_MODES if m != "exploration"],
                         help="Procgen difficulty")
    collect.add_argument("--max-episode-frames", type=positive_int, default=500, help="frame cap per episode, recorded as truncation")
    collect.add_argument("--num-levels", type=non_negative_int, default=0, help="number of distinct levels (0 = unlimited)")
    collect.add_argument("--start-level", type=non_negative_int, default=0, help="first level seed when --num-levels > 0")
    collect.add_argument("--no-backgrounds", action="store_true", help="plain backgrounds instead of Procgen's images")
    collect.add_argument("--sticky-prob", type=fraction, default=0.0, help="probability the random agent repeats its last action")
    collect.add_argument("--episodes-per-shard", type=positive_int, default=128,
                         help="episodes per shard file; a shard is one collector's unit of work, so use a smaller "
                              "value to spread a small collection over all workers")
    collect.add_argument("--envs-per-worker", type=positive_int, default=16, help="Procgen games each collector steps at once")
    collect.add_argument("--cpus-per-worker", type=positive_float, default=1.0, help="Ray CPUs reserved by each collector")
    collect.add_argument("--verify", action="store_true",
                         help="also checksum the shards already listed (always: existence and size); bad ones are made again")
    collect.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_address(collect)

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
    verify.add_argument("dir", type=storage_location, help="dataset folder or storage URI")
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
    repair.add_argument("--checkpoint", default=None, type=storage_location, help="the PPO agent that played its PPO collections")
    repair.add_argument("--workers", type=positive_int, default=2, help="collector actors running in parallel")
    repair.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_address(repair)
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
    stats.add_argument("dir", type=storage_location, help="dataset folder or storage URI")
    stats.add_argument("--plot", type=output_file, default=None,
                       help="PNG path (default: DIR-stats.png beside the dataset folder, which stays as it is; for a URI, <name>-stats.png here)")
    stats.add_argument("--progress-episodes", type=non_negative_int, default=200, help="episodes sampled for level progress")
    stats.add_argument("--json", action="store_true", help="also print the numbers as JSON")
    compare = data_commands.add_parser(
        "compare",
        help="two datasets side by side: return, success, length, level progress, action entropy, frame diversity",
        description="Compare the diversity of two datasets (e.g. random agent vs PPO agent) as a table and a PNG figure.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    compare.add_argument("dir_a", type=storage_location, help="dataset folder or storage URI")
    compare.add_argument("dir_b", type=storage_location, help="dataset folder or storage URI")
    compare.add_argument("--plot", type=output_file, default=Path("compare.png"), help="PNG path")
    compare.add_argument("--progress-episodes", type=non_negative_int, default=200, help="episodes sampled for level progress")

    agent = commands.add_parser("agent", help="train and evaluate the PPO explorer (RLlib)",
                                description="The trained explorer: PPO with an IMPALA-CNN policy, on RLlib's new API stack.")
    agent_commands = agent.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)
    train = agent_commands.add_parser(
        "train",
        help="train PPO on CoinRun; resumes when run again into the same --out",
        description=(
            "Train PPO (RLlib) on CoinRun with the preset's settings (the `agent:` section of the preset file). "
            "Shows return, episode length and env steps/s; checkpoints every `checkpoint_every` iterations and at the "
            "end; writes OUT/curve.csv and OUT/reward_curve.png (with the random agent's return as a reference); logs "
            "to wandb (offline unless WANDB_MODE says otherwise). The same command again resumes from the last checkpoint."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    train.add_argument("--out", required=True, type=storage_location,
                       help="run folder or storage URI (s3://..., file://...: collectors on every node read its checkpoints)")
    _add_preset(train)
    train.add_argument("--env-runners", type=non_negative_int, default=None, help="RLlib env runners (0 = sample in the driver)")
    train.add_argument("--envs-per-runner", type=positive_int, default=None, help="CoinRun games per env runner")
    train.add_argument("--steps", type=positive_int, default=None, help="total env steps (overrides the preset)")
    train.add_argument("--gpus-per-learner", type=non_negative_float, default=None,
                       help="GPUs of the PPO learner, a remote actor then (it lands on a GPU node, which the autoscaler "
                            "starts); 0 = learn on CPUs in the driver. Default: the preset's num_gpus_per_learner, else "
                            "1 when the cluster has or can start a GPU")
    train.add_argument("--no-progress", action="store_true")
    add_address(train)
    evaluate = agent_commands.add_parser(
        "eval",
        help="mean return, success, length and level progress with 95%% CIs, beside the random and blind agents on the same levels",
        description=(
            "Play the first episode of --episodes fresh levels with the trained policy, the uniform random agent and a "
            "blind agent that only presses RIGHT and RIGHT+UP (the same levels for all three) and print mean return, "
            "success rate, episode length and level progress with 95%% confidence intervals."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    evaluate.add_argument("--checkpoint", required=True, type=storage_location, help="run folder of `genie agent train` or a checkpoint")
    evaluate.add_argument("--episodes", type=positive_int, default=512, help="levels to play (one episode each)")
    evaluate.add_argument("--seed", type=non_negative_int, default=0, help="chooses the levels")
    evaluate.add_argument("--distribution-mode", default="easy", choices=["easy", "hard"])
    evaluate.add_argument("--test-levels", action="store_true", help="draw levels from the held-out test range")
    evaluate.add_argument("--json", type=output_file, default=None, help="also write the numbers to this JSON file")
    evaluate.add_argument("--no-progress", action="store_true")
    export = agent_commands.add_parser(
        "export",
        help="convert an RLlib checkpoint you trust (no policy/ folder) into the tensor-only policy every command loads",
        description=(
            "Collection, `genie agent eval` and the pipeline load a checkpoint's policy/ folder (weights read with "
            "torch.load(weights_only=True), and a JSON description) and refuse a checkpoint that holds only RLlib's "
            "pickled module: unpickling runs whatever code the file holds. This command unpickles such a checkpoint "
            "once, on your word that you trust where it came from, and writes its policy/ folder beside it."
        ),
    )
    export.add_argument("checkpoint", type=local_path("the checkpoint is converted on this machine: copy it here, "
                                                      "export it, and upload it again"),
                        help="run folder of `genie agent train` (its latest checkpoint) or a checkpoint folder")

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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    make.add_argument("--out", required=True, type=storage_location, help="parent folder or storage URI of the data sets")
    make.add_argument("--names", default="random-train,agent-train,basic-test,diverse-test",
                      help="comma-separated data sets to make")
    make.add_argument("--checkpoint", default=None, type=storage_location, help="the PPO agent (needed for agent-train and diverse-test)")
    make.add_argument("--workers", type=positive_int, default=2)
    make.add_argument("--no-progress", action="store_true")
    _add_preset(make)
    add_address(make)

    from cluster.commands import command_modules

    for module in command_modules():
        module.register(commands)
    return parser


def _add_preset(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="tiny", help="tiny (2-core laptop, minutes), laptop (2 cores, under 2 h), small (one GPU), paper (GPU cluster)")
    parser.add_argument("--preset-file", type=local_path(LOCAL_FILE), default=None, help="your own preset YAML (overrides --preset)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one preset field, e.g. --set agent.lr=0.001 (repeatable)")


def run_collect(args: argparse.Namespace) -> int:
    from cluster.ray_session import ray_session
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
    print(f"OK {report.root if not storage.is_uri(args.dir) else args.dir}: {report.shards} shards, {report.episodes} episodes, {report.frames:,} frames verified")
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
    from genie_common import storage
    from rl_agent.store.stats import compute_stats, format_table, plot_stats

    if args.plot:
        plot = args.plot
    elif storage.is_uri(args.dir):
        plot = Path(f"{args.dir.rstrip('/').rsplit('/', 1)[-1]}-stats.png")  # a figure is written here, not to the bucket
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


def _preset(args: argparse.Namespace) -> dict:
    from cluster.presets import load_preset

    return load_preset(args.preset, args.preset_file, args.set)


def run_agent_train(args: argparse.Namespace) -> int:
    from cluster.ray_session import ray_session
    from genie_common.storage import join
    from rl_agent.agent_eval import evaluate_agent
    from rl_agent.ppo_config import PPOSettings
    from rl_agent.ppo_training import train_agent

    values = dict(_preset(args).get("agent", {}))
    for key, value in (("num_env_runners", args.env_runners), ("envs_per_runner", args.envs_per_runner),
                       ("total_env_steps", args.steps), ("num_gpus_per_learner", args.gpus_per_learner)):
        if value is not None:
            values[key] = value
    settings = PPOSettings.from_dict(values)
    reference = evaluate_agent("random", 64, seed=12345, env=settings.env).returns.mean()
    with ray_session(args.address):
        summary = train_agent(settings, args.out, show_progress=not args.no_progress, random_reference=float(reference))
    print(f"trained {summary.env_steps:,} env steps in {summary.iterations} iterations ({summary.wall_seconds / 60:.1f} min); "
          f"checkpoint {summary.checkpoint}; curve {join(args.out, 'curve.csv')}, plot {join(args.out, 'reward_curve.png')}. "
          f"Next: genie agent eval --checkpoint {args.out}")
    return 0


def run_agent_eval(args: argparse.Namespace) -> int:
    from rl_agent.agent_eval import evaluate_agent, format_comparison
    from rl_agent.named_datasets import env_for_levels
    from rl_agent.ppo_policy import PPOAgent

    agent = PPOAgent(args.checkpoint, torch_threads=None)
    env = CoinRunConfig(distribution_mode=args.distribution_mode)
    if args.test_levels:
        env = env_for_levels(test=True, env=env)
    show = not args.no_progress
    results = [evaluate_agent(agent, args.episodes, args.seed, env, show_progress=show),
               evaluate_agent("random", args.episodes, args.seed, env, show_progress=show),
               evaluate_agent("blind", args.episodes, args.seed, env, show_progress=show)]
    print(format_comparison(results))
    if args.json:
        payload = {r.agent: {k: {"mean": m, "ci95": h} for k, (m, h) in r.summary().items()} for r in results}
        payload["levels"] = {"episodes": args.episodes, "seed": args.seed, "env": env.to_dict()}
        args.json.write_text(json.dumps(payload, indent=1))
        print(f"numbers: {args.json}")
    return 0


def run_agent_export(args: argparse.Namespace) -> int:
    from rl_agent.ppo_policy import export_policy

    folder = export_policy(args.checkpoint)
    print(f"policy (tensors only) in {folder}; `genie agent eval --checkpoint {args.checkpoint}` and "
          f"`genie collect --agent ppo --checkpoint {args.checkpoint}` load it from now on")
    return 0


def run_datasets_make(args: argparse.Namespace) -> int:
    from cluster.ray_session import ray_session
    from genie_common.storage import join
    from rl_agent.collection import CollectConfig, collect_dataset
    from rl_agent.named_datasets import dataset_config, named_dataset

    data = _preset(args).get("data", {})
    names = [n.strip() for n in args.names.split(",") if n.strip()]
    base = CollectConfig(workers=args.workers, episodes_per_shard=int(data.get("episodes_per_shard", 128)))
    configs = {n: dataset_config(n, int(data.get(named_dataset(n).preset_count) or 1), args.checkpoint, base)
               for n in names}
    with ray_session(args.address):
        for name, config in configs.items():
            print(f"{name}: {named_dataset(name).description}, {config.episodes} episodes")
            collect_dataset(config, join(args.out, name), show_progress=not args.no_progress)
    out = args.out.rstrip("/")
    print(f"data sets in {out}: {', '.join(names)}. Next: genie data compare {out}/basic-test {out}/diverse-test")
    return 0


def user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by input (bad config, data, checkpoint, storage): printed as one line, no traceback."""
    from world_model.checkpoint import CheckpointError

    return (ConfigError, DatasetError, CheckpointError, StorageError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "handler", None) is not None:
        try:
            return args.handler(args)
        except user_errors() as err:
            print(f"genie: error: {err}", file=sys.stderr)
            return 2 if isinstance(err, (ConfigError,)) else 1
    handlers = {"collect": run_collect, ("data", "verify"): run_verify, ("data", "repair"): run_repair, ("data", "stats"): run_stats,
                ("data", "compare"): run_compare, ("agent", "train"): run_agent_train,
                ("agent", "eval"): run_agent_eval, ("agent", "export"): run_agent_export,
                ("datasets", "make"): run_datasets_make}
    sub = {"data": "data_command", "agent": "agent_command", "datasets": "datasets_command"}
    key = (args.command, getattr(args, sub[args.command])) if args.command in sub else args.command
    try:
        return handlers[key](args)
    except (ConfigError, DatasetError) as err:
        print(f"genie: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
