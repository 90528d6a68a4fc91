"""Per-frame image metrics (docs/design.md, 'Metrics'): PSNR, SSIM, and the copy-last-frame baseline.

Why our own implementation (checked against scikit-image in the tests): the metrics run inside
Ray workers on batches of torch tensors, possibly on a GPU, and must not depend on a test-only
package. Frames are in [0, 1]; uint8 frames are scaled by 1/255. Every function validates shapes
and dtypes and says what it expected, because a silently broadcast (H, W, C) vs (T, H, W, C)
comparison gives a plausible but wrong number.

Shapes: B batch (windows), T frames, H x W x C pixels, N frames (or colour planes) of a flattened batch, F forks,
k frames per fork.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from genie_common.errors import ConfigError

# MSE floor 1e-10 -> 100 dB, the same floor as world_model.frames.psnr (training's logged PSNR).
# Identical frames have MSE 0 and an infinite PSNR; averaging an inf would make the mean inf, so
# they are given this cap explicitly and counted (`identical_frames`).
PSNR_CAP = 100.0

SSIM_SIGMA = 1.5  # the Gaussian window of Wang et al. 2004 (and skimage's gaussian_weights=True)
SSIM_RADIUS = 5  # int(3.5 * sigma + 0.5): scipy's truncate=3.5, i.e. skimage's 11x11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03


class MetricInputError(ConfigError):
    """Frames given to a metric have the wrong shape, dtype or range; the message says which."""


def as_unit_frames(frames: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """uint8 (scaled by 1/255) or float frames (..., H, W, C) in [0, 1] -> float64 tensor.

    float64 so that our metric agrees with scikit-image's (which works in float64) to ~1e-6.
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise MetricInputError(f"{name}: expected a numpy array or torch tensor of frames, got {type(frames).__name__}")
    if frames.ndim < 3:
        raise MetricInputError(f"{name}: expected frames shaped (..., H, W, C), got shape {tuple(frames.shape)}")
    if frames.shape[-1] not in (1, 3):
        raise MetricInputError(
            f"{name}: the last axis must be colour channels (1 or 3), got shape {tuple(frames.shape)}; "
            f"frames are HWC (channels last), like the episode store's"
        )
    if frames.dtype == torch.uint8:
        return frames.to(torch.float64) / 255.0
    if not frames.is_floating_point():
        raise MetricInputError(f"{name}: expected uint8 or float frames, got {frames.dtype}")
    frames = frames.to(torch.float64)
    if frames.numel() and (frames.min() < -1e-6 or frames.max() > 1 + 1e-6 or not torch.isfinite(frames).all()):
        raise MetricInputError(
            f"{name}: float frames must lie in [0, 1] (got {float(frames.min()):.3g}..{float(frames.max()):.3g}); "
            f"clamp model outputs or pass uint8"
        )
    return frames


def _pair(prediction, target) -> tuple[torch.Tensor, torch.Tensor]:
    p = as_unit_frames(prediction, "prediction")
    t = as_unit_frames(target, "target")
    if p.shape != t.shape:
        raise MetricInputError(f"prediction shape {tuple(p.shape)} differs from target shape {tuple(t.shape)}")
    return p, t.to(p.device)


def psnr_per_frame(prediction, target) -> torch.Tensor:
    """20 log10(1 / sqrt(MSE)) for every frame: (..., H, W, C) pairs -> (...) float64, capped at PSNR_CAP."""
    p, t = _pair(prediction, target)
    mse = (p - t).pow(2).flatten(-3).mean(-1)  # (...)
    identical = mse == 0
    value = -10.0 * torch.log10(mse.clamp(min=10 ** (-PSNR_CAP / 10)))  # (...)
    return torch.where(identical, torch.full_like(value, PSNR_CAP), value.clamp(max=PSNR_CAP))


def identical_frames(prediction, target) -> int:
    """How many frame pairs are exactly equal (their PSNR is the cap, not a measurement)."""
    p, t = _pair(prediction, target)
    return int(((p - t).pow(2).flatten(-3).sum(-1) == 0).sum())


