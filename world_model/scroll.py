"""The scene's scroll between frames, and the scrolled copy of a frame the dynamics' copy path can lean on.

Why: CoinRun's camera follows the agent, so a key's first effect is to scroll the whole level, often by less than
a patch (the random agent 0.4 px a step sideways, falls 2-3 px). A 4x4-patch tokenizer re-codes most patches under
such a scroll, so copying the frame before keeps few tokens (Diverse: 14%), while shifting it by the registered
scroll, rounded to whole pixels, and tokenizing that keeps 36% (README, "What the dynamics needs"). A dynamics
with `copy_reference: scrolled` predicts the scroll from the frame before, that frame's own scroll and the key (a
small (2 S + 1)-way head per axis), and its copy path then points at the frame before shifted by it.

Convention: a scroll (sx, sy) is the scene's shift in whole pixels, sx > 0 to the right, sy > 0 downwards:
shifted[y, x] = frame[y - sy, x - sx], the border pixels repeated into what comes into view. The agent's motion
(`registration.agent_motion`: dx > 0 right, dy > 0 up) is the scene's scroll with the sign of x flipped.

Shapes: N frames (or frame pairs), B rollouts, Tc context frames, L frames of an episode, H x W x C pixels, h x w
token grid, S max_scroll.
"""

from __future__ import annotations

import numpy as np
import torch

from world_model.evaluation.registration import agent_motion
from world_model.frames import to_unit_float


