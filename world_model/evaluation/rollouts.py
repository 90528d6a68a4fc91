"""Predicted frames for evaluation: autoregressive rollouts, teacher-forced one-pass predictions,
counterfactual actions (ΔtPSNR, two versions), held actions (controllability) and forked futures.

Actions (docs/design.md, 'Metrics', the paper's protocol): *GenieRedux* is driven by the latent actions its LAM
infers from the ground-truth window (so the LAM sees the future it labels, as in the paper);
*GenieRedux-G* by the recorded true actions. Both are then "action ids" for `WorldModel`.

Determinism: every stochastic call takes a `torch.Generator` seeded by the caller; the
counterfactual rollout uses a generator seeded like the factual one, so the two draw the same
sampling noise and differ only through the replaced action.

Shapes: B batch, T frames (Tc context), H x W x C pixels, h x w token grid, A actions given, D latent-action code
width, F forks, k frames per fork; t the frame whose action a counterfactual replaces (ΔtPSNR's t).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from rl_agent.coinrun_env import ACTION_NAMES
from world_model.evaluation.config import ACTION_EFFECTS
from world_model.dynamics import previous_frames
from world_model.frames import to_long
from world_model.generation import WorldModel


def conditioning_actions(world: WorldModel, frames: np.ndarray, actions: np.ndarray) -> torch.Tensor:
    """The action ids that drive the rollout: frames (B, T, H, W, C) uint8, true actions (B, T-1) -> (B, T-1) ids."""
    if world.dynamics.config.conditioning == "latent":
        return world.lam.infer_actions(frames).long()  # (B, T-1): latent ids inferred from the ground truth
    return to_long(actions, world.dynamics.device)  # (B, T-1): recorded CoinRun actions


def action_vocabulary(world: WorldModel) -> int:
    """How many distinct action ids the world model takes (LAM codes or CoinRun actions)."""
    if world.dynamics.config.conditioning == "latent":
        return int(world.lam.config.num_actions)
    return int(world.dynamics.config.num_env_actions)


def seeded_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator


@torch.no_grad()
def autoregressive(
    world: WorldModel, frames: np.ndarray, action_ids: torch.Tensor, context: int, horizon: int,
    steps: int | None, temperature: float | None, seed: int,
) -> torch.Tensor:
    """MaskGIT rollout from `context` real frames: (B, T, H, W, C) uint8 -> (B, horizon, H, W, C) in [0, 1].

    Each generated frame is fed back as context for the next (what a player sees).
    """
    generator = seeded_generator(seed, world.dynamics.device)
    return world.generate(
        frames[:, :context], action_ids[:, : context - 1 + horizon], horizon, steps, temperature, generator
    )  # (B, horizon, H, W, C)


@torch.no_grad()
def teacher_forced(world: WorldModel, frames: np.ndarray, action_ids: torch.Tensor, context: int,
                   horizon: int) -> torch.Tensor:
    """One-pass prediction of every frame k >= context from the *real* frames before it (B, horizon, H, W, C).

    Exactly the dynamics' training situation: the window of the last `frames` real frames ending at k
    is tokenized on its own (as training tokenizes each window), frame k is fully masked and filled by
    one dynamics pass (argmax), and the window is decoded on its own. Tokenizing the whole episode
    once and slicing would be wrong: the tokenizer is causal in time, so a frame's tokens depend on
    how many frames precede it, and the dynamics only ever saw tokens of windows (world_model/tokenizer.py
    gives the measurement).
    It isolates one-step prediction quality from the compounding errors of the autoregressive rollout.
    """
    dynamics, tokenizer = world.dynamics, world.tokenizer
    keep = max(1, dynamics.config.frames - 1)
    predicted = []
    for k in range(context, context + horizon):
        lo = max(0, k - keep)
        tokens = tokenizer.tokenize(frames[:, lo : k + 1])  # (B, window, h, w): this window alone, ending at k
        window = tokens.clone()
        window[:, -1] = dynamics.mask_id
        inputs = world.action_inputs(action_ids[:, lo:k])  # (B, window-1[, D])
        previous = previous_frames(tokens, dynamics.mask_id)  # (B, window, h, w): what the copy path copies
        previous[:, -1] = world.copy_reference(frames[:, lo:k], tokens[:, :-1], inputs)
        new = dynamics(window, inputs, previous)[:, -1].argmax(-1)  # (B, h, w)
        decoded = tokenizer.detokenize(torch.cat([tokens[:, :-1], new.unsqueeze(1)], dim=1))  # (B, window, H, W, C)
        predicted.append(world.render(decoded[:, -1], frames[:, k - 1], new, tokens[:, -2]))  # (B, H, W, C)
    return torch.stack(predicted, dim=1)  # (B, horizon, H, W, C)


def replace_action(action_ids: torch.Tensor, index: int, vocabulary: int, rng: np.random.Generator) -> torch.Tensor:
    """A copy of (B, A) action ids with column `index` replaced by a uniformly random *different* id per row."""
    if vocabulary < 2:
        raise ValueError("a counterfactual action needs at least 2 actions")
    changed = action_ids.clone()
    offsets = torch.as_tensor(rng.integers(1, vocabulary, size=action_ids.shape[0]), device=action_ids.device)  # (B,)
    changed[:, index] = (action_ids[:, index] + offsets) % vocabulary  # never the original id
    return changed


def effect_classes() -> np.ndarray:
    """(15,) int: the effect class of each CoinRun action id (config.ACTION_EFFECTS, in id order)."""
    names = sorted(set(ACTION_EFFECTS.values()))
    return np.array([names.index(ACTION_EFFECTS[name]) for name in ACTION_NAMES])


def replace_action_by_effect(action_ids: torch.Tensor, index: int, effects: np.ndarray,
                             rng: np.random.Generator) -> torch.Tensor:
    """A copy of (B, A) action ids with column `index` replaced, per row, by an id drawn uniformly among
    those of a *different effect class* (`effects`: (V,) class per id), so the counterfactual always
    does something else (NOOP's eight twins and DOWN's never stand in for it)."""
    changed = action_ids.clone()
    true = action_ids[:, index].cpu().numpy()  # (B,)
    picks = []
    for action in true:
        candidates = np.flatnonzero(effects != effects[int(action)])  # ids that do something else
        picks.append(int(candidates[rng.integers(len(candidates))]))
    changed[:, index] = torch.as_tensor(picks, device=action_ids.device)
    return changed


@torch.no_grad()
def autoregressive_with_counterfactuals(
    world: WorldModel, frames: np.ndarray, action_ids: torch.Tensor, counterfactual_ids: list[torch.Tensor],
    context: int, horizon: int, t: int, steps: int | None, temperature: float | None, seed: int,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """`autoregressive`'s rollout (B, horizon, H, W, C), and for each of `counterfactual_ids` (each (B, T-1), differing
    from `action_ids` only in the action into frame t) that rollout's frame t (B, H, W, C), exactly as
    `counterfactual_frame` would dream it, without dreaming frames 1..t-1 again: they are the factual ones
    (same actions, same noise), so each counterfactual branches off with the generator's state at frame t."""
    if not 1 <= t <= horizon:
        raise ValueError(f"the counterfactual frame t={t} must lie within the horizon 1..{horizon}")
    dynamics = world.dynamics
    generator = seeded_generator(seed, dynamics.device)
    tokens = world.tokenizer.tokenize(frames[:, :context])  # (B, Tc, h, w)
    inputs = world.action_inputs(action_ids[:, : context - 1 + horizon])  # (B, Tc-1+horizon[, D])
    scroller = world.scroller(frames[:, :context], tokens)  # a `scrolled` dynamics's state, None for others
    # (B, t-1, h, w)
    before = dynamics.generate_tokens(tokens, inputs[:, : context - 2 + t], t - 1, steps, temperature, generator,
                                      scroller=scroller)
    branch_point, branch_scroller = generator.get_state(), copy.copy(scroller)
    known = torch.cat([tokens, before], dim=1)  # (B, Tc+t-1, h, w)
    # (B, horizon-t+1, h, w)
    after = dynamics.generate_tokens(known, inputs, horizon - t + 1, steps, temperature, generator,
                                     scroller=scroller)
    factual = world.show(frames[:, :context], tokens, torch.cat([before, after], dim=1))  # (B, horizon, H, W, C)
    # frame t is shown on frame t-1 as the factual rollout showed it (the last real frame when t = 1)
    shown_before = factual[:, t - 2] if t > 1 else frames[:, context - 1]  # (B, H, W, C)
    branches = []
    for ids in counterfactual_ids:
        generator.set_state(branch_point)
        other_inputs = world.action_inputs(ids[:, : context - 1 + t])  # (B, Tc-1+t[, D])
        frame_t = dynamics.generate_tokens(known, other_inputs, 1, steps, temperature, generator,
                                           scroller=copy.copy(branch_scroller))  # (B, 1, h, w)
        window = torch.cat([known, frame_t], dim=1)  # (B, Tc+t, h, w)
        decoded = world.decode_windows(window, window.shape[1] - 1)[:, 0]  # (B, H, W, C): frame t alone
        branches.append(world.render(decoded, shown_before, frame_t[:, 0], known[:, -1]))  # (B, H, W, C)
    return factual, branches


