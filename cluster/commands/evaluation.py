"""`genie eval` and `genie report`: measure a tokenizer, LAM or world model the way the papers do."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 40

# the fields of EvalConfig that are options of `genie eval`, in the order its help shows them (--out after --data)
EVAL_OPTIONS = ("model", "data", "context", "horizon", "maskgit_steps", "temperature", "guidance", "scroll_temperature",
                "scroll_draw", "episodes", "split", "workers", "cpus_per_worker", "gpus_per_worker", "bf16",
                "batch_size", "seed", "delta_t", "modes", "control_steps", "forks", "fork_steps", "inception_weights",
                "samples", "prefer", "show_progress")


def register(commands) -> None:
    from cluster.arguments import DefaultsHelpFormatter, add_address, local_path, output_file, storage_location
    from cluster.dataclass_options import add_options
    from world_model.evaluation.config import EvalConfig

    evaluate = commands.add_parser(
        "eval",
        help="PSNR, SSIM, ΔtPSNR, FID and controllability of a tokenizer, LAM or world model on a test set",
        description=(
            "Evaluate --model on the test set --data and write OUT/results.json (every number with the model, "
            "checkpoint, data set, context, horizon, MaskGIT steps and seed), OUT/results.md, "
            "OUT/psnr_over_horizon.png and OUT/samples/*.gif|png (ground truth vs prediction vs the same context "
            "with other actions). --model may be a run folder or checkpoint of any stage: a tokenizer is scored on "
            "reconstruction, a LAM on reconstructing each next frame from its inferred latent action, a world "
            "model (dynamics run) on predicting --horizon frames from --context real frames, both autoregressively "
            "(MaskGIT, each generated frame fed back) and teacher-forced (one pass per frame from the real past). "
            "GenieRedux is driven by the latent actions its LAM infers from the ground truth, GenieRedux-G by the "
            "recorded actions. ΔtPSNR: PSNR at frame t minus PSNR when only the action into frame t is replaced "
            "by a random different one, reported twice: the paper's (any other id) and, for GenieRedux-G, one whose "
            "replacement has a different effect in CoinRun (8 of the 15 ids do nothing). Forked futures: for --forks "
            "windows the real game is replayed to the end of the context and played RIGHT and LEFT for --fork-steps "
            "frames, the model dreams both from the same context, and the score is how often each dream is closer "
            "to its own real future than the other dream is (chance 0.5). Controllability: each action held for "
            "--control-steps frames, the agent's motion measured by frame registration. A test set that shares a level "
            "with the model's training data (run.json 'data') is refused. Results depend on --seed, not on --workers."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    add_options(evaluate, EvalConfig, EVAL_OPTIONS[:2])
    evaluate.add_argument("--out", default=None, type=storage_location,
                          help="output folder or URI (default: <model run>/eval/<data name>, or ./eval-<data name>)")
    add_options(evaluate, EvalConfig, EVAL_OPTIONS[2:], inception_weights=local_path(
        "the Inception weights are read from this machine's disk: download the file here (on a cluster, into the "
        "image every node runs)"))
    add_address(evaluate)
    evaluate.set_defaults(handler=run_eval)

    report = commands.add_parser(
        "report",
        help="the paper-style results table over several evaluations, with the paper's numbers beside ours",
        description=(
            "Collect the results.json of `genie eval` runs (each DIR: an eval folder, a results.json, or a folder "
            "holding eval folders, e.g. a run folder with eval/ inside) into the paper's table: rows Tokenizer, LAM, "
            "GenieRedux, GenieRedux-G and their TA variants, columns the Basic (random agent) and Diverse (PPO agent) "
            "test sets; the paper's numbers in parentheses; the scale of our runs (preset, steps, episodes) below."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    report.add_argument("dirs", nargs="+", metavar="RUN_OR_EVAL_DIR", type=storage_location,
                        help="evaluation folders or run folders (or storage URIs of them)")
    report.add_argument("--out", type=output_file, default=None, help="also write the table to this Markdown file")
    report.set_defaults(handler=run_report)


def _default_out(model: str, data: str) -> str:
    from genie_common import storage
    from world_model.runs import read_run_info

    name = Path(str(data).rstrip("/")).name
    if not storage.is_file(model) and read_run_info(model) is not None:
        return storage.join(model, "eval", name)
    return f"eval-{name}"


def run_eval(args: argparse.Namespace) -> int:
    from cluster.dataclass_options import config_from_args
    from cluster.ray_session import ray_session
    from world_model.evaluation import EvalConfig, evaluate

    config = config_from_args(EvalConfig, args, EVAL_OPTIONS, device="cuda" if args.gpus_per_worker > 0 else "cpu")
    out = args.out or _default_out(args.model, args.data)
    with ray_session(args.address):
        results = evaluate(config, out=out)
    from world_model.evaluation.outputs import markdown_table

    print(markdown_table(results))
    timing = results["timing"]
    print(f"{len(results['episodes'])} episodes in {timing['seconds']:.1f}s ({timing['episodes_per_second']:.2f} "
          f"episodes/s). Outputs in {out}: results.json, results.md, psnr_over_horizon.png, samples/. Next: genie "
          f"report {out}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from world_model.evaluation.report import find_results, load_results, report_table

    from genie_common import storage

    # an evaluation at a URI is mirrored (afresh: it may have been evaluated again since)
    dirs = [storage.local_copy(d, refresh=True) if storage.is_uri(d) else d for d in args.dirs]
    table = report_table(load_results(find_results(dirs)))
    print(table)
    if args.out:
        args.out.write_text(table)
        print(f"table: {args.out}")
    return 0
