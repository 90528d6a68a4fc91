"""The typed settings of one evaluation; every number in results.json is reported with them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from genie_common.config import option
from genie_common.errors import ConfigError

MODES = ("autoregressive", "teacher_forced")
# GenieRedux-G controllability: which CoinRun actions are held, and where the agent should go
# (relative to holding NOOP from the same context, which removes momentum and gravity).
CONTROL_ACTIONS = {"LEFT": "left", "RIGHT": "right", "UP": "up", "NOOP": "still"}
# What each CoinRun action does, by name (Procgen's 15 ids, rl_agent.coinrun_env.ACTION_NAMES): on the real game,
# actions of one class nearly always give the same future, actions of different classes often do not. A random other
# id (the paper's counterfactual) keeps the true action's effect in about a quarter of test steps, hence ΔtPSNR by
# effect class. The measurements: this comment as of commit 4849a82; tests/test_controllability.py checks the classes.
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

    model: str = option(help="run folder of `genie train tokenizer|lam|dynamics` (its best checkpoint) or a .pt "
                             "checkpoint", path="storage")
    data: str = option(help="test set folder or URI, e.g. data/basic-test or data/diverse-test", path="storage")
    context: int = option(2, help="real frames the model starts from", range="positive")  # the paper: 2
    horizon: int = option(10, help="frames predicted after the context", range="positive")  # the paper: 10
    maskgit_steps: int = option(25, help="MaskGIT passes per generated frame", range="positive")  # the paper: 25
    temperature: float | None = option(None, help="initial sampling temperature, annealed to 0 (default: the model's "
                                                  "own)", range="non_negative")
    guidance: float | None = option(None, help="classifier-free guidance on the key: each frame follows l_none + g "
                                               "(l_key - l_none); 1 = none; needs a dynamics trained with "
                                               "action_dropout > 0 (default: the model's own)", range="non_negative")
    scroll_temperature: float | None = option(
        None, help="a scrolled dynamics's scroll draw: softmax(logits / this), 0 = its most likely scroll (default: "
                   "the model's own)", range="non_negative")
    scroll_draw: str | None = option(
        None, help="a scrolled dynamics's scroll: 'sample' (drawn at --scroll-temperature) or 'expected' (its "
                   "expected sub-pixel scroll, accumulated into the camera's position) (default: the model's own)",
        choices=("sample", "expected"))
    episodes: int | None = option(None, help="test episodes to evaluate (default: all)", range="positive")
    split: str | None = option(None, help="only this split of --data (default: every episode; named test sets are "
                                          "all 'test')", choices=("train", "val", "test"))
    workers: int = option(2, help="Ray actors evaluating batches in parallel", range="positive")
    cpus_per_worker: float = option(1.0, help="Ray CPUs (and torch threads) per worker", range="positive")
    gpus_per_worker: float = option(0.0, help="GPUs per worker (then the model runs on cuda)", range="non_negative")
    device: str = "cpu"  # where each worker runs its model ("cuda" with gpus_per_worker > 0)
    # on CUDA: the model under bfloat16 autocast (TF32 otherwise); metrics in float32; CPU: float32
    bf16: bool = option(True, help="on GPUs, run the model in float32 (TF32 matmuls) instead of bfloat16 autocast; "
                                   "metrics are float32 either way", flag="--no-bf16")
    # batches are fixed by seed, not by the number of workers
    batch_size: int = option(4, help="episodes per batch (part of what --seed fixes)", range="positive")
    seed: int = option(0, help="picks episodes, windows, sampling noise and counterfactual actions",
                       range="non_negative")
    delta_t: int = option(4, help="ΔtPSNR is measured at this predicted frame", range="positive")
    modes: tuple[str, ...] = option(MODES, help="comma-separated rollout modes: " + ", ".join(MODES))
    control_steps: int = option(3, help="frames each action is held for controllability (0 = skip)",
                                range="non_negative")
    # forked futures: the first windows in seed order that replay. 6 of the tiny pipeline's 20 windows keep its
    # evaluation time within ~10%
    forks: int = option(6, help="windows whose real game is replayed and forked RIGHT vs LEFT (0 = skip)",
                        range="non_negative")
    fork_steps: int = option(4, help="frames of each fork (k)", range="positive")  # docs/design.md, 'Metrics': k = 4
    inception_weights: str | None = option(None, help="local TorchScript Inception (e.g. inception-2015-12-05.pt) "
                                                      "for FID; without it FID is skipped")
    samples: int = option(4, help="episodes drawn as GIFs and PNG strips", range="non_negative")
    prefer: str = option("best", help="which checkpoint of a run folder", flag="--checkpoint",
                         choices=("best", "latest"))
    show_progress: bool = option(True, help="no progress bar", flag="--no-progress")

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
