"""One step of play: the next frame of many sessions at once, from their token contexts.

Why tokens, not frames: the dynamics generates token ids; decoding them to pixels and
re-encoding the pixels for the next step would add a tokenizer pass and drift (the
reconstruction of a reconstruction). So a session keeps the token ids of its recent frames,
exactly as `WorldModel.generate` does inside one rollout, and play, `genie dream` and a
direct `generate` call all walk the same path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from world_model.frames import to_uint8
from world_model.generation import WorldModel
from world_model.precision import inference_precision
from world_model.scroll import Scroller


@dataclass(frozen=True)
class StepInput:
    """One session's request: its recent tokens and the actions between them, plus the new action."""

    tokens: np.ndarray  # (Tc, h, w) int16 token ids of the last Tc frames
    actions: np.ndarray  # (Tc,) int: actions[i] leads from frame i to i+1; the last leads to the new frame
    steps: int  # MaskGIT passes for the new frame
    temperature: float
    seed: int | None = None  # sampling seed; None draws from torch's global generator
    previous_frame: np.ndarray | None = None  # (H, W, C) uint8 the frame shown last (patches left unchanged keep it)


@dataclass(frozen=True)
class StepOutput:
    tokens: np.ndarray  # (h, w) int16 token ids of the new frame
    frame: np.ndarray  # (H, W, C) uint8 the new frame


class Stepper:
    """Wraps a `WorldModel` for play: token contexts in, next tokens + frames out, one batch per call."""

    def __init__(self, model: WorldModel, bf16: bool = True) -> None:
        self.model = model.eval()
        self.bf16 = bf16  # on CUDA: bfloat16 autocast (world_model/precision.py); on a CPU float32
        self.context_frames = max(1, model.dynamics.config.frames - 1)  # what the dynamics attends to
        self.decode_frames = max(1, model.tokenizer.config.frames)  # window the causal decoder sees

    @property
    def num_actions(self) -> int:
        """Env actions (GenieRedux-G) or latent actions (GenieRedux) the dynamics understands."""
        if self.model.dynamics.config.conditioning == "latent":
            return self.model.lam.config.num_actions
        return self.model.dynamics.config.num_env_actions

    @torch.no_grad()
    def encode(self, frames: np.ndarray) -> np.ndarray:
        """uint8 frames (T, H, W, C) of one clip -> token ids (T, h, w) int16."""
        with self._precision():
            ids = self.model.tokenizer.tokenize(np.array(frames, dtype=np.uint8)[None])[0]  # (T, h, w); a writable copy
        return ids.cpu().numpy().astype(np.int16)

    @torch.no_grad()
    def decode(self, tokens: np.ndarray) -> np.ndarray:
        """Token ids (T, h, w) of one clip -> uint8 frames (T, H, W, C)."""
        ids = torch.as_tensor(tokens.astype(np.int64), device=self.model.dynamics.device)[None]  # (1, T, h, w)
        with self._precision():
            return to_uint8(self.model.tokenizer.detokenize(ids))[0].cpu().numpy()

    @torch.no_grad()
    def step(self, inputs: list[StepInput], generator: torch.Generator | None = None) -> list[StepOutput]:
        """The next frame for every input; inputs with equal context length, steps and temperature share a batch.

        Sampling draws from the input's `seed` when it has one, else from `generator`, else from torch's global RNG.
        """
        outputs: list[StepOutput | None] = [None] * len(inputs)
        groups: dict[tuple, list[int]] = {}
        for i, item in enumerate(inputs):
            self._check(item)
            key = (min(len(item.tokens), self.context_frames), item.steps, item.temperature, item.seed)
            groups.setdefault(key, []).append(i)
        for (length, steps, temperature, seed), members in groups.items():
            with self._precision():
                group = self._step_group([inputs[i] for i in members], length, steps, temperature, seed, generator)
            for i, out in zip(members, group):
                outputs[i] = out
        return outputs  # type: ignore[return-value]

    def _precision(self):
        return inference_precision(self.model.dynamics.device, self.bf16)

    def _check(self, item: StepInput) -> None:
        if item.tokens.ndim != 3 or len(item.tokens) < 1:
            raise ValueError(f"tokens must be (Tc, h, w) with Tc >= 1, got shape {item.tokens.shape}")
        if item.actions.shape != (len(item.tokens),):
            raise ValueError(f"{len(item.tokens)} context frames need {len(item.tokens)} actions, got "
                             f"{item.actions.shape}")
        if item.actions.min() < 0 or item.actions.max() >= self.num_actions:
            raise ValueError(f"actions must lie in [0, {self.num_actions}), got {item.actions.tolist()}")
        if item.steps < 1:
            raise ValueError(f"MaskGIT needs at least 1 step, got {item.steps}")

    def _step_group(self, items: list[StepInput], length: int, steps: int, temperature: float, seed: int | None,
                    generator: torch.Generator | None) -> list[StepOutput]:
        device = self.model.dynamics.device
        # (B, Tc, h, w)
        tokens = torch.as_tensor(np.stack([it.tokens[-length:] for it in items]).astype(np.int64), device=device)
        actions = np.stack([it.actions[-length:] for it in items])  # (B, Tc)
        if seed is not None:
            generator = torch.Generator(device=device).manual_seed(int(seed))
        # the frames shown last, when every input has one: (B, H, W, C) uint8, or None
        shown = (np.stack([it.previous_frame for it in items])
                 if all(it.previous_frame is not None for it in items) else None)
        # a `scrolled` dynamics shifts the last frame (the one shown, when known) by the scroll it draws
        # (world_model/scroll.py); the scroll into it is registered from the tokens, as WorldModel.generate starts
        scroller = Scroller.start(self.model, tokens, shown) if self.model.dynamics.scrolled() else None
        new = self.model.dynamics.sample_next_frame(
            tokens, self.model.action_inputs(actions), steps, temperature, generator, scroller=scroller
        )  # (B, h, w)
        window = torch.cat([tokens, new.unsqueeze(1)], dim=1)[:, -self.decode_frames:]  # (B, <=Td, h, w)
        decoded = self.model.tokenizer.detokenize(window)[:, -1]  # (B, H, W, C)
        if shown is not None:
            # (B, H, W, C): patches whose token stayed keep the pixels shown
            decoded = self.model.render(decoded, torch.as_tensor(shown, device=device), new, tokens[:, -1])
        frames = to_uint8(decoded).cpu().numpy()  # (B, H, W, C)
        new_np = new.cpu().numpy().astype(np.int16)  # (B, h, w)
        return [StepOutput(new_np[b], frames[b]) for b in range(len(items))]
