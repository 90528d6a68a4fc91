"""Spatio-temporal (ST) transformer: the backbone shared by the tokenizer, the LAM and the dynamics.

A block attends within a frame (every token sees every token of its frame), then across time
at the same spatial position, causally (a token of frame t sees frames <= t), then applies an
MLP; each sub-layer is pre-norm with a residual. Full space-time attention would cost
(T*H*W)^2; the factorised form costs T*(H*W)^2 + H*W*T^2, which is what makes 16-frame
windows of 256 tokens affordable (Genie).

Positions: a PEG (positional encoding generator, a depthwise conv over (t, h, w) added to the
tokens; padded only on the past side in time, so it stays causal) gives every block relative
spatial position, and ALiBi adds a per-head linear distance penalty to temporal attention, so
rollouts longer than the training window still have a sensible notion of "how long ago".
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from world_model.attention import MultiHeadAttention, alibi_slopes, causal_alibi_bias
from world_model.config import TransformerConfig


class PositionalEncodingGenerator(nn.Module):
    """Depthwise 3x3x3 conv over (t, h, w), causal in time (two past frames, none ahead)."""

    def __init__(self, dim: int, init: str = "zero") -> None:
        super().__init__()
        self.conv = nn.Conv3d(dim, dim, kernel_size=3, groups=dim)
        # zero init: the block starts as if there were no PEG, instead of blurring every token with
        # a random mix of its neighbours (which the tokenizer would first have to learn to undo);
        # "random" keeps PyTorch's init, so attention sees where a token is from the first step
        if init == "zero":
            nn.init.zeros_(self.conv.weight)
            nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, H, W, C)
        channels_first = rearrange(x, "b t h w c -> b c t h w")  # (B, C, T, H, W)
        padded = F.pad(channels_first, (1, 1, 1, 1, 2, 0))  # (B, C, T+2, H+2, W+2): pad W, H both sides; T past only
        return rearrange(self.conv(padded), "b c t h w -> b t h w c")  # (B, T, H, W, C)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (..., C) -> (..., C)


class STBlock(nn.Module):
    """PEG, spatial attention, causal temporal attention with ALiBi, MLP; pre-norm residuals."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.peg = PositionalEncodingGenerator(config.dim, config.peg_init)
        self.spatial_norm = nn.LayerNorm(config.dim)
        self.spatial_attention = MultiHeadAttention(config.dim, config.heads, config.attention)
        self.temporal_norm = nn.LayerNorm(config.dim)
        self.temporal_attention = MultiHeadAttention(config.dim, config.heads, config.attention)
        self.mlp_norm = nn.LayerNorm(config.dim)
        self.mlp = FeedForward(config.dim, config.mlp_ratio)

    def forward(self, x: torch.Tensor, temporal_bias: torch.Tensor) -> torch.Tensor:
        # x: (B, T, H, W, C); temporal_bias: (heads, T, T) with -inf above the diagonal
        b, t, h, w, _ = x.shape
        x = x + self.peg(x)  # (B, T, H, W, C)

        per_frame = rearrange(self.spatial_norm(x), "b t h w c -> (b t) (h w) c")  # (B*T, H*W, C)
        x = x + rearrange(self.spatial_attention(per_frame), "(b t) (h w) c -> b t h w c", b=b, h=h)

        per_position = rearrange(self.temporal_norm(x), "b t h w c -> (b h w) t c")  # (B*H*W, T, C)
        mixed = self.temporal_attention(per_position, temporal_bias)  # (B*H*W, T, C)
        x = x + rearrange(mixed, "(b h w) t c -> b t h w c", b=b, h=h, w=w)

        return x + self.mlp(self.mlp_norm(x))  # (B, T, H, W, C)

    def prefill(self, x: torch.Tensor, temporal_bias: torch.Tensor) -> tuple[torch.Tensor, BlockCache]:
        """forward() on context frames, also keeping what a frame appended after them needs from this block
        (its PEG window and temporal keys/values): the context's states never depend on later frames."""
        # x: (B, T, H, W, C); temporal_bias: (heads, T, T)
        b, t, h, w, c = x.shape
        missing = x.new_zeros(b, max(0, 2 - t), h, w, c)  # the PEG's zero padding before frame 0
        peg_past = torch.cat([missing, x[:, -2:]], dim=1)  # (B, 2, H, W, C): this block's inputs of the last 2 frames
        x = x + self.peg(x)  # (B, T, H, W, C)

        per_frame = rearrange(self.spatial_norm(x), "b t h w c -> (b t) (h w) c")  # (B*T, H*W, C)
        x = x + rearrange(self.spatial_attention(per_frame), "(b t) (h w) c -> b t h w c", b=b, h=h)

        per_position = rearrange(self.temporal_norm(x), "b t h w c -> (b h w) t c")  # (B*H*W, T, C)
        mixed, keys_values = self.temporal_attention.forward_with_past(per_position, temporal_bias)  # (B*H*W, T, C)
        x = x + rearrange(mixed, "(b h w) t c -> b t h w c", b=b, h=h, w=w)

        return x + self.mlp(self.mlp_norm(x)), BlockCache(peg_past, keys_values)  # (B, T, H, W, C)

    def forward_new_frame(self, x: torch.Tensor, temporal_bias: torch.Tensor, cache: BlockCache) -> torch.Tensor:
        """forward() of one frame appended after the cached context: equals forward(cat(context, x))[:, -1:]."""
        # x: (B, 1, H, W, C); temporal_bias: (heads, 1, Tc+1), the new frame's row of the causal ALiBi bias
        b, _, h, w, _ = x.shape
        window = torch.cat([cache.peg_past, x], dim=1)  # (B, 3, H, W, C): the PEG's whole kernel in time
        x = x + self.peg(window)[:, -1:]  # (B, 1, H, W, C): the last output sees exactly past 2 frames + this one

        per_frame = rearrange(self.spatial_norm(x), "b t h w c -> (b t) (h w) c")  # (B, H*W, C)
        x = x + rearrange(self.spatial_attention(per_frame), "(b t) (h w) c -> b t h w c", b=b, h=h)

        per_position = rearrange(self.temporal_norm(x), "b t h w c -> (b h w) t c")  # (B*H*W, 1, C)
        mixed, _ = self.temporal_attention.forward_with_past(per_position, temporal_bias, cache.keys_values)  # (B*H*W, 1, C)
        x = x + rearrange(mixed, "(b h w) t c -> b t h w c", b=b, h=h, w=w)

        return x + self.mlp(self.mlp_norm(x))  # (B, 1, H, W, C)


