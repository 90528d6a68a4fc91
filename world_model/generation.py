"""A playable world model: tokenizer + dynamics (+ LAM for GenieRedux), from frames to frames.

Shapes: B batch, T frames (Tc context, n generated), H x W x C pixels, h x w token grid, A actions given
(Tc-1+horizon), D latent-action code width.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from einops import repeat
from torch import nn

from world_model.config import ConfigError
from world_model.dynamics import Dynamics
from world_model.frames import to_long, to_unit_float
from world_model.lam import LatentActionModel
from world_model.scroll import Scroller, require_per_frame_encoder
from world_model.tokenizer import Tokenizer


class WorldModel(nn.Module):
    """Rolls out frames from context frames and actions.

    Actions are true CoinRun action ids for GenieRedux-G and latent action ids (e.g. from
    `lam.infer_actions`) for GenieRedux; the LAM turns latent ids into the codes the dynamics was
    trained on.
    """

    def __init__(self, tokenizer: Tokenizer, dynamics: Dynamics, lam: LatentActionModel | None = None) -> None:
        super().__init__()
        if dynamics.config.conditioning == "latent" and lam is None:
            raise ValueError("a GenieRedux (latent-action) dynamics needs its LAM to turn latent action ids into codes")
        if dynamics.scrolled():
            require_per_frame_encoder(tokenizer)
        self.tokenizer, self.dynamics, self.lam = tokenizer, dynamics, lam

    def use_guidance(self, guidance: float | None) -> None:
        """Sample with classifier-free guidance on the key at this scale (None: the model's own; 1: none).
        A dynamics trained without action dropout refuses any scale but 1 (ConfigError says why)."""
        if guidance is not None:
            self.dynamics.config = dataclasses.replace(self.dynamics.config, guidance=float(guidance))

    def use_scroll(self, temperature: float | None = None, draw: str | None = None) -> None:
        """Draw a scrolled dynamics's scroll at this temperature (0: the most likely one) and this way ("sample" or
        "expected": DynamicsConfig.scroll_draw); None keeps the model's own. A dynamics without a scroll head
        refuses any value but None."""
        if temperature is None and draw is None:
            return
        if not self.dynamics.scrolled():
            raise ConfigError("scroll_temperature and scroll_draw are for a dynamics with copy_reference 'scrolled'; "
                              "this one copies the frame before as it is")
        changes = {"scroll_temperature": None if temperature is None else float(temperature), "scroll_draw": draw}
        self.dynamics.config = dataclasses.replace(
            self.dynamics.config, **{name: value for name, value in changes.items() if value is not None})

    def action_inputs(self, actions: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Action ids (B, A) -> what the dynamics takes: ids (B, A) or latent codes (B, A, D)."""
        ids = to_long(actions, self.dynamics.device)  # (B, A)
        if self.dynamics.config.conditioning == "latent":
            return self.lam.action_codes(ids)  # (B, A, D)
        return ids

    @torch.no_grad()
    def generate(
        self,
        context_frames: np.ndarray | torch.Tensor,
        actions: np.ndarray | torch.Tensor,
        horizon: int,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """uint8 context (B, Tc, H, W, C) and actions (B, Tc-1+horizon) -> frames (B, horizon, H, W, C) in [0, 1]."""
        context = self.tokenizer.tokenize(context_frames)  # (B, Tc, h, w)
        scroller = self.scroller(context_frames, context)
        generated = self.dynamics.generate_tokens(
            context, self.action_inputs(actions), horizon, steps, temperature, generator, scroller=scroller,
        )  # (B, horizon, h, w)
        # a scrolled rollout decoded each frame already (to shift it for the next): the same windows, not again
        decoded = torch.stack(scroller.decoded, dim=1) if scroller is not None and scroller.decoded else None
        return self.show(context_frames, context, generated, decoded)

    def scroller(self, context_frames: np.ndarray | torch.Tensor, context: torch.Tensor) -> Scroller | None:
        """What a `scrolled` dynamics carries through a rollout from these context frames (B, Tc, H, W, C) and their
        tokens (B, Tc, h, w); None for any other dynamics."""
        return Scroller.start(self, context, context_frames[:, -1]) if self.dynamics.scrolled() else None

    @torch.no_grad()
    def copy_reference(self, context_frames: np.ndarray | torch.Tensor, context: torch.Tensor,
                       actions: torch.Tensor) -> torch.Tensor:
        """What the copy path copies into the frame after real context frames (B, Tc, H, W, C) (their tokens
        (B, Tc, h, w), the Tc action inputs leading into context[1:] and the new frame): the last frame's tokens
        (B, h, w), or for a `scrolled` dynamics that frame shifted by its head's most likely scroll (teacher-forced
        prediction: one pass, argmax, like its tokens)."""
        scroller = self.scroller(context_frames, context)
        if scroller is None:
            return context[:, -1]
        logits = self.dynamics.next_scroll_logits(context, actions, scroller.previous_scroll)  # (B, 2, 2S+1)
        return scroller.reference(self.dynamics.most_likely_scroll(logits, scroller.previous_scroll))

    @torch.no_grad()
    def show(self, context_frames: np.ndarray | torch.Tensor, context: torch.Tensor,
             generated: torch.Tensor, decoded: torch.Tensor | None = None) -> torch.Tensor:
        """What a player sees of generated tokens (B, n, h, w) after the context (frames (B, Tc, H, W, C), their
        tokens (B, Tc, h, w)): frames (B, n, H, W, C) in [0, 1], each rendered on the one shown before it.
        `decoded` (B, n, H, W, C): the generated frames' decode_windows, when the caller has it already."""
        if decoded is None:
            decoded = self.decode_windows(torch.cat([context, generated], dim=1), context.shape[1])  # (B, n, H, W, C)
        # the last real frame
        shown, previous = to_unit_float(context_frames[:, -1], self.dynamics.device), context[:, -1]
        frames = []
        for i in range(generated.shape[1]):
            shown = self.render(decoded[:, i], shown, generated[:, i], previous)  # (B, H, W, C)
            previous = generated[:, i]
            frames.append(shown)
        return torch.stack(frames, dim=1)  # (B, n, H, W, C)

    @torch.no_grad()
    def render(self, decoded: torch.Tensor, previous_frame: torch.Tensor | np.ndarray | None, tokens: torch.Tensor,
               previous_tokens: torch.Tensor) -> torch.Tensor:
        """The frame shown for new tokens (B, h, w): their decoding (B, H, W, C) in [0, 1], or, when the dynamics
        carries unchanged patches and the previous frame (B, H, W, C) is known, that composition."""
        if not self.dynamics.config.carry_unchanged or previous_frame is None:
            return decoded
        return carry_unchanged(decoded, to_unit_float(previous_frame, decoded.device), tokens, previous_tokens)

    @torch.no_grad()
    def decode_windows(self, tokens: torch.Tensor, first: int) -> torch.Tensor:
        """Frames `first`.. of token ids (B, T, h, w), each decoded as the last frame of a window of at
        most the tokenizer's training length (its causal decoder never saw longer ones): (B, T-first, H, W, C)."""
        window = max(1, self.tokenizer.config.frames)
        frames = [self.tokenizer.detokenize(tokens[:, max(0, k + 1 - window): k + 1])[:, -1]
                  for k in range(first, tokens.shape[1])]
        return torch.stack(frames, dim=1)  # (B, T-first, H, W, C)


def carry_unchanged(decoded: torch.Tensor, previous: torch.Tensor, tokens: torch.Tensor,
                    previous_tokens: torch.Tensor) -> torch.Tensor:
    """Frames (B, H, W, C) where every patch whose token equals the previous frame's token keeps the previous
    frame's pixels (B, H, W, C), as a video codec's skip blocks do: what the dynamics leaves unchanged
    stays pixel-exact instead of passing through the tokenizer's lossy decoder again.

    tokens, previous_tokens: (B, h, w) ids of the new frame and of the frame before it.
    """
    patch = decoded.shape[1] // tokens.shape[1]
    same = repeat(tokens == previous_tokens, "b h w -> b (h p) (w q) 1", p=patch, q=patch)  # (B, H, W, 1)
    return torch.where(same, previous.to(decoded.dtype), decoded)  # (B, H, W, C)
