"""`genie pipeline`: agent, data, training, fine-tuning, evaluation and the report, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 10

DESCRIPTION = """\
Reproduce the GenieRedux study end to end:
  agent        train the PPO explorer (RLlib)
  data:*       random-train, basic-test (random agent); agent-train, diverse-test (PPO agent)
  train        tokenizer, lam, genie-g (GenieRedux-G), genie (GenieRedux) on random-agent data
  finetune     the same, fine-tuned on the agent's data (the paper's TA models)
  eval:*       PSNR, SSIM, ΔtPSNR, controllability of every model on the Basic and Diverse test sets
  report       RUN/report.html (self-contained) and RUN/report.md

Each stage records its outputs in RUN/pipeline/ and is reused when they exist and its config (and
the config of everything it depends on) is unchanged. Kill it and run the same command again: it
continues where it stopped. --stages runs a subset (names, groups, or prefixes such as 'eval').

  genie pipeline --preset tiny --out runs/tiny                 # a 2-core laptop, <= 20 minutes
  genie pipeline --preset tiny --out runs/tiny --stages report  # rebuild only the report
  genie pipeline --preset small --out /mnt/shared/runs/small --address auto   # on a cluster

RUN is a folder path; on a cluster, one every node sees (an NFS/EFS mount). To keep data and
checkpoints in a bucket instead, run the stages with `genie submit` and storage URIs (README).
"""


def register(commands: argparse._SubParsersAction) -> None:
    from cluster.arguments import LOCAL_FILE, local_path
    from cluster.cli import add_address

    pipeline = commands.add_parser("pipeline", help="the whole study in one resumable command, ending in a report",
                                   description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    pipeline.add_argument("--out", required=True, type=run_folder,
                          help="run folder of the study (created; the same again resumes)")
    pipeline.add_argument("--preset", default="tiny", help="tiny (2-core laptop), small (one GPU), paper (GPU cluster)")
    pipeline.add_argument("--preset-file", default=None, type=local_path(LOCAL_FILE), help="your own preset YAML (overrides --preset)")
    pipeline.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                          help="override a preset field, e.g. --set pipeline.train_workers=1 (repeatable)")
    pipeline.add_argument("--stages", default=None,
                          help="comma-separated subset: stage names (e.g. tokenizer, data:basic-test), groups "
                               "(agent, data, train, finetune, eval, report) or prefixes (eval)")
    pipeline.add_argument("--list", action="store_true", help="print the plan (and what is already done) and exit")
    pipeline.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_address(pipeline)
    pipeline.set_defaults(handler=run)


def run_folder(text: str) -> Path:
    """--out: a folder path; a storage URI is refused here, before anything starts (Path would mangle it)."""
    from cluster.arguments import local_path

    folder = local_path("genie pipeline keeps its run in a folder (on a cluster, one every node sees, e.g. an NFS/EFS "
                        "mount). For a bucket, run the stages with `genie submit` and --out/--data URIs")(text)
    return Path(folder)


run_folder.path_kind = "local"  # type: ignore[attr-defined]


def run(args: argparse.Namespace) -> int:
    import time

    from cluster.pipeline.plan import build_plan
    from cluster.pipeline.runner import format_outcomes, is_done, make_context, run_pipeline
    from cluster.ray_session import ray_session
    from rl_agent.store.lock import folder_lock

    context = make_context(args.out, None if args.preset_file else args.preset, args.preset_file, list(args.set),
                           show_progress=not args.no_progress)
    wanted = [s.strip() for s in args.stages.split(",")] if args.stages else None
    if args.list:
        for stage in build_plan(context):
            print(f"{'done ' if is_done(context, stage) else 'to do'}  {stage.name:28s} needs {', '.join(stage.needs) or '-'}")
        return 0
    began = time.monotonic()
    with folder_lock(args.out, "genie pipeline"), ray_session(args.address):  # one pipeline per folder
        outcomes = run_pipeline(context, wanted)
    print(format_outcomes(outcomes))
    print(f"pipeline finished in {(time.monotonic() - began) / 60:.1f} min. Report: {args.out / 'report.html'} "
          f"(and {args.out / 'report.md'})")
    return 0
