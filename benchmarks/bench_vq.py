"""What the tokenizer's nearest-code search costs on a CPU: the blocked search (`vq.nearest_codes`) against one
argmax over all similarities, in one run.

Every frame the tiny study tokenizes picks, for each of its 256 patches, the most similar of 1024 codes: in the
tokenizer's own training, in each dynamics step (the frozen tokenizer over the window and, on the scrolled copy
path, over each frame's shifted predecessor) and in evaluation. One argmax over a batch's (N, 1024) similarities
reads 32 MB back from memory for 32 frames; the blocked search keeps each block in cache and reduces with max().
Timed at `tiny`'s sizes on real CoinRun frames (untrained weights: the cost does not depend on them), the two
searches alternating `--repeats` times, the fastest of each counting; the ids are checked equal.

    python benchmarks/bench_vq.py [--repeats 5] [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="train steps per timing")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a tiny Ray Train worker has 1)")
    args = parser.parse_args()

    import numpy as np
    import torch

    import world_model.vq as vq
    from rl_agent.coinrun_env import CoinRunConfig, CoinRunVecEnv
    from world_model.config import OptimConfig, load_preset
    from world_model.dynamics import Dynamics
    from world_model.optim import Optimization
    from world_model.steps import DynamicsTrainee, train_step
    from world_model.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = load_preset("tiny")
    batch, length = preset.batch_size, preset.dynamics.frames
    env = CoinRunVecEnv(8, CoinRunConfig(), seed=3)  # real frames: 8 games played at random
    rng = np.random.default_rng(0)
    frames, actions = [env.observe()], []
    for _ in range(24):
        action = rng.integers(0, 15, 8)
        env.step(action)
        frames.append(env.observe())
        actions.append(action)
    video = np.stack(frames, axis=1)  # (8, 25, H, W, C)
    taken = np.stack(actions, axis=1).astype(np.int8)  # (8, 24)
    tokenizer = Tokenizer(preset.tokenizer)
    with torch.no_grad():  # seed the codebook from real frames, as the first training step does
        tokenizer.train()(torch.from_numpy(video[:, :length]).float() / 255)
    tokenizer.eval()
    trainee = DynamicsTrainee(Dynamics(preset.dynamics), tokenizer)
    optimization = Optimization(trainee, OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1, total_steps=10_000))

    blocked = vq.nearest_codes

    def one_argmax(vectors: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        return (vectors @ codes.t()).argmax(dim=-1)

    clip = video[:, :4]  # (8, 4, H, W, C): 32 frames, a dynamics step's share of two workers times two

    def tokenize() -> float:
        start = time.perf_counter()
        tokenizer.tokenize(clip)
        return time.perf_counter() - start

    def dynamics_step() -> float:
        start = time.perf_counter()
        for i in range(args.steps):
            games = np.arange(i, i + batch) % 8
            s = (i * 3) % (25 - length)
            train_step(trainee, optimization, (video[games, s: s + length], taken[games, s: s + length - 1]))
        return (time.perf_counter() - start) / args.steps

    searches = {"blocked": blocked, "one argmax": one_argmax}
    ids = {}
    for name, search in searches.items():
        vq.nearest_codes = search
        ids[name] = tokenizer.tokenize(video)
    vq.nearest_codes = blocked
    if not torch.equal(ids["blocked"], ids["one argmax"]):
        raise SystemExit("the two searches picked different ids")
    best = {(kind, name): float("inf") for kind in ("tokenize", "step") for name in searches}
    try:
        for _ in range(args.repeats):
            for name, search in searches.items():
                vq.nearest_codes = search
                best["tokenize", name] = min(best["tokenize", name], tokenize())
                best["step", name] = min(best["step", name], dynamics_step())
    finally:
        vq.nearest_codes = blocked
    print(f"tiny, {args.threads} thread(s), fastest of {args.repeats}; the same ids from both searches "
          f"({ids['blocked'].numel():,} patches)")
    for kind, label in (("tokenize", "tokenize 32 frames"), ("step", f"scrolled dynamics train step (batch {batch})")):
        fast, slow = best[kind, "blocked"], best[kind, "one argmax"]
        print(f"{label}: blocked {fast * 1e3:.0f} ms, one argmax {slow * 1e3:.0f} ms -> {slow / fast:.2f}x")


if __name__ == "__main__":
    main()
