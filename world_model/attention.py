"""Multi-head self-attention over a sequence, with an optional additive bias (ALiBi + causal mask).

Two interchangeable paths compute the same function: PyTorch's fused
`scaled_dot_product_attention` (used for training and sampling) and an explicit
softmax(QK^T / sqrt(dh) + bias) V, kept so the benchmark can measure what the fused kernel buys.

Shapes: N sequences (a frame's positions, or a position's frames), L their length (Lp cached before them, S keys),
d model width, nh heads of width dh (d = nh * dh).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi head slopes 2^(-8 i / heads), i = 1..heads (Press et al.): a different distance scale per head."""
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)])  # (heads,)


def causal_alibi_bias(length: int, slopes: torch.Tensor) -> torch.Tensor:
    """Additive bias (heads, L, L): -slope * (i - j) for j <= i and -inf for j > i (no looking ahead)."""
    positions = torch.arange(length, device=slopes.device)  # (L,)
    distance = positions[:, None] - positions[None, :]  # (L, L), i - j
    bias = -slopes[:, None, None] * distance.to(slopes.dtype)  # (heads, L, L)
    return bias.masked_fill(distance < 0, float("-inf"))  # (heads, L, L)


class MultiHeadAttention(nn.Module):
    """Self-attention on (N, L, d) sequences; `bias` (heads, L, L) is added to the attention logits."""

    def __init__(self, dim: int, heads: int, implementation: str = "sdpa") -> None:
        super().__init__()
        self.heads = heads
        self.implementation = implementation
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        # x: (N, L, d)
        # 3 x (N, nh, L, dh)
        q, k, v = rearrange(self.qkv(x), "n l (three h d) -> three n h l d", three=3, h=self.heads)
        if self.implementation == "sdpa":
            mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (N, nh, L, dh)
        else:
            mixed = naive_attention(q, k, v, bias)  # (N, nh, L, dh)
        return self.out(rearrange(mixed, "n h l d -> n l (h d)"))  # (N, L, d)

    def forward_with_past(
        self, x: torch.Tensor, bias: torch.Tensor | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """forward() for L positions appended after `past` (the keys and values of earlier positions), also
        returning the keys and values of past + these positions: lets a sampler attend from one new
        position to a context whose keys were computed once (a KV cache). Without `past`, the same
        output as forward(x, bias).

        x: (N, L, d); past: 2 x (N, nh, Lp, dh); bias: (nh, L, Lp+L) -> (N, L, d) and 2 x (N, nh, Lp+L, dh)
        """
        # 3 x (N, nh, L, dh)
        q, k, v = rearrange(self.qkv(x), "n l (three h d) -> three n h l d", three=3, h=self.heads)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (N, nh, Lp+L, dh)
            v = torch.cat([past[1], v], dim=2)  # (N, nh, Lp+L, dh)
        if self.implementation == "sdpa":
            mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (N, nh, L, dh)
        else:
            mixed = naive_attention(q, k, v, bias)  # (N, nh, L, dh)
        return self.out(rearrange(mixed, "n h l d -> n l (h d)")), (k, v)  # (N, L, d), 2 x (N, nh, Lp+L, dh)


def naive_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """softmax(QK^T / sqrt(dh) + bias) V, written out. q: (N, nh, L, dh), k, v: (N, nh, S, dh) -> (N, nh, L, dh)."""
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (N, nh, L, S)
    if bias is not None:
        logits = logits + bias  # bias (nh, L, S) broadcasts over N
    return logits.softmax(dim=-1) @ v  # (N, nh, L, dh)
