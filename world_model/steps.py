"""The train and eval steps, the same for every stage, in one process or under Ray Train.

They act on a trainee, the module a training run optimises: any module with `compute_loss(batch) -> LossOutput`,
where `batch` is what `EpisodeStore.sample_windows` returns: frames (B, T, 64, 64, 3) uint8 and actions (B, T-1)
int8. The tokenizer and the LAM are their own trainees; the dynamics' is `DynamicsTrainee` (with its frozen inputs),
which also takes a `TokenBatch` (those inputs already encoded, from the token cache, world_model/token_cache.py).

One training step, `accumulated_step` (= `forward_backward` + the optimiser update), is what the Ray
Train workers run (world_model/training/loop.py) and what `train_step`, used by the tests and the
benchmarks, runs too, so what they measure is what trains. Distribution, data loading, validation and
checkpoint plumbing (Ray Train) wrap it and add nothing to it.

Shapes: B batch (`micro` windows in a micro batch), T frames, H x W x C pixels, h x w token grid, D latent-action code
width.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from world_model.dynamics import Dynamics
from world_model.frames import psnr, to_long, to_unit_float
from world_model.lam import LatentActionModel
from world_model.optim import Optimization
from world_model.outputs import LossOutput, Metric, mean_metric, read_metrics
from world_model.scroll import require_per_frame_encoder, scene_scroll, shifted_ids
from world_model.tokenizer import Tokenizer

Batch = tuple[np.ndarray, np.ndarray]  # frames (B, T, H, W, C) uint8, actions (B, T-1) int8


class TokenBatch(NamedTuple):
    """Dynamics windows already encoded by the frozen tokenizer (and LAM): what the token cache hands out.

    tokens: ids (B, T, h, w) (int16 from the cache, any integer type); actions: (B, T-1) the true action
    ids for GenieRedux-G, the LAM's latent ids for GenieRedux (turned into codes here, as for frames).
    For a `scrolled` copy path also each frame's copy reference ids (B, T, h, w) and registered scroll (B, T, 2)
    px, as the episode holds them: frame 0's, from the frame before the window, are set aside here (a window's
    first frame has no predecessor, as when training from frames).
    """

    tokens: np.ndarray | torch.Tensor
    actions: np.ndarray | torch.Tensor
    references: np.ndarray | torch.Tensor | None = None
    scrolls: np.ndarray | torch.Tensor | None = None


def cached_scrolls(batch: tuple | TokenBatch) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A scrolled copy path's (references, scrolls) in a batch laid out as a `TokenBatch` (inputs, actions,
    references, scrolls), or None when it has none (frames, or a cache of the plain copy path)."""
    return (batch[2], batch[3]) if len(batch) > 3 and batch[2] is not None else None


