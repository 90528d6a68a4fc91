"""Latent action model (LAM): learns, without labels, one discrete action per transition.

The encoder sees frames 0..t+1 (causal ST-transformer) and summarises frame t+1's tokens into
one vector, quantised to one of a few codes (7 by default); the decoder must rebuild frame t+1
from frame t plus that code. With so few codes the cheapest thing to store is what changed
because of the agent, i.e. its action (Genie). Loss: MSE on frames 1..T-1 + VQ loss.

Shapes: B batch, T frames, Tw the LAM's window (its training length, `config.frames`), H x W x C pixels, p patch
side, h x w token grid, d model width, D latent-action code width.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from world_model.config import LAMConfig
from world_model.frames import psnr, to_unit_float
from world_model.outputs import LossOutput
from world_model.patches import patchify, unpatchify
from world_model.st_transformer import STTransformer
from world_model.vq import QuantizerOutput, VectorQuantizer


class LatentActionModel(nn.Module):
    stage = "lam"

    def __init__(self, config: LAMConfig) -> None:
        super().__init__()
        self.config = config
        patch_values = config.patch * config.patch * config.channels
        self.encoder_embedding = nn.Linear(patch_values, config.encoder.dim)
        self.encoder = STTransformer(config.encoder)
        self.to_action = nn.Linear(config.encoder.dim, config.quantizer.code_dim)
        self.quantizer = VectorQuantizer(config.quantizer)
        self.decoder_embedding = nn.Linear(patch_values, config.decoder.dim)
        self.action_embedding = nn.Linear(config.quantizer.code_dim, config.decoder.dim)
        self.decoder = STTransformer(config.decoder)
        self.to_pixels = nn.Linear(config.decoder.dim, patch_values)
        nn.init.zeros_(self.to_pixels.weight)  # start from "frame t+1 = frame t"
        nn.init.zeros_(self.to_pixels.bias)

    @property
    def device(self) -> torch.device:
        return self.to_action.weight.device

    def encode_actions(self, frames: torch.Tensor) -> QuantizerOutput:
        """Float frames (B, T, H, W, C) -> quantised latent actions (B, T-1, D) and ids (B, T-1)."""
        patches = patchify(2.0 * frames - 1.0, self.config.patch)  # (B, T, h, w, p*p*C), zero-centred
        hidden = self.encoder(self.encoder_embedding(patches))  # (B, T, h, w, d)
        pooled = hidden.mean(dim=(2, 3))  # (B, T, d): frame t+1's summary has seen frames 0..t+1
        # the change from frame t to t+1: what all frames share (the level's look) would otherwise
        # dominate the pooled vectors, and every transition would land on the same code
        summary = pooled[:, 1:] - pooled[:, :-1]  # (B, T-1, d)
        return self.quantizer(self.to_action(summary))  # quantized (B, T-1, D), ids (B, T-1)

    def decode_next(self, frames: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Frames 0..T-2 (B, T-1, H, W, C) and action codes (B, T-1, D) -> predicted frames 1..T-1."""
        patches = patchify(2.0 * frames - 1.0, self.config.patch)  # (B, T-1, h, w, p*p*C)
        tokens = self.decoder_embedding(patches)  # (B, T-1, h, w, d)
        tokens = tokens + rearrange(self.action_embedding(actions), "b t d -> b t 1 1 d")  # (B, T-1, h, w, d)
        hidden = self.decoder(tokens)  # (B, T-1, h, w, d)
        # predict the change from frame t: "nothing moved" is the starting point, so every bit the
        # latent action carries goes into what did move
        return frames + unpatchify(self.to_pixels(hidden), self.config.patch)  # (B, T-1, H, W, C)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        # frames: (B, T, H, W, C) float in [0, 1]
        actions = self.encode_actions(frames)
        return self.decode_next(frames[:, :-1], actions.quantized), actions  # (B, T-1, H, W, C)

    @torch.no_grad()
    def infer_actions(self, video: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 video (B, T, H, W, C) -> latent action ids (B, T-1): id t labels the step from frame t to t+1.

        Each id is read from at most `config.frames` frames ending at frame t+1, the window length the LAM
        was trained on (and the dynamics of GenieRedux is trained on ids read the same way): over a longer
        video (an evaluation window of context + horizon, a play history) one pass would let the causal
        encoder see more past than it ever did (measured at tiny, 12-frame windows: 10-25% of the later ids
        changed).
        """
        head, tail = self._windows(to_unit_float(video, self.device))
        ids = self.encode_actions(head).ids  # (B, min(T, Tw)-1)
        if tail is None:
            return ids
        return _join_windows(ids, self.encode_actions(tail).ids)  # (B, T-1)

    def predict_next(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float frames (B, T, H, W, C) -> frames 1..T-1 rebuilt from their predecessor and latent action
        (B, T-1, H, W, C), and the latent ids (B, T-1); each from the window of at most `config.frames`
        frames ending at the predicted frame (see `infer_actions`)."""
        head, tail = self._windows(frames)
        predicted, actions = self(head)  # (B, min(T, Tw)-1, H, W, C): the windows starting at frame 0
        if tail is None:
            return predicted, actions.ids
        tail_predicted, tail_actions = self(tail)  # (B*(T-Tw), Tw-1, ...)
        return _join_windows(predicted, tail_predicted), _join_windows(actions.ids, tail_actions.ids)

    def _windows(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, ...) -> the first min(T, Tw) frames, and the windows of Tw frames starting at frames 1..T-Tw
        (B*(T-Tw), Tw, ...), batch-major, or None when T <= Tw. The causal encoder gives transitions 0..Tw-2 from
        the first; window s gives transition s+Tw-2 as its last."""
        length, span = frames.shape[1], self.config.frames
        if length <= span:
            return frames, None
        # (B, T-Tw, Tw, ...)
        windows = torch.stack([frames[:, s : s + span] for s in range(1, length - span + 1)], dim=1)
        return frames[:, :span], windows.flatten(0, 1)

    def action_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """Latent action ids (...) -> their unit-norm code vectors (..., D), what the dynamics consumes."""
        return self.quantizer.lookup(ids)

    def compute_loss(self, batch: tuple[np.ndarray, np.ndarray]) -> LossOutput:
        """MSE on frames 1..T-1 + VQ loss; the true actions are not used (only for evaluation elsewhere)."""
        frames = to_unit_float(batch[0], self.device)  # (B, T, H, W, C)
        predicted, actions = self(frames)  # (B, T-1, H, W, C)
        target = frames[:, 1:]  # (B, T-1, H, W, C)
        mse = F.mse_loss(predicted, target)
        loss = mse + actions.loss
        copy_psnr = psnr(frames[:, :-1], target)  # predicting "nothing changes", the baseline to beat
        return LossOutput(loss, {
            "loss": loss.detach(),
            "mse": mse.detach(),
            "vq_loss": actions.loss.detach(),
            "psnr": psnr(predicted.detach(), target),
            "copy_last_frame_psnr": copy_psnr,
            "action_usage": actions.usage,
            "action_perplexity": actions.perplexity,
            "restarted_codes": self.quantizer.restarted_codes,
        })


def _join_windows(head: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
    """Per-transition results of the first window (B, Tw-1, ...) and of the later windows (B*(T-Tw), Tw-1, ...)
    -> (B, T-1, ...): each later window contributes its last transition (see `LatentActionModel._windows`)."""
    return torch.cat([head, tail[:, -1].unflatten(0, (head.shape[0], -1))], dim=1)
