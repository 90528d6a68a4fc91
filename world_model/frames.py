"""Conversion of stored frames (uint8, HWC) to the models' float [0, 1] tensors and back, plus PSNR.

The episode store hands out uint8 numpy arrays; every model converts inside, so callers never
decide the scaling and the metric definitions (docs/design.md, 'Metrics') live in one place.

Shapes: B batch, T frames, H x W x C pixels, channels last as stored.
"""

from __future__ import annotations

import numpy as np
import torch


def to_unit_float(frames: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 frames (..., H, W, C) -> float32 in [0, 1]; float input is taken as already in [0, 1]."""
    tensor = torch.as_tensor(frames, device=device)
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float32) / 255.0
    return tensor.to(torch.float32)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float frames in [0, 1] (clamped) -> uint8, the store's format."""
    return (frames.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)


def to_long(actions: np.ndarray | torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """Action ids (int8 from the store, or any int) -> int64 tensor."""
    if not isinstance(actions, torch.Tensor):
        actions = np.asarray(actions)
    return torch.as_tensor(actions, device=device).long()


def psnr(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over frames of 20 log10(1 / sqrt(MSE)) (docs/design.md, 'Metrics'); inputs (..., H, W, C) in [0, 1]."""
    mse = (prediction.clamp(0, 1) - target).pow(2).flatten(-3).mean(-1)  # (...) per frame
    return (-10.0 * torch.log10(mse.clamp(min=1e-10))).mean()
