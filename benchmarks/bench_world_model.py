"""World model at `tiny` on CPU: training throughput and peak memory per stage, MaskGIT generation
speed at 25 and at fewer steps, and fused SDPA attention vs explicit softmax(QK^T)V in the same run.

Random uint8 frames stand in for data (speed does not depend on content).

    python benchmarks/bench_world_model.py [--steps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from world_model.config import load_preset
from world_model.dynamics import Dynamics
from world_model.generation import WorldModel
from world_model.lam import LatentActionModel
from world_model.optim import Optimization
from world_model.st_transformer import set_attention_implementation
from world_model.steps import DynamicsTrainee, train_step
from world_model.tokenizer import Tokenizer


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def batch(preset, length, rng):
    frames = rng.integers(0, 256, (preset.batch_size, length, 64, 64, 3), dtype=np.uint8)
    return frames, rng.integers(0, 15, (preset.batch_size, length - 1)).astype(np.int8)


def train_throughput(model, preset, length, steps, rng) -> float:
    optimization = Optimization(model, preset.optim)
    train_step(model, optimization, batch(preset, length, rng))  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        train_step(model, optimization, batch(preset, length, rng))
    return steps * preset.batch_size * length / (time.perf_counter() - start)


PAPER_PARAMETERS = {"tokenizer": "~100M", "lam": "-", "dynamics": "~80M"}  # GenieRedux (arXiv 2409.06445)


def parameter_counts() -> None:
    """Parameters of every stage at every preset, beside the paper's figures."""
    print(f"{'preset':8s} {'tokenizer':>12s} {'lam':>12s} {'dynamics':>12s}")
    for name in ("tiny", "small", "paper"):
        preset = load_preset(name)
        models = {"tokenizer": Tokenizer(preset.tokenizer), "lam": LatentActionModel(preset.lam),
                  "dynamics": Dynamics(preset.dynamics)}
        counts = {k: sum(p.numel() for p in m.parameters()) / 1e6 for k, m in models.items()}
        print(f"{name:8s} " + " ".join(f"{counts[k]:>11.2f}M" for k in models))
    print(f"{'(paper)':8s} " + " ".join(f"{PAPER_PARAMETERS[k]:>12s}" for k in ("tokenizer", "lam", "dynamics")))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--params-only", action="store_true", help="only print parameter counts per preset")
    args = parser.parse_args()
    parameter_counts()
    if args.params_only:
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    preset = load_preset("tiny")
    print(f"preset tiny, batch {preset.batch_size}, {args.threads} threads, CPU")

    tokenizer, lam = Tokenizer(preset.tokenizer), LatentActionModel(preset.lam)
    dynamics = Dynamics(preset.dynamics)
    for name, make_model, length in (
        ("tokenizer", lambda: tokenizer, preset.tokenizer.frames),
        ("lam", lambda: lam, preset.lam.frames),
        # freezes the tokenizer
        ("dynamics (GenieRedux-G)", lambda: DynamicsTrainee(dynamics, tokenizer), preset.dynamics.frames),
    ):
        fps = train_throughput(make_model(), preset, length, args.steps, rng)
        print(f"train {name:24s} {fps:8.1f} frames/s   peak RSS so far {peak_rss_mb():7.0f} MB")

    world = WorldModel(tokenizer.eval(), dynamics.eval())
    context, actions = batch(preset, 2, rng)
    horizon = 4
    all_actions = np.concatenate([actions, rng.integers(0, 15, (preset.batch_size, horizon)).astype(np.int8)], 1)
    speeds = {}
    for steps in (25, 8, 1):
        start = time.perf_counter()
        world.generate(context, all_actions, horizon, steps=steps)
        speeds[steps] = preset.batch_size * horizon / (time.perf_counter() - start)
        print(f"generate {steps:2d} MaskGIT steps  {speeds[steps]:8.2f} frames/s (batch {preset.batch_size}, "
              f"horizon {horizon})")
    print(f"ratio 8 steps / 25 steps: {speeds[8] / speeds[25]:.2f}x")

    timings = {}
    tokenizer = Tokenizer(preset.tokenizer)  # a trainable one (DynamicsTrainee froze the first)
    for implementation in ("sdpa", "naive"):
        set_attention_implementation(tokenizer, implementation)
        timings[implementation] = train_throughput(tokenizer, preset, preset.tokenizer.frames, args.steps, rng)
        print(f"tokenizer train, {implementation:5s} attention {timings[implementation]:8.1f} frames/s")
    set_attention_implementation(tokenizer, "sdpa")
    print(f"ratio sdpa / naive: {timings['sdpa'] / timings['naive']:.2f}x")


if __name__ == "__main__":
    main()
