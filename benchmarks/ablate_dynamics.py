"""Ablation study of the dynamics at a fixed budget: what makes a small MaskGIT learn CoinRun quickly.

Every variant trains on the same tokens (the study's frozen tokenizer, applied once), the same windows
in the same order and the same number of steps, then is scored on the same held-out windows of the
Basic and Diverse test sets, each number beside the *copy the last frame* baseline, with 95% CIs
over windows:

- `tf_acc`: teacher-forced next-frame token accuracy (clean context of `context` real frames, the
  next frame fully masked, argmax), beside `copy_acc` (the last context frame's tokens);
- `tf_psnr`: PSNR of that predicted frame, decoded as the world model decodes, beside `copy_psnr`
  (the real last context frame) and `recon_psnr` (the tokenizer's own reconstruction: the ceiling);
- `gain`: paired tf_psnr - copy_psnr per window;
- `delta_psnr`: controllability, PSNR with the true action minus PSNR with an action of a different
  effect (CoinRun's no-op ids and DOWN twins excluded), same context (GenieRedux-G);
- `action_nats`: controllability before sampling: log-likelihood of the true next tokens under the
  true action minus under that other action, per token that changed (0: the key is ignored);
- `ar_psnr_1`, `ar_psnr_10`, `ar_copy_10`: MaskGIT rollouts (autoregressive) on a subset.

    python benchmarks/ablate_dynamics.py --run runs/tiny --steps 300 --variants baseline,copy,tied_codebook
    python benchmarks/ablate_dynamics.py --list

The run folder is a `genie pipeline` output (models/tokenizer, data/random-train, data/basic-test,
data/diverse-test). Results go to `--out` (JSON, one record per variant and test set) and a Markdown
table is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl_agent.store.reader import EpisodeStore
from world_model.checkpoint import load_model
from world_model.config import OptimConfig, config_from_dict, config_to_dict, load_preset
from world_model.dynamics import Dynamics, previous_frames
from world_model.evaluation.config import FORK_ACTIONS
from world_model.evaluation.episodes import select_windows
from world_model.evaluation.forks import forked_contexts
from world_model.evaluation.registration import agent_motion
from world_model.evaluation.metrics import (forked_direction, forked_future_psnr, forked_future_wins, mean_ci95,
                                            psnr_per_frame)
from world_model.evaluation.rollouts import effect_classes, forked_dreams, replace_action_by_effect
from world_model.evaluation.worker import reconstruct_windowed
from rl_agent.coinrun_env import ACTION_NAMES
from world_model.generation import WorldModel, carry_unchanged
from world_model.optim import Optimization
from world_model.runs import resolve_checkpoint
from world_model.scroll import episode_references, scene_scroll, shifted_ids
from world_model.token_cache import cache_key, key_digest

TINY_BEST = dict(token_init="codebook", tie_embeddings=True, copy_bias=3.0, spatial_positions="learned",
                 last_frame_mask_share=0.5)
# tiny's dynamics today: the scrolled copy path leaving the agent's box (the camera follows it) unshifted
SCROLL_LOCKED = {**TINY_BEST, "copy_reference": "scrolled", "camera_locked_box": [24, 38, 29, 35]}
VARIANTS: dict[str, dict] = {
    "baseline": {},
    "copy": {"dynamics": dict(copy_bias=3.0)},
    "tied": {"dynamics": dict(tie_embeddings=True)},
    "codebook": {"dynamics": dict(token_init="codebook")},
    "tied_codebook": {"dynamics": dict(token_init="codebook", tie_embeddings=True)},
    "tied_codebook_copy": {"dynamics": dict(token_init="codebook", tie_embeddings=True, copy_bias=3.0)},
    "positions": {"dynamics": dict(spatial_positions="learned")},
    "peg_random": {"dynamics": dict(transformer=dict(peg_init="random"))},
    "last_frame_mask": {"dynamics": dict(last_frame_mask_share=0.5)},
    "lr1e-3": {"optim": dict(lr=1e-3, min_lr=1e-4)},
    "all": {"dynamics": TINY_BEST},
    "all_peg": {"dynamics": {**TINY_BEST, "transformer": dict(peg_init="random")}},
    "all_lr1e-3": {"dynamics": TINY_BEST, "optim": dict(lr=1e-3, min_lr=1e-4)},
    "all_copy1": {"dynamics": {**TINY_BEST, "copy_bias": 1.0}},
    "all_no_lastmask": {"dynamics": {**TINY_BEST, "last_frame_mask_share": 0.0}},
    "all_no_positions": {"dynamics": {**TINY_BEST, "spatial_positions": "none"}},
    "all_untied": {"dynamics": {**TINY_BEST, "tie_embeddings": False, "token_init": "random"}},
    "all_wide": {"dynamics": {**TINY_BEST, "transformer": dict(dim=96, heads=4)}},
    "all_w128": {"dynamics": {**TINY_BEST, "transformer": dict(dim=128, heads=4)}},
    "all_deep4": {"dynamics": {**TINY_BEST, "transformer": dict(depth=4)}},
    "all_adaln": {"dynamics": {**TINY_BEST, "action_conditioning": "adaptive_norm"}},
    "all_cfg": {"dynamics": {**TINY_BEST, "action_dropout": 0.1}},
    "all_cfg25": {"dynamics": {**TINY_BEST, "action_dropout": 0.25}},
    "all_lr6e-3": {"dynamics": TINY_BEST, "optim": dict(lr=6e-3, min_lr=6e-4)},
    "all_cfg_lr6e-3": {"dynamics": {**TINY_BEST, "action_dropout": 0.1}, "optim": dict(lr=6e-3, min_lr=6e-4)},
    # the key as a classification: the model's likelihood of each real frame must be higher under the real actions
    # than under actions of another effect (action_contrastive_loss; the weight multiplies it beside the CE)
    "all_contrast": {"dynamics": TINY_BEST, "contrast": 0.02},
    "all_contrast01": {"dynamics": TINY_BEST, "contrast": 0.1},
    # the scroll as a second target: from each mostly masked frame's hidden states (context and key only), a linear
    # head regresses the agent's motion into that frame (dx, dy px, registered from the real frames)
    "all_motion": {"dynamics": TINY_BEST, "motion": 1.0},
    # the copy path copies the frame before shifted by a whole-pixel scroll a small head draws from that frame, its
    # own scroll and the key (world_model/scroll.py); trained on the registered scrolls
    "all_scroll": {"dynamics": {**TINY_BEST, "copy_reference": "scrolled"}},
    # the same, the head picking the change from the scroll into the frame before (a running agent keeps running)
    "all_scroll_relative": {"dynamics": {**TINY_BEST, "copy_reference": "scrolled", "scroll_relative": True}},
    # the loss weighs the masked tokens that do not copy their (scrolled) reference 3x / 10x: the few the key changes
    "all_scroll_changed3": {"dynamics": {**TINY_BEST, "copy_reference": "scrolled", "changed_token_weight": 3.0}},
    "all_scroll_changed10": {"dynamics": {**TINY_BEST, "copy_reference": "scrolled", "changed_token_weight": 10.0}},
    # the scroll head reads frame t-1 through two key-conditioned attention pools instead of its mean over positions
    # (what is next to the agent decides whether a key moves the camera; dynamics.scroll_pool)
    "all_scroll_attnpool": {"dynamics": {**TINY_BEST, "copy_reference": "scrolled", "scroll_pool": "attention"}},
    # the scrolled copy path leaves the agent's box unshifted: CoinRun's camera follows the agent, so it stays put
    # on screen while the level scrolls (dynamics.camera_locked_box)
    "all_scroll_locked": {"dynamics": SCROLL_LOCKED},
    # the same box grown to the tokenizer's 4 px patches (rows 6-9, columns 7-8 of the 16 x 16 grid): no patch mixes
    # shifted and unshifted pixels, so the agent's tokens in the reference are the frame before's own
    "all_scroll_locked_patches": {"dynamics": {**TINY_BEST, "copy_reference": "scrolled",
                                               "camera_locked_box": [24, 40, 28, 36]}},
    # tiny's dynamics (all_scroll_locked) twice as wide (dim 128) / twice as deep (4 blocks): capacity at equal steps
    "all_scroll_locked_w128": {"dynamics": {**SCROLL_LOCKED, "transformer": dict(dim=128)}},
    "all_scroll_locked_deep4": {"dynamics": {**SCROLL_LOCKED, "transformer": dict(depth=4)}},
}


# ---- data ----------------------------------------------------------------------------------------
def tokenize_store(tokenizer, store: EpisodeStore, batch_frames: int = 256) -> list[np.ndarray]:
    """Every episode's token ids, (L, h, w) int16 each: the training set encoded once."""
    out = []
    for episode in range(len(store)):
        frames = store.episode_frames(episode)  # (L, H, W, C)
        ids = [tokenizer.tokenize(frames[None, lo: lo + batch_frames])[0] for lo in range(0, len(frames), batch_frames)]
        out.append(torch.cat(ids).to(torch.int16).numpy())  # (L, h, w)
    return out


