"""One training run of one stage, as a typed config: what `genie train` builds from its options.

Everything a worker needs travels in this dataclass (as a plain dict), so the CLI, the pipeline,
Ray jobs and Tune trials all start identical runs. `identity()` is the part that defines *what*
is trained; running again into the same folder with a different identity is refused, while the
resources (workers, GPUs) may change between a run and its resumption: the global batch and the
windows of each step do not depend on them. The fields that are options of `genie train` say so
with their help (`genie_common.config.option`; the command makes its options from them).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genie_common.config import option
from genie_common.errors import ConfigError
from world_model.config import STAGES, Conditioning, OptimConfig, Preset, config_to_dict, load_preset

# the dynamics' conditioning, in DynamicsConfig's words: GenieRedux (LAM latent actions) or GenieRedux-G (the agent's
# own actions, `ground_truth`)
ACTIONS: tuple[str, ...] = tuple(sorted(typing.get_args(Conditioning)))
# what records (run.json's identity, a checkpoint's job, a sweep's identity, the pipeline's task keys) say for
# ground_truth: the older word, so runs and sweeps made before the word changed still resume
RECORDED_GROUND_TRUTH = "true"
ACTIONS_HELP = ("dynamics conditioning: 'ground_truth' = the agent's actions (GenieRedux-G), 'latent' = LAM "
                "(GenieRedux); 'true', the older word for ground_truth, is still accepted")


def known_actions(actions: str) -> str:
    """`actions` in ACTIONS' words: the recorded `true` (old records, old configs) is ground_truth."""
    return "ground_truth" if actions == RECORDED_GROUND_TRUTH else actions


def recorded_actions(actions: str | None) -> str | None:
    """`actions` as records say it (`true` for ground_truth, see RECORDED_GROUND_TRUTH); None stays None."""
    return RECORDED_GROUND_TRUTH if actions == "ground_truth" else actions


def checked_shares(shares: list[Any], folders: int) -> list[float]:
    """--data-shares as numbers summing to 1: one weight >= 0 per --data folder, not all 0 (e.g. 1,1 -> 0.5,0.5)."""
    try:
        values = [float(v) for v in shares]
    except (TypeError, ValueError):
        raise ConfigError(f"--data-shares must be numbers, one per --data folder, got {shares!r}") from None
    if len(values) != folders:
        raise ConfigError(f"--data-shares gives {len(values)} shares for {folders} --data folder(s): one per folder, "
                          "in --data order")
    if any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
        raise ConfigError(f"--data-shares must be finite and >= 0 with a positive sum, got {shares!r}")
    total = sum(values)
    return [v / total for v in values]


def _absolute(location: str) -> str:
    from genie_common import storage

    text = str(location)
    return text if storage.is_uri(text) else str(Path(text).expanduser().resolve())


@dataclass
class TrainJob:
    stage: str
    # training uses split 'train', validation split 'val'
    data: list[str] = option(help="dataset folder(s) or URI(s), comma-separated; split 'train' trains, split 'val' "
                                  "validates", path="storage")
    out: str = option(help="run folder or URI (created; the same one again resumes)", path="storage")
    preset: str = "tiny"
    preset_file: str | None = None
    overrides: list[str] = field(default_factory=list)  # --set world_model.x.y=value
    workers: int = option(1, help="Ray Train workers (DDP processes)", range="positive")
    gpus_per_worker: float = option(0.0, help="GPUs per worker (0 = train on CPUs)", range="non_negative")
    cpus_per_worker: float = option(1.0, help="CPUs Ray reserves per worker", range="positive")
    # torch intra-op threads per worker; None: the CPUs per worker, at least 1
    threads_per_worker: int | None = option(None, help="torch threads per worker (default: CPUs per worker, at "
                                                       "least 1)", range="positive")
    steps: int | None = option(None, help="optimiser steps (default: the preset's total_steps)",  # optim.total_steps
                               range="positive")
    batch_size: int | None = option(None, help="global batch of windows per step (default: preset)", flag="--batch",
                                    range="positive")
    micro_batch: int | None = option(None, help="windows per worker per forward pass; smaller than the share = "
                                                "gradient accumulation", range="positive")  # train.micro_batch
    init: str | None = option(None, help="fine-tune from this run/checkpoint of the same stage (fresh optimiser)",
                              path="storage")
    tokenizer: str | None = option(None, help="dynamics: the tokenizer run/checkpoint whose tokens it models",
                                   path="storage")  # frozen
    lam: str | None = option(None, help="dynamics with --actions latent: the LAM run/checkpoint",
                             path="storage")  # frozen
    actions: str = option("ground_truth", help=ACTIONS_HELP, choices=ACTIONS)  # 'true' (records) is ground_truth
    seed: int = option(0, help="seed of initial weights, windows and masks", range="non_negative")
    # e.g. the agent's data and the random agent's replayed against forgetting: 0.5,0.5 trains on each half the time
    # however many frames each holds (default: each folder in proportion to its windows)
    data_shares: list[float] | None = option(None, help="each --data folder's share of every batch, comma-separated in "
                                                        "--data order, e.g. 0.5,0.5 (default: in proportion to their "
                                                        "windows)")
    compile: bool = option(False, help="torch.compile the model (worth it on GPUs)")
    bf16: bool = option(True, help="train in float32 on GPUs (default: bf16 autocast)",  # ignored on CPU
                        flag="--no-bf16")
    max_failures: int = option(3, help="worker-group restarts from the latest checkpoint", range="non_negative")
    wandb: bool = option(True, help="no wandb logging (default: offline unless WANDB_MODE is set)",
                         flag="--no-wandb")
    inject_failure_at: int | None = None  # tests: one worker exits at this step, once (fault tolerance)

    def __post_init__(self) -> None:
        # workers run in other folders (and on other nodes): every local path must be absolute
        self.data = [_absolute(d) for d in self.data]
        self.out = _absolute(self.out)
        self.init, self.tokenizer, self.lam = (_absolute(p) if p else p for p in (self.init, self.tokenizer, self.lam))
        self.actions = known_actions(self.actions)
        if self.threads_per_worker is None:
            self.threads_per_worker = max(1, int(self.cpus_per_worker))
        if self.stage not in STAGES:
            raise ConfigError(f"unknown stage {self.stage!r}; stages: {', '.join(STAGES)}")
        if not self.data:
            raise ConfigError("--data needs at least one dataset folder")
        if self.data_shares is not None:
            self.data_shares = checked_shares(self.data_shares, len(self.data))
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
        """DynamicsConfig's conditioning: the words of `actions`."""
        return self.actions

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
            "actions": recorded_actions(self.actions) if self.stage == "dynamics" else None,
            "seed": self.seed,
            # only when given: the identity of every run made before shares existed stays what it was
            **({"data_shares": list(self.data_shares)} if self.data_shares is not None else {}),
        }
