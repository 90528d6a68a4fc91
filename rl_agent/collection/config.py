"""What a collection is: its settings (`CollectConfig`), its shard plan, its file names and episode splits.

Everything here is a pure function of the settings, which is what makes shards deterministic and resumable.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from genie_common.errors import ConfigError
from rl_agent.agents import check_agent_spec
from rl_agent.coinrun_env import CoinRunConfig
from rl_agent.store.manifest import SPLITS
from rl_agent.store.writer import SHARD_SUFFIX


@dataclass
class CollectConfig:
    """What to collect. Fields that shape the data are recorded in the manifest and must match on resume."""

    agent: str = "random"  # random | ppo
    episodes: int = 64
    seed: int = 0
    split: str = "auto"  # train | val | test | auto (by a hash of the episode id)
    val_fraction: float = 0.05  # used by split=auto
    test_fraction: float = 0.05  # used by split=auto
    sticky_prob: float = 0.0
    episodes_per_shard: int = 128  # big shards waste less at a shard's end; small ones spread small jobs over workers
    envs_per_shard: int = 16  # Procgen games stepped together by one collector
    workers: int = 2  # collector actors (does not change the data)
    cpus_per_worker: float = 1.0
    env: CoinRunConfig = field(default_factory=CoinRunConfig)
    checkpoint: str | None = None  # for agent=ppo: run folder or checkpoint of `genie agent train`
    checkpoint_id: str | None = None  # content hash of the policy weights, filled in from `checkpoint`
    start_timeout_s: float = 300.0  # give up when no collector could start for this long (autoscalers take minutes)

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            self.env = CoinRunConfig.from_dict(self.env)
        check_agent_spec(self.agent, self.checkpoint, self.sticky_prob)
        if self.checkpoint and "://" not in self.checkpoint:  # collectors may run in another working directory
            self.checkpoint = os.path.abspath(self.checkpoint)
        if self.agent == "ppo" and self.checkpoint_id is None:
            from rl_agent.ppo_policy import checkpoint_id, local_checkpoint, resolve_module_dir

            with local_checkpoint(self.checkpoint) as local:  # a URI: mirrored here, and by each collector on its node
                self.checkpoint_id = checkpoint_id(resolve_module_dir(local))
        if self.split not in SPLITS + ("auto",):
            raise ConfigError(f"unknown split {self.split!r}; choose train, val, test or auto")
        for name in ("episodes", "episodes_per_shard", "envs_per_shard", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not (0 <= self.val_fraction and 0 <= self.test_fraction and self.val_fraction + self.test_fraction < 1):
            raise ConfigError("val_fraction and test_fraction must be >= 0 and sum to less than 1")

    @property
    def agent_name(self) -> str:
        """What the episode record's `agent` column holds."""
        return f"ppo:{self.checkpoint_id}" if self.agent == "ppo" else self.agent

    @property
    def collection(self) -> str:
        """Name of this collection inside a dataset folder; prefixes its shard files and episode ids."""
        return f"{re.sub(r'[^A-Za-z0-9]+', '-', self.agent_name).strip('-')}-s{self.seed}"

    def data_settings(self) -> dict[str, Any]:
        """The settings that determine the recorded data (not the worker count, the episode total or
        where the checkpoint lies: the policy is identified by its weights' hash)."""
        settings = asdict(self)
        for key in ("episodes", "workers", "cpus_per_worker", "checkpoint", "start_timeout_s"):
            settings.pop(key)
        return settings


@dataclass(frozen=True)
class ShardPlan:
    """One shard still to make: its index (which fixes its content) and how many episodes it holds."""

    index: int
    episodes: int


def plan_shards(existing: dict[int, int], total: int, per_shard: int) -> list[ShardPlan]:
    """Shards still to collect so that the collection holds `total` episodes.

    `existing` maps shard index -> episodes already on disk; missing indices are filled first,
    in order, so an interrupted run is completed exactly as it would have been made.
    """
    need = total - sum(existing.values())
    plans: list[ShardPlan] = []
    index = 0
    while need > 0:
        if index not in existing:
            count = min(per_shard, need)
            plans.append(ShardPlan(index, count))
            need -= count
        index += 1
    return plans


def shard_file_name(collection: str, index: int) -> str:
    """The shard's file name: collection and index, so a shard made again lands on the same name."""
    return f"{collection}-{index:05d}{SHARD_SUFFIX}"


def assign_split(episode_id: str, config: CollectConfig) -> str:
    """The episode's split: fixed by the config, or by a hash of its id (stable whoever collects it)."""
    if config.split != "auto":
        return config.split
    u = int(hashlib.sha256(episode_id.encode()).hexdigest()[:12], 16) / float(1 << 48)
    if u < config.test_fraction:
        return "test"
    if u < config.test_fraction + config.val_fraction:
        return "val"
    return "train"
