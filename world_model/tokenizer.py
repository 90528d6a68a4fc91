"""ST-ViViT VQ-VAE tokenizer: video (B, T, H, W, C) uint8 -> token ids (B, T, h, w) -> reconstruction.

Both encoder and decoder are causal ST-transformers, so frame t's tokens (and its
reconstruction) depend only on frames <= t: the dynamics can then treat the tokens of a
generated frame exactly like the tokens of a real one, whatever comes after.

`encoder_temporal=False` encodes every frame on its own (the decoder stays temporal). Why: with
a causal temporal encoder a frame's tokens depend on the frames before it *in the tokenized
window*. When a rollout is longer than the training window (tiny: 4 frames, horizon 10), the
dynamics' sliding context no longer starts at a window start, and it is fed tokens it never
saw in training: measured on a tiny model, one-pass token accuracy fell from 0.41 to 0.13 and
autoregressive PSNR collapsed after 2 frames. Per-frame tokens are the same wherever the frame
sits. The paper's windows (16 frames) hold context + horizon (2 + 10), so `paper` keeps the
temporal encoder.

Shapes: B batch, T frames, H x W x C pixels, p patch side, h x w = H/p x W/p token grid, d model width, D code width.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from world_model.config import TokenizerConfig
from world_model.frames import psnr, to_unit_float
from world_model.outputs import LossOutput
from world_model.patches import patchify, unpatchify
from world_model.st_transformer import STTransformer
from world_model.vq import QuantizerOutput, VectorQuantizer


class Tokenizer(nn.Module):
    stage = "tokenizer"

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.config = config
        patch_values = config.patch * config.patch * config.channels
        self.patch_embedding = nn.Linear(patch_values, config.encoder.dim)
        self.encoder = STTransformer(config.encoder)
        self.to_code = nn.Linear(config.encoder.dim, config.quantizer.code_dim)
        self.quantizer = VectorQuantizer(config.quantizer)
        self.from_code = nn.Linear(config.quantizer.code_dim, config.decoder.dim)
        self.decoder = STTransformer(config.decoder)
        self.to_pixels = nn.Linear(config.decoder.dim, patch_values)

    @property
    def device(self) -> torch.device:
        return self.to_code.weight.device

    def encode(self, frames: torch.Tensor) -> QuantizerOutput:
        """Float frames (B, T, H, W, C) in [0, 1] -> quantised latents (B, T, h, w, D) and ids (B, T, h, w)."""
        centered = 2.0 * frames - 1.0  # (B, T, H, W, C) in [-1, 1]: zero-centred inputs train faster
        tokens = self.patch_embedding(patchify(centered, self.config.patch))  # (B, T, h, w, d)
        if self.config.encoder_temporal:
            hidden = self.encoder(tokens)  # (B, T, h, w, d)
        else:
            b = tokens.shape[0]
            hidden = self.encoder(rearrange(tokens, "b t h w d -> (b t) 1 h w d"))  # each frame alone
            hidden = rearrange(hidden, "(b t) 1 h w d -> b t h w d", b=b)  # (B, T, h, w, d)
        latents = self.to_code(hidden)  # (B, T, h, w, D)
        return self.quantizer(latents)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Unit-norm code vectors (B, T, h, w, D) -> frames (B, T, H, W, C), roughly in [0, 1]."""
        hidden = self.decoder(self.from_code(codes))  # (B, T, h, w, d)
        return 0.5 + unpatchify(self.to_pixels(hidden), self.config.patch)  # (B, T, H, W, C), mid-grey = 0

    @torch.no_grad()
    def tokenize(self, video: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1] float) video (B, T, H, W, C) -> token ids (B, T, h, w) int64."""
        return self.encode(to_unit_float(video, self.device)).ids

    @torch.no_grad()
    def detokenize(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T, h, w) -> frames (B, T, H, W, C) float32 clamped to [0, 1] (float32 under bf16 autocast
        too: carried patches keep the previous frame's exact pixels, and metrics read these frames)."""
        return self.decode(self.quantizer.lookup(ids)).float().clamp(0.0, 1.0)

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, QuantizerOutput]:
        # frames: (B, T, H, W, C) float in [0, 1]
        quantized = self.encode(frames)
        return self.decode(quantized.quantized), quantized  # (B, T, H, W, C)

    def compute_loss(self, batch: tuple[np.ndarray, np.ndarray]) -> LossOutput:
        """MSE reconstruction + VQ loss on a store batch (frames (B, T, H, W, C) uint8, actions unused)."""
        frames = to_unit_float(batch[0], self.device)  # (B, T, H, W, C)
        reconstruction, quantized = self(frames)  # (B, T, H, W, C)
        mse = F.mse_loss(reconstruction, frames)
        loss = mse + quantized.loss
        return LossOutput(loss, {
            "loss": loss.detach(),
            "mse": mse.detach(),
            "vq_loss": quantized.loss.detach(),
            "psnr": psnr(reconstruction.detach(), frames),
            "codebook_usage": quantized.usage,
            "perplexity": quantized.perplexity,
            "restarted_codes": self.quantizer.restarted_codes,
        })
