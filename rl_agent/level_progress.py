"""How far into a level an agent gets, measured from its frames alone.

CoinRun's camera follows the agent (`center_agent`), so the agent's horizontal motion is the
scene's horizontal shift. The shift is found by registering column-intensity profiles (the
bright walls and floors dominate them; the dim parallax background barely does) against a
keyframe, with sub-pixel refinement; the keyframe moves on after a large shift, so rounding
errors do not accumulate frame by frame. *Level progress* is the furthest the agent got to
the right of its start, in 64-px screens. The coin always sits at a CoinRun level's right
end, so further right means more of the level seen.
"""

from __future__ import annotations

import numpy as np

MAX_SHIFT = 16  # px searched around the keyframe
REKEY_SHIFT = 6  # px after which the current frame becomes the keyframe


def _profile(frames: np.ndarray) -> np.ndarray:
    """(L, H, W, C) uint8 -> (L, W) column means, normalised per frame."""
    profiles = frames.astype(np.float32).mean(axis=(1, 3))
    return profiles - profiles.mean(axis=1, keepdims=True)


def _register(profile: np.ndarray, key: np.ndarray) -> float:
    """Shift d (px, sub-pixel) with profile[x] ~ key[x + d]."""
    width = len(profile)
    shifts = np.arange(-MAX_SHIFT, MAX_SHIFT + 1)
    costs = np.empty(len(shifts))
    for i, d in enumerate(shifts):
        lo, hi = max(0, -d), min(width, width - d)
        costs[i] = np.abs(profile[lo:hi] - key[lo + d : hi + d]).mean()
    best = int(costs.argmin())
    if 0 < best < len(shifts) - 1:  # parabola through the minimum and its neighbours
        left, mid, right = costs[best - 1 : best + 2]
        curvature = left - 2 * mid + right
        offset = 0.5 * (left - right) / curvature if curvature > 1e-9 else 0.0
        return float(shifts[best] + np.clip(offset, -0.5, 0.5))
    return float(shifts[best])


def horizontal_positions(frames: np.ndarray) -> np.ndarray:
    """Agent x position relative to the first frame, px: (L, H, W, C) uint8 -> (L,), + = right."""
    profiles = _profile(frames)
    positions = np.zeros(len(frames))
    key, key_position = profiles[0], 0.0
    for t in range(1, len(frames)):
        shift = _register(profiles[t], key)
        positions[t] = key_position + shift
        if abs(shift) >= REKEY_SHIFT:
            key, key_position = profiles[t], positions[t]
    return positions


def level_progress(frames: np.ndarray) -> float:
    """Furthest rightward position reached, in screens (64 px), from (L, H, W, C) frames."""
    if len(frames) < 2:
        return 0.0
    return float(horizontal_positions(frames).max() / frames.shape[2])
