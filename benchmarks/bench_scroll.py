"""What the scrolled copy path (`dynamics.copy_reference: scrolled`) costs, against the plain one, in one run.

Training: `DynamicsTrainee` train steps from frames at the preset's batch and window (the scrolled trainee also
registers each frame's scroll and tokenizes the shifted frame before it). Rollouts: `WorldModel.generate` at the
tiny pipeline's evaluation settings (context 2, horizon 10, 4 episodes, 4 MaskGIT steps; the scrolled dynamics also
runs its scroll head over the context, shifts the frame before and tokenizes it, and decodes each new frame for the
next). Untrained `tiny` models on real CoinRun frames (speed does not depend on the weights); each setting is timed
`--repeats` times alternately and the fastest counts. Prints each time and the ratio plain / scrolled (1.0: free).

    python benchmarks/bench_scroll.py [--steps 20] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="train steps per timing")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args()

    import numpy as np
    import torch

    from rl_agent.coinrun_env import CoinRunConfig, CoinRunVecEnv
    from world_model.config import OptimConfig, load_preset
    from world_model.dynamics import Dynamics
    from world_model.generation import WorldModel
    from world_model.optim import Optimization
    from world_model.steps import DynamicsTrainee, train_step
    from world_model.tokenizer import Tokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    preset = load_preset(args.preset)
    tokenizer = Tokenizer(preset.tokenizer).eval()
    plain_config = dataclasses.replace(preset.dynamics, copy_reference="previous", camera_locked_box=None)
    scrolled_config = dataclasses.replace(preset.dynamics, copy_reference="scrolled",
                                          copy_bias=preset.dynamics.copy_bias or 3.0)
    batch, length = preset.batch_size, preset.dynamics.frames

    # real frames: 16 games played at random for 40 steps
    env = CoinRunVecEnv(16, CoinRunConfig(), seed=3)
    rng = np.random.default_rng(0)
    frames, actions = [env.observe()], []
    for _ in range(40):
        action = rng.integers(0, 15, 16)
        env.step(action)
        frames.append(env.observe())
        actions.append(action)
    video = np.stack(frames, axis=1)  # (16, 41, H, W, C)
    taken = np.stack(actions, axis=1).astype(np.int8)  # (16, 40)

    def windows(i: int) -> tuple[np.ndarray, np.ndarray]:
        games = np.arange(i, i + batch) % 16
        start = (i * 3) % (41 - length)
        return video[games, start: start + length], taken[games, start: start + length - 1]

    trainees = {name: DynamicsTrainee(Dynamics(config), tokenizer)
                for name, config in (("plain", plain_config), ("scrolled", scrolled_config))}
    optimizations = {name: Optimization(t, OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=1, total_steps=10_000))
                     for name, t in trainees.items()}
    worlds = {name: WorldModel(tokenizer, t.dynamics).eval() for name, t in trainees.items()}
    context, horizon, episodes = 2, 10, 4

    def train(name: str) -> float:
        trainees[name].train()
        start = time.perf_counter()
        for i in range(args.steps):
            train_step(trainees[name], optimizations[name], windows(i))
        return (time.perf_counter() - start) / args.steps

    def rollout(name: str) -> float:
        start = time.perf_counter()
        worlds[name].generate(video[:episodes, :context], taken[:episodes, : context - 1 + horizon], horizon, steps=4,
                              temperature=1.0, generator=torch.Generator().manual_seed(1))
        return (time.perf_counter() - start) / (episodes * horizon)

    best = {(kind, name): float("inf") for kind in ("train", "rollout") for name in trainees}
    for _ in range(args.repeats):
        for name in trainees:
            best["train", name] = min(best["train", name], train(name))
            best["rollout", name] = min(best["rollout", name], rollout(name))
    print(f"{args.preset}, {args.threads} thread(s), batch {batch} x {length} frames, fastest of {args.repeats}")
    print(f"train step:  plain {best['train', 'plain'] * 1e3:.0f} ms, scrolled {best['train', 'scrolled'] * 1e3:.0f} "
          f"ms -> plain / scrolled {best['train', 'plain'] / best['train', 'scrolled']:.2f}x")
    print(f"rollout frame: plain {best['rollout', 'plain'] * 1e3:.1f} ms, scrolled "
          f"{best['rollout', 'scrolled'] * 1e3:.1f} ms -> plain / scrolled "
          f"{best['rollout', 'plain'] / best['rollout', 'scrolled']:.2f}x")


if __name__ == "__main__":
    main()
