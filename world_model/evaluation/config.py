"""The typed settings of one evaluation; every number in results.json is reported with them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from genie_common.errors import ConfigError

MODES = ("autoregressive", "teacher_forced")
# GenieRedux-G controllability: which CoinRun actions are held, and where the agent should go
# (relative to holding NOOP from the same context, which removes momentum and gravity).
CONTROL_ACTIONS = {"LEFT": "left", "RIGHT": "right", "UP": "up", "NOOP": "still"}
# What each CoinRun action does, by name (Procgen's 15 ids, rl_agent.coinrun_env.ACTION_NAMES). Measured on
# real CoinRun (easy) from 4868 states of 100 levels, each action then 3 NOOPs: actions of one class gave
# byte-identical futures in >= 99% of states (DOWN and its twins differ only on crates), actions of different
# classes in <= 76% (UP vs NOOP, LEFT+UP vs LEFT: mid-air a jump does nothing). tests/test_controllability.py
# checks it. Drawn uniformly among the other 14 ids, the paper's counterfactual has the true action's effect in
# 28.6% of the tiny Basic test set's steps and 24.7% of the Diverse one's.
ACTION_EFFECTS = {
    "LEFT+DOWN": "left", "LEFT": "left", "LEFT+UP": "left+up", "DOWN": "still", "NOOP": "still", "UP": "up",
    "RIGHT+DOWN": "right", "RIGHT": "right", "RIGHT+UP": "right+up",
    "D": "still", "A": "still", "W": "still", "S": "still", "Q": "still", "E": "still",
}
# Forked futures: the two futures played from one real context (docs/design.md, 'Metrics')
FORK_ACTIONS = ("RIGHT", "LEFT")


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation: a model (run folder or checkpoint) on a test set (dataset folder or URI)."""

    model: str
    data: str
    context: int = 2  # real frames given to the model (the paper: 2)
    horizon: int = 10  # frames predicted after the context (the paper: 10)
    maskgit_steps: int = 25  # MaskGIT passes per generated frame (the paper: 25)
    temperature: float | None = None  # initial sampling temperature; None = the model's config
    guidance: float | None = None  # classifier-free guidance on the key (1 = none); None = the model's config
    episodes: int | None = None  # test episodes to evaluate (None = all long enough)
    split: str | None = None  # only this split of the test set (None = every episode)
    workers: int = 2  # Ray actors evaluating batches in parallel
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    device: str = "cpu"  # where each worker runs its model ("cuda" with gpus_per_worker > 0)
    bf16: bool = True  # on CUDA: the model under bfloat16 autocast (TF32 otherwise); metrics in float32; CPU: float32
    batch_size: int = 4  # episodes per batch; batches are fixed by seed, not by the number of workers
    seed: int = 0  # picks the episodes, their windows, the sampling noise and the counterfactual actions
    delta_t: int = 4  # ΔtPSNR is measured at the t-th predicted frame
    modes: tuple[str, ...] = MODES
    control_steps: int = 3  # frames each action is held for the controllability check (0 = skip)
    # forked futures: windows whose real game is replayed and forked (RIGHT xk vs LEFT xk); the first ones
    # in seed order that replay. 6 of the tiny pipeline's 20 windows keep its evaluation time within ~10%
    forks: int = 6
    fork_steps: int = 4  # k: frames of each fork (docs/design.md, 'Metrics': k = 4)
    inception_weights: str | None = None  # local TorchScript Inception for FID (None = FID skipped)
    samples: int = 4  # episodes whose frames are kept for GIFs / strips
    prefer: str = "best"  # checkpoint of a run folder: "best" or "latest"
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.context < 1:
            raise ConfigError(f"--context must be at least 1 frame, got {self.context}")
        if self.horizon < 1:
            raise ConfigError(f"--horizon must be at least 1 frame, got {self.horizon}")
        if self.maskgit_steps < 1:
            raise ConfigError(f"--maskgit-steps must be at least 1, got {self.maskgit_steps}")
        if self.episodes is not None and self.episodes < 1:
            raise ConfigError(f"--episodes must be at least 1 (or omitted for all), got {self.episodes}")
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.delta_t < 1:
            raise ConfigError(f"--delta-t must be at least 1, got {self.delta_t}")
        unknown = set(self.modes) - set(MODES)
        if unknown or not self.modes:
            raise ConfigError(f"unknown rollout mode(s) {sorted(unknown)}; choose from {', '.join(MODES)}")
        if self.control_steps < 0 or self.samples < 0 or self.forks < 0:
            raise ConfigError("--control-steps, --samples and --forks must not be negative")
        if self.fork_steps < 1:
            raise ConfigError(f"--fork-steps must be at least 1, got {self.fork_steps}")
        if self.prefer not in ("best", "latest"):
            raise ConfigError(f"prefer must be 'best' or 'latest', got {self.prefer!r}")
        if self.split not in (None, "train", "val", "test"):
            raise ConfigError(f"--split must be train, val or test (or omitted), got {self.split!r}")

    @property
    def window(self) -> int:
        """Frames per evaluated window: context + horizon."""
        return self.context + self.horizon

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["modes"] = list(self.modes)
        values.pop("show_progress")
        return values
