"""Evaluation rollout speed with and without MaskGIT's context cache, in one run.

Autoregressive rollouts as `genie eval` makes them (`WorldModel.generate`: tokenize the context,
MaskGIT frame by frame, decode) with an untrained `tiny` GenieRedux-G (speed does not depend on the
weights) at the tiny pipeline's evaluation settings: context 2, horizon 10, batch 4 episodes, and
MaskGIT 4 steps (tiny) and 25 (the paper). Without the cache every pass runs the whole window
(context + new frame) through the transformer and the readout; with it the context runs once per
generated frame and each pass only the new frame. Both must give the same frames (same seed), which
is checked.

    python benchmarks/bench_context_cache.py [--steps 4 25] [--repeats 2] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 25], help="MaskGIT steps per frame")
    parser.add_argument("--context", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="timed rollouts per setting (the fastest counts)")
    # 1 thread, as each of the 2 evaluation actors runs; 2 threads on 2 busy cores spin (measured ~10x slower)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()

    import numpy as np
    import torch

    from world_model.config import load_preset
    from world_model.dynamics import Dynamics
    from world_model.generation import WorldModel
    from world_model.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = load_preset(args.preset)
    device = torch.device(args.device)
    world = WorldModel(Tokenizer(preset.tokenizer).eval(), Dynamics(preset.dynamics).eval()).to(device)
    rng = np.random.default_rng(0)
    context = rng.integers(0, 256, (args.batch_size, args.context, 64, 64, 3), dtype=np.uint8)  # (B, Tc, H, W, C)
    actions = rng.integers(0, 15, (args.batch_size, args.context - 1 + args.horizon))  # (B, Tc-1+horizon)
    frames = args.batch_size * args.horizon

    def rollout(steps: int, cached: bool) -> tuple[float, torch.Tensor]:
        world.dynamics.context_cache = cached  # what WorldModel.generate's sample_next_frame uses
        generator = torch.Generator(device=device).manual_seed(1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = world.generate(context, actions, args.horizon, steps=steps, temperature=1.0, generator=generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, out  # seconds, (B, horizon, H, W, C)

    print(f"preset {args.preset}, {args.device}, {args.threads} threads: batch {args.batch_size}, context "
          f"{args.context}, horizon {args.horizon} ({frames} frames per rollout), fastest of {args.repeats}")
    rollout(1, True)  # warm-up (allocator, kernels)
    for steps in args.steps:
        rates, outputs = {}, {}
        for cached in (False, True):
            times = []
            for _ in range(args.repeats):
                seconds, outputs[cached] = rollout(steps, cached)
                times.append(seconds)
            rates[cached] = frames / min(times)
            label = "with cache   " if cached else "without cache"
            print(f"MaskGIT {steps:2d} steps, {label}: {rates[cached]:7.2f} frames/s ({min(times):.2f} s per rollout)")
        same = torch.equal(outputs[True], outputs[False])
        print(f"MaskGIT {steps:2d} steps: cache speed-up {rates[True] / rates[False]:.2f}x; identical frames: {same}")


if __name__ == "__main__":
    main()