def held_out_windows(store: EpisodeStore, count: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` windows, one per episode, drawn from the seed: frames (N, T, H, W, C), actions (N, T-1)."""
    rng = np.random.default_rng(seed)
    eligible = np.flatnonzero(store.lengths >= length)
    episodes = rng.permutation(eligible)[:count]
    if len(episodes) < count:  # fewer episodes than windows asked for: more windows per episode
        episodes = rng.choice(eligible, size=count, replace=True)
    starts = rng.integers(0, store.lengths[episodes] - length + 1)
    return store.windows(episodes, starts, length)


# ---- training ------------------------------------------------------------------------------------
def action_contrastive_loss(dynamics: Dynamics, tokens: torch.Tensor, actions: torch.Tensor, weight: float,
                            generator: torch.Generator, rng: np.random.Generator) -> torch.Tensor:
    """The CE of `compute_loss_on_tokens` plus `weight` x a logistic loss that the real actions explain each
    predicted frame better than actions of another effect: softplus(-(log p(frame | a) - log p(frame | a'))), the
    log-likelihoods summed over the frame's masked tokens, the same mask and tokens for both (one pass of 2B).
    tokens (B, T, h, w), actions (B, T-1)."""
    b, t = tokens.shape[:2]
    effects = effect_classes()
    other = actions.clone()
    for column in range(t - 1):
        other = replace_action_by_effect(other, column, effects, rng)  # (B, T-1): every key of another effect
    mask = dynamics.random_mask(tokens, generator)  # (B, T, h, w)
    masked = tokens.masked_fill(mask, dynamics.mask_id)
    hidden = dynamics.hidden_states(torch.cat([masked, masked]), torch.cat([actions, other]))  # (2B, T, h, w, d)
    previous = previous_frames(tokens, dynamics.mask_id)[mask]  # (M,)
    targets = tokens[mask]  # (M,)
    logits_real = dynamics.readout(hidden[:b][mask], previous)  # (M, V)
    logits_other = dynamics.readout(hidden[b:][mask], previous)  # (M, V)
    nll_real = F.cross_entropy(logits_real, targets, reduction="none")  # (M,)
    nll_other = F.cross_entropy(logits_other, targets, reduction="none")  # (M,)
    frame_of = torch.arange(b * t).reshape(b, t, 1, 1).expand_as(mask)[mask]  # (M,): which (window, frame)
    margin = torch.zeros(b * t).index_add_(0, frame_of, nll_other - nll_real)  # (B*T,): log p(x|a) - log p(x|a')
    scored = torch.zeros(b * t, dtype=torch.bool)
    scored[frame_of] = True
    return nll_real.mean() + weight * F.softplus(-margin[scored]).mean()


# motion targets divided by about their spread: per step the random agent moves 0.38 px (std) sideways, 3.6 up/down
# (jumps and falls; the explorer 0.60 and 3.7), so the key's sideways effect would vanish beside dy in px
MOTION_SCALE_PX = (0.5, 4.0)


def episode_motions(store: EpisodeStore) -> list[np.ndarray]:
    """Each training episode's agent motion into every frame, (L, 2) [dx, dy] px (frame 0: 0), from its frames."""
    out = []
    for episode in range(len(store)):
        frames = store.episode_frames(episode)  # (L, H, W, C)
        out.append(np.concatenate([np.zeros((1, 2)), agent_motion(frames[:-1], frames[1:])]).astype(np.float32))
    return out


def episode_scrolls(tokenizer, store: EpisodeStore, max_scroll: int,
                    locked: tuple[int, int, int, int] | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each training episode's registered scene scroll into every frame, (L, 2) px (frame 0: 0), and every frame's
    scrolled copy reference, (L, h, w) ids (scroll.episode_references; the `locked` box not shifted)."""
    scrolls, references = [], []
    for episode in range(len(store)):
        scroll, reference = episode_references(tokenizer, store.episode_frames(episode), max_scroll, locked)
        scrolls.append(scroll), references.append(reference)  # (L, 2), (L, h, w)
    return scrolls, references


def motion_loss(dynamics: Dynamics, head: torch.nn.Module, tokens: torch.Tensor, actions: torch.Tensor,
                motion: torch.Tensor, weight: float, generator: torch.Generator) -> torch.Tensor:
    """The CE of `compute_loss_on_tokens` plus `weight` x the MSE of the agent's motion into each frame at least half
    masked, regressed by `head` from the mean of that frame's masked hidden states (one pass). A dense target for
    what the token CE spreads over 1024 classes: which way the key scrolled the level.
    tokens (B, T, h, w), actions (B, T-1), motion (B, T, 2) px."""
    mask = dynamics.random_mask(tokens, generator)  # (B, T, h, w)
    hidden = dynamics.hidden_states(tokens.masked_fill(mask, dynamics.mask_id), actions)  # (B, T, h, w, d)
    logits = dynamics.readout(hidden[mask], previous_frames(tokens, dynamics.mask_id)[mask])  # (M, V)
    ce = F.cross_entropy(logits, tokens[mask])
    weights = mask.float()  # (B, T, h, w)
    pooled = (hidden * weights.unsqueeze(-1)).sum((2, 3)) / weights.sum((2, 3)).clamp_min(1).unsqueeze(-1)  # (B,T,d)
    scored = weights.mean((2, 3)) >= 0.5  # (B, T): frames whose motion is not in sight
    scored[:, 0] = False
    if not scored.any():
        return ce
    error = head(pooled[scored]) - motion[scored] / torch.tensor(MOTION_SCALE_PX)  # (S, 2)
    return ce + weight * error.pow(2).mean()


def train(dynamics: Dynamics, optim: OptimConfig, tokens: list[np.ndarray], actions: list[np.ndarray], batch: int,
          length: int, seed: int, steps: int, pause_at: tuple[int, ...] = (),
          contrast: float = 0.0, motions: list[np.ndarray] | None = None,
          motion: float = 0.0, scrolls: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
          ) -> Iterator[tuple[int, float]]:
    """`steps` optimiser steps on windows drawn from the seed (one learning-rate schedule over all of them);
    yields (steps done, seconds spent) at each of `pause_at` and at the end, so one run can be scored along a
    budget curve. A point before the end is scored mid-schedule (a higher lr than a run that ends there)."""
    rng = np.random.default_rng(seed)
    lengths = np.array([len(t) for t in tokens])
    counts = np.maximum(lengths - length + 1, 0)
    head = None
    if motion:  # a module of the dynamics, so that the optimiser steps it; never used outside this benchmark
        head = dynamics.motion_head = torch.nn.Linear(dynamics.config.transformer.dim, 2)
    optimization = Optimization(dynamics,
                                dataclasses.replace(optim, total_steps=steps,
                                                    warmup_steps=min(optim.warmup_steps, steps - 1)))
    generator = torch.Generator().manual_seed(seed)
    dynamics.train()
    start = time.perf_counter()
    seconds = 0.0
    for step in range(1, steps + 1):
        episodes = rng.choice(len(tokens), size=batch, p=counts / counts.sum())
        starts = rng.integers(0, counts[episodes])
        chosen = list(zip(episodes, starts))
        window = torch.from_numpy(np.stack([tokens[e][s: s + length] for e, s in chosen]).astype(np.int64))
        acts = torch.from_numpy(np.stack([actions[e][s: s + length - 1] for e, s in chosen]).astype(np.int64))
        # window (B, T, h, w), acts (B, T-1)
        if contrast:
            optimization.step(action_contrastive_loss(dynamics, window, acts, contrast, generator, rng))
        elif head is not None:
            moved = torch.from_numpy(np.stack([motions[e][s: s + length] for e, s in chosen]))  # (B, T, 2)
            optimization.step(motion_loss(dynamics, head, window, acts, moved, motion, generator))
        elif dynamics.scrolled():
            scrolled = torch.from_numpy(np.stack([scrolls[0][e][s: s + length] for e, s in chosen]))  # (B, T, 2)
            references = torch.from_numpy(np.stack([scrolls[1][e][s: s + length] for e, s in chosen]).astype(np.int64))
            optimization.step(dynamics.compute_loss_on_tokens(window, acts, generator, references, scrolled).loss)
        else:
            optimization.step(dynamics.compute_loss_on_tokens(window, acts, generator).loss)
        if step in pause_at or step == steps:
            seconds += time.perf_counter() - start
            dynamics.eval()
            yield step, seconds
            dynamics.train()
            start = time.perf_counter()


# ---- scoring -------------------------------------------------------------------------------------
def ci(values) -> tuple[float, float]:
    return mean_ci95(np.asarray(values, dtype=np.float64).ravel().tolist())


@torch.no_grad()
def score(world: WorldModel, frames: np.ndarray, actions: np.ndarray, context: int, rollout_windows: int,
          horizon: int, maskgit_steps: int, seed: int) -> dict[str, tuple[float, float]]:
    """Per-window metrics on held-out windows (frames (N, T, H, W, C), T >= context + horizon), each as (mean, CI)."""
    world.eval()
    tokenizer, dynamics = world.tokenizer, world.dynamics
    target = torch.from_numpy(frames[:, context]).float() / 255.0  # (N, H, W, C)
    last = torch.from_numpy(frames[:, context - 1]).float() / 255.0  # (N, H, W, C)
    tokens = tokenizer.tokenize(frames[:, : context + 1])  # (N, c+1, h, w)
    acts = torch.from_numpy(actions[:, :context].astype(np.int64))  # (N, c): the last leads to the target
    other = replace_action_by_effect(acts, context - 1, effect_classes(), np.random.default_rng(seed))  # (N, c)
    scrolled = {}
    if dynamics.scrolled():  # the registered scrolls into the last context frame and into the target
        scrolled["before"] = torch.from_numpy(scene_scroll(frames[:, context - 2], frames[:, context - 1]))  # (N, 2)
        scrolled["real"] = torch.from_numpy(scene_scroll(frames[:, context - 1], frames[:, context]))  # (N, 2)

    def reference(scroll: torch.Tensor) -> torch.Tensor:
        """The copy path's reference (N, c+1, h, w): the context's own frames, the target's the last context frame
        shifted by `scroll` (N, 2) px (rounded, clipped) and tokenized."""
        shifted = shifted_ids(tokenizer, last, scroll, dynamics.config.max_scroll,
                              dynamics.config.camera_locked_box)  # (N, h, w)
        return torch.cat([previous_frames(tokens[:, :-1], dynamics.mask_id), shifted[:, None]], dim=1)

    def predict(action_ids: torch.Tensor, oracle: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        masked = tokens.clone()
        masked[:, -1] = dynamics.mask_id
        previous = None
        if dynamics.scrolled():  # the head's most likely scroll under these keys (or, `oracle`, the real one)
            logits = dynamics.next_scroll_logits(tokens[:, :-1], world.action_inputs(action_ids), scrolled["before"])
            # (N, 2) whole px, rounded as the reference rounds it (a relative head's scroll is sub-pixel)
            drawn = dynamics.most_likely_scroll(logits, scrolled["before"]).round()
            scrolled.setdefault("drawn", drawn)  # (N, 2): the first call's keys are the real ones
            previous = reference(scrolled["real"] if oracle else drawn.float())  # (N, c+1, h, w)
        logits = dynamics(masked, world.action_inputs(action_ids), previous)[:, -1]  # (N, h, w, V)
        ids = logits.argmax(-1)  # (N, h, w)
        decoded = world.decode_windows(torch.cat([tokens[:, :-1], ids[:, None]], dim=1), context)[:, 0]  # (N, H, W, C)
        truth = logits.log_softmax(-1).gather(-1, tokens[:, -1, ..., None])[..., 0]  # (N, h, w): log p(true token)
        return ids, decoded, truth

    ids, predicted, log_p = predict(acts)
    carried = carry_unchanged(predicted, last, ids, tokens[:, -2])  # (N, H, W, C)
    _, predicted_other, log_p_other = predict(other)
    # how much the true action explains what changed: nats per changed token it adds over another effect's action
    changed = (tokens[:, -1] != tokens[:, -2]).float()  # (N, h, w)
    action_nats = ((log_p - log_p_other) * changed).sum((1, 2)) / changed.sum((1, 2)).clamp(min=1)  # (N,)
    reconstruction = world.decode_windows(tokens, context)[:, 0]  # (N, H, W, C)
    tf_psnr = psnr_per_frame(predicted.clamp(0, 1), target).numpy()
    out = {
        "tf_acc": ci((ids == tokens[:, -1]).float().mean((1, 2)).numpy()),
        "acc_gain": ci(((ids == tokens[:, -1]).float().mean((1, 2))
                        - (tokens[:, -2] == tokens[:, -1]).float().mean((1, 2))).numpy()),
        "copy_acc": ci((tokens[:, -2] == tokens[:, -1]).float().mean((1, 2)).numpy()),
        "tf_psnr": ci(tf_psnr),
        "copy_psnr": ci(psnr_per_frame(last, target).numpy()),
        "recon_psnr": ci(psnr_per_frame(reconstruction.clamp(0, 1), target).numpy()),
        "gain": ci(tf_psnr - psnr_per_frame(last, target).numpy()),
        "action_nats": ci(action_nats.numpy()),
        "delta_psnr": ci(tf_psnr - psnr_per_frame(predicted_other.clamp(0, 1), target).numpy()),
        "tf_psnr_carry": ci(psnr_per_frame(carried.clamp(0, 1), target).numpy()),
        "recon_psnr_carry": ci(psnr_per_frame(
            carry_unchanged(reconstruction, last, tokens[:, -1], tokens[:, -2]).clamp(0, 1), target).numpy()),
        "gain_carry": ci(psnr_per_frame(carried.clamp(0, 1), target).numpy() - psnr_per_frame(last, target).numpy()),
    }
    if dynamics.scrolled():
        real = scrolled["real"].round().clamp(-dynamics.config.max_scroll, dynamics.config.max_scroll)  # (N, 2)
        oracle_ids, _, _ = predict(acts, oracle=True)
        out.update({"scroll_acc_x": ci((scrolled["drawn"][:, 0] == real[:, 0]).float().numpy()),
                    "scroll_acc_y": ci((scrolled["drawn"][:, 1] == real[:, 1]).float().numpy()),
                    "oracle_tf_acc": ci((oracle_ids == tokens[:, -1]).float().mean((1, 2)).numpy())})
    if rollout_windows:
        n = min(rollout_windows, len(frames))
        generator = torch.Generator().manual_seed(seed)
        plain = dynamics.config
        dynamics.config = dataclasses.replace(plain, carry_unchanged=True)
        carried = world.generate(frames[:n, :context], actions[:n, : context - 1 + horizon], horizon,
                                 steps=maskgit_steps,
                                 generator=torch.Generator().manual_seed(seed))  # (n, horizon, H, W, C)
        dynamics.config = dataclasses.replace(plain, carry_unchanged=False)
        dream = world.generate(frames[:n, :context], actions[:n, : context - 1 + horizon], horizon,
                               steps=maskgit_steps, generator=generator)  # (n, horizon, H, W, C)
        dynamics.config = plain
        truth = torch.from_numpy(frames[:n, context: context + horizon]).float() / 255.0  # (n, horizon, H, W, C)
        copy = torch.from_numpy(frames[:n, context - 1: context]).float().expand_as(truth) / 255.0
        ar = psnr_per_frame(dream.clamp(0, 1), truth).numpy()  # (n, horizon)
        cp = psnr_per_frame(copy, truth).numpy()  # (n, horizon)
        arc = psnr_per_frame(carried.clamp(0, 1), truth).numpy()  # (n, horizon)
        out.update({"ar_carry_1": ci(arc[:, 0]), "ar_carry_10": ci(arc[:, -1]),
                    "ar_carry_gain_all": ci((arc - cp).mean(1)), "ar_carry_gain_1": ci(arc[:, 0] - cp[:, 0])})
        out.update({"ar_psnr_1": ci(ar[:, 0]), "ar_copy_1": ci(cp[:, 0]), "ar_psnr_10": ci(ar[:, -1]),
                    "ar_copy_10": ci(cp[:, -1]), "ar_gain_all": ci((ar - cp).mean(1))})
    return out


def fork_set(store: EpisodeStore, count: int, context: int, steps: int,
             seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to `count` test windows whose real game forks (RIGHT xk vs LEFT xk): context frames (N, c, H, W, C),
    context actions (N, c-1), real futures (N, F, k, H, W, C)."""
    return forked_contexts(store, select_windows(store, context + steps, None, seed), count, context, steps,
                           FORK_ACTIONS)


@torch.no_grad()
def fork_score(world: WorldModel, forks: tuple[np.ndarray, np.ndarray, np.ndarray], maskgit_steps: int,
               seed: int) -> dict:
    frames, acts, real = forks
    dreams = forked_dreams(world, frames, torch.from_numpy(acts.astype(np.int64)), real,
                           [ACTION_NAMES.index(n) for n in FORK_ACTIONS], maskgit_steps, None,
                           seed)  # (N, F, k, H, W, C)
    dreams = dreams.clamp(0, 1)
    score, per_frame = forked_future_wins(forked_future_psnr(dreams, real).cpu().numpy())  # (N,), (N, k)
    cos, size = forked_direction(dreams, real)  # (N, k) each; size NaN where the real forks are identical
    return {"fork_score": ci(score), "fork_score_frames": [ci(per_frame[:, j]) for j in range(per_frame.shape[1])],
            "fork_cos_frames": [ci(cos[:, j]) for j in range(cos.shape[1])],
            "fork_size_frames": [float(np.nanmedian(size[:, j])) for j in range(size.shape[1])]}


@torch.no_grad()
def fork_ceiling(tokenizer, forks: tuple[np.ndarray, np.ndarray, np.ndarray]) -> dict:
    """The forked-future score of a model that dreams each real future exactly, up to the tokenizer: every fork frame
    reconstructed as the world model sees it (`reconstruct_windowed`, the tokenizer's evaluation). Below 1 where the
    two futures differ by less than the tokenizer's own error: the most any dynamics on it could score."""
    frames, _, real = forks  # (N, c, H, W, C), -, (N, F, k, H, W, C) uint8
    c = frames.shape[1]
    recon = torch.stack([reconstruct_windowed(tokenizer, np.concatenate([frames, real[:, f]], axis=1))[:, c:].cpu()
                         for f in range(real.shape[1])], dim=1)  # (N, F, k, H, W, C) in [0, 1]
    score, per_frame = forked_future_wins(forked_future_psnr(recon, real).cpu().numpy())  # (N,), (N, k)
    return {"fork_ceiling": ci(score), "fork_ceiling_frames": [ci(per_frame[:, j]) for j in range(per_frame.shape[1])]}


# ---- the study -----------------------------------------------------------------------------------
def build(preset, tokenizer, variant: dict, seed: int) -> tuple[Dynamics, OptimConfig]:
    """The variant's dynamics on the preset's sizes and settings, but copying the frame before (copy_reference
    'previous', no camera-locked box) unless the variant says otherwise: the scrolled copy path is a variant here
    (all_scroll...), even now that `tiny` has it, so every row says what it adds."""
    base = config_to_dict(dataclasses.replace(preset.dynamics, vocab_size=tokenizer.config.quantizer.codebook_size,
                                              grid=tokenizer.config.grid, conditioning="ground_truth",
                                              copy_reference="previous", camera_locked_box=None))
    for key, value in variant.get("dynamics", {}).items():
        base[key] = {**base[key], **value} if isinstance(value, dict) else value
    config = config_from_dict(type(preset.dynamics), base)
    torch.manual_seed(seed)
    dynamics = Dynamics(config)
    if config.token_init == "codebook":
        dynamics.init_token_embeddings(tokenizer.quantizer.normalized_codebook(), seed)
    optim = config_from_dict(OptimConfig, {**config_to_dict(preset.optim), **variant.get("optim", {})})
    return dynamics, optim


def save_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    """np.savez under a temporary name, then renamed: two ablations started together on one run folder each
    encode the set, and neither may read the other's half-written file."""
    temp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(temp, *arrays)
    os.replace(temp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="a `genie pipeline` output folder (tokenizer and data sets)")
    parser.add_argument("--variants", default="baseline,all", help="comma-separated names (--list shows them)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--score-at", default="", help="comma-separated steps before --steps at which to score too "
                        "(one run, one schedule over --steps: a budget curve)")
    parser.add_argument("--batch", type=int, default=0, help="windows per step (0: the preset's batch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--windows", type=int, default=256, help="held-out windows per test set")
    parser.add_argument("--rollouts", type=int, default=32, help="of which rolled out autoregressively (0: none)")
    parser.add_argument("--maskgit-steps", type=int, default=4)
    parser.add_argument("--forks", type=int, default=24,
                        help="windows per test set forked RIGHT xk / LEFT xk (0: none)")
    parser.add_argument("--fork-frames", type=int, default=4,
                        help="k, the frames each fork holds its key (4: genie eval's forks)")
    parser.add_argument("--guidance", default="1", help="comma-separated guidance scales at which rollouts and forks "
                        "are scored (values other than 1 need a variant trained with action_dropout)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--train-data", default="random-train",
                        help="comma-separated data sets of the run folder that the dynamics trains on, windows "
                             "drawn in proportion to their frames (e.g. random-train,agent-train: the agent's data "
                             "from the start, as a TA model with replay sees it)")
    parser.add_argument("--out", default=None, help="JSON results (appended per variant)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    if args.list:
        for name, variant in VARIANTS.items():
            print(f"{name:20s} {variant}")
        return 0
    if not args.run:
        parser.error("--run is required")
    try:
        score_at = tuple(int(x) for x in args.score_at.split(",") if x.strip())
    except ValueError:
        score_at = (0,)  # refused just below, with the list as given
    if any(not 0 < x < args.steps for x in score_at):
        parser.error(f"--score-at must list steps between 1 and --steps ({args.steps}), got {args.score_at}")
    if args.fork_frames < 1:
        parser.error(f"--fork-frames must be at least 1, got {args.fork_frames}")
    try:
        guidance = [float(x) for x in args.guidance.split(",") if x.strip()]
    except ValueError:
        parser.error(f"--guidance takes comma-separated numbers, got {args.guidance!r}")
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    preset = load_preset(args.preset)
    checkpoint = resolve_checkpoint(run / "models" / "tokenizer", "tokenizer")
    tokenizer = load_model(checkpoint, "tokenizer").eval()
    train_data = [name.strip() for name in args.train_data.split(",") if name.strip()]
    missing = [name for name in train_data if not (run / "data" / name / "manifest.json").is_file()]
    if missing or not train_data:
        parser.error(f"--train-data: no data set {', '.join(missing) or '(none named)'} under {run / 'data'}")
    train_store = EpisodeStore([str(run / "data" / name) for name in train_data], split="train")
    start = time.perf_counter()
    # keyed as the training token cache is (the tokenizer's weights, the dataset's manifest, the episodes): a folder
    # whose random-train was swapped for another dataset, e.g. a sticky random agent's, or another --train-data gets
    # its own file
    cached = run / f"ablation-tokens-{key_digest(cache_key(tokenizer, None, train_store))}.npz"
    if cached.exists():
        tokens = list(np.load(cached).values())
    else:
        tokens = tokenize_store(tokenizer, train_store)
        save_arrays(cached, tokens)
    actions = [train_store.window(e, 0, int(train_store.lengths[e]))[1] for e in range(len(train_store))]
    print(f"tokenized {sum(len(t) for t in tokens)} training frames in {time.perf_counter() - start:.0f} s", flush=True)
    context, horizon = 2, 10
    tests = {name: held_out_windows(EpisodeStore(str(run / "data" / folder)), args.windows, context + horizon,
                                    args.seed)
             for name, folder in (("basic", "basic-test"), ("diverse", "diverse-test"))}
    fork_sets = {name: fork_set(EpisodeStore(str(run / "data" / folder)), args.forks, context, args.fork_frames,
                                  args.seed)
                 for name, folder in (("basic", "basic-test"), ("diverse", "diverse-test"))} if args.forks else {}
    length = preset.dynamics.frames
    ceilings = {test: fork_ceiling(tokenizer, forks) for test, forks in fork_sets.items()}
    for test, ceiling in ceilings.items():
        print(f"forks' ceiling on {test} (each real future as the tokenizer reconstructs it): "
              f"{ceiling['fork_ceiling'][0]:.2f} ± {ceiling['fork_ceiling'][1]:.2f}; per frame "
              f"{' '.join(f'{m:.2f}' for m, _ in ceiling['fork_ceiling_frames'])}", flush=True)
    batch = args.batch or preset.batch_size
    records, motions, scroll_sets = [], None, {}  # (max_scroll, camera_locked_box) -> (scrolls, references)
    for name in args.variants.split(","):
        if name not in VARIANTS:
            parser.error(f"unknown variant {name!r}; --list shows them")
        dynamics, optim = build(preset, tokenizer, VARIANTS[name], args.seed)
        world = WorldModel(tokenizer, dynamics)
        trained = dynamics.config
        motion = VARIANTS[name].get("motion", 0.0)
        if motion and motions is None:
            start = time.perf_counter()
            motions = episode_motions(train_store)
            print(f"registered the agent's motion in every training frame in {time.perf_counter() - start:.0f} s",
                  flush=True)
        reference_kind = (trained.max_scroll, trained.camera_locked_box)
        if dynamics.scrolled() and reference_kind not in scroll_sets:
            start = time.perf_counter()
            box = trained.camera_locked_box
            suffix = f"-max{trained.max_scroll}" + (f"-locked{'_'.join(map(str, box))}" if box else "")
            stored = cached.with_name(f"{cached.stem.replace('tokens', 'scrolls')}{suffix}.npz")
            if stored.exists():
                arrays = list(np.load(stored).values())
                scroll_sets[reference_kind] = (arrays[: len(arrays) // 2], arrays[len(arrays) // 2:])
            else:
                made = episode_scrolls(tokenizer, train_store, trained.max_scroll, box)
                save_arrays(stored, [*made[0], *made[1]])
                scroll_sets[reference_kind] = made
            print(f"registered every training frame's scroll and tokenized its scrolled reference in "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        scrolls = scroll_sets.get(reference_kind) if dynamics.scrolled() else None
        for steps_done, seconds in train(dynamics, optim, tokens, actions, batch, length, args.seed, args.steps,
                                         score_at, VARIANTS[name].get("contrast", 0.0), motions, motion, scrolls):
            for scale in guidance:
                if scale != 1.0 and trained.action_dropout == 0:
                    continue  # never learnt a frame without its key: nothing to guide by
                dynamics.config = dataclasses.replace(trained, guidance=scale)
                for test, (frames, acts) in tests.items():
                    metrics = score(world, frames, acts, context, args.rollouts, horizon, args.maskgit_steps, args.seed)
                    if test in fork_sets:
                        metrics.update(fork_score(world, fork_sets[test], args.maskgit_steps, args.seed))
                        metrics.update(ceilings[test])
                    record = {"variant": name, "test": test, "steps": steps_done, "schedule_steps": args.steps,
                              "batch": batch, "guidance": scale, "train_seconds": seconds, "seed": args.seed,
                              "train_data": train_data,
                              **{k: list(v) for k, v in metrics.items()}}
                    records.append(record)
                    print(_row(record), flush=True)
                    if args.out:
                        with open(args.out, "a") as handle:
                            handle.write(json.dumps(record) + "\n")
            dynamics.config = trained
    return 0


def _row(r: dict) -> str:
    def f(key: str, digits: int = 2) -> str:
        if key not in r:
            return "-"
        mean, half = r[key]
        return f"{mean:.{digits}f} ± {half:.{digits}f}"
    return (f"| {r['variant']} | {r['test']} | {r['steps']} | g {r.get('guidance', 1.0):g} | {f('tf_acc', 3)} (copy "
            f"{r['copy_acc'][0]:.3f}) | {f('tf_psnr')} (copy {r['copy_psnr'][0]:.2f}, ceiling "
            f"{r['recon_psnr'][0]:.2f}) | {f('gain')} | {f('delta_psnr')} | action nats {f('action_nats', 3)} | "
            f"{f('ar_psnr_1')} / {f('ar_psnr_10')} (copy {r.get('ar_copy_10', [math.nan])[0]:.2f}) | carry: "
            f"{f('tf_psnr_carry')} (ceiling {r['recon_psnr_carry'][0]:.2f}) gain {f('gain_carry')} | forks "
            f"{f('fork_score')}{fork_ceiling_note(r)}{fork_direction(r)} |{scroll_columns(r)} "
            f"{r['train_seconds']:.0f} s |")


def scroll_columns(r: dict) -> str:
    """' scroll right x/y ..., oracle tokens ... |' for a scrolled variant: how often its head's most likely scroll is
    the real one (rounded), and the token accuracy its copy path would give with the real scroll."""
    if "scroll_acc_x" not in r:
        return ""
    return (f" scroll right x {r['scroll_acc_x'][0]:.2f} y {r['scroll_acc_y'][0]:.2f}, tokens with the real scroll "
            f"{r['oracle_tf_acc'][0]:.3f} |")


def fork_ceiling_note(r: dict) -> str:
    """' (ceiling x)': the score of the tokenizer's reconstruction of the real futures (fork_ceiling)."""
    return f" (ceiling {r['fork_ceiling'][0]:.2f})" if "fork_ceiling" in r else ""


def fork_direction(r: dict) -> str:
    """' (cos ..., size ..., wins ...)': per fork frame, how well the dreams' RIGHT - LEFT difference points along the
    real one (cosine; 0: unrelated), its size against the real difference's (median), and the share of windows whose
    two dreams are each closer to their own real future at that frame."""
    if "fork_cos_frames" not in r:
        return ""
    cos = " ".join(f"{m:+.2f}" for m, _ in r["fork_cos_frames"])
    wins = " ".join(f"{m:.2f}" for m, _ in r["fork_score_frames"])
    return f" (cos {cos}; size {' '.join(f'{x:.1f}' for x in r['fork_size_frames'])}; wins per frame {wins})"


if __name__ == "__main__":
    raise SystemExit(main())
