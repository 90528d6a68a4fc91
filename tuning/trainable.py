"""The Tune function each trial of a sweep runs: one Ray Train run of a world-model stage, reported to Tune.

Why a function trainable: in Ray 2.60 (Train V2) `Tuner(TorchTrainer)` is refused, so each trial
is a small Tune function (a fraction of a CPU, `TRIAL_CPUS`) that calls the same
`run_training` as `genie train`, into its own run folder `OUT/trials/trial-NNN`; the Train
workers it starts hold the CPUs/GPUs. Tune does not count those workers, so the sweep caps the
trials running at once (`tuning.sweep.concurrency`) at what the cluster can hold.

Every validation of a trial is forwarded to Tune (`run_training(on_record=...)` ->
`ray.tune.report`) with `step` as the time axis, so ASHA compares trials at equal optimiser steps,
and with `params`, `frames_seen` and `compute` (= params x frames seen) for the scaling plot.
"""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

from genie_common import storage
from tuning.ray_workarounds import ACTOR_KEY, GROUPS_KEY, remove_placement_groups
from tuning.space import TrialSpec
from tuning.trials import RUN_KEY, SweepConfig, trial_job

TRIAL_CPUS = 0.1  # the Tune function itself: it only waits on its Train run and forwards metrics
TRIAL_STATE_FILE = "tune_trial.json"  # inside a trial's run folder: wall time of its earlier attempts
ATTEMPTS_FILE = "attempts.log"  # inside a trial's run folder: one line per start of its Tune function


def run_trial(config: dict[str, Any], sweep: dict[str, Any]) -> None:
    """One trial: train its stage into its run folder, reporting each validation to Tune.

    Runs on any node: it reads and writes its run folder only through `genie_common.storage` (the sweep's
    shared storage), and keeps what the driver must know (its actor, its placement groups, its run folder)
    in each result it reports.
    """
    import ray
    from ray import tune

    from world_model.training.trainer import METRICS_FILE, run_training

    settings = SweepConfig.from_dict(sweep)
    spec = TrialSpec.from_dict(config["trial"])
    job = trial_job(settings, spec)
    preset = job.load_preset()
    params = spec.params
    frames_per_step = job.global_batch(preset) * job.window_length(preset)
    storage.makedirs(job.out)
    actor = ray.get_runtime_context().get_actor_id() or ""
    groups: list[str] = []  # this attempt's Train placement groups, in the order its worker groups started
    wall = _previous_wall(job.out)
    began = time.monotonic()
    state = {"frames_per_s": 0.0}

    def report(record: dict[str, Any]) -> None:
        step = int(record["step"])
        metrics = {k: float(v) for k, v in record.items() if k.startswith("val_")}
        seen = step * frames_per_step
        wall_s = wall + time.monotonic() - began
        tune.report({"step": step, **metrics, "params": params, "frames_seen": seen, "compute": float(params) * seen,
                     "frames_per_s": state["frames_per_s"], "wall_s": wall_s,
                     RUN_KEY: job.out, ACTOR_KEY: actor, GROUPS_KEY: " ".join(groups)})
        write_json(storage.join(job.out, TRIAL_STATE_FILE), {"wall_s": wall_s, "step": step, "finished": False})

    def forward(record: dict[str, Any]) -> None:
        if record.get("kind") == "start" and record.get("placement_group"):
            if record["placement_group"] not in groups:
                groups.append(str(record["placement_group"]))
        elif record.get("kind") == "train":
            state["frames_per_s"] = float(record.get("frames_per_s", 0.0))
        elif record.get("kind") == "val":
            report(record)

    _append_line(storage.join(job.out, ATTEMPTS_FILE), f"{time.strftime('%H:%M:%S')} start")
    try:
        result = run_training(job, show_progress=False, on_record=forward)
    finally:
        remove_placement_groups(groups)
    _append_line(storage.join(job.out, ATTEMPTS_FILE),
                 f"{time.strftime('%H:%M:%S')} {'already done' if result.already_done else 'trained'}")
    if result.already_done:  # finished before an interruption Tune had not recorded yet: report its validations
        text = storage.read_bytes(storage.join(job.out, METRICS_FILE)).decode()
        rows = list(csv.DictReader(io.StringIO(text)))
        fps = [float(r["frames_per_s"]) for r in rows if r.get("kind") == "train" and r.get("frames_per_s")]
        state["frames_per_s"] = sorted(fps)[len(fps) // 2] if fps else 0.0
        for row in rows:
            if row.get("kind") == "val":
                report({k: v for k, v in row.items() if k == "step" or (k.startswith("val_") and v not in ("", None))})
    else:
        state["frames_per_s"] = result.frames_per_s
    write_json(storage.join(job.out, TRIAL_STATE_FILE),
               {"wall_s": wall + time.monotonic() - began, "step": result.steps, "finished": True,
                "frames_per_s": state["frames_per_s"]})


def _previous_wall(out: str) -> float:
    """Wall time earlier attempts of this trial spent (an interrupted sweep adds up across its runs)."""
    location = storage.join(out, TRIAL_STATE_FILE)
    try:
        if not storage.is_file(location):
            return 0.0
        return float(json.loads(storage.read_bytes(location))["wall_s"])
    except (OSError, ValueError, KeyError, storage.StorageError):
        return 0.0


def write_json(location: str, values: dict[str, Any]) -> None:
    """A small JSON file on the sweep's storage, written whole (a reader never sees half of it)."""
    storage.write_bytes_atomic(location, json.dumps(values, indent=1).encode())


def _append_line(location: str, line: str) -> None:
    """Add a line to a small log on storage (read and rewritten whole: object stores cannot append).
    Only the trial's one running attempt writes its log."""
    before = storage.read_bytes(location) if storage.is_file(location) else b""
    storage.write_bytes_atomic(location, before + f"{line}\n".encode())
