"""`genie train tokenizer|lam|dynamics`: one world-model stage on Ray Train (1..N workers, CPU or GPU)."""

from __future__ import annotations

import argparse

ORDER = 30

DESCRIPTION = """\
Train one stage of the world model with Ray Train (DDP over --workers workers) on episode datasets.

The stages build on each other, as in the paper:
  genie train tokenizer --data data/random-train --out runs/tokenizer
  genie train lam       --data data/random-train --out runs/lam
  genie train dynamics  --data data/random-train --out runs/genie-g --tokenizer runs/tokenizer --actions ground_truth
  genie train dynamics  --data data/random-train --out runs/genie   --tokenizer runs/tokenizer --lam runs/lam --actions latent
and the TA variants fine-tune on the agent's data from the base runs (fresh optimiser):
  genie train tokenizer --data data/agent-train --out runs/tokenizer-ta --init runs/tokenizer

The run folder (local or a storage URI such as s3://bucket/runs/x) gets run.json, latest.pt, best.pt
(best validation loss), metrics.csv, samples/*.png and Ray Train's checkpoints. Running the same command
again resumes from the latest checkpoint (also after a crash or Ctrl-C); a failed worker is restarted
from it automatically (--max-failures). The global batch (--batch) does not depend on --workers: each
worker takes its share, with gradient accumulation when --micro-batch is smaller.
Wherever a checkpoint is asked for, a run folder works too (its best checkpoint).
"""  # noqa: E501 - the example commands stay whole, to copy from --help


# the fields of TrainJob that are options of `genie train`, in the order its help shows them (the preset's options
# after --out)
TRAIN_OPTIONS = ("data", "out", "workers", "gpus_per_worker", "cpus_per_worker", "threads_per_worker", "steps",
                 "batch_size", "micro_batch", "init", "tokenizer", "lam", "actions", "seed", "data_shares", "compile",
                 "bf16", "max_failures", "wandb")


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import LOCAL_FILE, add_address, conditioning, local_path
    from cluster.dataclass_options import add_options
    from world_model.config import STAGES
    from world_model.training.job import TrainJob

    train = commands.add_parser("train", help="train the tokenizer, LAM or dynamics with Ray Train",
                                description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("stage", choices=list(STAGES), help="which stage to train")
    add_options(train, TrainJob, TRAIN_OPTIONS[:2])
    train.add_argument("--preset", default="tiny",
                       help="tiny (2-core laptop, minutes), laptop (2 cores, under 2 h), small (one GPU), paper "
                            "(GPU cluster)")
    train.add_argument("--preset-file", default=None, type=local_path(LOCAL_FILE),
                       help="your own preset YAML (overrides --preset)")
    train.add_argument("--set", action="append", default=[], metavar="world_model.FIELD=VALUE",
                       help="override a preset field, e.g. --set world_model.optim.lr=0.001 "
                            "or --set world_model.tokenizer.encoder.dim=128 (repeatable)")
    add_options(train, TrainJob, TRAIN_OPTIONS[2:], actions=conditioning)
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_address(train)
    train.set_defaults(handler=run_train)


def job_from_args(args: argparse.Namespace):
    from cluster.dataclass_options import config_from_args
    from world_model.training.job import TrainJob

    return config_from_args(TrainJob, args, TRAIN_OPTIONS, stage=args.stage, preset=args.preset,
                            preset_file=args.preset_file, overrides=list(args.set))


def run_train(args: argparse.Namespace) -> int:
    from cluster.ray_session import ray_session
    from rl_agent.store.lock import folder_lock
    from world_model.training.trainer import run_training

    job = job_from_args(args)
    with folder_lock(job.out, "genie train"), ray_session(args.address):  # a busy --out is refused before Ray starts
        result = run_training(job, show_progress=not args.no_progress)
    print(result.summary())
    return 0
