"""`genie dream`: a scripted rollout of the world model, written as a GIF (for scripts and papers).

It walks exactly the path a player's key presses take (`Stepper`), in-process and without Ray,
so a dream and a played session with the same start, actions and seed are the same frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cluster.play.actions import parse_dream_actions
from cluster.play.config import DreamConfig
from cluster.play.media import encode_gif, side_by_side
from cluster.play.starts import EpisodeStarts, RealGames, Start, StartError, fresh_level
from cluster.play.stepper import Stepper, StepInput
from genie_common.atomic import write_atomic


@dataclass
class Dream:
    frames: np.ndarray  # (1 + N, H, W, C) uint8: the start frame, then the N generated frames
    real_frames: np.ndarray | None  # (1 + N, H, W, C) uint8, the real game, when side by side
    actions: list[int]
    source: str
    path: Path


def choose_start(config: DreamConfig, data: str | os.PathLike | None, context: int) -> Start:
    if config.start == "fresh":
        return fresh_level(config.level_seed)
    if data is None:
        raise StartError(f"--start {config.start} needs --data DIR (a data set of `genie collect`)")
    starts = EpisodeStarts(data)
    if config.start == "test":
        return starts.random(np.random.default_rng(config.seed), context)
    if config.start.startswith("episode:"):
        episode, _, step = config.start[len("episode:"):].partition("@")
        if step and not step.isdigit():
            raise StartError(f"--start {config.start}: the step after '@' must be a non-negative integer")
        return starts.episode(episode, int(step or 0), context)
    raise StartError(f"--start must be 'fresh', 'test' or 'episode:ID[@STEP]', got {config.start!r}")


def dream(model: str | os.PathLike, actions: str, out: str | os.PathLike, config: DreamConfig = DreamConfig(),
          data: str | os.PathLike | None = None) -> Dream:
    """Roll the world model out from a real start with the scripted `actions`; write the GIF to `out`."""
    from world_model.runs import load_world_model

    loaded = load_world_model(model)
    loaded.model.use_guidance(config.guidance)
    stepper = Stepper(loaded.model)
    ids = parse_dream_actions(actions, loaded.conditioning, stepper.num_actions)
    steps = config.steps or loaded.model.dynamics.config.sampling_steps
    temperature = loaded.model.dynamics.config.temperature if config.temperature is None else config.temperature
    start = choose_start(config, data, stepper.context_frames)

    tokens = list(stepper.encode(start.frames))  # each (h, w)
    history = [int(a) for a in start.actions]  # actions between the context frames
    if loaded.conditioning == "latent" and len(start.frames) > 1:
        history = [int(a) for a in loaded.model.lam.infer_actions(start.frames[None])[0]]
    real_games = RealGames() if config.side_by_side and loaded.conditioning == "ground_truth" else None
    real = real_games.start(start) if real_games is not None else None

    generator = torch.Generator(device=loaded.model.dynamics.device).manual_seed(config.seed)
    frames, real_frames = [start.frames[-1]], [start.frames[-1]]
    for action in ids:
        context = np.stack(tokens[-stepper.context_frames:])  # (Tc, h, w)
        previous = history[len(history) - (len(context) - 1):] if len(context) > 1 else []
        out_step = stepper.step([StepInput(context, np.array([*previous, action]), steps, temperature,
                                                previous_frame=frames[-1])], generator)[0]
        tokens.append(out_step.tokens)
        history.append(action)
        frames.append(out_step.frame)
        if real is not None:
            real_games.step(real, action)
            real_frames.append(real.frame)

    shown = [side_by_side(d, r) for d, r in zip(frames, real_frames)] if real is not None else frames
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, encode_gif(shown, config.fps, config.scale))
    return Dream(np.stack(frames), np.stack(real_frames) if real is not None else None, ids, start.source, path)
