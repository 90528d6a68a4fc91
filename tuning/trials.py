"""A sweep's configuration and its trials: each trial a base preset, the search space's values and its TrainJob.

What the sweep driver (`tuning.sweep`) and the results (`tuning.results`) both need; it imports neither.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genie_common.config import option
from genie_common.errors import ConfigError
from genie_common.uris import is_uri, join  # not storage: `genie --help` reads this module, pyarrow-free
from tuning.space import SearchSpace, TrialSpec
from world_model.config import Preset
from world_model.training.job import ACTIONS, ACTIONS_HELP, known_actions, recorded_actions

TRIALS_FOLDER = "trials"  # run folders of the trials
RUN_KEY = "run_folder"  # in every result a trial reports: its training run folder (under OUT, on the sweep's storage)
METRICS = {"loss": "val_loss", "psnr": "val_psnr"}
SCHEDULERS = ("asha", "none")


@dataclass
class SweepConfig:
    """One sweep: what is trained (stage, data, base presets, space), for how long, where, on what. The fields that
    are options of `genie tune` say so with their help (`genie_common.config.option`)."""

    stage: str
    data: list[str] = option(help="dataset folder(s) or URI(s), comma-separated (split 'val' validates)",
                             path="storage")
    # the sweep folder: a path or a storage URI every node sees; None: sweeps/<stage>
    out: str | None = option(None, help="sweep folder or storage URI (s3://bucket/sweeps/tok): Tune's experiment, the "
                                        "trials' run folders, the table, best preset and plot; on a cluster of "
                                        "several nodes, a URI or a folder every node mounts (default: "
                                        "sweeps/<stage>); the same one again resumes", path="storage")
    space: str | None = option(None, help="YAML search space (see above)")  # a local file
    presets: list[str] = field(default_factory=lambda: ["tiny"])  # base preset of the trials (--preset-sweep)
    preset_file: str | None = None  # a user's preset file as the single base (instead of presets)
    overrides: list[str] = field(default_factory=list)  # --set, applied to every trial before the space
    samples: int = option(1, help="trials per grid point (draws of the distributions)", range="positive")
    seed: int = option(0, help="seed of the draws; sample k trains with seed+k", range="non_negative")
    scheduler: str = option("asha", help="asha: stop trials behind at equal steps; none: every trial runs its budget",
                            choices=SCHEDULERS)
    # loss (val_loss, min) or psnr (val_psnr / val_teacher_forced_psnr, max)
    metric: str = option("loss", help="validation metric ASHA and the ranking use (psnr: teacher-forced PSNR for "
                                      "dynamics)", choices=tuple(METRICS))
    # steps of every trial (ASHA's max_t)
    budget_steps: int | None = option(None, help="optimiser steps per trial (the schedule ends there); default: the "
                                                 "preset's total_steps", range="positive")
    val_every: int | None = option(None, help="steps between validations (ASHA's decision points); default: "
                                              "budget/8, at most the preset's", range="positive")
    grace_steps: int | None = option(None, help="ASHA: no trial stops before (default: first validation)",
                                     range="positive")
    reduction_factor: int = option(2, help="ASHA: keep 1/factor of the trials at each rung", range="positive")
    workers: int = option(1, help="Ray Train workers per trial", range="positive")
    cpus_per_worker: float = option(1.0, help="CPUs Ray reserves per Train worker", range="positive")
    gpus_per_trial: float = 0.0  # `genie tune --gpus-per-trial`, whose default the cluster decides
    max_concurrent: int | None = option(None, help="trials at once (default: as many as the cluster's CPUs/GPUs "
                                                   "hold)", range="positive")
    tokenizer: str | None = option(None, help="dynamics: the tokenizer run/checkpoint", path="storage")
    lam: str | None = option(None, help="dynamics with --actions latent: the LAM run/checkpoint", path="storage")
    actions: str = option("ground_truth", help=ACTIONS_HELP, choices=ACTIONS)  # 'true' (records) is ground_truth
    wandb: bool = option(True, help="no wandb logs in the trial run folders", flag="--no-wandb")

    def __post_init__(self) -> None:
        # trials run in Tune's working folder for them (and on any node): every local path they read is absolute
        self.data = [_absolute(d) for d in self.data]
        self.out = self.out or f"sweeps/{self.stage}"
        self.actions = known_actions(self.actions)
        self.tokenizer, self.lam, self.preset_file, self.space = (
            _absolute(p) if p else p for p in (self.tokenizer, self.lam, self.preset_file, self.space))
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if self.metric not in METRICS:
            raise ConfigError(f"--metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not self.presets and self.preset_file is None:
            raise ConfigError("--preset-sweep needs at least one preset name, e.g. tiny,small")
        for name, value in (("--budget-steps", self.budget_steps), ("--val-every", self.val_every),
                            ("--grace-steps", self.grace_steps), ("--max-concurrent", self.max_concurrent)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if self.reduction_factor < 2:
            raise ConfigError(f"--reduction-factor must be at least 2, got {self.reduction_factor}")
        if self.gpus_per_trial < 0 or self.workers < 1 or self.cpus_per_worker <= 0:
            raise ConfigError("--gpus-per-trial must be >= 0, --workers >= 1 and --cpus-per-worker > 0")
        if self.actions not in ACTIONS:
            raise ConfigError(f"--actions must be ground_truth or latent, got {self.actions!r}")

    @property
    def metric_key(self) -> str:
        if self.metric == "psnr" and self.stage == "dynamics":
            return "val_teacher_forced_psnr"
        return METRICS[self.metric]

    @property
    def mode(self) -> str:
        return "min" if self.metric == "loss" else "max"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "SweepConfig":
        return cls(**values)

    def identity(self, trials: list[TrialSpec]) -> dict[str, Any]:
        """What makes the sweep's results (not where or on how many machines it runs)."""
        return {"stage": self.stage, "data": list(self.data), "trials": [t.to_dict() for t in trials],
                "scheduler": self.scheduler, "metric": self.metric_key, "budget_steps": self.budget_steps,
                "grace_steps": self.grace_steps, "reduction_factor": self.reduction_factor,
                "tokenizer": self.tokenizer, "lam": self.lam, "actions": recorded_actions(self.actions)}


