"""`genie eval` and `genie report`: measure a tokenizer, LAM or world model the way the papers do."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 40


def register(commands) -> None:
    from cluster.arguments import (local_path, non_negative_float, non_negative_int, output_file, positive_float,
                                   positive_int, storage_location)
    from cluster.arguments import add_address

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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    evaluate.add_argument("--model", required=True, type=storage_location,
                          help="run folder of `genie train tokenizer|lam|dynamics` (its best checkpoint) or a "
                               ".pt checkpoint")
    evaluate.add_argument("--data", required=True, type=storage_location,
                          help="test set folder or URI, e.g. data/basic-test or data/diverse-test")
    evaluate.add_argument("--out", default=None, type=storage_location,
                          help="output folder or URI (default: <model run>/eval/<data name>, or ./eval-<data name>)")
    evaluate.add_argument("--context", type=positive_int, default=2, help="real frames the model starts from")
    evaluate.add_argument("--horizon", type=positive_int, default=10, help="frames predicted after the context")
    evaluate.add_argument("--maskgit-steps", type=positive_int, default=25, help="MaskGIT passes per generated frame")
    evaluate.add_argument("--temperature", type=non_negative_float, default=None,
                          help="initial sampling temperature, annealed to 0 (default: the model's own)")
    evaluate.add_argument("--guidance", type=non_negative_float, default=None,
                          help="classifier-free guidance on the key: each frame follows l_none + g (l_key - l_none); "
                               "1 = none; needs a dynamics trained with action_dropout > 0 (default: the model's own)")
    evaluate.add_argument("--episodes", type=positive_int, default=None,
                          help="test episodes to evaluate (default: all)")
    evaluate.add_argument("--split", default=None, choices=["train", "val", "test"],
                          help="only this split of --data (default: every episode; named test sets are all 'test')")
    evaluate.add_argument("--workers", type=positive_int, default=2, help="Ray actors evaluating batches in parallel")
    evaluate.add_argument("--cpus-per-worker", type=positive_float, default=1.0,
                          help="Ray CPUs (and torch threads) per worker")
    evaluate.add_argument("--gpus-per-worker", type=non_negative_float, default=0.0,
                          help="GPUs per worker (then the model runs on cuda)")
    evaluate.add_argument("--no-bf16", action="store_true",
                          help="on GPUs, run the model in float32 (TF32 matmuls) instead of bfloat16 autocast; metrics "
                               "are float32 either way")
    evaluate.add_argument("--batch-size", type=positive_int, default=4,
                          help="episodes per batch (part of what --seed fixes)")
    evaluate.add_argument("--seed", type=non_negative_int, default=0,
                          help="picks episodes, windows, sampling noise and counterfactual actions")
    evaluate.add_argument("--delta-t", type=positive_int, default=4, help="ΔtPSNR is measured at this predicted frame")
    evaluate.add_argument("--modes", default="autoregressive,teacher_forced",
                          help="comma-separated rollout modes: autoregressive, teacher_forced")
    evaluate.add_argument("--control-steps", type=non_negative_int, default=3,
                          help="frames each action is held for controllability (0 = skip)")
    evaluate.add_argument("--forks", type=non_negative_int, default=6,
                          help="windows whose real game is replayed and forked RIGHT vs LEFT (0 = skip)")
    evaluate.add_argument("--fork-steps", type=positive_int, default=4, help="frames of each fork (k)")
    evaluate.add_argument("--inception-weights", default=None,
                          type=local_path("the Inception weights are read from this machine's disk: download the file "
                                          "here (on a cluster, into the image every node runs)"),
                          help="local TorchScript Inception (e.g. inception-2015-12-05.pt) for FID; without it "
                               "FID is skipped")
    evaluate.add_argument("--samples", type=non_negative_int, default=4, help="episodes drawn as GIFs and PNG strips")
    evaluate.add_argument("--checkpoint", default="best", choices=["best", "latest"],
                          help="which checkpoint of a run folder")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar")
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
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    from cluster.ray_session import ray_session
    from world_model.evaluation import EvalConfig, evaluate

    config = EvalConfig(
        model=args.model, data=args.data, context=args.context, horizon=args.horizon, maskgit_steps=args.maskgit_steps,
        temperature=args.temperature, guidance=args.guidance, episodes=args.episodes, split=args.split,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        device="cuda" if args.gpus_per_worker > 0 else "cpu", bf16=not args.no_bf16, batch_size=args.batch_size,
        seed=args.seed, delta_t=args.delta_t, modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
        control_steps=args.control_steps, forks=args.forks, fork_steps=args.fork_steps,
        inception_weights=args.inception_weights, samples=args.samples,
        prefer=args.checkpoint, show_progress=not args.no_progress,
    )
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