def _gaussian_kernel(device: torch.device) -> torch.Tensor:
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=torch.float64, device=device)  # (11,)
    kernel = torch.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return kernel / kernel.sum()  # (11,)


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, 'valid' region only: (N, 1, H, W) -> (N, 1, H-10, W-10).

    The valid region equals scikit-image's result (reflect-padded filter, then `pad` pixels
    cropped from every border before averaging), without depending on the padding mode.
    """
    k = kernel.numel()
    x = F.conv2d(x, kernel.view(1, 1, k, 1))
    return F.conv2d(x, kernel.view(1, 1, 1, k))


def ssim_per_frame(prediction, target) -> torch.Tensor:
    """Mean SSIM (Gaussian window sigma 1.5, data range 1, K1 0.01, K2 0.03, population covariance,
    channels averaged) for every frame: (..., H, W, C) pairs -> (...) float64.

    Matches `skimage.metrics.structural_similarity(a, b, data_range=1, channel_axis=-1,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`.
    """
    p, t = _pair(prediction, target)
    height, width, channels = p.shape[-3:]
    if min(height, width) < 2 * SSIM_RADIUS + 1:
        raise MetricInputError(f"SSIM needs frames of at least {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1}, got "
                               f"{height}x{width}")
    lead = p.shape[:-3]
    # (N*C, 1, H, W)
    planes_p = p.reshape(-1, height, width, channels).permute(0, 3, 1, 2).reshape(-1, 1, height, width)
    # (N*C, 1, H, W)
    planes_t = t.reshape(-1, height, width, channels).permute(0, 3, 1, 2).reshape(-1, 1, height, width)
    kernel = _gaussian_kernel(p.device)
    mu_p, mu_t = _filter(planes_p, kernel), _filter(planes_t, kernel)  # (N*C, 1, H-10, W-10)
    var_p = _filter(planes_p * planes_p, kernel) - mu_p * mu_p
    var_t = _filter(planes_t * planes_t, kernel) - mu_t * mu_t
    cov = _filter(planes_p * planes_t, kernel) - mu_p * mu_t
    c1, c2 = (SSIM_K1 * 1.0) ** 2, (SSIM_K2 * 1.0) ** 2  # data range 1
    ssim_map = ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2))
    per_plane = ssim_map.flatten(1).mean(-1)  # (N*C,)
    return per_plane.view(-1, channels).mean(-1).reshape(lead)  # (...)


def copy_last_frame_psnr(frames: np.ndarray | torch.Tensor, context: int) -> torch.Tensor:
    """The copy-last-frame baseline: PSNR of predicting every future frame as the last context frame.

    frames (B, T, H, W, C) (uint8 or [0, 1]) -> (B, T - context) PSNR at horizon steps 1..T-context.
    A world model that does not beat this has learned nothing about motion.
    """
    x = as_unit_frames(frames, "frames")
    if x.ndim != 5:
        raise MetricInputError(f"frames must be (B, T, H, W, C), got shape {tuple(x.shape)}")
    if not 1 <= context < x.shape[1]:
        raise MetricInputError(f"context must be in 1..{x.shape[1] - 1} for {x.shape[1]}-frame windows, got {context}")
    last = x[:, context - 1 : context].expand_as(x[:, context:])  # (B, T-context, H, W, C)
    return psnr_per_frame(last, x[:, context:])  # (B, T-context)


def mean_finite(values) -> float:
    """Mean of a sequence of numbers, NaN when empty (so an empty metric never reads as 0)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()) if array.size else math.nan


def mean_ci95(values) -> tuple[float, float]:
    """Mean and 95% half-width (normal approximation, 1.96 standard errors) of the finite values; NaN when
    there are too few to tell (a half-width of 0 from one value would read as certainty)."""
    array = np.asarray([v for v in values if math.isfinite(v)], dtype=np.float64)
    if len(array) < 2:
        return (float(array.mean()) if len(array) else math.nan), math.nan
    return float(array.mean()), float(1.96 * array.std(ddof=1) / math.sqrt(len(array)))


