"""Sample images during training: what a person looks at to see whether a stage is learning.

One PNG per call: for each window, the real frames on top and the stage's output below
(tokenizer: reconstruction; LAM: next frames decoded from inferred latent actions; dynamics:
teacher-forced one-pass prediction of frames 1..T-1 decoded by the tokenizer).

Shapes: B windows, T frames, H x W x C pixels, h x w token grid.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torch import nn

from world_model.frames import to_uint8, to_unit_float
from world_model.lam import LatentActionModel
from world_model.steps import DynamicsTrainee
from world_model.tokenizer import Tokenizer


@torch.no_grad()
def trainee_output(trainee: nn.Module, frames: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """uint8 (B, T, H, W, C) windows -> uint8 (B, T, H, W, C) of the trainee's output (frame 0 copied
    where it predicts only frames 1..T-1)."""
    was_training = trainee.training
    trainee.eval()
    try:
        if isinstance(trainee, Tokenizer):
            output = trainee(to_unit_float(frames, trainee.device))[0]  # (B, T, H, W, C)
        elif isinstance(trainee, LatentActionModel):
            video = to_unit_float(frames, trainee.device)  # (B, T, H, W, C)
            reconstruction, _ = trainee(video)  # (B, T-1, H, W, C) frames 1..T-1
            output = torch.cat([video[:, :1], reconstruction], dim=1)  # (B, T, H, W, C)
        elif isinstance(trainee, DynamicsTrainee):
            tokens, action_inputs = trainee.inputs((frames, actions))  # (B, T, h, w)
            references = None  # a scrolled dynamics copies its predecessor shifted by the scroll its head draws
            if trainee.dynamics.scrolled():
                scrolls = trainee.registered_scrolls((frames, actions))  # (B, T, 2)
                references = trainee.drawn_references((frames, actions), tokens, action_inputs, scrolls)
            predicted = trainee.dynamics.teacher_forced_logits(
                tokens, action_inputs, references).argmax(-1)  # (B, T-1, h, w)
            output = trainee.tokenizer.detokenize(torch.cat([tokens[:, :1], predicted], dim=1))  # (B, T, H, W, C)
        else:
            raise TypeError(f"no sample image for {type(trainee).__name__}")
    finally:
        trainee.train(was_training)
    return to_uint8(output.float()).cpu().numpy()


def sample_png(trainee: nn.Module, frames: np.ndarray, actions: np.ndarray, scale: int = 2) -> bytes:
    """A PNG grid: per window, a row of real frames and below it the trainee's output."""
    output = trainee_output(trainee, frames, actions)  # (B, T, H, W, C)
    rows = []
    for real, made in zip(frames, output):
        rows.append(np.concatenate(list(real), axis=1))  # (H, T*W, C)
        rows.append(np.concatenate(list(made), axis=1))
    grid = np.concatenate(rows, axis=0)  # (2B*H, T*W, C)
    image = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