class DynamicsTrainee(nn.Module):
    """The dynamics stage's trainee: the dynamics with its frozen tokenizer (and frozen LAM for GenieRedux), frames
    in, token loss out. Checkpoints export the dynamics alone."""

    def __init__(self, dynamics: Dynamics, tokenizer: Tokenizer, lam: LatentActionModel | None = None) -> None:
        super().__init__()
        if dynamics.config.conditioning == "latent" and lam is None:
            raise ValueError("GenieRedux dynamics (conditioning='latent') is trained with a LAM; pass one")
        if dynamics.config.vocab_size != tokenizer.config.quantizer.codebook_size:
            raise ValueError(
                f"dynamics vocab_size {dynamics.config.vocab_size} differs from the tokenizer's codebook "
                f"{tokenizer.config.quantizer.codebook_size}"
            )
        if dynamics.scrolled():
            require_per_frame_encoder(tokenizer)
        self.dynamics, self.tokenizer, self.lam = dynamics, tokenizer, lam
        for frozen in (tokenizer, lam):
            if frozen is not None:
                frozen.requires_grad_(False)

    def train(self, mode: bool = True) -> "DynamicsTrainee":
        super().train(mode)
        self.tokenizer.eval()  # the frozen models never train (no codebook restarts either)
        if self.lam is not None:
            self.lam.eval()
        return self

    def inputs(self, batch: Batch | TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, T, h, w) and the dynamics' action inputs (B, T-1) ids or (B, T-1, D) codes,
        from frames (encoded here) or from a `TokenBatch` (encoded once, by the token cache)."""
        if isinstance(batch, TokenBatch):
            tokens = to_long(batch.tokens, self.dynamics.device)  # (B, T, h, w)
            actions = to_long(batch.actions, self.dynamics.device)  # (B, T-1) true or latent ids
            if self.dynamics.config.conditioning == "latent":
                with torch.no_grad():
                    actions = self.lam.action_codes(actions)  # (B, T-1, D)
            return tokens, actions
        frames = to_unit_float(batch[0], self.dynamics.device)  # (B, T, H, W, C)
        with torch.no_grad():
            tokens = self.tokenizer.encode(frames).ids  # (B, T, h, w)
            if self.dynamics.config.conditioning == "latent":
                # ids read from windows of the LAM's own length, as evaluation and play read them
                actions = self.lam.action_codes(self.lam.infer_actions(frames))  # (B, T-1, D)
            else:
                actions = to_long(batch[1], self.dynamics.device)  # (B, T-1)
        return tokens, actions

    def compute_loss(self, batch: Batch | TokenBatch) -> LossOutput:
        tokens, actions = self.inputs(batch)
        if self.dynamics.scrolled():
            return self.dynamics.compute_loss_on_tokens(tokens, actions, None, *self.scrolled_inputs(batch))
        return self.dynamics.compute_loss_on_tokens(tokens, actions)

    @torch.no_grad()
    def scrolled_inputs(self, batch: Batch | TokenBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """A `scrolled` dynamics's other inputs: each frame's copy reference (B, T, h, w) (its predecessor shifted
        by the registered scroll, rounded, and tokenized; frame 0's the "masked" id) and the registered scrolls
        into every frame (B, T, 2) px (frame 0's: 0); from the window's frames, or read from the token cache."""
        if isinstance(batch, TokenBatch) and batch.references is not None:
            device = self.dynamics.device
            references = to_long(batch.references, device).clone()  # (B, T, h, w)
            scrolls = torch.as_tensor(batch.scrolls, dtype=torch.float32).to(device).clone()  # (B, T, 2)
            references[:, 0], scrolls[:, 0] = self.dynamics.mask_id, 0.0  # the window's first frame has no predecessor
            return references, scrolls
        scrolls = self.registered_scrolls(batch)  # (B, T, 2)
        return self._shifted_references(self._frames_of(batch), scrolls[:, 1:]), scrolls

    @torch.no_grad()
    def registered_scrolls(self, batch: Batch | TokenBatch) -> torch.Tensor:
        """The scene's registered scroll into every frame of the window (B, T, 2) px (frame 0's: 0)."""
        frames = self._frames_of(batch)  # (B, T, H, W, C) uint8
        b, t = frames.shape[:2]
        pairs = scene_scroll(frames[:, :-1].reshape(-1, *frames.shape[2:]),
                             frames[:, 1:].reshape(-1, *frames.shape[2:]))  # (B*(T-1), 2)
        scrolls = torch.zeros(b, t, 2, device=self.dynamics.device)  # (B, T, 2)
        scrolls[:, 1:] = torch.from_numpy(pairs).view(b, t - 1, 2).to(scrolls.device)
        return scrolls

    @torch.no_grad()
    def drawn_references(self, batch: Batch, tokens: torch.Tensor, actions: torch.Tensor,
                         scrolls: torch.Tensor) -> torch.Tensor:
        """The copy references (B, T, h, w) a teacher-forced prediction of each frame 1..T-1 reads: its real
        predecessor shifted by the scroll the head finds most likely from the real frames before it (and their
        registered scrolls (B, T, 2)), not by the real one."""
        hidden = self.dynamics.hidden_states(tokens, actions)  # (B, T, h, w, d): causal, frame k sees frames <= k
        conditioning = self.dynamics.frame_conditioning(actions, tokens.shape[0])  # (B, T, d)
        logits = self.dynamics.scroll_logits(hidden[:, :-1], conditioning[:, 1:], scrolls[:, :-1])  # (B, T-1, 2, 2S+1)
        drawn = self.dynamics.most_likely_scroll(logits, scrolls[:, :-1])  # (B, T-1, 2)
        return self._shifted_references(self._frames_of(batch), drawn)

    def _frames_of(self, batch: Batch | TokenBatch) -> np.ndarray:
        if isinstance(batch, TokenBatch):
            raise ValueError("a dynamics with copy_reference 'scrolled' reads each frame's registered scroll and "
                             "shifted predecessor from the frames or from a token cache built with them "
                             "(ensure_token_cache(..., max_scroll=...)); this batch has neither")
        return np.asarray(batch[0])  # (B, T, H, W, C) uint8

    def _shifted_references(self, frames: np.ndarray, scrolls: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, H, W, C) uint8, scrolls into frames 1..T-1 (B, T-1, 2) px -> ids (B, T, h, w) of each frame's
        predecessor shifted by its scroll (rounded, clipped to max_scroll); frame 0's the "masked" id."""
        b, t = frames.shape[:2]
        before = to_unit_float(frames[:, :-1].reshape(-1, *frames.shape[2:]), self.dynamics.device)  # (B*(T-1), ...)
        config = self.dynamics.config
        ids = shifted_ids(self.tokenizer, before, scrolls.reshape(-1, 2), config.max_scroll, config.camera_locked_box)
        ids = ids.view(b, t - 1, *ids.shape[1:])  # (B, T-1, h, w)
        first = torch.full_like(ids[:, :1], self.dynamics.mask_id)  # (B, 1, h, w): frame 0 has no predecessor
        return torch.cat([first, ids], dim=1)


class TraineeLoss(nn.Module):
    """Puts `compute_loss` behind `forward`, so DDP's hooks (gradient all-reduce) and torch.compile see each pass."""

    def __init__(self, trainee: nn.Module) -> None:
        super().__init__()
        self.trainee = trainee

    def forward(self, inputs: torch.Tensor, actions: torch.Tensor, tokens: bool = False,
                references: torch.Tensor | None = None,
                scrolls: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Metric]]:
        # inputs: frames (B, T, H, W, C) uint8, or with `tokens` the token cache's ids (B, T, h, w)
        # actions: (B, T-1) int; references (B, T, h, w) and scrolls (B, T, 2): a scrolled copy path's, cached
        batch = TokenBatch(inputs, actions, references, scrolls) if tokens else (inputs, actions)
        output = self.trainee.compute_loss(batch)
        return output.loss, output.metrics


