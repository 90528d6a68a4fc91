"""One training run of one stage, as a typed config: what `genie train` builds from its options.

Everything a worker needs travels in this dataclass (as a plain dict), so the CLI, the pipeline,
Ray jobs and Tune trials all start identical runs. `identity()` is the part that defines *what*
is trained; running again into the same folder with a different identity is refused, while the
resources (workers, GPUs) may change between a run and its resumption: the global batch and the
windows of each step do not depend on them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genie_common.errors import ConfigError
from world_model.config import STAGES, OptimConfig, Preset, config_to_dict, load_preset

# GenieRedux (LAM latent actions) or GenieRedux-G (the agent's true actions; the CLI's `--actions ground_truth`,
# recorded as "true" so runs made before the CLI's word changed still resume)
ACTIONS = ("latent", "true")


def _absolute(location: str) -> str:
    from genie_common import storage

    text = str(location)
    return text if storage.is_uri(text) else str(Path(text).expanduser().resolve())


@dataclass
class TrainJob:
    stage: str
    data: list[str]  # dataset folders or URIs; training uses split 'train', validation split 'val'
    out: str  # run folder or URI
    preset: str = "tiny"
    preset_file: str | None = None
    overrides: list[str] = field(default_factory=list)  # --set world_model.x.y=value
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    threads_per_worker: int = 1  # torch intra-op threads per worker
    steps: int | None = None  # overrides optim.total_steps
    batch_size: int | None = None  # global batch; overrides the preset's
    micro_batch: int | None = None  # overrides train.micro_batch
    init: str | None = None  # fine-tune from this checkpoint/run of the same stage (fresh optimiser)
    tokenizer: str | None = None  # dynamics: the frozen tokenizer
    lam: str | None = None  # dynamics with --actions latent: the frozen LAM
    actions: str = "true"  # dynamics conditioning
    seed: int = 0
    compile: bool = False
    bf16: bool = True  # autocast to bfloat16 on GPUs (ignored on CPU)
    max_failures: int = 3
    wandb: bool = True
    inject_failure_at: int | None = None  # tests: one worker exits at this step, once (fault tolerance)

    def __post_init__(self) -> None:
        # workers run in other folders (and on other nodes): every local path must be absolute
        self.data = [_absolute(d) for d in self.data]
        self.out = _absolute(self.out)
        self.init, self.tokenizer, self.lam = (_absolute(p) if p else p for p in (self.init, self.tokenizer, self.lam))
        if self.stage not in STAGES:
            raise ConfigError(f"unknown stage {self.stage!r}; stages: {', '.join(STAGES)}")
        if not self.data:
            raise ConfigError("--data needs at least one dataset folder")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0 or self.cpus_per_worker <= 0 or self.threads_per_worker < 1:
            raise ConfigError("--gpus-per-worker must be >= 0, --cpus-per-worker > 0, --threads-per-worker >= 1")
        if self.actions not in ACTIONS:
            raise ConfigError(f"--actions must be ground_truth or latent, got {self.actions!r}")
        if self.stage == "dynamics":
            if not self.tokenizer:
                raise ConfigError("dynamics is trained on a tokenizer's tokens: pass --tokenizer RUN_OR_CKPT "
                                  "(made by `genie train tokenizer`)")
            if self.actions == "latent" and not self.lam:
                raise ConfigError("--actions latent (GenieRedux) needs --lam RUN_OR_CKPT (made by `genie train lam`); "
                                  "--actions ground_truth (GenieRedux-G) does not")
        elif self.tokenizer or self.lam:
            raise ConfigError(f"--tokenizer/--lam are inputs of `genie train dynamics`, not of {self.stage}")
        for flag, value in (("--steps", self.steps), ("--batch", self.batch_size), ("--micro-batch", self.micro_batch)):
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ConfigError(f"{flag} must be a whole number >= 1, got {value!r}")
        preset = self.load_preset()
        batch = self.global_batch(preset)
        if batch % self.workers:
            raise ConfigError(f"the global batch {batch} must be divisible by --workers {self.workers} "
                              f"(the batch is fixed independently of the workers; change --batch or --workers)")
        share = batch // self.workers
        micro = self.micro(preset)
        if share % micro:
            raise ConfigError(f"each worker's share {share} of the batch must be divisible by the micro batch {micro}")
        self.optim(preset)  # validates the schedule against --steps

    # ---- derived settings --------------------------------------------------------------
    def load_preset(self) -> Preset:
        return load_preset(self.preset if self.preset_file is None else None, self.preset_file, self.overrides)

    def global_batch(self, preset: Preset) -> int:
        return int(self.batch_size or preset.batch_size)

    def micro(self, preset: Preset) -> int:
        """Windows per worker per forward pass (gradient accumulation when smaller than its share)."""
        share = self.global_batch(preset) // self.workers
        micro = self.micro_batch if self.micro_batch is not None else preset.train.micro_batch
        return share if not micro or micro > share else int(micro)

    def accumulation(self, preset: Preset) -> int:
        return self.global_batch(preset) // self.workers // self.micro(preset)

    def optim(self, preset: Preset) -> OptimConfig:
        optim = preset.optim_for(self.stage)
        if self.steps is not None:
            warmup = min(optim.warmup_steps, max(0, self.steps - 1))
            optim = dataclasses.replace(optim, total_steps=self.steps, warmup_steps=warmup)
        return optim

    def total_steps(self) -> int:
        return self.optim(self.load_preset()).total_steps

    def window_length(self, preset: Preset) -> int:
        return int(preset.stage_config(self.stage).frames)

    @property
    def conditioning(self) -> str:
        return "latent" if self.actions == "latent" else "ground_truth"

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainJob":
        return cls(**values)

    def identity(self) -> dict[str, Any]:
        """What defines the run's result (not where or on how many workers it runs)."""
        preset = self.load_preset()
        return {
            "stage": self.stage,
            "data": list(self.data),
            "model": config_to_dict(preset.stage_config(self.stage)),
            "optim": config_to_dict(self.optim(preset)),
            "batch_size": self.global_batch(preset),
            "init": self.init,
            "tokenizer": self.tokenizer if self.stage == "dynamics" else None,
            "lam": self.lam if self.stage == "dynamics" and self.actions == "latent" else None,
            "actions": self.actions if self.stage == "dynamics" else None,
            "seed": self.seed,
        }
