"""The settings of `genie play` (`PlayConfig`) and `genie dream` (`DreamConfig`): their fields that are options
document themselves (`genie_common.config.option`), and this module imports nothing heavy, so `genie --help` builds
their options without loading numpy, torch or Ray."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cluster.play.access import LOOPBACK_NAMES
from genie_common.config import option
from genie_common.errors import ConfigError

MAX_TEMPERATURE = 10.0  # the highest sampling temperature a request may ask for


@dataclass(frozen=True)
class PlayConfig:
    """Limits and defaults of a play server (what `genie play` options set)."""

    max_sessions: int = option(16, help="players at once", range="positive")
    ttl_s: float = option(900.0, help="idle seconds before a session expires", flag="--session-ttl",
                          range="positive")
    max_history: int = 512  # frames kept per session for step back and recording
    max_upload_kb: int = option(256, help="largest accepted PNG upload, in KiB (a 64x64 PNG is ~5-15)",
                                range="positive")
    max_steps: int = 64  # MaskGIT steps a request may ask for
    max_frames_per_request: int = 16  # frames one key press may generate
    steps: int | None = option(None, help="default MaskGIT steps per frame (default: the model's, 25)",
                               range="positive")
    temperature: float | None = option(None, help="sampling temperature (default: the model's)",
                                       range="non_negative")
    gif_fps: float = 10.0
    gif_scale: int = 4
    max_gif_frames: int = option(256, help="frames a recording may hold; it stops itself there", range="positive")
    rate_per_s: float = option(20.0, help="requests per second a session may make (bursts of twice that)",
                               flag="--rate", range="positive")
    rate_burst: int = 40  # ... and at once (`genie play`: twice --rate)
    # access (cluster/play/access.py): the token every request must carry (None: none needed) and the Host names
    # answered (None: any; the default, loopback names, is right for a server bound to 127.0.0.1)
    token: str | None = None
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_NAMES
    # model deployment
    model_cpus: float = option(1.0, help="Ray CPUs per model replica", range="non_negative")
    model_gpus: float = option(0.0, help="GPUs per model replica (runs the model on CUDA)", flag="--gpus",
                               range="non_negative")
    model_replicas: int = option(1, help="model replicas (e.g. one per GPU)", flag="--replicas", range="positive")
    torch_threads: int = option(0, help="torch threads per replica (0: torch's own choice)", range="non_negative")
    max_batch_size: int = 8  # concurrent step requests batched into one forward pass
    batch_wait_s: float = 0.002  # how long a batch waits to fill; bounds the latency batching adds

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_history", "max_upload_kb", "max_steps", "max_frames_per_request",
                     "max_batch_size", "model_replicas", "gif_scale", "max_gif_frames", "rate_burst"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.steps is not None and not 1 <= self.steps <= self.max_steps:
            raise ValueError(f"steps must lie in 1..{self.max_steps}, got {self.steps}")
        if not self.rate_per_s > 0:
            raise ValueError(f"rate_per_s must be positive, got {self.rate_per_s}")
        if self.temperature is not None and not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise ValueError(f"temperature must lie in 0..{MAX_TEMPERATURE:g}, got {self.temperature}")
        if self.token is not None and not re.fullmatch(r"[A-Za-z0-9._~-]{8,}", self.token):
            raise ValueError("a token must have at least 8 characters, each a letter, digit or one of . _ ~ - "
                             "(it travels in a URL and a cookie)")

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_kb * 1024


@dataclass(frozen=True)
class DreamConfig:
    """How to dream: where to start, sampling, and how the GIF looks."""

    start: str = option("fresh", help="'fresh' (Procgen level --level-seed), 'test' (a random test episode of --data) "
                                      "or 'episode:ID[@STEP]'")
    level_seed: int = option(0, help="level of a fresh start", range="non_negative")
    steps: int | None = option(None, help="MaskGIT steps per frame (default: the model's, 25)", range="positive")
    temperature: float | None = option(None, help="sampling temperature (default: the model's)",
                                       range="non_negative")
    guidance: float | None = option(None, help="classifier-free guidance on the key (1 = none; needs a dynamics "
                                               "trained with action_dropout; default: the model's)",
                                    range="non_negative")
    seed: int = option(0, help="sampling seed: the same seed gives the same dream", range="non_negative")
    fps: float = option(10.0, help="GIF frame rate", range="positive")
    scale: int = option(4, help="GIF upscaling factor, nearest neighbour", range="positive")
    side_by_side: bool = option(False, help="put the real game, fed the same actions, beside the dream "
                                            "(GenieRedux-G)")

    def __post_init__(self) -> None:
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"MaskGIT needs at least 1 step, got --steps {self.steps}")
        if self.temperature is not None and self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if self.fps <= 0 or self.scale < 1:
            raise ConfigError(f"--fps must be > 0 and --scale >= 1, got {self.fps} and {self.scale}")