def forward_backward(model: nn.Module, inputs: torch.Tensor, actions: torch.Tensor, *, accumulation: int = 1,
                     tokens: bool = False, scrolled: tuple[torch.Tensor, torch.Tensor] | None = None,
                     autocast: contextlib.AbstractContextManager | None = None) -> dict[str, Metric]:
    """Accumulate into `.grad` the gradient of the batch's mean loss, in `accumulation` equal micro batches.

    Each micro batch's loss is divided by `accumulation`, so the gradient is the same whatever the split; a DDP
    model all-reduces once, after the last micro batch (`no_sync` before). `model` is a `TraineeLoss`, possibly
    DDP-wrapped or compiled. Returns each metric's mean over the micro batches, unread (device tensors).
    """
    # inputs: frames (B, T, H, W, C) uint8 or, with `tokens`, ids (B, T, h, w); actions: (B, T-1); on any device
    # scrolled: with `tokens`, a scrolled copy path's cached references (B, T, h, w) and scrolls (B, T, 2)
    if accumulation < 1 or len(inputs) % accumulation:
        raise ValueError(f"a batch of {len(inputs)} does not split into {accumulation} equal micro batches")
    device = next(model.parameters()).device
    autocast = contextlib.nullcontext() if autocast is None else autocast
    micro = len(inputs) // accumulation
    history: dict[str, list[Metric]] = defaultdict(list)
    for i in range(accumulation):
        part = slice(i * micro, (i + 1) * micro)
        last = i == accumulation - 1
        sync = model.no_sync() if not last and hasattr(model, "no_sync") else contextlib.nullcontext()
        extra = {} if scrolled is None else dict(zip(("references", "scrolls"),
                                                      (x[part].to(device, non_blocking=True) for x in scrolled)))
        with sync:
            with autocast:
                loss, metrics = model(inputs[part].to(device, non_blocking=True),  # (micro, T, ...)
                                      actions[part].to(device, non_blocking=True), tokens=tokens,  # (micro, T-1)
                                      **extra)
            (loss / accumulation).backward()
        for key, value in metrics.items():
            history[key].append(value)
    return {key: values[0] if len(values) == 1 else mean_metric(values) for key, values in history.items()}


