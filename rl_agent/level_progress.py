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


def _register(profiles: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Shifts d (px, sub-pixel) with profiles[i, x] ~ keys[i, x + d]: (n, W), (n, W) -> (n,)."""
    width = profiles.shape[1]
    shifts = np.arange(-MAX_SHIFT, MAX_SHIFT + 1)  # (S,)
    source = np.arange(width)[None, :] + shifts[:, None]  # (S, W): the key column x + d compared with column x
    overlap = (source >= 0) & (source < width)  # (S, W): columns both profiles have at shift d
    shifted = keys[:, np.clip(source, 0, width - 1)]  # (n, S, W)
    # mean absolute difference over the overlap, all shifts at once (one pass per frame, not one per shift:
    # data-set statistics register every stored frame)
    costs = (np.abs(profiles[:, None, :] - shifted) * overlap).sum(axis=2) / overlap.sum(axis=1)  # (n, S)
    best = costs.argmin(axis=1)  # (n,)
    inner = np.clip(best, 1, len(shifts) - 2)
    rows = np.arange(len(profiles))
    left, mid, right = costs[rows, inner - 1], costs[rows, inner], costs[rows, inner + 1]
    curvature = left - 2 * mid + right
    # parabola through the minimum and its neighbours; none at the edge of the search range
    offset = np.where(curvature > 1e-9, 0.5 * (left - right) / np.maximum(curvature, 1e-9), 0.0)
    offset = np.where(inner == best, np.clip(offset, -0.5, 0.5), 0.0)
    return shifts[best] + offset


class ProgressTracker:
    """Incremental form for many games at once: feed frames as they come, read each game's progress.

    Used where episodes are played, not stored (agent evaluation), so frames need not be kept.
    """

    def __init__(self, num_envs: int, width: int = 64) -> None:
        self._width = width
        self._key = np.zeros((num_envs, width), dtype=np.float32)  # (E, W) keyframe profiles
        self._key_position = np.zeros(num_envs)
        self.position = np.zeros(num_envs)
        self.furthest = np.zeros(num_envs)

    def start(self, slot: int, frame: np.ndarray) -> None:  # frame: (H, W, C)
        self.start_profile(slot, _profile(frame[None])[0])

    def start_profile(self, slot: int, profile: np.ndarray) -> None:  # profile: (W,) as `_profile` makes it
        self._key[slot] = profile
        self._key_position[slot] = self.position[slot] = self.furthest[slot] = 0.0

    def update(self, slots: np.ndarray, frames: np.ndarray) -> None:
        """Next frames (n, H, W, C) of games `slots` (n,)."""
        self.update_profiles(slots, _profile(frames))

    def update_profiles(self, slots: np.ndarray, profiles: np.ndarray) -> None:
        """Next frames of games `slots` (n,) given as their column profiles (n, W) (see `_profile`)."""
        slots = np.asarray(slots)
        if len(slots) == 0:
            return
        shifts = _register(profiles, self._key[slots])
        self.position[slots] = self._key_position[slots] + shifts
        self.furthest[slots] = np.maximum(self.furthest[slots], self.position[slots])
        rekey = np.abs(shifts) >= REKEY_SHIFT
        self._key[slots[rekey]] = profiles[rekey]
        self._key_position[slots[rekey]] = self.position[slots[rekey]]

    def progress(self, slot: int) -> float:
        """Furthest rightward position so far, in screens (frame widths)."""
        return float(self.furthest[slot] / self._width)


def horizontal_positions(frames: np.ndarray) -> np.ndarray:
    """Agent x position relative to the first frame, px: (L, H, W, C) uint8 -> (L,), + = right.

    A stored episode's profiles are computed in one pass, then fed to the tracker frame by frame.
    """
    profiles = _profile(frames)  # (L, W)
    tracker = ProgressTracker(1, width=frames.shape[2])
    tracker.start_profile(0, profiles[0])
    positions = np.zeros(len(frames))
    slot = np.array([0])
    for t in range(1, len(frames)):
        tracker.update_profiles(slot, profiles[t : t + 1])
        positions[t] = tracker.position[0]
    return positions


def level_progress(frames: np.ndarray) -> float:
    """Furthest rightward position reached, in screens (64 px), from (L, H, W, C) frames."""
    if len(frames) < 2:
        return 0.0
    return float(horizontal_positions(frames).max() / frames.shape[2])