def scene_scroll(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Registered scroll of the scene from each frame to the next, sub-pixel: (N, H, W, C) x 2 -> (N, 2) [sx, sy]."""
    motion = agent_motion(before, after)  # (N, 2) [dx right, dy up]
    return np.stack([-motion[:, 0], motion[:, 1]], axis=1).astype(np.float32)  # (N, 2)


Box = tuple[int, int, int, int]  # [top, bottom, left, right) px


def shift_frames(frames: torch.Tensor, scroll: torch.Tensor, locked: Box | None = None) -> torch.Tensor:
    """Frames (N, H, W, C) shifted by whole-pixel scrolls (N, 2) [sx, sy], border pixels repeated: (N, H, W, C).
    `locked` [top, bottom, left, right): a box that keeps its unshifted pixels (what the camera follows)."""
    n, height, width = frames.shape[:3]
    scroll = scroll.long().to(frames.device)
    rows = (torch.arange(height, device=frames.device) - scroll[:, 1:2]).clamp(0, height - 1)  # (N, H)
    cols = (torch.arange(width, device=frames.device) - scroll[:, 0:1]).clamp(0, width - 1)  # (N, W)
    batch = torch.arange(n, device=frames.device).view(n, 1, 1)
    shifted = frames[batch, rows.view(n, height, 1), cols.view(n, 1, width)]  # (N, H, W, C): a new tensor
    if locked is not None:
        top, bottom, left, right = locked
        shifted[:, top:bottom, left:right] = frames[:, top:bottom, left:right]
    return shifted


def scroll_targets(scroll: torch.Tensor, max_scroll: int) -> torch.Tensor:
    """Sub-pixel scrolls (..., 2) -> soft targets (..., 2, 2S+1) over whole-pixel scrolls -S..S: a scroll of 0.4 px
    is 0.6 of 0 and 0.4 of 1, so a head trained on them, sampled, scrolls 0.4 px a step on average."""
    clipped = scroll.float().clamp(-max_scroll, max_scroll) + max_scroll  # (..., 2) in [0, 2S]
    low = clipped.floor().clamp(max=2 * max_scroll - 1)  # (..., 2)
    upper_share = clipped - low  # (..., 2) in [0, 1]
    targets = torch.zeros(*scroll.shape, 2 * max_scroll + 1, device=scroll.device)  # (..., 2, 2S+1)
    targets.scatter_(-1, low.long().unsqueeze(-1), (1 - upper_share).unsqueeze(-1))
    targets.scatter_add_(-1, low.long().unsqueeze(-1) + 1, upper_share.unsqueeze(-1))
    return targets


def require_per_frame_encoder(tokenizer) -> None:
    """A scrolled copy path tokenizes each shifted frame alone: refuse a tokenizer whose ids depend on the frames
    before (encoder_temporal), whose ids for a lone frame are not the ids it gives in a window."""
    if tokenizer.config.encoder_temporal:
        raise ValueError("a dynamics with copy_reference 'scrolled' tokenizes each shifted frame alone: it needs a "
                         "tokenizer with encoder_temporal false (as tiny and laptop train)")


@torch.no_grad()
def shifted_ids(tokenizer, frames: torch.Tensor, scroll: torch.Tensor, max_scroll: int | None = None,
                locked: Box | None = None) -> torch.Tensor:
    """Frames (N, H, W, C) in [0, 1] shifted by scrolls (N, 2) px (rounded; clipped to max_scroll when given; the
    `locked` box not shifted), each tokenized alone: ids (N, h, w), what a scrolled copy path copies."""
    whole = scroll.float().round()  # (N, 2)
    if max_scroll is not None:
        whole = whole.clamp(-max_scroll, max_scroll)
    return tokenizer.encode(shift_frames(frames, whole, locked)[:, None]).ids[:, 0]  # (N, h, w)


@torch.no_grad()
def scrolled_references(tokenizer, frames: np.ndarray, scrolls: np.ndarray, max_scroll: int,
                        batch_frames: int = 256, locked: Box | None = None) -> np.ndarray:
    """The copy reference of every frame of an episode: frame t-1 shifted by frame t's scroll (rounded, clipped to
    max_scroll) and tokenized; frame 0 has none (the tokenizer's vocabulary size: the dynamics' "masked" id).
    uint8 frames (L, H, W, C), scrolls (L, 2) (frame t's: from frame t-1 to t) -> ids (L, h, w) int16. Needs a
    tokenizer that encodes each frame alone."""
    require_per_frame_encoder(tokenizer)
    scrolls = torch.from_numpy(np.asarray(scrolls, dtype=np.float32))  # (L, 2)
    grid = tokenizer.config.grid
    out = [torch.full((1, grid, grid), tokenizer.config.quantizer.codebook_size, dtype=torch.int16)]
    for lo in range(1, len(frames), batch_frames):
        hi = min(len(frames), lo + batch_frames)
        before = to_unit_float(frames[lo - 1: hi - 1], tokenizer.device)  # (n, H, W, C)
        out.append(shifted_ids(tokenizer, before, scrolls[lo:hi], max_scroll, locked).to(torch.int16).cpu())
    return torch.cat(out).numpy()  # (L, h, w)


def episode_references(tokenizer, frames: np.ndarray, max_scroll: int,
                       locked: Box | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A whole episode's scrolled copy path inputs: uint8 frames (L, H, W, C) -> the registered scroll into every
    frame (L, 2) px float32 (frame 0's: 0) and every frame's copy reference (L, h, w) int16
    (`scrolled_references`, the `locked` box not shifted)."""
    scrolls = np.concatenate([np.zeros((1, 2), np.float32), scene_scroll(frames[:-1], frames[1:])])  # (L, 2)
    return scrolls, scrolled_references(tokenizer, frames, scrolls, max_scroll, locked=locked)


def whole_pixel_steps(position: torch.Tensor, scroll: torch.Tensor) -> torch.Tensor:
    """The whole pixels a camera at sub-pixel `position` (..., 2) crosses when it scrolls by `scroll` (..., 2):
    round(position + scroll) - round(position), halves rounded up. Whole-pixel scrolls from a whole-pixel position
    come back unchanged; 0.4 px a step from 0 crosses a pixel at the 2nd, 4th, 7th, ... step."""
    position = position.float()
    return torch.floor(position + scroll.float() + 0.5) - torch.floor(position + 0.5)


class Scroller:
    """What a rollout of a `scrolled` dynamics carries from frame to frame: the last frame's pixels, its scroll and
    the camera's sub-pixel position.

    The dynamics draws the next scroll and asks for `reference(scroll)`: the last frame shifted by the whole pixels
    the camera's position crosses (a whole-pixel drawn scroll: itself; an expected, sub-pixel one: a pixel every
    few frames, so a slow scroll accumulates instead of rounding away). Once the frame is sampled, `advance` decodes
    it (as the world model shows it) for the next reference and moves the position.
    """

    def __init__(self, tokenizer, last_frames: torch.Tensor, previous_scroll: torch.Tensor, decode,
                 locked: Box | None = None) -> None:
        self.tokenizer = tokenizer
        self.locked = locked  # the box the camera follows: not shifted (DynamicsConfig.camera_locked_box)
        self.pixels = last_frames  # (B, H, W, C) in [0, 1]
        self.previous_scroll = previous_scroll.float()  # (B, 2) px: the scroll into the last frame
        # (B, 2) px: where the camera is between pixels, relative to the last context frame (its phase is unknown)
        self.position = torch.zeros_like(self.previous_scroll)
        self.decode = decode  # token ids (B, T, h, w) -> the last frame's pixels (B, H, W, C)
        self.pending: torch.Tensor | None = None
        self.decoded: list[torch.Tensor] = []  # (B, H, W, C) each frame `advance` decoded, for the world model to show

    @classmethod
    @torch.no_grad()
    def start(cls, world, tokens: torch.Tensor, last_frames: np.ndarray | torch.Tensor | None = None) -> Scroller:
        """A rollout's start from its context's token ids (B, Tc, h, w): the last context frame's pixels
        (`last_frames` (B, H, W, C), e.g. the real frame or the frame play showed; else its decoding) and the scroll
        into it, registered between the last two decoded context frames (0 with one frame). From tokens, so that
        play, which keeps tokens, starts exactly as `WorldModel.generate` does."""
        def decode(ids: torch.Tensor) -> torch.Tensor:
            return world.decode_windows(ids, ids.shape[1] - 1)[:, 0]  # (B, H, W, C)
        last = decode(tokens)  # (B, H, W, C)
        previous = torch.zeros(len(tokens), 2, device=last.device)  # (B, 2)
        if tokens.shape[1] >= 2:
            before = decode(tokens[:, :-1])  # (B, H, W, C)
            pair = [(frames * 255).round().byte().cpu().numpy() for frames in (before, last)]
            previous = torch.from_numpy(scene_scroll(*pair)).to(last.device)
        pixels = last if last_frames is None else to_unit_float(last_frames, last.device)  # (B, H, W, C)
        return cls(world.tokenizer, pixels, previous, decode, world.dynamics.config.camera_locked_box)

    @torch.no_grad()
    def reference(self, scroll: torch.Tensor) -> torch.Tensor:
        """Scrolls (B, 2) px -> the token ids (B, h, w) of the last frame shifted by the whole pixels they cross."""
        self.pending = scroll.float().to(self.position.device)
        steps = whole_pixel_steps(self.position, self.pending)  # (B, 2)
        return shifted_ids(self.tokenizer, self.pixels, steps, locked=self.locked)  # (B, h, w)

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor) -> None:
        """The frame just sampled is the last of `tokens` (B, T, h, w): it becomes the frame to scroll next."""
        if self.pending is None:
            raise RuntimeError("advance() before reference(): no scroll was drawn for this frame")
        self.pixels = self.decode(tokens)  # (B, H, W, C)
        self.decoded = [*self.decoded, self.pixels]  # a new list: a copy of this scroller (a branch) keeps its own
        self.position = self.position + self.pending
        self.previous_scroll, self.pending = self.pending.to(self.pixels.device), None
