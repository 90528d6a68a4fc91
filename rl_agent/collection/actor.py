"""The collector actor's body: makes the shards the driver gives it, into a local folder or a storage URI,
and reports its progress and whether it can collect at all."""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from genie_common.errors import ConfigError
from genie_common.storage import RemoteFolder, is_uri
from rl_agent.agents import make_agent
from rl_agent.collection.config import CollectConfig, ShardPlan
from rl_agent.collection.shards import collect_shard
from rl_agent.store.errors import DatasetError
from rl_agent.store.manifest import ShardInfo


class Collector:
    """Body of a collector actor; `status()` runs concurrently with `collect()` (threaded actor).

    `out` is a local folder (one machine, or a disk all nodes mount) or a storage URI; for a URI each
    shard is written to a staging folder on this actor's node and uploaded once complete, so a
    collector can run on any node of a cluster.
    """

    def __init__(self, config: CollectConfig, out: str) -> None:
        self.config = config
        self.remote = RemoteFolder(out) if is_uri(out) else None
        self.out_dir = None if self.remote is not None else Path(out)
        self._lock = threading.Lock()
        self._frames = 0
        self._episodes = 0
        self._policy, self._error = None, None
        if config.agent == "ppo":  # a checkpoint this node cannot read is reported by status(), not retried
            try:
                self._policy = make_agent(config.agent, 1, checkpoint=config.checkpoint)
            except (ConfigError, DatasetError) as err:
                hint = "" if is_uri(config.checkpoint) else (
                    "; on a multi-node cluster give --checkpoint a storage URI (s3://...) that every node reads")
                self._error = f"{err}{hint}"
            else:
                if self._policy.name != config.agent_name:
                    self._error = (f"the checkpoint {config.checkpoint} now holds the policy {self._policy.name}, not "
                                   f"{config.agent_name} (the one this collection plays); name a checkpoint, not a run "
                                   f"folder that is still training")

    def _count(self, frames: int, episodes: int) -> None:
        with self._lock:
            self._frames += frames
            self._episodes += episodes

    def collect(self, plan: ShardPlan) -> ShardInfo:
        if self.remote is None:
            return collect_shard(self.config, self.out_dir, plan, self._count, self._policy)
        staging = Path(tempfile.mkdtemp(prefix="genie-shard-"))
        try:
            shard = collect_shard(self.config, staging, plan, self._count, self._policy)
            self.remote.upload(staging / shard.file, shard.file)
            return shard
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def progress(self) -> tuple[int, int]:
        with self._lock:
            return self._frames, self._episodes

    def status(self) -> tuple[int, int, str, str | None]:
        """Frames and episodes so far, the node this actor runs on (named in the driver's messages), and why it
        cannot collect (its policy did not load on this node), else None."""
        import ray

        return (*self.progress(), ray.get_runtime_context().get_node_id(), self._error)

    def pid(self) -> int:
        return os.getpid()