def _absolute(location: str) -> str:
    """A local path made absolute (against this process's folder); a storage URI as given."""
    return str(location) if is_uri(location) else str(Path(location).expanduser().resolve())


# ---- trials --------------------------------------------------------------------------------------
def build_trials(sweep: SweepConfig) -> list[TrialSpec]:
    """Every trial of the sweep, each validated as the TrainJob it will run (before any trial starts)."""
    space = SearchSpace.from_file(sweep.space, sweep.stage) if sweep.space else SearchSpace.empty(sweep.stage)
    bases = [(sweep.preset_file, True)] if sweep.preset_file else [(name, False) for name in sweep.presets]
    points = space.points(sweep.samples, sweep.seed) if space.dimensions else \
        [{"__sample__": s} for s in range(sweep.samples)]
    trials: list[TrialSpec] = []
    for base, is_file in bases:
        base_preset = _load_base(base, is_file, sweep.overrides)
        ratio = base_preset.optim.min_lr / base_preset.optim.lr if base_preset.optim.lr > 0 else None
        for point in points:
            values = {k: v for k, v in point.items() if k != "__sample__"}
            spec = TrialSpec(index=len(trials), preset=base, preset_file=is_file, values=values,
                             overrides=space.overrides(point, ratio), seed=sweep.seed + point["__sample__"])
            try:
                trial_job(sweep, spec)
            except ConfigError as err:
                fields = ", ".join(values) if values else "the preset"
                raise ConfigError(f"search space: trial {spec.index} ({spec.label()}) is invalid: {err} "
                                  f"(check the field(s) {fields}); nothing was started") from err
            trials.append(spec)
    return trials


def _load_base(base: str, is_file: bool, overrides: list[str]) -> Preset:
    from world_model.config import load_preset

    return load_preset(None, base, overrides) if is_file else load_preset(base, None, overrides)


def trial_job(sweep: SweepConfig, spec: TrialSpec):
    """The TrainJob of one trial (validates the preset, the space's values and the schedule)."""
    from world_model.training.job import TrainJob

    base = [*sweep.overrides, *spec.overrides]
    preset = _load_base(spec.preset, spec.preset_file, base)
    steps = sweep.budget_steps or preset.optim.total_steps
    val_every = sweep.val_every or max(1, min(preset.train.val_every, steps // 8))
    return TrainJob(
        stage=sweep.stage, data=list(sweep.data), out=join(sweep.out, TRIALS_FOLDER, spec.name),
        preset=spec.preset if not spec.preset_file else "tiny", preset_file=spec.preset if spec.preset_file else None,
        overrides=[*base, f"world_model.train.val_every={val_every}"], workers=sweep.workers,
        gpus_per_worker=sweep.gpus_per_trial / sweep.workers, cpus_per_worker=sweep.cpus_per_worker,
        threads_per_worker=max(1, int(sweep.cpus_per_worker)), steps=sweep.budget_steps, seed=spec.seed,
        tokenizer=sweep.tokenizer, lam=sweep.lam, actions=sweep.actions, wandb=sweep.wandb,
    )


def parameter_count(job) -> int:
    """Trainable parameters of the stage model this job trains (the dynamics alone, not its frozen tokenizer)."""
    import torch

    from world_model.checkpoint import load_checkpoint
    from world_model.runs import resolve_checkpoint
    from world_model.training.trainee import MODEL_CLASSES

    preset = job.load_preset()
    config = preset.stage_config(job.stage)
    if job.stage == "dynamics":
        tokenizer = load_checkpoint(resolve_checkpoint(job.tokenizer, "tokenizer"), "tokenizer").config
        config = dataclasses.replace(config, vocab_size=tokenizer.quantizer.codebook_size, grid=tokenizer.grid,
                                     conditioning=job.conditioning)
        if job.actions == "latent":
            lam = load_checkpoint(resolve_checkpoint(job.lam, "lam"), "lam").config
            config = dataclasses.replace(config, latent_action_dim=lam.quantizer.code_dim)
    with torch.device("meta"):  # sizes only: no memory even at paper size
        model = MODEL_CLASSES[job.stage](config)
    return int(sum(p.numel() for p in model.parameters()))
