"""`genie agent train|eval|export`: the PPO explorer (RLlib) that plays the agent's data sets."""

from __future__ import annotations

import argparse
import json

ORDER = 3

# the fields of PPOSettings that options of `genie agent train` override in the preset's `agent:` section
AGENT_OPTIONS = ("num_env_runners", "envs_per_runner", "total_env_steps", "num_gpus_per_learner")


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import (DefaultsHelpFormatter, add_address, add_preset, local_path, non_negative_int,
                                   output_file, positive_int, storage_location)
    from cluster.dataclass_options import add_options
    from rl_agent.coinrun_env import CoinRunConfig
    from rl_agent.ppo_config import PPOSettings

    agent = commands.add_parser("agent", help="train and evaluate the PPO explorer (RLlib)",
                                description="The trained explorer: PPO with an IMPALA-CNN policy, on RLlib's "
                                            "new API stack.")
    agent_commands = agent.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)
    train = agent_commands.add_parser(
        "train",
        help="train PPO on CoinRun; resumes when run again into the same --out",
        description=(
            "Train PPO (RLlib) on CoinRun with the preset's settings (the `agent:` section of the preset file). "
            "Shows return, episode length and env steps/s; checkpoints every `checkpoint_every` iterations and at the "
            "end; writes OUT/curve.csv and OUT/reward_curve.png (with the random agent's return as a reference); logs "
            "to wandb (offline unless WANDB_MODE says otherwise). The same command again resumes from the "
            "last checkpoint."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    train.add_argument("--out", required=True, type=storage_location,
                       help="run folder or storage URI (s3://..., file://...: collectors on every node read its "
                            "checkpoints)")
    add_preset(train)
    add_options(train, PPOSettings, AGENT_OPTIONS, overriding="agent")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_address(train)
    train.set_defaults(handler=run_agent_train)
    evaluate = agent_commands.add_parser(
        "eval",
        help="mean return, success, length and level progress with 95%% CIs, beside the random and blind agents on "
             "the same levels",
        description=(
            "Play the first episode of --episodes fresh levels with the trained policy, the uniform random agent and a "
            "blind agent that only presses RIGHT and RIGHT+UP (the same levels for all three) and print mean return, "
            "success rate, episode length and level progress with 95% confidence intervals, then the policy's return "
            "minus each reference's, paired per level (each level's difficulty cancels, so the interval is narrower)."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    evaluate.add_argument("--checkpoint", required=True, type=storage_location,
                          help="run folder of `genie agent train` or a checkpoint")
    evaluate.add_argument("--episodes", type=positive_int, default=512, help="levels to play (one episode each)")
    evaluate.add_argument("--seed", type=non_negative_int, default=0, help="chooses the levels")
    add_options(evaluate, CoinRunConfig, ["distribution_mode"])
    evaluate.add_argument("--test-levels", action="store_true", help="draw levels from the held-out test range")
    evaluate.add_argument("--json", type=output_file, default=None, help="also write the numbers to this JSON file")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
    evaluate.set_defaults(handler=run_agent_eval)
    export = agent_commands.add_parser(
        "export",
        help="convert an RLlib checkpoint you trust (no policy/ folder) into the tensor-only policy every command "
             "loads",
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
    export.set_defaults(handler=run_agent_export)


def agent_settings(args: argparse.Namespace):
    """The PPOSettings of `genie agent train`: the preset's `agent:` section with the options given laid over it."""
    from cluster.arguments import preset_of
    from cluster.dataclass_options import overrides_from_args
    from rl_agent.ppo_config import PPOSettings

    return PPOSettings.from_dict({**preset_of(args).get("agent", {}),
                                  **overrides_from_args(PPOSettings, args, AGENT_OPTIONS)})


def run_agent_train(args: argparse.Namespace) -> int:
    from cluster.ray_session import ray_session
    from genie_common.storage import join
    from rl_agent.agent_eval import evaluate_agent
    from rl_agent.ppo_training import train_agent

    settings = agent_settings(args)
    reference = evaluate_agent("random", 64, seed=12345, env=settings.env).returns.mean()
    with ray_session(args.address):
        summary = train_agent(settings, args.out, show_progress=not args.no_progress, random_reference=float(reference))
    print(f"trained {summary.env_steps:,} env steps in {summary.iterations} iterations "
          f"({summary.wall_seconds / 60:.1f} min); checkpoint {summary.checkpoint}; curve "
          f"{join(args.out, 'curve.csv')}, plot {join(args.out, 'reward_curve.png')}. Next: genie agent eval "
          f"--checkpoint {args.out}")
    return 0


def run_agent_eval(args: argparse.Namespace) -> int:
    from cluster.dataclass_options import config_from_args
    from rl_agent.agent_eval import evaluate_agent, format_comparison, format_paired, paired_returns
    from rl_agent.coinrun_env import CoinRunConfig
    from rl_agent.named_datasets import env_for_levels
    from rl_agent.ppo_policy import PPOAgent

    agent = PPOAgent(args.checkpoint, torch_threads=None)
    env = config_from_args(CoinRunConfig, args, ["distribution_mode"])
    if args.test_levels:
        env = env_for_levels(test=True, env=env)
    show = not args.no_progress
    results = [evaluate_agent(agent, args.episodes, args.seed, env, show_progress=show),
               evaluate_agent("random", args.episodes, args.seed, env, show_progress=show),
               evaluate_agent("blind", args.episodes, args.seed, env, show_progress=show)]
    paired = paired_returns(results)
    print(format_comparison(results))
    print(format_paired(paired, len(results[0].returns)))
    if args.json:
        payload = {r.agent: {k: {"mean": m, "ci95": h} for k, (m, h) in r.summary().items()} for r in results}
        payload["paired_return"] = {pair: {"mean": m, "ci95": h} for pair, (m, h) in paired.items()}
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
