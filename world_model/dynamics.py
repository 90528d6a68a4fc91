"""MaskGIT dynamics: predicts the tokens of frame t+1 from the tokens of frames <= t and the actions.

Conditioning. Frame t's tokens get the embedding of the action that led to it, a_{t-1} (frame 0
gets a learned "no action" vector), and temporal attention is causal, so the logits of frame t
see frames 0..t and actions 0..t-1: frames 0..T-2 with their actions predict frames 1..T-1.
*GenieRedux* feeds the LAM's latent action codes (B, T-1, D); they are detached here, so the
dynamics loss can never train the LAM (stop-gradient). *GenieRedux-G* feeds the true CoinRun
action ids (B, T-1) through an embedding table.

Training masks a ratio r ~ U(mask_ratio_min, 1) of the tokens of every frame 1..T-1 and scores
cross-entropy on the masked tokens. Sampling fills one frame in `steps` passes (cosine schedule):
each pass samples every masked token at a temperature annealed linearly to 0, keeps the most
confident ones and re-masks the rest; the last pass unmasks everything.

Classifier-free guidance on the key (`action_dropout`, `guidance`; off in the paper): training gives a
share of the transitions the "no action" vector instead of their action, and each sampling pass reads
the new frame twice, with and without its key, and samples from l_none + g * (l_key - l_none). A key
whose effect the model has learnt only weakly (a sub-patch scroll) then moves the dream g times as far.

Shapes: B batch, T frames (Tc context), h x w token grid, d model width, V vocabulary (the tokenizer's codes; id V
is "masked"), D code width (the LAM's latent actions; the tokenizer's codes in `init_token_embeddings`), M masked
positions a loss scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from world_model.config import DynamicsConfig
from world_model.outputs import LossOutput
from world_model.scroll import Scroller, scroll_targets
from world_model.st_transformer import ContextCache, STTransformer


class Dynamics(nn.Module):
    stage = "dynamics"

    def __init__(self, config: DynamicsConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.transformer.dim
        self.mask_id = config.vocab_size  # one extra embedding row for "masked"
        self.token_embedding = nn.Embedding(config.vocab_size + 1, dim)
        if config.conditioning == "ground_truth":
            self.action_embedding: nn.Module = nn.Embedding(config.num_env_actions, dim)
        else:
            self.action_embedding = nn.Linear(config.latent_action_dim, dim)
        self.no_action = nn.Parameter(torch.zeros(dim))  # (d,) what frame 0 of a window is conditioned on
        if config.spatial_positions == "sincos":
            self.register_buffer("spatial_position", sincos_positions(config.grid, dim), persistent=False)  # (h, w, d)
        elif config.spatial_positions == "learned":
            self.spatial_position = nn.Parameter(sincos_positions(config.grid, dim))  # (h, w, d), starts as sincos
        self.transformer = STTransformer(config.transformer, conditioned=config.action_conditioning == "adaptive_norm")
        if config.tie_embeddings:
            self.output_bias = nn.Parameter(torch.zeros(config.vocab_size))  # (V,)
        else:
            self.to_logits = nn.Linear(dim, config.vocab_size)
        if config.copy_bias:
            # a learned, per-position gate on "the same token as the frame before": starts at copy_bias
            self.copy_gate = nn.Linear(dim, 1)
            nn.init.zeros_(self.copy_gate.weight)
            nn.init.constant_(self.copy_gate.bias, config.copy_bias)
        if config.copy_reference == "scrolled":
            # the scene's scroll into frame t from frame t-1's mean hidden state, the key into t and frame t-1's own
            # scroll (px / S): one (2S+1)-way choice per axis (world_model/scroll.py)
            choices = 2 * config.max_scroll + 1
            pooled = dim * (config.scroll_pool_heads if config.scroll_pool == "attention" else 1)
            if config.scroll_pool == "attention":
                self.scroll_pool = KeyedAttentionPool(dim, config.grid, config.scroll_pool_heads)
            self.scroll_head = nn.Sequential(nn.Linear(pooled + dim + 2, dim), nn.GELU(), nn.Linear(dim, 2 * choices))

    @property
    def device(self) -> torch.device:
        return self.token_embedding.weight.device

    @torch.no_grad()
    def init_token_embeddings(self, codebook: torch.Tensor, seed: int = 0) -> None:
        """Start the token embeddings from the frozen tokenizer's unit code vectors (V, D) through a fixed random
        projection (D -> d, unit-variance entries like nn.Embedding's), so tokens that look alike start alike."""
        if codebook.shape[0] != self.config.vocab_size:
            raise ValueError(f"codebook has {codebook.shape[0]} codes; this dynamics reads {self.config.vocab_size}")
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(codebook.shape[1], self.token_embedding.embedding_dim, generator=generator)  # (D, d)
        codes = torch.nn.functional.normalize(codebook.detach().float().cpu(), dim=-1)  # (V, D)
        self.token_embedding.weight[: self.config.vocab_size] = (codes @ projection).to(self.device)  # (V, d)

    def frame_conditioning(self, actions: torch.Tensor, batch: int,
                           dropped: torch.Tensor | None = None) -> torch.Tensor:
        """Actions (B, T-1) ids or (B, T-1, D) latent codes -> per-frame conditioning (B, T, d).

        `dropped` (B, T-1) bool: transitions conditioned on the "no action" vector instead (guidance).
        """
        if self.config.conditioning == "ground_truth":
            if actions.is_floating_point():
                raise TypeError("GenieRedux-G dynamics takes integer environment action ids (B, T-1)")
            embedded = self.action_embedding(actions.long())  # (B, T-1, d)
        else:
            if not actions.is_floating_point():
                raise TypeError("GenieRedux dynamics takes latent action codes (B, T-1, D); use lam.action_codes(ids)")
            embedded = self.action_embedding(actions.detach())  # (B, T-1, d): stop-gradient into the LAM
        if dropped is not None:
            embedded = torch.where(dropped.unsqueeze(-1), self.no_action.to(embedded.dtype), embedded)  # (B, T-1, d)
        first = self.no_action.expand(batch, 1, -1)  # (B, 1, d)
        return torch.cat([first, embedded], dim=1)  # (B, T, d)

    def forward(self, tokens: torch.Tensor, actions: torch.Tensor,
                previous: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (B, T, h, w) (mask_id where masked) and actions for the T-1 transitions -> logits (B, T, h, w, V).

        `previous` (B, T, h, w): each frame's predecessor ids for the readout; default the input's own frames
        (training passes the unmasked ones: at sampling the frames before are always known).
        """
        previous = previous_frames(tokens, self.mask_id) if previous is None else previous  # (B, T, h, w)
        return self.readout(self.hidden_states(tokens, actions), previous)

    def hidden_states(self, tokens: torch.Tensor, actions: torch.Tensor,
                      dropped: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (B, T, h, w) and the T-1 actions (`dropped` (B, T-1): those replaced by "no action") -> the
        transformer's output (B, T, h, w, d), before the readout."""
        b, t = tokens.shape[:2]
        if actions.shape[1] != t - 1:
            raise ValueError(f"{t} frames need {t - 1} actions, got {actions.shape[1]}")
        conditioning = self.frame_conditioning(actions, b, dropped)  # (B, T, d)
        return self.transformer(self.embed(tokens, conditioning), self.block_conditioning(conditioning))

    def block_conditioning(self, conditioning: torch.Tensor) -> torch.Tensor | None:
        """What the transformer's blocks get of the per-frame conditioning (B, T, d): all of it under adaptive_norm,
        nothing when the action enters at the input only."""
        return conditioning if self.config.action_conditioning == "adaptive_norm" else None

    def embed(self, tokens: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T, h, w) and per-frame conditioning (B, T, d) -> transformer input (B, T, h, w, d).

        Per frame only (nothing here mixes frames), so a sampler may embed one new frame at a time.
        """
        hidden = self.token_embedding(tokens)  # (B, T, h, w, d)
        if self.config.spatial_positions != "none":
            hidden = hidden + self.spatial_position  # (h, w, d) broadcast over B, T
        return hidden + rearrange(conditioning, "b t d -> b t 1 1 d")  # (B, T, h, w, d)

    def readout(self, hidden: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Transformer output (..., d) -> logits (..., V), position by position: (B, T, h, w, d) for whole frames, or
        (M, d) for only the positions a loss scores (training reads out the masked ones alone: the (.., V) logits are
        most of a tiny dynamics' step).

        `previous` (...) holds, for each position, the id at that position in the frame before
        (mask_id where unknown, e.g. before frame 0): a readout may lean on them (a copy path).
        """
        if self.config.tie_embeddings:
            table = self.token_embedding.weight[: self.config.vocab_size]  # (V, d)
            # scale the (.., d) input, not the (.., V) logits (1/16 of the elementwise work at V=1024); the bias
            # in the same fused matmul
            logits = F.linear(hidden * (1.0 / math.sqrt(hidden.shape[-1])), table, self.output_bias)  # (..., V)
        else:
            logits = self.to_logits(hidden)  # (..., V)
        if self.config.copy_bias:
            known = previous != self.mask_id  # (...)
            bonus = self.copy_gate(hidden) * known.unsqueeze(-1)  # (..., 1)
            index = previous.clamp(max=self.config.vocab_size - 1).unsqueeze(-1)  # (..., 1)
            # in place: nothing keeps the matmul's output for backward, and a copy of (.., V) costs as much as the add
            logits = logits.scatter_add_(-1, index, bonus.to(logits.dtype))  # (..., V)
        return logits

    def scroll_logits(self, hidden_before: torch.Tensor, conditioning: torch.Tensor,
                      previous_scroll: torch.Tensor) -> torch.Tensor:
        """The scroll head: frame t-1's transformer output (..., h, w, d), the conditioning of frame t (..., d) (its
        key) and frame t-1's own scroll (..., 2) px -> logits (..., 2, 2S+1) of frame t's whole-pixel scroll, per axis
        (index i is a scroll of i - S px)."""
        if self.config.scroll_pool == "attention":
            pooled = self.scroll_pool(hidden_before, conditioning)  # (..., heads d)
        else:
            pooled = hidden_before.mean((-3, -2))  # (..., d)
        features = torch.cat([pooled, conditioning,
                              previous_scroll.to(conditioning.dtype) / self.config.max_scroll], dim=-1)  # (..., p+d+2)
        return self.scroll_head(features).unflatten(-1, (2, 2 * self.config.max_scroll + 1))  # (..., 2, 2S+1)

    def most_likely_scroll(self, logits: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """Scroll logits (..., 2, 2S+1) and the scroll into the frame before (..., 2) px -> the most likely scroll per
        axis (..., 2) px: a whole-pixel choice, or with scroll_relative the previous scroll plus a whole-pixel
        change."""
        return self._scroll_from_choice(logits.argmax(-1) - self.config.max_scroll, previous)

    @torch.no_grad()
    def sample_scroll(self, logits: torch.Tensor, temperature: float, previous: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Scroll logits (B, 2, 2S+1) and the scroll into the frame before (B, 2) px -> a rollout's scroll (B, 2) px:
        with scroll_draw "expected" the head's expected choice (sub-pixel; the Scroller accumulates it), else a
        whole-pixel choice drawn at the config's scroll_temperature when the sampling `temperature` > 0, or (at
        either temperature 0) the most likely; with scroll_relative the choice is a change of `previous`."""
        if self.config.scroll_draw == "expected":
            values = torch.arange(logits.shape[-1], device=logits.device) - self.config.max_scroll  # (2S+1,)
            return self._scroll_from_choice((logits.float().softmax(-1) * values).sum(-1), previous)  # (B, 2)
        scale = self.config.scroll_temperature
        if temperature > 0 and scale > 0:
            choice = _sample_categorical(logits.float() / scale, generator) - self.config.max_scroll  # (B, 2)
            return self._scroll_from_choice(choice, previous)
        return self.most_likely_scroll(logits, previous)

    def _scroll_from_choice(self, choice: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """The head's choice (..., 2) px -> the scroll (..., 2) px: itself, or with scroll_relative `previous` + it."""
        if not self.config.scroll_relative:
            return choice
        return previous.float().to(choice.device) + choice.float()

    def scroll_choice_targets(self, scrolls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Registered scrolls into frames 0..T-1 (B, T, 2) px -> the head's soft targets for frames 1..T-1
        (B, T-1, 2, 2S+1) and which of them count (B, T-1): the scroll itself, or with scroll_relative its change
        from the scroll before, which frame 1 lacks (the scroll into frame 0 is not known)."""
        if not self.config.scroll_relative:
            targets = scroll_targets(scrolls[:, 1:], self.config.max_scroll)
            return targets, torch.ones(targets.shape[:2], dtype=torch.bool, device=targets.device)
        targets = scroll_targets(scrolls[:, 1:] - scrolls[:, :-1], self.config.max_scroll)  # (B, T-1, 2, 2S+1)
        counts = torch.ones(targets.shape[:2], dtype=torch.bool, device=targets.device)  # (B, T-1)
        counts[:, 0] = False
        return targets, counts

    @torch.no_grad()
    def next_scroll_logits(self, context: torch.Tensor, actions: torch.Tensor, previous_scroll: torch.Tensor,
                           last_output: torch.Tensor | None = None) -> torch.Tensor:
        """The head's logits (B, 2, 2S+1) for the scroll into the frame after `context` (B, Tc, h, w), whose Tc
        actions (B, Tc[, D]) lead into context[1:] and the new frame, given the scroll into the last context frame
        (B, 2) px. `last_output` (B, h, w, d): the transformer's output at the last context frame, when a cache
        already has it."""
        if last_output is None:
            last_output = self.hidden_states(context, actions[:, :-1])[:, -1]  # (B, h, w, d)
        key = self.frame_conditioning(actions, context.shape[0])[:, -1]  # (B, d): the key into the new frame
        return self.scroll_logits(last_output, key, previous_scroll)

    @torch.no_grad()
    def draw_scroll(self, context: torch.Tensor, actions: torch.Tensor, previous_scroll: torch.Tensor,
                    temperature: float, generator: torch.Generator | None = None,
                    last_output: torch.Tensor | None = None) -> torch.Tensor:
        """A rollout's scroll (B, 2) px into the frame after `context` (`next_scroll_logits`, `sample_scroll`)."""
        logits = self.next_scroll_logits(context, actions, previous_scroll, last_output)  # (B, 2, 2S+1)
        return self.sample_scroll(logits, temperature, previous_scroll, generator)

    def scrolled(self) -> bool:
        return self.config.copy_reference == "scrolled"

    def cached_references(self) -> dict:
        """What a token cache must hold besides the ids for this model to train from it, as the keyword arguments of
        token_cache.cache_key / ensure_token_cache: a scrolled copy path's references shifted by up to `max_scroll`
        (None: no scroll columns) and the box they leave unshifted."""
        return {"max_scroll": self.config.max_scroll if self.scrolled() else None,
                "locked": self.config.camera_locked_box}

    # ---- training ------------------------------------------------------------------------
    def random_mask(self, tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Boolean mask (B, T, h, w): frame 0 never masked; in each later frame a ratio r ~ U(min, 1) of its tokens."""
        b, t, h, w = tokens.shape
        n = h * w
        low = self.config.mask_ratio_min
        ratio = low + (1.0 - low) * torch.rand(b, t - 1, 1, generator=generator, device=tokens.device)  # (B, T-1, 1)
        count = torch.ceil(ratio * n).clamp(1, n)  # (B, T-1, 1) tokens to mask per frame
        # (B, T-1, h*w)
        ranks = torch.rand(b, t - 1, n, generator=generator, device=tokens.device).argsort(-1).argsort(-1)
        later = ranks < count  # (B, T-1, h*w): a uniformly random subset of `count` positions
        share = self.config.last_frame_mask_share
        if share > 0 and t > 2:
            # inference always predicts from a clean context: some windows mask their last frame only
            clean = torch.rand(b, 1, 1, generator=generator, device=tokens.device) < share  # (B, 1, 1)
            context = torch.arange(t - 1, device=tokens.device).view(1, -1, 1) < t - 2  # (1, T-1, 1): frames 1..T-2
            later = later & ~(clean & context)  # (B, T-1, h*w)
        first = torch.zeros(b, 1, n, dtype=torch.bool, device=tokens.device)  # (B, 1, h*w)
        return rearrange(torch.cat([first, later], dim=1), "b t (h w) -> b t h w", h=h)  # (B, T, h, w)

    def random_action_drop(self, batch: int, transitions: int, device: torch.device,
                           generator: torch.Generator | None = None) -> torch.Tensor | None:
        """Which transitions (B, T-1) train without their action (guidance's "no key"); None when none do."""
        if self.config.action_dropout <= 0:
            return None
        return torch.rand(batch, transitions, generator=generator, device=device) < self.config.action_dropout

    def compute_loss_on_tokens(
        self, tokens: torch.Tensor, actions: torch.Tensor, generator: torch.Generator | None = None,
        references: torch.Tensor | None = None, scrolls: torch.Tensor | None = None,
    ) -> LossOutput:
        """Cross-entropy on the masked tokens of frames 1..T-1. tokens (B, T, h, w), actions (B, T-1[, D]).

        A `scrolled` dynamics also takes each frame's copy reference, references (B, T, h, w) (its predecessor
        shifted by its rounded scroll and tokenized: `scroll.scrolled_references`; frame 0's unused), and the
        registered scrolls into every frame, scrolls (B, T, 2) px (frame 0's: into it, or 0), and adds its scroll
        head's cross-entropy on frames 1..T-1 (soft targets: `scroll.scroll_targets`)."""
        if self.scrolled() and (references is None or scrolls is None):
            raise ValueError("a dynamics with copy_reference 'scrolled' trains on each frame's scrolled reference "
                             "and scroll (scroll.scrolled_references / scene_scroll); got none")
        mask = self.random_mask(tokens, generator)  # (B, T, h, w)
        # (B, T-1) | None
        dropped = self.random_action_drop(tokens.shape[0], tokens.shape[1] - 1, tokens.device, generator)
        hidden = self.hidden_states(tokens.masked_fill(mask, self.mask_id), actions, dropped)  # (B, T, h, w, d)
        # the readout sees each frame's real predecessor (or its scrolled copy), as in sampling, where the frames
        # before are known
        previous = references.long() if self.scrolled() else previous_frames(tokens, self.mask_id)  # (B, T, h, w)
        masked_logits = self.readout(hidden[mask], previous[mask])  # (M, V)
        masked_targets = tokens[mask]  # (M,)
        if self.config.changed_token_weight == 1.0:
            loss = F.cross_entropy(masked_logits, masked_targets)
        else:  # a weighted mean: tokens that do not copy their reference weigh changed_token_weight
            changed = masked_targets != previous[mask]  # (M,)
            weights = torch.where(changed, self.config.changed_token_weight, 1.0).to(masked_logits.dtype)  # (M,)
            per_token = F.cross_entropy(masked_logits, masked_targets, reduction="none")  # (M,)
            loss = (weights * per_token).sum() / weights.sum()
        accuracy = (masked_logits.argmax(-1) == masked_targets).float().mean()
        metrics = {  # unread tensors: outputs.read_metrics
            "loss": loss.detach(),
            "masked_token_accuracy": accuracy.detach(),
            "mask_fraction": mask[:, 1:].float().mean(),
        }
        if self.scrolled():
            conditioning = self.frame_conditioning(actions, tokens.shape[0], dropped)  # (B, T, d)
            logits = self.scroll_logits(hidden[:, :-1], conditioning[:, 1:], scrolls[:, :-1])  # (B, T-1, 2, 2S+1)
            targets, counts = self.scroll_choice_targets(scrolls)  # (B, T-1, 2, 2S+1), (B, T-1)
            scroll_loss = -(targets * logits.float().log_softmax(-1)).sum(-1)[counts].mean()
            loss = loss + self.config.scroll_loss_weight * scroll_loss
            right = (logits.argmax(-1) == targets.argmax(-1))[counts]  # (counted, 2)
            metrics.update(loss=loss.detach(), token_loss=metrics["loss"], scroll_loss=scroll_loss.detach(),
                           scroll_accuracy=right.float().mean().detach())
        return LossOutput(loss, metrics)

    # ---- evaluation and sampling ---------------------------------------------------------
    @torch.no_grad()
    def teacher_forced_logits(self, tokens: torch.Tensor, actions: torch.Tensor,
                              references: torch.Tensor | None = None) -> torch.Tensor:
        """One pass, teacher forced: logits (B, T-1, h, w, V) of frame k from the real frames 0..k-1, frame k fully
        masked. A `scrolled` dynamics's copy path reads `references` (B, T, h, w) (each frame's scrolled
        predecessor, e.g. by the real scroll or by one its head drew), a plain one the real frames before.

        Causality makes frames after k irrelevant to frame k, so the T-1 cases are T-1 copies of
        the window with one frame masked each, stacked into one batch (one forward call).
        """
        b, t = tokens.shape[:2]
        copies = tokens.unsqueeze(1).repeat(1, t - 1, 1, 1, 1)  # (B, T-1, T, h, w)
        for k in range(1, t):
            copies[:, k - 1, k] = self.mask_id
        copied_actions = actions.unsqueeze(1).expand(b, t - 1, *actions.shape[1:])  # (B, T-1, T-1[, D])
        hidden = self.hidden_states(
            rearrange(copies, "b k t h w -> (b k) t h w"),
            copied_actions.reshape(b * (t - 1), *actions.shape[1:]),
        )  # (B*(T-1), T, h, w, d)
        hidden = rearrange(hidden, "(b k) t h w d -> b k t h w d", b=b)  # (B, T-1, T, h, w, d)
        index = torch.arange(1, t, device=tokens.device)  # (T-1,): case k-1 predicts frame k
        # read out only the predicted frame of each case: (T-1) frames of logits, not (T-1) x T
        if self.scrolled() and references is None:
            raise ValueError("a dynamics with copy_reference 'scrolled' reads each frame's scrolled reference")
        previous = references[:, 1:].long() if self.scrolled() else tokens[:, :-1]  # (B, T-1, h, w)
        return self.readout(hidden[:, index - 1, index], previous)  # (B, T-1, h, w, V)

    # MaskGIT runs the context through the transformer once per generated frame and each pass only the new
    # frame (it can't change the context: attention and PEG are causal in time); False recomputes the whole
    # window at every pass, as forward() does. Set per instance (e.g. by a benchmark) or per call.
    context_cache: bool = True

    @torch.no_grad()
    def sample_next_frame(
        self,
        tokens: torch.Tensor,
        actions: torch.Tensor,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        context_cache: bool | None = None,
        scroller: Scroller | None = None,
    ) -> torch.Tensor:
        """MaskGIT: tokens (B, T, h, w) of frames 0..T-1 and actions (B, T[, D]) (the last leads to the new
        frame) -> tokens (B, h, w) of frame T, after exactly `steps` passes (None: self.context_cache).

        A `scrolled` dynamics first draws the new frame's scroll from its head and asks `scroller` (which holds
        frame T-1's pixels: `scroll.Scroller`) for that frame shifted by it, the copy path's reference."""
        steps = self.config.sampling_steps if steps is None else int(steps)
        temperature = self.config.temperature if temperature is None else float(temperature)
        guidance = self.config.guidance
        if steps < 1:
            raise ValueError(f"MaskGIT needs at least 1 step, got {steps}")
        b, t, h, w = tokens.shape
        n = h * w
        if actions.shape[1] != t:
            raise ValueError(f"{t} frames need {t} actions to predict the next one, got {actions.shape[1]}")
        # keep the last frames-1 frames, so context + new frame is the training window length
        keep = max(1, self.config.frames - 1)
        context = tokens[:, -keep:]  # (B, Tc, h, w)
        # (B, Tc[, D]): actions into context[1:] and into the new frame
        context_actions = actions[:, -context.shape[1]:]

        use_cache = self.context_cache if context_cache is None else context_cache
        cache = self.prefill(context, context_actions) if use_cache else None
        previous = context[:, -1:]  # (B, 1, h, w): what the copy path copies
        if self.scrolled():
            if scroller is None:
                raise ValueError("a dynamics with copy_reference 'scrolled' samples through a scroll.Scroller "
                                 "(WorldModel.generate makes one from the context frames)")
            scroll = self.draw_scroll(context, context_actions, scroller.previous_scroll, temperature, generator,
                                      None if cache is None else cache.last_output[:, 0])
            previous = scroller.reference(scroll).unsqueeze(1)  # (B, 1, h, w)
        # ids (B, 1, h, w) -> logits (B, h, w, V)
        read = (self.cached_new_frame_logits(context, context_actions, previous, cache) if use_cache
                else self.recomputed_new_frame_logits(context, context_actions, previous))
        if guidance != 1.0:
            def logits_of(frame: torch.Tensor) -> torch.Tensor:  # guided: l_none + g * (l_key - l_none)
                none = read(frame, keyless=True)  # (B, h, w, V)
                return none + guidance * (read(frame) - none)
        else:
            logits_of = read

        frame = torch.full((b, n), self.mask_id, dtype=torch.long, device=tokens.device)  # (B, h*w)
        for step in range(steps):
            logits = logits_of(frame.view(b, 1, h, w)).reshape(b, n, -1).float()  # (B, h*w, V)
            tau = temperature * (1.0 - (step + 1) / steps)  # annealed linearly; 0 on the last step
            sampled = _sample_categorical(logits / tau, generator) if tau > 0 else logits.argmax(-1)  # (B, h*w)
            # the drawn token's log-probability, without materialising log_softmax over (B, h*w, V)
            confidence = logits.gather(-1, sampled.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)  # (B, h*w)
            if tau > 0:
                confidence = confidence + tau * _gumbel(confidence.shape, generator, confidence.device)
            masked = frame == self.mask_id  # (B, h*w)
            confidence = confidence.masked_fill(~masked, float("inf"))  # decided tokens stay decided
            remain_masked = math.floor(n * math.cos(math.pi / 2 * (step + 1) / steps))  # cosine schedule, 0 at the end
            order = confidence.argsort(dim=-1)  # (B, h*w): least confident first
            stay = torch.zeros_like(masked).scatter_(1, order[:, :remain_masked], True)  # (B, h*w)
            frame = torch.where(masked & ~stay, sampled, frame)  # (B, h*w)
        return frame.view(b, h, w)  # (B, h, w)

    def recomputed_new_frame_logits(
        self, context: torch.Tensor, actions: torch.Tensor, previous: torch.Tensor | None = None
    ) -> Callable[..., torch.Tensor]:
        """The uncached pass: ids (B, 1, h, w) of the frame after `context` (B, Tc, h, w), whose Tc actions
        (B, Tc[, D]) lead into context[1:] and the new frame -> its logits (B, h, w, V), from the whole window.
        With `keyless=True` the new frame gets "no action" instead of its key (guidance's other reading).
        `previous` (B, 1, h, w): what the copy path copies (None: the last context frame; or its scrolled copy)."""
        previous = context[:, -1:] if previous is None else previous
        last_only = torch.zeros(actions.shape[:2], dtype=torch.bool, device=actions.device)  # (B, Tc)
        last_only[:, -1] = True

        def logits_of(frame: torch.Tensor, keyless: bool = False) -> torch.Tensor:
            window = torch.cat([context, frame], dim=1)  # (B, Tc+1, h, w)
            hidden = self.hidden_states(window, actions, last_only if keyless else None)[:, -1]  # (B, h, w, d)
            return self.readout(hidden, previous[:, 0])  # (B, h, w, V)
        return logits_of

    def prefill(self, context: torch.Tensor, actions: torch.Tensor) -> ContextCache:
        """The context (B, Tc, h, w) run through the transformer once (its Tc actions (B, Tc[, D]) lead into
        context[1:] and the frame after it): what every MaskGIT pass over that frame reuses."""
        conditioning = self.frame_conditioning(actions, context.shape[0])[:, :-1]  # (B, Tc, d)
        return self.transformer.prefill(self.embed(context, conditioning), self.block_conditioning(conditioning))

    def cached_new_frame_logits(
        self, context: torch.Tensor, actions: torch.Tensor, previous: torch.Tensor | None = None,
        cache: ContextCache | None = None,
    ) -> Callable[..., torch.Tensor]:
        """recomputed_new_frame_logits's function, but the context goes through the transformer once, here:
        each pass then runs only the new frame's (B, 1, h, w) tokens through the blocks (with or without its key:
        the key changes only the new frame, so both readings share the context's cache)."""
        conditioning = self.frame_conditioning(actions, context.shape[0])  # (B, Tc+1, d)
        cache = self.prefill(context, actions) if cache is None else cache  # per block, what frame Tc needs
        previous = context[:, -1:] if previous is None else previous  # (B, 1, h, w): what the copy path copies
        keyed = conditioning[:, -1:]  # (B, 1, d): the action into the new frame
        no_key = self.no_action.to(keyed.dtype).expand_as(keyed)  # (B, 1, d): what a dropped key is trained with

        def logits_of(frame: torch.Tensor, keyless: bool = False) -> torch.Tensor:
            new_conditioning = no_key if keyless else keyed  # (B, 1, d)
            hidden = self.transformer.forward_new_frame(self.embed(frame, new_conditioning), cache,
                                                        self.block_conditioning(new_conditioning))  # (B, 1, h, w, d)
            return self.readout(hidden, previous)[:, 0]  # (B, h, w, V)
        return logits_of

    @torch.no_grad()
    def generate_tokens(
        self,
        context: torch.Tensor,
        actions: torch.Tensor,
        horizon: int,
        steps: int | None = None,
        temperature: float | None = None,
        generator: torch.Generator | None = None,
        context_cache: bool | None = None,
        scroller: Scroller | None = None,
    ) -> torch.Tensor:
        """Autoregressive rollout, frame by frame: context tokens (B, Tc, h, w) and actions
        (B, Tc-1+horizon[, D]) -> tokens (B, horizon, h, w) of the generated frames (`scroller`: a `scrolled`
        dynamics's, at the last context frame; see sample_next_frame)."""
        tc = context.shape[1]
        if actions.shape[1] != tc - 1 + horizon:
            raise ValueError(f"{tc} context frames and horizon {horizon} need {tc - 1 + horizon} actions, got "
                             f"{actions.shape[1]}")
        frames = context  # (B, Tc, h, w)
        for i in range(horizon):
            known = frames.shape[1]
            # (B, h, w)
            new = self.sample_next_frame(frames, actions[:, :known], steps, temperature, generator, context_cache,
                                         scroller)
            frames = torch.cat([frames, new.unsqueeze(1)], dim=1)  # (B, known+1, h, w)
            if scroller is not None and self.scrolled():
                scroller.advance(frames)
        return frames[:, tc:]  # (B, horizon, h, w)


class KeyedAttentionPool(nn.Module):
    """Frame t-1's transformer output (..., h, w, d) and the key into frame t (..., d) -> `heads` weighted means
    over the h x w positions (..., heads d), each weighted by softmax(hidden . query(key) / sqrt(d) + a learned
    per-position bias). Query and bias start at 0: the pool starts as the plain mean, and learns where to look
    (the agent's surroundings, which decide whether a key moves the camera)."""

    def __init__(self, dim: int, grid: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, heads * dim)
        nn.init.zeros_(self.query.weight)
        nn.init.zeros_(self.query.bias)
        self.position_bias = nn.Parameter(torch.zeros(heads, grid * grid))  # (heads, h w)

    def forward(self, hidden: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        dim = hidden.shape[-1]
        values = hidden.flatten(-3, -2)  # (..., hw, d)
        queries = self.query(key).unflatten(-1, (self.heads, dim))  # (..., heads, d)
        scores = queries @ values.transpose(-1, -2) / dim ** 0.5  # (..., heads, hw)
        weights = (scores.float() + self.position_bias).softmax(-1).to(values.dtype)  # (..., heads, hw)
        return (weights @ values).flatten(-2)  # (..., heads d)


def sincos_positions(grid: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding (grid, grid, dim): half the channels code the row, half the column."""
    quarter = dim // 4
    frequencies = 1.0 / (100.0 ** (torch.arange(quarter, dtype=torch.float32) / max(1, quarter)))  # (dim/4,)
    angles = torch.arange(grid, dtype=torch.float32)[:, None] * frequencies[None, :]  # (grid, dim/4)
    axis = torch.cat([angles.sin(), angles.cos()], dim=-1)  # (grid, dim/2)
    rows = axis[:, None, :].expand(grid, grid, -1)  # (grid, grid, dim/2)
    cols = axis[None, :, :].expand(grid, grid, -1)  # (grid, grid, dim/2)
    table = torch.cat([rows, cols], dim=-1)  # (grid, grid, 4*(dim//4))
    return torch.nn.functional.pad(table, (0, dim - table.shape[-1]))  # (grid, grid, dim)


def previous_frames(tokens: torch.Tensor, mask_id: int) -> torch.Tensor:
    """Ids (B, T, h, w) -> the ids of each frame's predecessor (B, T, h, w); frame 0's is all mask_id."""
    first = torch.full_like(tokens[:, :1], mask_id)  # (B, 1, h, w)
    return torch.cat([first, tokens[:, :-1]], dim=1)  # (B, T, h, w)


def _sample_categorical(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from softmax(logits) (..., V) -> ids (...), by inverting the CDF with one uniform per row.

    Why not Gumbel-max or torch.multinomial: both draw V random numbers per token (multinomial an exponential
    each), which at V = 1024 was a third of a tiny model's MaskGIT pass; a cumulative sum and a binary search are not.
    """
    cdf = logits.softmax(-1).cumsum(-1)  # (..., V)
    uniform = torch.rand(*logits.shape[:-1], 1, generator=generator, device=logits.device)  # (..., 1)
    # (...): never an id of probability 0
    ids = torch.searchsorted(cdf, uniform * cdf[..., -1:], right=True).squeeze(-1)
    return ids.clamp(max=logits.shape[-1] - 1)


def _gumbel(shape: torch.Size, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    uniform = torch.rand(shape, generator=generator, device=device).clamp(1e-9, 1.0 - 1e-9)
    return -torch.log(-torch.log(uniform))
