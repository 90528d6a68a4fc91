"""Run folders: what `genie train` leaves behind, and how every other command finds a model in it.

A run folder (local path or storage URI) holds:

    run.json          stage, preset, conditioning, data, config: what the run is
    latest.pt         the newest model checkpoint (world_model.checkpoint format, weights only)
    best.pt           the checkpoint with the best validation loss so far
    tokenizer.pt      dynamics runs only: the frozen tokenizer the dynamics was trained on
    lam.pt            GenieRedux dynamics runs only: the frozen LAM
    metrics.csv       one row per logged step (train and validation)
    samples/          reconstruction / prediction images
    ray/              Ray Train's own checkpoints (model + optimiser + RNG + data position)

Wherever a command takes a checkpoint, a run folder works too (docs/design.md, 'Conventions'): `resolve_checkpoint`
maps either to one `.pt` file. A dynamics run is a whole world model: `load_world_model` builds
tokenizer + dynamics (+ LAM) from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from genie_common import storage
from world_model.checkpoint import CheckpointError, load_checkpoint, load_model
from world_model.generation import WorldModel

RUN_FILE = "run.json"
LATEST = "latest.pt"
BEST = "best.pt"
FROZEN_TOKENIZER = "tokenizer.pt"
FROZEN_LAM = "lam.pt"


def read_run_info(run: str | os.PathLike) -> dict[str, Any] | None:
    """The run's `run.json`, or None when `run` is not a run folder."""
    location = storage.join(run, RUN_FILE)
    if not storage.exists(location):
        return None
    return json.loads(storage.read_bytes(location))


def write_run_info(run: str | os.PathLike, info: dict[str, Any]) -> None:
    storage.write_bytes_atomic(storage.join(run, RUN_FILE), json.dumps(info, indent=2, sort_keys=True).encode())


def resolve_checkpoint(
    location: str | os.PathLike, stage: str, prefer: Literal["best", "latest"] = "best"
) -> Path:
    """A local `.pt` file for a checkpoint file or a run folder (its best, else latest, checkpoint).

    Errors say which command makes what is missing.
    """
    text = str(location)
    try:
        if storage.is_file(text):
            return storage.local_copy(text)
        if not storage.exists(text):
            raise CheckpointError(f"{text}: no such checkpoint or run folder; make one with `genie train {stage}`")
    except storage.StorageError as err:
        raise CheckpointError(str(err)) from err
    info = read_run_info(text)
    if info is None:
        raise CheckpointError(
            f"{text} is a folder but not a training run (no {RUN_FILE}); pass a run folder of "
            f"`genie train {stage}` or a .pt checkpoint"
        )
    if info.get("stage") != stage:
        raise CheckpointError(
            f"{text} is a {info.get('stage')!r} run, but a {stage!r} checkpoint is needed here; "
            f"make one with `genie train {stage}`"
        )
    order = [BEST, LATEST] if prefer == "best" else [LATEST, BEST]
    for name in order:
        candidate = storage.join(text, name)
        if storage.is_file(candidate):
            return storage.local_copy(candidate, refresh=True)
    raise CheckpointError(f"{text}: the run has no checkpoint yet; run `genie train {stage} --out {text}` (it resumes)")


def run_folder_of(checkpoint: Path) -> Path | None:
    """The run folder a local checkpoint file lies in (its folder or an ancestor with run.json)."""
    for parent in [checkpoint.parent, *checkpoint.parents]:
        if (parent / RUN_FILE).is_file():
            return parent
    return None


@dataclass
class LoadedWorldModel:
    model: WorldModel
    conditioning: str  # "latent" (GenieRedux) or "ground_truth" (GenieRedux-G)
    checkpoint: Path  # the dynamics checkpoint file
    preset: str
    step: int

    @property
    def name(self) -> str:
        return "GenieRedux-G" if self.conditioning == "ground_truth" else "GenieRedux"


def load_world_model(
    location: str | os.PathLike, map_location: str | torch.device = "cpu", prefer: Literal["best", "latest"] = "best"
) -> LoadedWorldModel:
    """Tokenizer + dynamics (+ LAM) of a dynamics run folder or of a dynamics checkpoint inside one."""
    dynamics_file = resolve_checkpoint(location, "dynamics", prefer)
    dynamics_ckpt = load_checkpoint(dynamics_file, "dynamics", map_location)
    if storage.is_uri(location):
        run = storage.local_copy(location, refresh=True)
    else:
        run = run_folder_of(dynamics_file)
    if run is None or not (run / FROZEN_TOKENIZER).is_file():
        raise CheckpointError(
            f"{location}: no {FROZEN_TOKENIZER} beside the dynamics checkpoint; a world model is a dynamics "
            f"run folder of `genie train dynamics` (it stores the tokenizer it was trained on)"
        )
    tokenizer = load_model(run / FROZEN_TOKENIZER, "tokenizer", map_location)
    lam = None
    if dynamics_ckpt.config.conditioning == "latent":
        if not (run / FROZEN_LAM).is_file():
            raise CheckpointError(f"{run}: GenieRedux dynamics without its {FROZEN_LAM}; retrain with `genie train "
                                  "dynamics --actions latent --lam ...`")
        lam = load_model(run / FROZEN_LAM, "lam", map_location)
    dynamics = dynamics_ckpt.build_model().to(map_location).eval()
    model = WorldModel(tokenizer, dynamics, lam).eval()
    return LoadedWorldModel(model, dynamics_ckpt.config.conditioning, dynamics_file, dynamics_ckpt.preset,
                            dynamics_ckpt.step)


def export_world_model(run: str | os.PathLike, tokenizer, dynamics, lam=None, preset: str = "tiny",
                       step: int = 0) -> Path:
    """Write a minimal dynamics run folder from in-memory models (tests, scripts, conversions)."""
    from world_model.checkpoint import save_checkpoint

    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run / FROZEN_TOKENIZER, tokenizer, preset)
    if lam is not None:
        save_checkpoint(run / FROZEN_LAM, lam, preset)
    save_checkpoint(run / LATEST, dynamics, preset, step=step)
    save_checkpoint(run / BEST, dynamics, preset, step=step)
    write_run_info(run, {"stage": "dynamics", "preset": preset, "conditioning": dynamics.config.conditioning})
    return run
