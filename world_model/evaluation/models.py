"""What is being evaluated: a tokenizer, a LAM or a world model, found from a run folder or checkpoint.

`--model` takes any of the three; the stage comes from the run's `run.json` or, for a bare
checkpoint file, from the stage the checkpoint records. The run's training data (`run.json`
"data") is what the test set is checked against: a test set that shares a level with the
training data is refused, because its numbers would measure memorisation, not generalisation.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genie_common import storage
from rl_agent.store.errors import DatasetError
from rl_agent.store.manifest import MANIFEST_NAME, Manifest, ShardInfo
from world_model.checkpoint import CheckpointError
from world_model.generation import WorldModel
from world_model.runs import load_world_model, read_run_info, resolve_checkpoint, run_folder_of

STAGE_NAMES = {"tokenizer": "Tokenizer", "lam": "LAM"}


@dataclass
class ModelUnderTest:
    """The loaded model plus everything results.json says about it."""

    stage: str  # "tokenizer" | "lam" | "dynamics"
    name: str  # "Tokenizer" | "LAM" | "GenieRedux" | "GenieRedux-G"
    location: str  # what the user passed
    checkpoint: str  # the checkpoint file actually loaded
    preset: str
    step: int
    run_info: dict[str, Any] | None
    tokenizer: nn.Module | None = None
    lam: nn.Module | None = None
    world: WorldModel | None = None
    conditioning: str | None = None  # dynamics only: "latent" | "ground_truth"
    extra: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "stage": self.stage, "location": self.location, "checkpoint": self.checkpoint,
            "preset": self.preset, "step": self.step, "conditioning": self.conditioning,
            "variant": variant_of(self.run_info), "training_data": training_data(self.run_info),
            "lineage_data": lineage_data(self.run_info)[0],
        }


def checkpoint_stage(path: str | os.PathLike) -> str:
    """The stage a checkpoint file records (without building its model)."""
    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable file gets the same clear message
        raise CheckpointError(f"{path}: not a readable world-model checkpoint ({err})") from err
    if not isinstance(payload, dict) or "stage" not in payload:
        raise CheckpointError(f"{path}: not a world-model checkpoint (no stage recorded)")
    return str(payload["stage"])


def detect_stage(location: str | os.PathLike) -> str:
    """'tokenizer', 'lam' or 'dynamics' for a run folder (its run.json) or a checkpoint file."""
    text = str(location)
    try:
        if storage.is_file(text):
            return checkpoint_stage(storage.local_copy(text))
        if not storage.exists(text):
            raise CheckpointError(f"{text}: no such checkpoint or run folder; make one with `genie train "
                                  "tokenizer|lam|dynamics`")
    except storage.StorageError as err:
        raise CheckpointError(str(err)) from err
    info = read_run_info(text)
    if info is None or "stage" not in info:
        raise CheckpointError(
            f"{text} is a folder but not a training run (no run.json with a stage); pass a run folder of "
            f"`genie train tokenizer|lam|dynamics` or a .pt checkpoint"
        )
    return str(info["stage"])


def _run_info_near(location: str, checkpoint: Path) -> dict[str, Any] | None:
    info = read_run_info(location) if not storage.is_file(location) else None
    if info is None:
        folder = run_folder_of(checkpoint)
        info = read_run_info(folder) if folder is not None else None
    return info


def load_model_under_test(location: str | os.PathLike, device: str | torch.device = "cpu",
                          prefer: str = "best") -> ModelUnderTest:
    """Load whatever `location` holds, ready for evaluation (eval mode, on `device`)."""
    text = str(location)
    stage = detect_stage(text)
    if stage == "dynamics":
        loaded = load_world_model(text, map_location=device, prefer=prefer)
        world = loaded.model.to(device).eval()
        return ModelUnderTest(
            stage, loaded.name, text, str(loaded.checkpoint), loaded.preset, loaded.step,
            _run_info_near(text, Path(loaded.checkpoint)), tokenizer=world.tokenizer, lam=world.lam, world=world,
            conditioning=loaded.conditioning,
        )
    if stage not in STAGE_NAMES:
        raise CheckpointError(f"{text}: unknown stage {stage!r}; expected tokenizer, lam or dynamics")
    path = resolve_checkpoint(text, stage, prefer)  # type: ignore[arg-type]
    from world_model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, stage, device)
    model = ckpt.build_model().to(device).eval()
    return ModelUnderTest(
        stage, STAGE_NAMES[stage], text, str(path), ckpt.preset, ckpt.step, _run_info_near(text, path),
        tokenizer=model if stage == "tokenizer" else None, lam=model if stage == "lam" else None,
    )


# ---- training data: variant and level overlap -------------------------------------------------
def training_data(run_info: dict[str, Any] | None) -> list[str]:
    """The data sets this run itself trained on (its run.json "data")."""
    if not run_info:
        return []
    data = run_info.get("data") or []
    return [str(d) for d in ([data] if isinstance(data, (str, os.PathLike)) else data)]


def _upstream(run_info: dict[str, Any], components: bool) -> list[str]:
    """Runs this one builds on: the run it was fine-tuned from (--init) and, with `components`, the
    frozen tokenizer and LAM of a dynamics run (their training levels were seen too)."""
    identity = run_info.get("identity") or {}
    keys = [identity.get("init"), run_info.get("init")]
    if components:
        keys += [run_info.get("tokenizer"), run_info.get("lam")]
    return [str(k) for k in keys if k]


def _run_info_of(location: str) -> dict[str, Any] | None:
    try:
        if storage.is_file(location):
            if storage.is_uri(location):
                return None
            folder = run_folder_of(Path(location))
            return read_run_info(folder) if folder is not None else None
        return read_run_info(location)
    except storage.StorageError:
        return None


def lineage_data(run_info: dict[str, Any] | None, components: bool = True) -> tuple[list[str], list[str]]:
    """Every data set behind a model: its own, those of the run it was fine-tuned from, and (with
    `components`) those of its tokenizer and LAM, recursively. Returns (data sets, notes on runs that
    could not be read, whose data are therefore unknown)."""
    data: list[str] = []
    notes: list[str] = []
    seen: set[str] = set()
    pending = [run_info] if run_info else []
    while pending:
        info = pending.pop()
        data += [d for d in training_data(info) if d not in data]
        for location in _upstream(info, components):
            if location in seen:
                continue
            seen.add(location)
            upstream = _run_info_of(location)
            if upstream is None:
                notes.append(f"{location}: no run.json found, its training data are unknown")
            else:
                pending.append(upstream)
    return data, notes


def load_manifest(location: str | os.PathLike) -> Manifest:
    """A dataset's manifest from a local folder or a storage URI (only manifest.json is read)."""
    text = str(location)
    if not storage.is_uri(text):
        return Manifest.load(text)
    try:
        data = json.loads(storage.read_bytes(storage.join(text, MANIFEST_NAME)))
    except storage.StorageError as err:
        raise DatasetError(f"{text}: cannot read its {MANIFEST_NAME} ({err})") from err
    return Manifest(root=Path(text), collections=data.get("collections", {}),
                    shards=[ShardInfo.from_json(s) for s in data.get("shards", [])])


