"""What a collection is: its settings (`CollectConfig`), its shard plan, its file names and episode splits.

Everything here is a pure function of the settings, which is what makes shards deterministic and resumable.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from genie_common.config import option
from genie_common.errors import ConfigError
from rl_agent.agents import check_agent_spec
from rl_agent.coinrun_env import CoinRunConfig


@dataclass
class CollectConfig:
    """What to collect. Fields that shape the data are recorded in the manifest and must match on resume."""

    agent: str = option("random", help="who plays: 'random' (uniform over the 15 actions) or 'ppo' (needs "
                                       "--checkpoint)")
    episodes: int = option(64, help="episodes the collection should hold in total", range="positive")
    seed: int = option(0, help="seed of levels and actions; names the collection", range="non_negative")
    split: str = option("auto", help="split of every episode; 'auto' assigns by a hash of the episode id",
                        choices=("train", "val", "test", "auto"))
    val_fraction: float = option(0.05, help="share of episodes in 'val' for --split auto", range="fraction")
    test_fraction: float = option(0.05, help="share of episodes in 'test' for --split auto", range="fraction")
    sticky_prob: float = option(0.0, help="probability the random agent repeats its last action", range="fraction")
    hold_prob: float = option(0.0, help="probability per step that the agent (either) starts holding a random key, "
                                        "one per CoinRun effect, for --hold-frames steps: an explorer's data then "
                                        "shows keys held against its motion", range="fraction")
    hold_frames: int = option(8, help="steps each held key lasts (with --hold-prob)", range="positive")
    # big shards waste less at a shard's end; small ones spread small jobs over workers
    episodes_per_shard: int = option(128, help="episodes per shard file; a shard is one collector's unit of work, so "
                                               "use a smaller value to spread a small collection over all workers",
                                     range="positive")
    # the flag keeps its older name, which users' scripts use
    envs_per_shard: int = option(16, help="Procgen games each collector steps at once (sets envs_per_shard: the games "
                                          "that play one shard; unlike --workers it shapes the data, so extending a "
                                          "collection needs the same value)", flag="--envs-per-worker",
                                 range="positive")
    workers: int = option(2, help="collector actors running in parallel", range="positive")  # does not change the data
    cpus_per_worker: float = option(1.0, help="Ray CPUs reserved by each collector", range="positive")
    env: CoinRunConfig = field(default_factory=CoinRunConfig)
    checkpoint: str | None = option(None, help="for --agent ppo: a run folder of `genie agent train` (its latest "
                                               "checkpoint) or a checkpoint", path="storage")
    checkpoint_id: str | None = None  # content hash of the policy weights, filled in from `checkpoint`
    start_timeout_s: float = 300.0  # give up when no collector could start for this long (autoscalers take minutes)

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            self.env = CoinRunConfig.from_dict(self.env)
        check_agent_spec(self.agent, self.checkpoint, self.sticky_prob, self.hold_prob, self.hold_frames)
        if self.checkpoint and "://" not in self.checkpoint:  # collectors may run in another working directory
            self.checkpoint = os.path.abspath(self.checkpoint)
        if self.agent == "ppo" and self.checkpoint_id is None:
            from rl_agent.ppo_policy import checkpoint_id, local_checkpoint, resolve_module_dir

            with local_checkpoint(self.checkpoint) as local:  # a URI: mirrored here, and by each collector on its node
                self.checkpoint_id = checkpoint_id(resolve_module_dir(local))
        from rl_agent.store.manifest import SPLITS  # the store (pyarrow) when used: `genie --help` reads the fields

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
        holds = f"-hold{self.hold_prob:g}x{self.hold_frames}" if self.hold_prob > 0 else ""  # beside its plain twin
        return f"{re.sub(r'[^A-Za-z0-9]+', '-', self.agent_name + holds).strip('-')}-s{self.seed}"

    def data_settings(self) -> dict[str, Any]:
        """The settings that determine the recorded data (not the worker count, the episode total or
        where the checkpoint lies: the policy is identified by its weights' hash)."""
        settings = asdict(self)
        for key in ("episodes", "workers", "cpus_per_worker", "checkpoint", "start_timeout_s"):
            settings.pop(key)
        if not self.hold_prob:  # no holds: the data of collections made before holds existed, recorded as they were
            settings.pop("hold_prob"), settings.pop("hold_frames")
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
    from rl_agent.store.writer import SHARD_SUFFIX

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
