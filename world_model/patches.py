"""Frames <-> non-overlapping square patches, the token grid of the ST models.

Shapes: B batch, T frames, H x W x C pixels, p patch side, h x w = H/p x W/p patches.
"""

from __future__ import annotations

import torch
from einops import rearrange


def patchify(frames: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, H, W, C) -> (B, T, H/p, W/p, p*p*C)."""
    return rearrange(frames, "b t (h p) (w q) c -> b t h w (p q c)", p=patch, q=patch)


def unpatchify(patches: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, T, h, w, p*p*C) -> (B, T, h*p, w*p, C)."""
    return rearrange(patches, "b t h w (p q c) -> b t (h p) (w q) c", p=patch, q=patch)