def accumulated_step(model: nn.Module, optimization: Optimization, inputs: torch.Tensor, actions: torch.Tensor, *,
                     accumulation: int = 1, tokens: bool = False,
                     scrolled: tuple[torch.Tensor, torch.Tensor] | None = None,
                     autocast: contextlib.AbstractContextManager | None = None) -> dict[str, Metric]:
    """One optimiser step on one batch: forward-backward in micro batches, then clip and update.

    The step every trainer runs (Ray Train workers, `train_step`); returns the trainee's metrics plus grad norm
    and LR, unread, so a loop reads them once per log interval (`outputs.mean_metrics`), not once per step.
    """
    model.train()
    optimization.optimizer.zero_grad(set_to_none=True)
    metrics = forward_backward(model, inputs, actions, accumulation=accumulation, tokens=tokens, scrolled=scrolled,
                               autocast=autocast)
    return {**metrics, **optimization.apply_gradients()}


def train_step(model: nn.Module, optimization: Optimization, batch: Batch | TokenBatch) -> dict[str, float]:
    """One optimiser step on one batch, in one pass, through the trainers' `accumulated_step`; returns the
    trainee's metrics plus grad norm and LR, read to floats."""
    parts = [None if part is None else part if isinstance(part, torch.Tensor)
             else torch.from_numpy(np.ascontiguousarray(part)) for part in batch]  # the arrays' own dtypes, on the CPU
    inputs, actions = parts[:2]  # (B, T, ...), (B, T-1)
    return read_metrics(accumulated_step(TraineeLoss(model), optimization, inputs, actions,
                                         tokens=isinstance(batch, TokenBatch), scrolled=cached_scrolls(parts)))


@torch.no_grad()
def eval_step(model: nn.Module, batch: Batch, decode: bool = False) -> dict[str, float]:
    """The trainee's loss and metrics in eval mode (no codebook restarts, no gradient); dynamics adds
    teacher-forced next-frame token accuracy (one pass, argmax, every token of the frame masked) and, with
    `decode` and a batch of frames, the PSNR of those predicted frames decoded (from the same pass)."""
    model.eval()
    if not isinstance(model, DynamicsTrainee):
        return read_metrics(model.compute_loss(batch).metrics)
    tokens, actions = model.inputs(batch)  # encoded once, for the loss and the teacher-forced pass
    if model.dynamics.scrolled():  # the loss copies by the real scrolls, the prediction by the head's own
        references, scrolls = model.scrolled_inputs(batch)
        metrics = dict(model.dynamics.compute_loss_on_tokens(tokens, actions, None, references, scrolls).metrics)
        drawn = model.drawn_references(batch, tokens, actions, scrolls)  # (B, T, h, w)
        predicted = model.dynamics.teacher_forced_logits(tokens, actions, drawn).argmax(-1)  # (B, T-1, h, w)
    else:
        metrics = dict(model.dynamics.compute_loss_on_tokens(tokens, actions).metrics)
        predicted = model.dynamics.teacher_forced_logits(tokens, actions).argmax(-1)  # (B, T-1, h, w)
    metrics["teacher_forced_accuracy"] = (predicted == tokens[:, 1:]).float().mean()
    if decode and not isinstance(batch, TokenBatch):
        decoded = model.tokenizer.detokenize(predicted)  # (B, T-1, H, W, C)
        metrics["teacher_forced_psnr"] = psnr(decoded.float(), to_unit_float(batch[0][:, 1:], decoded.device))
    return read_metrics(metrics)
