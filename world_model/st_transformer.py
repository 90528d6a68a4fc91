"""Spatio-temporal (ST) transformer: the backbone shared by the tokenizer, the LAM and the dynamics.

A block attends within a frame (every token sees every token of its frame), then across time
at the same spatial position, causally (a token of frame t sees frames <= t), then applies an
MLP; each sub-layer is pre-norm with a residual. Full space-time attention would cost
(T*h*w)^2; the factorised form costs T*(h*w)^2 + h*w*T^2, which is what makes 16-frame
windows of 256 tokens affordable (Genie).

Positions: a PEG (positional encoding generator, a depthwise conv over (t, h, w) added to the
tokens; padded only on the past side in time, so it stays causal) gives every block relative
spatial position, and ALiBi adds a per-head linear distance penalty to temporal attention, so
rollouts longer than the training window still have a sensible notion of "how long ago".

Shapes: B batch, T frames (Tc in the sampler's context), h x w the token grid, d model width, heads x d_head.
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
        # x: (B, T, h, w, d)
        channels_first = rearrange(x, "b t h w c -> b c t h w")  # (B, d, T, h, w)
        padded = F.pad(channels_first, (1, 1, 1, 1, 2, 0))  # (B, d, T+2, h+2, w+2): pad w, h both sides; T past only
        return rearrange(self.conv(padded), "b c t h w -> b t h w c")  # (B, T, h, w, d)


class FeedForward(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (..., d) -> (..., d)


class STBlock(nn.Module):
    """PEG, spatial attention, causal temporal attention with ALiBi, MLP; pre-norm residuals."""

    def __init__(self, config: TransformerConfig, conditioned: bool = False) -> None:
        super().__init__()
        if conditioned:
            # adaLN (DiT): per-frame conditioning (B, T, d) -> a shift and a scale for each of the three
            # normalised sub-layer inputs, so the condition multiplies features instead of only adding to
            # the input; zero-initialised, so the block starts unconditioned
            self.modulation = nn.Linear(config.dim, 6 * config.dim)
            nn.init.zeros_(self.modulation.weight)
            nn.init.zeros_(self.modulation.bias)
        self.peg = PositionalEncodingGenerator(config.dim, config.peg_init)
        self.spatial_norm = nn.LayerNorm(config.dim)
        self.spatial_attention = MultiHeadAttention(config.dim, config.heads, config.attention)
        self.temporal_norm = nn.LayerNorm(config.dim)
        self.temporal_attention = MultiHeadAttention(config.dim, config.heads, config.attention)
        self.mlp_norm = nn.LayerNorm(config.dim)
        self.mlp = FeedForward(config.dim, config.mlp_ratio)

    def modulations(self, conditioning: torch.Tensor | None) -> torch.Tensor | None:
        """Per-frame conditioning (B, T, d) -> (6, B, T, 1, 1, d): shift and scale for each normalised input."""
        if conditioning is None:
            return None
        if not hasattr(self, "modulation"):
            raise ValueError("this block was built without conditioning (STTransformer(..., conditioned=True))")
        return rearrange(self.modulation(conditioning), "b t (k c) -> k b t 1 1 c", k=6)

    @staticmethod
    def normalised(norm: nn.LayerNorm, x: torch.Tensor, mods: torch.Tensor | None, sublayer: int) -> torch.Tensor:
        """norm(x) (B, T, h, w, d), scaled and shifted by the conditioning's pair for `sublayer` when there is one."""
        y = norm(x)
        if mods is None:
            return y
        return y * (1.0 + mods[2 * sublayer + 1]) + mods[2 * sublayer]

    def forward(self, x: torch.Tensor, temporal_bias: torch.Tensor,
                conditioning: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, h, w, d); temporal_bias: (heads, T, T) with -inf above the diagonal; conditioning (B, T, d) or None
        return self.prefill(x, temporal_bias, conditioning, keep=False)[0]

    def prefill(self, x: torch.Tensor, temporal_bias: torch.Tensor, conditioning: torch.Tensor | None = None,
                keep: bool = True) -> tuple[torch.Tensor, BlockCache | None]:
        """forward() on context frames, also keeping (`keep`) what a frame appended after them needs from this
        block (its PEG window and temporal keys/values): the context's states never depend on later frames."""
        # x: (B, T, h, w, d); temporal_bias: (heads, T, T); conditioning (B, T, d) or None
        b, t, h, w, c = x.shape
        mods = self.modulations(conditioning)  # (6, B, T, 1, 1, d) or None
        peg_past = None
        if keep:
            missing = x.new_zeros(b, max(0, 2 - t), h, w, c)  # the PEG's zero padding before frame 0
            # (B, 2, h, w, d): this block's inputs of the last 2 frames
            peg_past = torch.cat([missing, x[:, -2:]], dim=1)
        x = x + self.peg(x)  # (B, T, h, w, d)

        # (B*T, h*w, d)
        per_frame = rearrange(self.normalised(self.spatial_norm, x, mods, 0), "b t h w c -> (b t) (h w) c")
        x = x + rearrange(self.spatial_attention(per_frame), "(b t) (h w) c -> b t h w c", b=b, h=h)

        # (B*h*w, T, d)
        per_position = rearrange(self.normalised(self.temporal_norm, x, mods, 1), "b t h w c -> (b h w) t c")
        if keep:
            mixed, keys_values = self.temporal_attention.forward_with_past(per_position, temporal_bias)  # (B*h*w, T, d)
        else:
            mixed = self.temporal_attention(per_position, temporal_bias)  # (B*h*w, T, d)
        x = x + rearrange(mixed, "(b h w) t c -> b t h w c", b=b, h=h, w=w)

        out = x + self.mlp(self.normalised(self.mlp_norm, x, mods, 2))  # (B, T, h, w, d)
        return out, (BlockCache(peg_past, keys_values) if keep else None)

    def forward_new_frame(self, x: torch.Tensor, temporal_bias: torch.Tensor, cache: BlockCache,
                          conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """forward() of one frame appended after the cached context: equals forward(cat(context, x))[:, -1:]."""
        # x: (B, 1, h, w, d); temporal_bias: (heads, 1, Tc+1), the new frame's row of the causal ALiBi bias;
        # conditioning (B, 1, d), the new frame's, or None
        b, _, h, w, _ = x.shape
        mods = self.modulations(conditioning)  # (6, B, 1, 1, 1, d) or None
        window = torch.cat([cache.peg_past, x], dim=1)  # (B, 3, h, w, d): the PEG's whole kernel in time
        x = x + self.peg(window)[:, -1:]  # (B, 1, h, w, d): the last output sees exactly past 2 frames + this one

        # (B, h*w, d)
        per_frame = rearrange(self.normalised(self.spatial_norm, x, mods, 0), "b t h w c -> (b t) (h w) c")
        x = x + rearrange(self.spatial_attention(per_frame), "(b t) (h w) c -> b t h w c", b=b, h=h)

        # (B*h*w, 1, d)
        per_position = rearrange(self.normalised(self.temporal_norm, x, mods, 1), "b t h w c -> (b h w) t c")
        # (B*h*w, 1, d)
        mixed, _ = self.temporal_attention.forward_with_past(per_position, temporal_bias, cache.keys_values)
        x = x + rearrange(mixed, "(b h w) t c -> b t h w c", b=b, h=h, w=w)

        return x + self.mlp(self.normalised(self.mlp_norm, x, mods, 2))  # (B, 1, h, w, d)


@dataclass
class BlockCache:
    """What a frame appended after a context needs from one block: nothing else of the context reaches it."""

    peg_past: torch.Tensor  # (B, 2, h, w, d): the block's inputs of the last 2 context frames (zeros before frame 0)
    keys_values: tuple[torch.Tensor, torch.Tensor]  # 2 x (B*h*w, heads, Tc, d_head): temporal attention keys and values


@dataclass
class ContextCache:
    """The context of a frame to be sampled, run once through every block (STTransformer.prefill)."""

    frames: int  # Tc, the context length
    blocks: list[BlockCache]
    last_output: torch.Tensor | None = None  # (B, 1, h, w, d): forward(context)[:, -1:], the last frame's output


class STTransformer(nn.Module):
    """`depth` ST blocks and a final LayerNorm, on token grids (B, T, h, w, d)."""

    def __init__(self, config: TransformerConfig, conditioned: bool = False) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(STBlock(config, conditioned) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)
        self.register_buffer("slopes", alibi_slopes(config.heads), persistent=False)  # (heads,)

    def forward(self, x: torch.Tensor, conditioning: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, h, w, d); conditioning (B, T, d) per frame (a conditioned transformer only) or None
        bias = causal_alibi_bias(x.shape[1], self.slopes).to(x.dtype)  # (heads, T, T)
        for block in self.blocks:
            x = block(x, bias, conditioning)  # (B, T, h, w, d)
        return self.norm(x)  # (B, T, h, w, d)

    def prefill(self, context: torch.Tensor, conditioning: torch.Tensor | None = None) -> ContextCache:
        """Run context frames (B, Tc, h, w, d) through the blocks once, keeping what a next frame needs at each,
        so MaskGIT's passes over that frame need not recompute the context (causal in time, so it can't change)."""
        bias = causal_alibi_bias(context.shape[1], self.slopes).to(context.dtype)  # (heads, Tc, Tc)
        blocks = []
        for block in self.blocks:
            context, cache = block.prefill(context, bias, conditioning)  # (B, Tc, h, w, d)
            blocks.append(cache)
        return ContextCache(context.shape[1], blocks, self.norm(context[:, -1:]))

    def forward_new_frame(self, x: torch.Tensor, cache: ContextCache,
                          conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """One frame (B, 1, h, w, d) after the cached context (and its conditioning (B, 1, d)) -> its output
        (B, 1, h, w, d), equal to forward(cat(context, x))[:, -1:] at a fraction of the cost."""
        bias = causal_alibi_bias(cache.frames + 1, self.slopes)[:, -1:].to(x.dtype)  # (heads, 1, Tc+1): the last row
        for block, block_cache in zip(self.blocks, cache.blocks):
            x = block.forward_new_frame(x, bias, block_cache, conditioning)  # (B, 1, h, w, d)
        return self.norm(x)  # (B, 1, h, w, d)


def set_attention_implementation(model: nn.Module, implementation: str) -> None:
    """Switch every attention layer of `model` between "sdpa" and "naive" (same weights, same function)."""
    if implementation not in ("sdpa", "naive"):
        raise ValueError(f"implementation must be 'sdpa' or 'naive', got {implementation!r}")
    for module in model.modules():
        if isinstance(module, MultiHeadAttention):
            module.implementation = implementation