def dataset_agents(manifest: Manifest) -> set[str]:
    return {s.agent.split(":")[0] for s in manifest.shards}


def variant_of(run_info: dict[str, Any] | None) -> str | None:
    """'TA' (trained or fine-tuned on trained-agent data), 'Base' (random-agent data only), or None if unknown."""
    if not run_info:
        return None
    if run_info.get("variant") in ("Base", "TA"):
        return str(run_info["variant"])
    agents: set[str] = set()
    for location in lineage_data(run_info, components=False)[0]:
        try:
            agents |= dataset_agents(load_manifest(location))
        except (DatasetError, storage.StorageError):
            return None
    if not agents:
        return None
    return "TA" if "ppo" in agents else "Base"


def level_seeds(manifest: Manifest, split: str | None = None) -> set[int]:
    return {int(e.level_seed) for _, e in manifest.episodes(split)}


@dataclass(frozen=True)
class OverlapCheck:
    checked: bool
    note: str

    def to_json(self) -> dict[str, Any]:
        return {"checked": self.checked, "note": self.note}


def check_level_overlap(run_info: dict[str, Any] | None, test: Manifest, split: str | None = None) -> OverlapCheck:
    """Refuse (DatasetError) a test set sharing a level seed with the model's training data.

    Without a recorded training data set the check cannot be made; that is reported, not hidden.
    """
    locations, notes = lineage_data(run_info)
    if not locations:
        return OverlapCheck(False, "the model's run.json names no training data; level overlap not checked"
                            + "".join(f"; {n}" for n in notes))
    test_levels = level_seeds(test, split)
    for location in locations:
        try:
            train = load_manifest(location)
        except (DatasetError, storage.StorageError) as err:
            raise DatasetError(
                f"cannot check the test set against the training data {location} ({err}); make the training data "
                f"readable here, or evaluate a model whose run.json lists reachable data"
            ) from err
        shared = test_levels & level_seeds(train)
        if shared:
            example = ", ".join(str(s) for s in sorted(shared)[:5])
            raise DatasetError(
                f"test set {test.root} shares {len(shared)} level(s) with the training data {location} (e.g. "
                f"{example}); its numbers would measure memorisation. Evaluate on a test set collected on held-out "
                f"levels, e.g. `genie datasets make --names basic-test,diverse-test` (levels [1e6, 2e6))"
            )
    note = f"no level shared with the {len(locations)} data set(s) the model and the runs it builds on trained on"
    return OverlapCheck(True, note + "".join(f"; {n}" for n in notes))