def counterfactual_ids(world: WorldModel, action_ids: torch.Tensor, index: int, rng: np.random.Generator,
                       by_effect: bool) -> torch.Tensor:
    """(B, T-1) ids with column `index` replaced: by an action of another effect class (`by_effect`, GenieRedux-G
    only; latent ids have no known effects), else by any other id (the paper's version)."""
    if by_effect:
        if world.dynamics.config.conditioning == "latent":
            raise ValueError("effect classes are CoinRun actions'; a latent-action model's counterfactual is any "
                             "other latent id")
        return replace_action_by_effect(action_ids, index, effect_classes(), rng)
    return replace_action(action_ids, index, action_vocabulary(world), rng)


@torch.no_grad()
def counterfactual_frame(
    world: WorldModel, frames: np.ndarray, action_ids: torch.Tensor, context: int, t: int,
    steps: int | None, temperature: float | None, seed: int, rng: np.random.Generator, by_effect: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x̂'_t for ΔtPSNR: the t-th generated frame (B, H, W, C) when only the action leading into it is
    replaced by a random different one, and the (B, T-1) ids used.

    `by_effect`: the replacement is drawn among CoinRun actions of another effect class (GenieRedux-G
    only; latent ids have no known effects); otherwise among all other ids (the paper's version).
    """
    changed = counterfactual_ids(world, action_ids, context - 2 + t, rng, by_effect)  # (B, T-1)
    rollout = autoregressive(world, frames, changed, context, t, steps, temperature, seed)  # (B, t, H, W, C)
    return rollout[:, t - 1], changed


@torch.no_grad()
def held_action_rollouts(
    world: WorldModel, frames: np.ndarray, action_ids: torch.Tensor, context: int, actions: list[int], length: int,
    steps: int | None, temperature: float | None, seed: int,
) -> torch.Tensor:
    """From the real context, hold each of `actions` for `length` steps: (len(actions), B, length, H, W, C) in
    [0, 1].

    All len(actions) x B rollouts run as one batch (one MaskGIT loop instead of one per action), which makes the
    check affordable on a GPU; the context actions stay the real ones.
    """
    b = action_ids.shape[0]
    held = action_ids[:, : context - 1 + length].repeat(len(actions), 1)  # (len(actions)*B, Tc-1+length)
    held[:, context - 1 :] = torch.as_tensor(actions, device=held.device).repeat_interleave(b).unsqueeze(1)
    context_frames = np.concatenate([frames[:, :context]] * len(actions))  # (len(actions)*B, Tc, H, W, C)
    # (len(actions)*B, length, H, W, C)
    rollout = autoregressive(world, context_frames, held, context, length, steps, temperature, seed)
    return rollout.reshape(len(actions), b, *rollout.shape[1:])


@torch.no_grad()
def forked_dreams(
    world: WorldModel, context_frames: np.ndarray, context_ids: torch.Tensor, forks: np.ndarray, fork_ids: list[int],
    steps: int | None, temperature: float | None, seed: int,
) -> torch.Tensor:
    """The model's dream of each real fork from the same context: (B, F, k, H, W, C) in [0, 1].

    context_frames (B, Tc, H, W, C) uint8, context_ids (B, Tc-1) the ids that drove the context, forks
    (B, F, k, H, W, C) uint8 the real futures, fork_ids the CoinRun action held in each. GenieRedux-G
    dreams fork f with fork_ids[f] held; GenieRedux with the latent actions its LAM infers from context +
    real fork f (the paper's latent-action protocol: the LAM sees the future it labels). Every fork is
    dreamt with the same seed, so a model blind to its actions dreams the forks identically.
    """
    n, c = context_frames.shape[:2]
    k = forks.shape[2]
    dreams = []
    for f, action in enumerate(fork_ids):
        if world.dynamics.config.conditioning == "latent":
            ids = world.lam.infer_actions(np.concatenate([context_frames, forks[:, f]], axis=1)).long()  # (B, Tc-1+k)
        else:
            held = torch.full((n, k), int(action), dtype=torch.long, device=context_ids.device)  # (B, k)
            ids = torch.cat([context_ids[:, : c - 1].long(), held], dim=1)  # (B, Tc-1+k)
        frames = np.concatenate([context_frames, forks[:, f]], axis=1)  # (B, Tc+k, ...): only the context is read
        dreams.append(autoregressive(world, frames, ids, c, k, steps, temperature, seed))  # (B, k, H, W, C)
    return torch.stack(dreams, dim=1)  # (B, F, k, H, W, C)
