"""`genie tune tokenizer|lam|dynamics`: Ray Tune sweeps over world-model sizes and hyper-parameters."""

from __future__ import annotations

import argparse

ORDER = 35

DESCRIPTION = """\
Sweep one world-model stage over model sizes (and learning rate, batch, codebook) with Ray Tune.
Each trial is a `genie train` run of the stage (Ray Train, its own run folder OUT/trials/trial-NNN),
with every validation reported to Tune; ASHA stops trials whose validation metric falls behind at
equal steps. Trials use GPUs when the cluster has them (--gpus-per-trial), else CPUs.

Two ways to say what to sweep:
  genie tune tokenizer --data data/random-train --preset-sweep tiny,small --budget-steps 2000
  genie tune tokenizer --data data/random-train --space sizes.yaml --samples 4 --out sweeps/tok
with sizes.yaml a mapping of field -> values:
  width: [64, 128, 256]              # a list: grid search (every value, x every other list)
  depth: {choice: [2, 4]}            # drawn once per trial (--samples trials per grid point)
  heads: 4                           # fixed
  lr: {loguniform: [0.0003, 0.003]}  # also uniform: [lo, hi], randint: [lo, hi] (+ step: 16)
  codebook_size: [256, 1024]
  tokenizer.quantizer.code_dim: [8, 16]   # any world_model field of the preset, by path
Short names act on the swept stage: width/depth/heads/mlp_ratio set all its transformer stacks,
codebook_size/code_dim its quantizer, lr the optimiser (min_lr keeps the preset's ratio), batch_size
the global batch. Every trial is checked before any starts: an unknown field, a negative width or
heads that do not divide the width are refused naming the field. Both options combine (each preset
of --preset-sweep x every point of --space).

OUT is a folder or a storage URI (s3://bucket/sweeps/tok, gs://..., file://...). Trials run on any node
of the cluster and write their run folders and Tune's trial logs into OUT, so on a cluster of several
nodes give a URI (or a folder every node mounts); what the sweep needs from a trial travels in its Tune
results, never in files on the trial's node.

Outputs in OUT: results.csv and results.md (config, parameters, steps, best validation metric,
frames/s, wall time, early stops), best_preset.yaml (use it with `genie train --preset-file`; copy
it here first when OUT is a URI), scaling.png (metric vs parameters and vs compute = parameters x
frames seen), tune/ (Tune's experiment with TensorBoard logs per trial: tensorboard --logdir
OUT/tune) and wandb logs (offline unless WANDB_MODE says otherwise) in each trial's run folder
(when OUT is a URI: in the trial's working folder on its node instead). Running the same command
again, with the same OUT (a folder or a URI), resumes an interrupted sweep: finished and
early-stopped trials are not run again.
"""


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import (LOCAL_FILE, add_actions, add_address, local_path, non_negative_float,
                                   non_negative_int, positive_float, positive_int, storage_location)

    tune = commands.add_parser("tune", help="sweep model sizes of a stage with Ray Tune (ASHA), table + scaling plot",
                               description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    tune.add_argument("stage", choices=["tokenizer", "lam", "dynamics"], help="which stage to sweep")
    tune.add_argument("--data", required=True, type=storage_location,
                      help="dataset folder(s) or URI(s), comma-separated (split 'val' validates)")
    tune.add_argument("--out", default=None, type=storage_location,
                      help="sweep folder or storage URI (s3://bucket/sweeps/tok): Tune's experiment, the trials' run "
                           "folders, the table, best preset and plot; on a cluster of several nodes, a URI or a folder "
                           "every node mounts (default: sweeps/<stage>); the same one again resumes")
    tune.add_argument("--space", default=None, type=local_path(LOCAL_FILE), help="YAML search space (see above)")
    tune.add_argument("--preset-sweep", default=None, metavar="NAMES",
                      help="comma-separated base presets, one set of trials each, e.g. tiny,small")
    tune.add_argument("--preset", default="tiny", help="base preset of the trials when there is no --preset-sweep")
    tune.add_argument("--preset-file", default=None, type=local_path(LOCAL_FILE),
                      help="your own preset YAML as the base (instead of --preset)")
    tune.add_argument("--set", action="append", default=[], metavar="world_model.FIELD=VALUE",
                      help="override a preset field in every trial, e.g. --set world_model.train.val_windows=64")
    tune.add_argument("--samples", type=positive_int, default=1,
                      help="trials per grid point (draws of the distributions)")
    tune.add_argument("--seed", type=non_negative_int, default=0, help="seed of the draws; sample k trains with seed+k")
    tune.add_argument("--scheduler", choices=["asha", "none"], default="asha",
                      help="asha: stop trials behind at equal steps; none: every trial runs its budget")
    tune.add_argument("--metric", choices=["loss", "psnr"], default="loss",
                      help="validation metric ASHA and the ranking use (psnr: teacher-forced PSNR for dynamics)")
    tune.add_argument("--budget-steps", type=positive_int, default=None,
                      help="optimiser steps per trial (the schedule ends there); default: the preset's total_steps")
    tune.add_argument("--val-every", type=positive_int, default=None,
                      help="steps between validations (ASHA's decision points); default: budget/8, at most the "
                           "preset's")
    tune.add_argument("--grace-steps", type=positive_int, default=None,
                      help="ASHA: no trial stops before (default: first validation)")
    tune.add_argument("--reduction-factor", type=positive_int, default=2,
                      help="ASHA: keep 1/factor of the trials at each rung")
    tune.add_argument("--gpus-per-trial", type=non_negative_float, default=None,
                      help="GPUs per trial, shared by its workers (default: 1 when the cluster has GPUs, else 0)")
    tune.add_argument("--workers", type=positive_int, default=1, help="Ray Train workers per trial")
    tune.add_argument("--cpus-per-worker", type=positive_float, default=1.0, help="CPUs Ray reserves per Train worker")
    tune.add_argument("--max-concurrent", type=positive_int, default=None,
                      help="trials at once (default: as many as the cluster's CPUs/GPUs hold)")
    tune.add_argument("--tokenizer", default=None, type=storage_location, help="dynamics: the tokenizer run/checkpoint")
    tune.add_argument("--lam", default=None, type=storage_location,
                      help="dynamics with --actions latent: the LAM run/checkpoint")
    add_actions(tune, help="dynamics conditioning: 'ground_truth' = the agent's actions (GenieRedux-G), 'latent' = "
                           "LAM (GenieRedux); 'true', the older word for ground_truth, is still accepted")
    tune.add_argument("--no-wandb", action="store_true", help="no wandb logs in the trial run folders")
    add_address(tune)
    tune.set_defaults(handler=run_tune)


def sweep_from_args(args: argparse.Namespace, gpus_per_trial: float):
    from cluster.arguments import job_actions
    from tuning.sweep import SweepConfig

    presets = ([p.strip() for p in (args.preset_sweep or "").split(",") if p.strip()] if args.preset_sweep
               else [args.preset])
    if args.preset_sweep and args.preset_file:
        from genie_common.errors import ConfigError

        raise ConfigError("--preset-sweep and --preset-file exclude each other (one is the base of the trials)")
    return SweepConfig(
        stage=args.stage, data=[d.strip() for d in args.data.split(",") if d.strip()],
        out=args.out or f"sweeps/{args.stage}", space=args.space, presets=presets, preset_file=args.preset_file,
        overrides=list(args.set), samples=args.samples, seed=args.seed, scheduler=args.scheduler, metric=args.metric,
        budget_steps=args.budget_steps, val_every=args.val_every, grace_steps=args.grace_steps,
        reduction_factor=args.reduction_factor, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
        gpus_per_trial=gpus_per_trial, max_concurrent=args.max_concurrent, tokenizer=args.tokenizer, lam=args.lam,
        actions=job_actions(args.actions), wandb=not args.no_wandb,
    )


def run_tune(args: argparse.Namespace) -> int:
    from cluster.placement import use_gpu
    from cluster.ray_session import ray_session
    from rl_agent.store.lock import folder_lock
    from tuning.sweep import build_trials, run_sweep

    if args.gpus_per_trial is None:  # checked before Ray starts too, so a bad space fails in a second
        build_trials(sweep_from_args(args, 0.0))
    else:
        build_trials(sweep_from_args(args, args.gpus_per_trial))
    with folder_lock(sweep_from_args(args, 0.0).out, "genie tune"), ray_session(args.address):  # one sweep per folder
        gpus = args.gpus_per_trial if args.gpus_per_trial is not None else (1.0 if use_gpu() else 0.0)
        result = run_sweep(sweep_from_args(args, gpus))
    print(result.summary())
    return 1 if result.errors else 0  # a failed trial fails the command, as a failed `genie train` does
