"""Evaluation of the tokenizer, the LAM and the world models, the way the papers measure them
(docs/design.md, 'Metrics').

    metrics.py       PSNR (identical frames capped explicitly), SSIM (data range 1), copy-last-frame baseline
    fid.py           Fréchet distance; FID from a local TorchScript Inception (never downloaded)
    registration.py  agent motion between frames (the controllability check)
    models.py        what is evaluated (tokenizer / LAM / world model), its training data, level overlap
    episodes.py      which test windows are evaluated (from the seed)
    rollouts.py      autoregressive, teacher-forced, counterfactual (ΔtPSNR, two versions), held-action and
                     forked rollouts
    forks.py         forked futures' real half: the level replayed to a window's context, played RIGHT xk and LEFT xk
    worker.py        one batch of windows; the Ray actor
    runner.py        `evaluate(config)`: all batches on Ray, averaged; `copy_last_frame_baseline`
    outputs.py       results.json, results.md, PSNR-over-horizon PNG, GIFs / PNG strips
    report.py        the paper-style table over several evaluations (`genie report`)
"""

from world_model.evaluation.config import EvalConfig

__all__ = ["EvalConfig", "copy_last_frame_baseline", "evaluate", "run_evaluation"]


def __getattr__(name: str):
    # the runner (torch, Ray) is imported when first used: `genie --help` builds its options from EvalConfig alone
    if name in ("copy_last_frame_baseline", "evaluate", "run_evaluation"):
        from world_model.evaluation import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
