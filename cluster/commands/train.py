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


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import (LOCAL_FILE, add_actions, add_address, local_path, non_negative_float,
                                   non_negative_int, positive_float, positive_int, storage_location)

    train = commands.add_parser("train", help="train the tokenizer, LAM or dynamics with Ray Train",
                                description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("stage", choices=["tokenizer", "lam", "dynamics"], help="which stage to train")
    train.add_argument("--data", required=True, type=storage_location,
                       help="dataset folder(s) or URI(s), comma-separated; split 'train' trains, split 'val' validates")
    train.add_argument("--out", required=True, type=storage_location,
                       help="run folder or URI (created; the same one again resumes)")
    train.add_argument("--preset", default="tiny",
                       help="tiny (2-core laptop, minutes), laptop (2 cores, under 2 h), small (one GPU), paper "
                            "(GPU cluster)")
    train.add_argument("--preset-file", default=None, type=local_path(LOCAL_FILE),
                       help="your own preset YAML (overrides --preset)")
    train.add_argument("--set", action="append", default=[], metavar="world_model.FIELD=VALUE",
                       help="override a preset field, e.g. --set world_model.optim.lr=0.001 "
                            "or --set world_model.tokenizer.encoder.dim=128 (repeatable)")
    train.add_argument("--workers", type=positive_int, default=1, help="Ray Train workers (DDP processes)")
    train.add_argument("--gpus-per-worker", type=non_negative_float, default=0.0,
                       help="GPUs per worker (0 = train on CPUs)")
    train.add_argument("--cpus-per-worker", type=positive_float, default=1.0, help="CPUs Ray reserves per worker")
    train.add_argument("--threads-per-worker", type=positive_int, default=None,
                       help="torch threads per worker (default: CPUs per worker, at least 1)")
    train.add_argument("--steps", type=positive_int, default=None,
                       help="optimiser steps (default: the preset's total_steps)")
    train.add_argument("--batch", type=positive_int, default=None,
                       help="global batch of windows per step (default: preset)")
    train.add_argument("--micro-batch", type=positive_int, default=None,
                       help="windows per worker per forward pass; smaller than the share = gradient accumulation")
    train.add_argument("--init", default=None, type=storage_location,
                       help="fine-tune from this run/checkpoint of the same stage (fresh optimiser)")
    train.add_argument("--tokenizer", default=None, type=storage_location,
                       help="dynamics: the tokenizer run/checkpoint whose tokens it models")
    train.add_argument("--lam", default=None, type=storage_location,
                       help="dynamics with --actions latent: the LAM run/checkpoint")
    add_actions(train, help="dynamics conditioning: 'ground_truth' = the agent's actions (GenieRedux-G), 'latent' = "
                            "LAM (GenieRedux); 'true', the older word for ground_truth, is still accepted")
    train.add_argument("--seed", type=non_negative_int, default=0, help="seed of initial weights, windows and masks")
    train.add_argument("--compile", action="store_true", help="torch.compile the model (worth it on GPUs)")
    train.add_argument("--no-bf16", action="store_true", help="train in float32 on GPUs (default: bf16 autocast)")
    train.add_argument("--max-failures", type=non_negative_int, default=3,
                       help="worker-group restarts from the latest checkpoint")
    train.add_argument("--no-wandb", action="store_true",
                       help="no wandb logging (default: offline unless WANDB_MODE is set)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_address(train)
    train.set_defaults(handler=run_train)


def job_from_args(args: argparse.Namespace):
    from cluster.arguments import job_actions
    from world_model.training.job import TrainJob

    threads = args.threads_per_worker or max(1, int(args.cpus_per_worker))
    return TrainJob(
        stage=args.stage, data=[d.strip() for d in args.data.split(",") if d.strip()], out=args.out,
        preset=args.preset, preset_file=args.preset_file, overrides=list(args.set), workers=args.workers,
        gpus_per_worker=args.gpus_per_worker, cpus_per_worker=args.cpus_per_worker, threads_per_worker=threads,
        steps=args.steps, batch_size=args.batch, micro_batch=args.micro_batch, init=args.init,
        tokenizer=args.tokenizer, lam=args.lam, actions=job_actions(args.actions), seed=args.seed, compile=args.compile,
        bf16=not args.no_bf16, max_failures=args.max_failures, wandb=not args.no_wandb,
    )


def run_train(args: argparse.Namespace) -> int:
    from cluster.ray_session import ray_session
    from rl_agent.store.lock import folder_lock
    from world_model.training.trainer import run_training

    job = job_from_args(args)
    with folder_lock(job.out, "genie train"), ray_session(args.address):  # a busy --out is refused before Ray starts
        result = run_training(job, show_progress=not args.no_progress)
    print(result.summary())
    return 0
