"""How the agent moved between two frames, from the frames alone (for the controllability check).

CoinRun's camera follows the agent, so the agent's motion is the opposite of the scene's shift.
Each axis is registered separately from intensity profiles (column means for horizontal motion,
row means for vertical), as `rl_agent.level_progress` does for level progress: the bright walls and
floors dominate the profiles, the dim parallax background barely does. The best integer shift
is refined to sub-pixel by a parabola through the cost minimum.

Convention: dx > 0 means the agent moved right, dy > 0 means it moved up (the scene moved down).

Shapes: N frame pairs (or frame sequences, `path_motion`), T frames, H x W x C pixels.
"""

from __future__ import annotations

import numpy as np

MAX_SHIFT = 8  # px searched per axis between two consecutive frames
STILL_PX = 0.5  # motion below this (px per step, both axes) counts as "still"
MOTION_CLASSES = ("left", "right", "up", "down", "still")


def _profiles(frames: np.ndarray, axis: int) -> np.ndarray:
    """(N, H, W, C) -> profiles along `axis`, zero-mean per frame: (N, W) of column means (2), (N, H) of rows (1)."""
    mean_over = (1, 3) if axis == 2 else (2, 3)
    profiles = np.asarray(frames, dtype=np.float32).mean(axis=mean_over)  # (N, W) or (N, H)
    return profiles - profiles.mean(axis=1, keepdims=True)


def _shift_1d(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Shifts d (sub-pixel) with after[x] ~ before[x + d]: (N, length), (N, length) profiles -> (N,)."""
    length = before.shape[1]
    shifts = np.arange(-MAX_SHIFT, MAX_SHIFT + 1)
    costs = np.empty((len(before), len(shifts)))
    for i, d in enumerate(shifts):
        lo, hi = max(0, -d), min(length, length - d)
        costs[:, i] = np.abs(after[:, lo:hi] - before[:, lo + d : hi + d]).mean(axis=1)
    best = costs.argmin(axis=1)  # (N,)
    inner = np.clip(best, 1, len(shifts) - 2)
    rows = np.arange(len(before))
    left, mid, right = costs[rows, inner - 1], costs[rows, inner], costs[rows, inner + 1]
    curvature = left - 2 * mid + right
    offset = np.where(curvature > 1e-9, 0.5 * (left - right) / np.maximum(curvature, 1e-9), 0.0)
    offset = np.where(inner == best, np.clip(offset, -0.5, 0.5), 0.0)
    return shifts[best] + offset


def agent_motion(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Agent motion between frame pairs: (N, H, W, C) before, (N, H, W, C) after -> (N, 2) [dx, dy] px."""
    before, after = np.asarray(before), np.asarray(after)
    if before.shape != after.shape or before.ndim != 4:
        raise ValueError(f"need two (N, H, W, C) frame arrays of one shape, got {before.shape} and {after.shape}")
    dx = _shift_1d(_profiles(before, 2), _profiles(after, 2))  # scene moved left by dx -> agent right
    dy = -_shift_1d(_profiles(before, 1), _profiles(after, 1))  # image rows grow downwards
    return np.stack([dx, dy], axis=1)  # (N, 2)


def path_motion(frames: np.ndarray) -> np.ndarray:
    """Total agent motion along frame sequences: (N, T, H, W, C) -> (N, 2) summed over consecutive pairs."""
    frames = np.asarray(frames)
    n, t = frames.shape[:2]
    steps = agent_motion(frames[:, :-1].reshape(-1, *frames.shape[2:]), frames[:, 1:].reshape(-1, *frames.shape[2:]))
    return steps.reshape(n, t - 1, 2).sum(axis=1)  # (N, 2)


def motion_class(motion: np.ndarray, steps: int = 1) -> list[str]:
    """(N, 2) motions over `steps` steps -> the dominant direction of each, or 'still'."""
    out = []
    for dx, dy in np.asarray(motion, dtype=np.float64).reshape(-1, 2):
        if max(abs(dx), abs(dy)) < STILL_PX * steps:
            out.append("still")
        elif abs(dx) >= abs(dy):
            out.append("right" if dx > 0 else "left")
        else:
            out.append("up" if dy > 0 else "down")
    return out