@dataclass
class BlockCache:
    """What a frame appended after a context needs from one block: nothing else of the context reaches it."""

    peg_past: torch.Tensor  # (B, 2, H, W, C): the block's inputs of the last 2 context frames (zeros before frame 0)
    keys_values: tuple[torch.Tensor, torch.Tensor]  # 2 x (B*H*W, heads, Tc, d): temporal attention keys and values


@dataclass
class ContextCache:
    """The context of a frame to be sampled, run once through every block (STTransformer.prefill)."""

    frames: int  # Tc, the context length
    blocks: list[BlockCache]


class STTransformer(nn.Module):
    """`depth` ST blocks and a final LayerNorm, on token grids (B, T, H, W, C)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(STBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        self.register_buffer("slopes", alibi_slopes(config.heads), persistent=False)  # (heads,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, T, H, W, C)
        bias = causal_alibi_bias(x.shape[1], self.slopes).to(x.dtype)  # (heads, T, T)
        for block in self.blocks:
            x = block(x, bias)  # (B, T, H, W, C)
        return self.norm(x)  # (B, T, H, W, C)

    def prefill(self, context: torch.Tensor) -> ContextCache:
        """Run context frames (B, Tc, H, W, C) through the blocks once, keeping what a next frame needs at each,
        so MaskGIT's passes over that frame need not recompute the context (causal in time, so it can't change)."""
        bias = causal_alibi_bias(context.shape[1], self.slopes).to(context.dtype)  # (heads, Tc, Tc)
        blocks = []
        for block in self.blocks:
            context, cache = block.prefill(context, bias)  # (B, Tc, H, W, C)
            blocks.append(cache)
        return ContextCache(context.shape[1], blocks)

    def forward_new_frame(self, x: torch.Tensor, cache: ContextCache) -> torch.Tensor:
        """One frame (B, 1, H, W, C) after the cached context -> its output (B, 1, H, W, C),
        equal to forward(cat(context, x))[:, -1:] at a fraction of the cost."""
        bias = causal_alibi_bias(cache.frames + 1, self.slopes)[:, -1:].to(x.dtype)  # (heads, 1, Tc+1): the last row
        for block, block_cache in zip(self.blocks, cache.blocks):
            x = block.forward_new_frame(x, bias, block_cache)  # (B, 1, H, W, C)
        return self.norm(x)  # (B, 1, H, W, C)


def set_attention_implementation(model: nn.Module, implementation: str) -> None:
    """Switch every attention layer of `model` between "sdpa" and "naive" (same weights, same function)."""
    if implementation not in ("sdpa", "naive"):
        raise ValueError(f"implementation must be 'sdpa' or 'naive', got {implementation!r}")
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.implementation = implementation
