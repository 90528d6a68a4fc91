"""Single-process train and eval steps, the same for every stage.

A stage is any module with `compute_loss(batch) -> LossOutput`, where `batch` is what
`EpisodeStore.sample_windows` returns: frames (B, T, 64, 64, 3) uint8 and actions (B, T-1)
int8. The dynamics also takes a `TokenBatch` (its frozen inputs already encoded, from the token
cache, world_model/token_cache.py). Distribution, data loading and checkpoint plumbing (Ray
Train) wrap these steps and add nothing to them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from world_model.dynamics import Dynamics
from world_model.frames import psnr, to_long, to_unit_float
from world_model.lam import LatentActionModel
from world_model.optim import Optimization
from world_model.outputs import LossOutput, read_metrics
from world_model.tokenizer import Tokenizer

Batch = tuple[np.ndarray, np.ndarray]  # frames (B, T, H, W, C) uint8, actions (B, T-1) int8


class TokenBatch(NamedTuple):
    """Dynamics windows already encoded by the frozen tokenizer (and LAM): what the token cache hands out.

    tokens: ids (B, T, h, w) (int16 from the cache, any integer type); actions: (B, T-1) the true action
    ids for GenieRedux-G, the LAM's latent ids for GenieRedux (turned into codes here, as for frames).
    """

    tokens: np.ndarray | torch.Tensor
    actions: np.ndarray | torch.Tensor


class DynamicsStage(nn.Module):
    """The dynamics with its frozen tokenizer (and frozen LAM for GenieRedux): frames in, token loss out."""

    def __init__(self, dynamics: Dynamics, tokenizer: Tokenizer, lam: LatentActionModel | None = None) -> None:
        super().__init__()
        if dynamics.config.conditioning == "latent" and lam is None:
            raise ValueError("GenieRedux dynamics (conditioning='latent') is trained with a LAM; pass one")
        if dynamics.config.vocab_size != tokenizer.config.quantizer.codebook_size:
            raise ValueError(
                f"dynamics vocab_size {dynamics.config.vocab_size} differs from the tokenizer's codebook "
                f"{tokenizer.config.quantizer.codebook_size}"
            )
        self.dynamics, self.tokenizer, self.lam = dynamics, tokenizer, lam
        for frozen in (tokenizer, lam):
            if frozen is not None:
                frozen.requires_grad_(False)

    def train(self, mode: bool = True) -> "DynamicsStage":
        super().train(mode)
        self.tokenizer.eval()  # frozen stages never train (no codebook restarts either)
        if self.lam is not None:
            self.lam.eval()
        return self

    def inputs(self, batch: Batch | TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, T, h, w) and the dynamics' action inputs (B, T-1) ids or (B, T-1, D) codes,
        from frames (encoded here) or from a `TokenBatch` (encoded once, by the token cache)."""
        if isinstance(batch, TokenBatch):
            tokens = to_long(batch.tokens, self.dynamics.device)  # (B, T, h, w)
            actions = to_long(batch.actions, self.dynamics.device)  # (B, T-1) true or latent ids
            if self.dynamics.config.conditioning == "latent":
                with torch.no_grad():
                    actions = self.lam.action_codes(actions)  # (B, T-1, D)
            return tokens, actions
        frames = to_unit_float(batch[0], self.dynamics.device)  # (B, T, H, W, C)
        with torch.no_grad():
            tokens = self.tokenizer.encode(frames).ids  # (B, T, h, w)
            if self.dynamics.config.conditioning == "latent":
                # ids read from windows of the LAM's own length, as evaluation and play read them
                actions = self.lam.action_codes(self.lam.infer_actions(frames))  # (B, T-1, D)
            else:
                actions = to_long(batch[1], self.dynamics.device)  # (B, T-1)
        return tokens, actions

    def compute_loss(self, batch: Batch | TokenBatch) -> LossOutput:
        tokens, actions = self.inputs(batch)
        return self.dynamics.compute_loss_on_tokens(tokens, actions)


def train_step(model: nn.Module, optimization: Optimization, batch: Batch) -> dict[str, float]:
    """One optimiser step on one batch; returns the stage's metrics plus grad norm and LR."""
    model.train()
    output = model.compute_loss(batch)
    return read_metrics({**output.metrics, **optimization.step(output.loss)})


@torch.no_grad()
def eval_step(model: nn.Module, batch: Batch, decode: bool = False) -> dict[str, float]:
    """The stage's loss and metrics in eval mode (no codebook restarts, no gradient); dynamics adds
    teacher-forced next-frame token accuracy (one pass, argmax, every token of the frame masked) and, with
    `decode` and a batch of frames, the PSNR of those predicted frames decoded (from the same pass)."""
    model.eval()
    if not isinstance(model, DynamicsStage):
        return read_metrics(model.compute_loss(batch).metrics)
    tokens, actions = model.inputs(batch)  # encoded once, for the loss and the teacher-forced pass
    metrics = dict(model.dynamics.compute_loss_on_tokens(tokens, actions).metrics)
    predicted = model.dynamics.teacher_forced_logits(tokens, actions).argmax(-1)  # (B, T-1, h, w)
    metrics["teacher_forced_accuracy"] = (predicted == tokens[:, 1:]).float().mean()
    if decode and not isinstance(batch, TokenBatch):
        decoded = model.tokenizer.detokenize(predicted)  # (B, T-1, H, W, C)
        metrics["teacher_forced_psnr"] = psnr(decoded.float(), to_unit_float(batch[0][:, 1:], decoded.device))
    return read_metrics(metrics)