def forked_future_psnr(dreams, real) -> torch.Tensor:
    """PSNR of every dream against every real future: dreams, real (B, F, k, H, W, C) -> (B, F dream, F real, k)."""
    d = as_unit_frames(dreams, "dreams")
    r = as_unit_frames(real, "real forks")
    if d.ndim != 6 or d.shape != r.shape:
        raise MetricInputError(f"dreams and real forks must both be (N, F, k, H, W, C), got {tuple(d.shape)} and "
                               f"{tuple(r.shape)}")
    n, forks = d.shape[:2]
    pairs = (n, forks, forks, *d.shape[2:])  # (B, F dream, F real, k, H, W, C)
    return psnr_per_frame(d.unsqueeze(2).expand(pairs), r.unsqueeze(1).to(d.device).expand(pairs))  # (B, F, F, k)


def forked_future_score(dreams, real) -> tuple[np.ndarray, np.ndarray]:
    """How often each fork's dream is closer to its own real future than another fork's dream is
    (docs/design.md, 'Metrics').

    dreams, real: (B, F, k, H, W, C) -> per window (B,) and per frame (B, k) scores in [0, 1]; chance 0.5.
    Closeness is PSNR averaged over the k frames (the per-frame score compares frame j alone). Ties count
    half: a model blind to its actions dreams every fork alike and scores exactly 0.5, never more.
    """
    return forked_future_wins(forked_future_psnr(dreams, real).cpu().numpy())


def forked_direction(dreams, real) -> tuple[np.ndarray, np.ndarray]:
    """Does the key move the dream the way it moves the game? For two forks: per window and frame, the cosine
    between the dreams' difference (fork 0 - fork 1) and the real futures' difference, and the dreams'
    difference's size over the real one's (docs/design.md, 'Metrics').

    dreams, real: (B, 2, k, H, W, C) -> cosine (B, k) in [-1, 1] (0: unrelated, also for identical dreams) and
    size (B, k) >= 0 (0: the dreams ignore the key; NaN where the real futures are identical). Why beside the
    score: the score asks the dreams' difference to beat the dream's own error, so while that error is large it
    stays near 0.5 whether or not the key points the right way; the cosine shows the direction alone.
    """
    d = as_unit_frames(dreams, "dreams")
    r = as_unit_frames(real, "real forks").to(d.device)
    if d.ndim != 6 or d.shape != r.shape or d.shape[1] != 2:
        raise MetricInputError(f"dreams and real forks must both be (N, 2, k, H, W, C), got {tuple(d.shape)} and "
                               f"{tuple(r.shape)}")
    dream_diff = (d[:, 0] - d[:, 1]).flatten(2).double()  # (B, k, H*W*C)
    real_diff = (r[:, 0] - r[:, 1]).flatten(2).double()  # (B, k, H*W*C)
    dream_norm, real_norm = dream_diff.norm(dim=-1), real_diff.norm(dim=-1)  # (B, k)
    cosine = (dream_diff * real_diff).sum(-1) / (dream_norm * real_norm).clamp_min(1e-12)
    # NaN where the real futures do not differ (both keys blocked): no size to compare with
    size = torch.where(real_norm > 0, dream_norm / real_norm.clamp_min(1e-12), torch.nan)
    return cosine.cpu().numpy(), size.cpu().numpy()


def forked_future_wins(psnr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """forked_future_score from the PSNR table (B, F dream, F real, k) of `forked_future_psnr`: (B,), (B, k)."""
    forks = psnr.shape[1]

    def wins(values: np.ndarray) -> np.ndarray:  # values (B, F, F[, k]) -> (B[, k]) share of (own, other) pairs won
        scores = []
        for real_f in range(forks):
            own = values[:, real_f, real_f]
            for dream_g in range(forks):
                if dream_g != real_f:
                    other = values[:, dream_g, real_f]
                    scores.append((own > other) + 0.5 * (own == other))
        return np.mean(scores, axis=0)

    return wins(psnr.mean(-1)), wins(psnr)
