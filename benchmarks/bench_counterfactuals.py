"""ΔtPSNR's rollouts with and without branching the counterfactuals off the factual rollout, in one run.

`genie eval` measures ΔtPSNR at frame t (4) twice for GenieRedux-G (the paper's counterfactual and one of
another effect), and each counterfactual is the same rollout with only the action into frame t changed.
Whole: the factual rollout (horizon 10) and, per counterfactual, a rollout of t frames from the context
(`rollouts.counterfactual_frame`). Branched (`rollouts.autoregressive_with_counterfactuals`, what eval
runs): frames 1..t-1 are dreamt once, and each counterfactual dreams only frame t from the generator's
state there. Both must give the same frames, which is checked. Untrained `tiny` GenieRedux-G (speed does
not depend on the weights), the tiny pipeline's evaluation settings: context 2, batch 4, MaskGIT 4 steps.

    python benchmarks/bench_counterfactuals.py [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=2)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--t", type=int, default=4, help="the frame ΔtPSNR is measured at")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--maskgit-steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per way, alternating (the fastest counts)")
    parser.add_argument("--threads", type=int, default=1, help="1, as each of the 2 evaluation actors runs")
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()

    import numpy as np
    import torch

    from world_model.config import load_preset
    from world_model.dynamics import Dynamics
    from world_model.evaluation import rollouts
    from world_model.generation import WorldModel
    from world_model.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = load_preset(args.preset)
    world = WorldModel(Tokenizer(preset.tokenizer).eval(), Dynamics(preset.dynamics).eval())
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.batch_size, args.context + args.horizon, 64, 64, 3), dtype=np.uint8)
    ids = torch.as_tensor(rng.integers(0, 15, (args.batch_size, args.context - 1 + args.horizon)))  # (B, T-1)
    versions = ((1, False), (3, True))  # (rng stream, by effect): eval's two ΔtPSNR versions
    steps, c, h, t = args.maskgit_steps, args.context, args.horizon, args.t

    def whole() -> tuple[torch.Tensor, list[torch.Tensor]]:
        factual = rollouts.autoregressive(world, frames, ids, c, h, steps, None, 7)
        others = [rollouts.counterfactual_frame(world, frames, ids, c, t, steps, None, 7,
                                                np.random.default_rng(s), by)[0]
                  for s, by in versions]
        return factual, others

    def branched() -> tuple[torch.Tensor, list[torch.Tensor]]:
        changed = [rollouts.counterfactual_ids(world, ids, c - 2 + t, np.random.default_rng(s), by)
                   for s, by in versions]
        return rollouts.autoregressive_with_counterfactuals(world, frames, ids, changed, c, h, t, steps, None, 7)

    print(f"preset {args.preset}, {args.threads} thread(s): batch {args.batch_size}, context {c}, horizon {h}, "
          f"ΔtPSNR at t={t} x{len(versions)} versions, MaskGIT {steps} steps; fastest of {args.repeats}")
    whole()  # warm-up
    times: dict[str, list[float]] = {"whole": [], "branched": []}
    outputs = {}
    for _ in range(args.repeats):
        for name, run in (("whole", whole), ("branched", branched)):
            start = time.perf_counter()
            outputs[name] = run()
            times[name].append(time.perf_counter() - start)
    for name in times:
        print(f"{name:8s}: {min(times[name]):.2f} s per batch ({h + len(versions) * (t if name == 'whole' else 1)} "
              "frames dreamt)")
    same = torch.equal(outputs["whole"][0], outputs["branched"][0]) and all(
        torch.allclose(a, b, atol=1e-6) for a, b in zip(outputs["whole"][1], outputs["branched"][1]))
    print(f"branching speed-up {min(times['whole']) / min(times['branched']):.2f}x; identical frames: {same}")
    if not same:
        raise SystemExit("the branched counterfactuals differ from whole counterfactual rollouts")


if __name__ == "__main__":
    main()
