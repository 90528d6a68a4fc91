"""A sweep's configuration and its trials: each trial a base preset, the search space's values and its TrainJob.

What the sweep driver (`tuning.sweep`) and the results (`tuning.results`) both need; it imports neither.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genie_common import storage
from genie_common.errors import ConfigError
from tuning.space import SearchSpace, TrialSpec
from world_model.config import Preset

TRIALS_FOLDER = "trials"  # run folders of the trials
RUN_KEY = "run_folder"  # in every result a trial reports: its training run folder (under OUT, on the sweep's storage)
METRICS = {"loss": "val_loss", "psnr": "val_psnr"}
SCHEDULERS = ("asha", "none")


@dataclass
class SweepConfig:
    """One sweep: what is trained (stage, data, base presets, space), for how long, where, on what."""

    stage: str
    data: list[str]
    out: str  # the sweep folder: a path or a storage URI every node sees
    space: str | None = None  # YAML search space file
    presets: list[str] = field(default_factory=lambda: ["tiny"])  # base preset of the trials (--preset-sweep)
    preset_file: str | None = None  # a user's preset file as the single base (instead of presets)
    overrides: list[str] = field(default_factory=list)  # --set, applied to every trial before the space
    samples: int = 1
    seed: int = 0
    scheduler: str = "asha"
    metric: str = "loss"  # loss (val_loss, min) or psnr (val_psnr / val_teacher_forced_psnr, max)
    budget_steps: int | None = None  # steps of every trial (ASHA's max_t); default: the preset's total_steps
    val_every: int | None = None  # default: often enough for ASHA (8 validations per trial)
    grace_steps: int | None = None  # ASHA: no trial stops before this step; default: the first validation
    reduction_factor: int = 2
    workers: int = 1  # Train workers per trial
    cpus_per_worker: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None  # default: as many trials as the cluster's CPUs/GPUs hold
    tokenizer: str | None = None  # dynamics
    lam: str | None = None
    actions: str = "true"
    wandb: bool = True

    def __post_init__(self) -> None:
        # trials run in Tune's working folder for them (and on any node): every local path they read is absolute
        self.data = [_absolute(d) for d in self.data]
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
                "tokenizer": self.tokenizer, "lam": self.lam, "actions": self.actions}


def _absolute(location: str) -> str:
    """A local path made absolute (against this process's folder); a storage URI as given."""
    return str(location) if storage.is_uri(location) else str(Path(location).expanduser().resolve())


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
        stage=sweep.stage, data=list(sweep.data), out=storage.join(sweep.out, TRIALS_FOLDER, spec.name),
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
    from world_model.training.stages import MODEL_CLASSES

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
