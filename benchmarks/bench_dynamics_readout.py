"""The dynamics' (.., V) work at `tiny`, against the straightforward versions, in one run.

At V = 1024 codes and a 64-wide transformer, the logits are most of a tiny dynamics' work:
1. training step: the readout of only the masked positions (what the loss scores; `compute_loss_on_tokens`)
   vs reading out every position of the window and indexing the masked ones (`model(...)[mask]`);
2. MaskGIT pass: one inverse-CDF draw per token (`_sample_categorical`) vs the Gumbel-max trick
   (V noise values per token) over log_softmax, the sampler this replaced.
Both pairs are checked to compute the same thing (equal loss; same distribution is a test's job).
Prints seconds per step / per generated frame and the ratio baseline / ours. Keep the machine idle.

    python benchmarks/bench_dynamics_readout.py [--batch 8] [--sample-batch 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torch.nn.functional as F

from world_model.config import load_preset
from world_model.dynamics import Dynamics, _sample_categorical, previous_frames


def full_readout_loss(model: Dynamics, tokens: torch.Tensor, actions: torch.Tensor,
                      generator: torch.Generator) -> torch.Tensor:
    """The baseline: logits of every position (B, T, h, w, V), then the masked ones."""
    mask = model.random_mask(tokens, generator)  # (B, T, h, w)
    logits = model(tokens.masked_fill(mask, model.mask_id), actions, previous_frames(tokens, model.mask_id))
    return F.cross_entropy(logits[mask], tokens[mask])


def gumbel_draw(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The baseline sampler: argmax(log_softmax / tau + Gumbel noise) over (B, N, V)."""
    log_probs = logits.log_softmax(-1)
    uniform = torch.rand(logits.shape, generator=generator).clamp(1e-9, 1.0 - 1e-9)
    return (log_probs - torch.log(-torch.log(uniform))).argmax(-1)


def timed(fn, repeats: int) -> float:
    fn()  # warm up
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="training windows per step (tiny's global batch)")
    parser.add_argument("--sample-batch", type=int, default=16,
                        help="rollouts sampled at once (eval's 4 held actions x 4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per setting (the fastest counts)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1, as each training/eval worker)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    preset = load_preset("tiny")
    config = dataclasses.replace(preset.dynamics, conditioning="ground_truth")
    torch.manual_seed(0)
    model = Dynamics(config)
    grid, frames = config.grid, config.frames
    tokens = torch.randint(0, config.vocab_size, (args.batch, frames, grid, grid))  # (B, T, h, w)
    actions = torch.randint(0, config.num_env_actions, (args.batch, frames - 1))  # (B, T-1)

    ours_loss = model.compute_loss_on_tokens(tokens, actions, torch.Generator().manual_seed(1)).loss
    base_loss = full_readout_loss(model, tokens, actions, torch.Generator().manual_seed(1))
    torch.testing.assert_close(ours_loss, base_loss)

    def step(loss_fn):
        def run():
            model.zero_grad(set_to_none=True)
            loss_fn().backward()
        return run
    generator = torch.Generator().manual_seed(2)
    train_ours = timed(step(lambda: model.compute_loss_on_tokens(tokens, actions, generator).loss), args.repeats)
    train_base = timed(step(lambda: full_readout_loss(model, tokens, actions, generator)), args.repeats)

    model.eval()
    with torch.no_grad():
        context = torch.randint(0, config.vocab_size, (args.sample_batch, frames - 1, grid, grid))  # (B, Tc, h, w)
        context_actions = torch.randint(0, config.num_env_actions, (args.sample_batch, frames - 1))  # (B, Tc)
        logits = model.cached_new_frame_logits(context, context_actions)(
            torch.full((args.sample_batch, 1, grid, grid), model.mask_id)).reshape(args.sample_batch, grid * grid, -1)
        draw_ours = timed(lambda: _sample_categorical(logits, generator), args.repeats)
        draw_base = timed(lambda: gumbel_draw(logits, generator), args.repeats)
        frame = timed(lambda: model.sample_next_frame(context, context_actions, steps=4, temperature=1.0,
                                                      generator=generator), args.repeats)

    print(f"tiny dynamics, {args.threads} thread(s)")
    print(f"training step (batch {args.batch}): full readout {train_base:.3f} s, masked readout {train_ours:.3f} s "
          f"-> {train_base / train_ours:.2f}x")
    print(f"one draw over ({args.sample_batch}, {grid * grid}, {config.vocab_size}) logits: Gumbel-max "
          f"{draw_base * 1e3:.1f} ms, inverse CDF {draw_ours * 1e3:.1f} ms -> {draw_base / draw_ours:.2f}x")
    print(f"one generated frame (4 MaskGIT passes, batch {args.sample_batch}): {frame:.3f} s with the "
          f"inverse-CDF draw; the Gumbel draw would add ~{3 * (draw_base - draw_ours):.3f} s (3 of the 4 passes draw; "
          f"{(frame + 3 * (draw_base - draw_ours)) / frame:.2f}x)")


if __name__ == "__main__":
    main()
