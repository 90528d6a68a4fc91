"""`genie pipeline`: agent, data, training, fine-tuning, evaluation and the report, in one command."""

from __future__ import annotations

import argparse

ORDER = 10

DESCRIPTION = """\
Reproduce the GenieRedux study end to end, as a plan of tasks (here by group):
  agent        train the PPO explorer (RLlib)
  data:*       random-train, basic-test (random agent); agent-train, diverse-test (PPO agent)
  train        tokenizer, lam, genie-g (GenieRedux-G), genie (GenieRedux) on random-agent data
  finetune     the same, fine-tuned on the agent's data (the paper's TA models)
  eval:*       PSNR, SSIM, ΔtPSNR, controllability of every model on the Basic and Diverse test sets
  report       RUN/report.html (self-contained) and RUN/report.md

Each task records its outputs in RUN/pipeline/ and is reused when they exist and its config (and
the config of everything it depends on) is unchanged. Kill it and run the same command again: it
continues where it stopped. --tasks runs a subset (names, groups, or prefixes such as 'eval').

  genie pipeline --preset tiny --out runs/tiny                 # a 2-core laptop, <= 20 minutes
  genie pipeline --preset tiny --out runs/tiny --tasks report   # rebuild only the report

RUN is a folder or a storage URI (s3://bucket/runs/small, gs://..., file:///abs/path): every task
and the pipeline's own records read and write it through the storage layer, so on a cluster, where
tasks run on other nodes, give a URI every node reaches (or a shared NFS/EFS mount). On a GPU
cluster, --gpus-per-worker puts each world-model training worker and each evaluation worker on GPUs
(the PPO learner takes a GPU by itself when the cluster has one; --gpus-per-learner decides instead):

  genie submit pipeline --preset small --out '$GENIE_STORAGE/runs/small' --gpus-per-worker 1

GPUs are not part of what a task is: a study started on CPUs continues on GPUs (and back), reusing
every finished task, and a task that stopped midway resumes from its checkpoint on the new GPUs.
"""


# the fields of PipelineResources that are options of `genie pipeline` (all of them: where the tasks run)
RESOURCE_OPTIONS = ("gpus_per_worker", "gpus_per_learner")


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import LOCAL_FILE, add_address, local_path, storage_location
    from cluster.dataclass_options import add_options
    from cluster.pipeline.context import PipelineResources

    pipeline = commands.add_parser("pipeline", help="the whole study in one resumable command, ending in a report",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    pipeline.add_argument("--out", required=True, type=storage_location,
                          help="run folder or storage URI of the study, e.g. runs/tiny or s3://bucket/runs/small "
                               "(created; the same again resumes)")
    pipeline.add_argument("--preset", default="tiny", help="tiny (2-core laptop), small (one GPU), paper (GPU cluster)")
    pipeline.add_argument("--preset-file", default=None, type=local_path(LOCAL_FILE),
                          help="your own preset YAML (overrides --preset)")
    pipeline.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                          help="override a preset field, e.g. --set pipeline.train_workers=1 (repeatable)")
    add_options(pipeline, PipelineResources, RESOURCE_OPTIONS, metavars=dict.fromkeys(RESOURCE_OPTIONS, "N"))
    # --stages: the flag's name before the plan's units were called tasks (scripts and the README use it)
    pipeline.add_argument("--tasks", "--stages", dest="tasks", default=None, metavar="TASKS",
                          help="comma-separated subset of the plan: task names (e.g. tokenizer, data:basic-test), "
                               "groups (agent, data, train, finetune, eval, report) or prefixes (eval)")
    pipeline.add_argument("--list", action="store_true", help="print the plan (and what is already done) and exit")
    pipeline.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_address(pipeline)
    pipeline.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import time

    from cluster.dataclass_options import config_from_args
    from cluster.pipeline.plan import PipelineResources, build_plan
    from cluster.pipeline.runner import format_outcomes, is_done, make_context, run_pipeline
    from cluster.ray_session import ray_session
    from genie_common.storage import join
    from rl_agent.store.lock import folder_lock

    resources = config_from_args(PipelineResources, args, RESOURCE_OPTIONS)
    context = make_context(args.out, None if args.preset_file else args.preset, args.preset_file, list(args.set),
                           show_progress=not args.no_progress, resources=resources)
    wanted = [s.strip() for s in args.tasks.split(",")] if args.tasks else None
    if args.list:
        for task in build_plan(context):
            print(f"{'done ' if is_done(context, task) else 'to do'}  {task.name:28s} needs "
                  f"{', '.join(task.needs) or '-'}")
        return 0
    began = time.monotonic()
    with folder_lock(context.run, "genie pipeline"), ray_session(args.address):  # one pipeline per folder
        outcomes = run_pipeline(context, wanted)
    print(format_outcomes(outcomes))
    print(f"pipeline finished in {(time.monotonic() - began) / 60:.1f} min. Report: {join(context.run, 'report.html')} "
          f"(and {join(context.run, 'report.md')})")
    return 0
