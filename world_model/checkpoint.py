"""Checkpoints that carry their own stage, preset and config, so loading never repeats a config.

A checkpoint file is a plain dict (tensors, numbers, strings), readable with
`torch.load(weights_only=True)`: no pickled classes, so it survives refactors and cannot run code.
Asking for one stage and finding another is refused with the command that makes the right one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genie_common.atomic import atomic_path
from world_model.config import STAGES, DynamicsConfig, LAMConfig, TokenizerConfig, config_from_dict, config_to_dict
from world_model.dynamics import Dynamics
from world_model.lam import LatentActionModel
from world_model.tokenizer import Tokenizer

FORMAT_VERSION = 1
MODEL_OF_STAGE: dict[str, tuple[type[nn.Module], type]] = {
    "tokenizer": (Tokenizer, TokenizerConfig),
    "lam": (LatentActionModel, LAMConfig),
    "dynamics": (Dynamics, DynamicsConfig),
}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or of the wrong stage; the message says what to run."""


@dataclass
class Checkpoint:
    stage: str
    preset: str
    config: Any  # the stage's config dataclass
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict | None = None
    step: int = 0
    extra: dict = field(default_factory=dict)

    def build_model(self) -> nn.Module:
        model_class, _ = MODEL_OF_STAGE[self.stage]
        model = model_class(self.config)
        model.load_state_dict(self.model_state)
        return model


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    preset: str,
    optimizer_state: dict | None = None,
    step: int = 0,
    extra: dict | None = None,
) -> Path:
    """Write atomically (temp file, fsync, rename), so a crash never leaves half a checkpoint under `path`."""
    stage = getattr(model, "stage", None)
    if stage not in STAGES:
        raise CheckpointError(f"{type(model).__name__} is not a world-model stage ({', '.join(STAGES)})")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "preset": preset,
        "config": config_to_dict(model.config),
        "model_state": model.state_dict(),
        "optimizer_state": optimizer_state,
        "step": int(step),
        "extra": extra or {},
    }
    with atomic_path(path) as temp, open(temp, "wb") as handle:  # a failed write leaves nothing behind
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())  # the bytes are on disk before the name points at them
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # and the rename itself survives a power cut
    finally:
        os.close(folder)
    return path


def load_checkpoint(path: str | os.PathLike, stage: str, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint of `stage`; any other stage is refused with the command that makes a `stage` one."""
    if stage not in STAGES:
        raise CheckpointError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint; make one with `genie train {stage}`")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # any unreadable file gets the same clear message
        raise CheckpointError(f"{path}: not a readable world-model checkpoint ({err})") from err
    if not isinstance(payload, dict) or "stage" not in payload:
        raise CheckpointError(f"{path}: not a world-model checkpoint (no stage recorded)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {payload.get('format_version')}, this code reads "
                              f"{FORMAT_VERSION}")
    found = payload["stage"]
    if found != stage:
        raise CheckpointError(
            f"{path} is a {found!r} checkpoint, but a {stage!r} checkpoint is needed here; "
            f"make one with `genie train {stage}`"
        )
    _, config_class = MODEL_OF_STAGE[stage]
    return Checkpoint(
        stage=found,
        preset=payload["preset"],
        config=config_from_dict(config_class, payload["config"]),
        model_state=payload["model_state"],
        optimizer_state=payload["optimizer_state"],
        step=int(payload["step"]),
        extra=payload["extra"],
    )


def load_model(path: str | os.PathLike, stage: str, map_location: str | torch.device = "cpu") -> nn.Module:
    """The model of a `stage` checkpoint, built from the config it recorded, in eval mode."""
    return load_checkpoint(path, stage, map_location).build_model().eval()
