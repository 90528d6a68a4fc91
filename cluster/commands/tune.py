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


# the fields of SweepConfig that are options of `genie tune`, in the order its help shows them (the presets' options
# after --space, --gpus-per-trial after --reduction-factor)
TUNE_OPTIONS = ("data", "out", "space", "samples", "seed", "scheduler", "metric", "budget_steps", "val_every",
                "grace_steps", "reduction_factor", "workers", "cpus_per_worker", "max_concurrent", "tokenizer", "lam",
                "actions", "wandb")


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import LOCAL_FILE, add_address, conditioning, local_path, non_negative_float
    from cluster.dataclass_options import add_options
    from tuning.trials import SweepConfig
    from world_model.config import STAGES

    tune = commands.add_parser("tune", help="sweep model sizes of a stage with Ray Tune (ASHA), table + scaling plot",
                               description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    tune.add_argument("stage", choices=list(STAGES), help="which stage to sweep")
    add_options(tune, SweepConfig, TUNE_OPTIONS[:3], space=local_path(LOCAL_FILE))
    tune.add_argument("--preset-sweep", default=None, metavar="NAMES",
                      help="comma-separated base presets, one set of trials each, e.g. tiny,small")
    tune.add_argument("--preset", default="tiny", help="base preset of the trials when there is no --preset-sweep")
    tune.add_argument("--preset-file", default=None, type=local_path(LOCAL_FILE),
                      help="your own preset YAML as the base (instead of --preset)")
    tune.add_argument("--set", action="append", default=[], metavar="world_model.FIELD=VALUE",
                      help="override a preset field in every trial, e.g. --set world_model.train.val_windows=64")
    add_options(tune, SweepConfig, TUNE_OPTIONS[3:11])
    # not SweepConfig's own default: the cluster decides it once Ray is up (cluster.placement.use_gpu)
    tune.add_argument("--gpus-per-trial", type=non_negative_float, default=None,
                      help="GPUs per trial, shared by its workers (default: 1 when the cluster has GPUs, else 0)")
    add_options(tune, SweepConfig, TUNE_OPTIONS[11:], actions=conditioning)
    add_address(tune)
    tune.set_defaults(handler=run_tune)


def sweep_from_args(args: argparse.Namespace, gpus_per_trial: float):
    from cluster.dataclass_options import config_from_args
    from tuning.trials import SweepConfig

    presets = ([p.strip() for p in (args.preset_sweep or "").split(",") if p.strip()] if args.preset_sweep
               else [args.preset])
    if args.preset_sweep and args.preset_file:
        from genie_common.errors import ConfigError

        raise ConfigError("--preset-sweep and --preset-file exclude each other (one is the base of the trials)")
    return config_from_args(SweepConfig, args, TUNE_OPTIONS, stage=args.stage, presets=presets,
                            preset_file=args.preset_file, overrides=list(args.set), gpus_per_trial=gpus_per_trial)


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
