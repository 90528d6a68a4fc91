"""Parallel episode collection: Ray actors step their own vector envs and write their own shards.

Why shards are planned, not streamed: a shard's content is a pure function of (collection
seed, shard index), whichever actor makes it. So the same seed and config give the same
episode ids, actions and frames for any number of workers, and a killed run is completed
by collecting only the shards that are not yet on disk.

Within a shard, E env slots start episodes in a fixed order and every started episode is
finished; episodes are never chosen by how fast they end (that would favour short ones).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from rl_agent.agents import check_agent_spec, make_agent
from rl_agent.coinrun_env import CoinRunConfig, CoinRunVecEnv, ConfigError, derive_seed
from rl_agent.recorder import Episode, EpisodeRecorder
from rl_agent.store.manifest import SPLITS, Manifest, ShardInfo
from rl_agent.store.schema import episode_batch
from rl_agent.store.verify import check_shard_file
from rl_agent.store.writer import SHARD_SUFFIX, ShardWriter, episode_info, is_temp_file


COLLECTOR_NAMESPACE = "genie"
COLLECTOR_NAME_PREFIX = "genie-collector-"


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

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            self.env = CoinRunConfig.from_dict(self.env)
        check_agent_spec(self.agent, self.checkpoint, self.sticky_prob)
        if self.agent == "ppo" and self.checkpoint_id is None:
            from rl_agent.ppo_policy import checkpoint_id, resolve_module_dir

            self.checkpoint_id = checkpoint_id(resolve_module_dir(self.checkpoint))
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
        for key in ("episodes", "workers", "cpus_per_worker", "checkpoint"):
            settings.pop(key)
        return settings


@dataclass(frozen=True)
class ShardPlan:
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
    return f"{collection}-{index:05d}{SHARD_SUFFIX}"


def assign_split(episode_id: str, config: CollectConfig) -> str:
    if config.split != "auto":
        return config.split
    u = int(hashlib.sha256(episode_id.encode()).hexdigest()[:12], 16) / float(1 << 48)
    if u < config.test_fraction:
        return "test"
    if u < config.test_fraction + config.val_fraction:
        return "val"
    return "train"


def play_episodes(
    config: CollectConfig, shard_index: int, count: int, on_step: Callable[[int, int], None] | None = None,
    policy=None,
) -> Iterator[tuple[int, Episode]]:
    """Play `count` whole episodes for one shard, deterministically from (seed, shard index).

    Yields (episode index, Episode) as episodes end; index = order in which episodes started.
    The Episode's arrays are views into reusable buffers: consume them before asking for more.
    """
    num_envs = min(config.envs_per_shard, count)
    env = CoinRunVecEnv(num_envs, config.env, seed=derive_seed(config.seed, shard_index))
    agent = policy or make_agent(config.agent, num_envs, config.sticky_prob, config.checkpoint)
    rng = np.random.default_rng([config.seed, shard_index, 0xC011EC7])
    obs = env.observe()  # (E, H, W, C)
    recorder = EpisodeRecorder(obs, env.level_seeds, capacity=config.env.max_episode_frames)
    episode_of_slot = list(range(num_envs))  # episode index each slot is playing, -1 when idle
    started, finished = num_envs, 0
    while finished < count:
        output = agent.act(obs, rng)
        step = env.step(output.actions)
        obs = step.obs
        closed = recorder.record(output, step)
        for slot, episode in closed:
            if episode_of_slot[slot] >= 0:
                finished += 1
                yield episode_of_slot[slot], episode
            episode_of_slot[slot] = started if started < count else -1
            started += started < count
        if closed:
            recorder.restart(np.array([slot for slot, _ in closed]), obs, env.level_seeds)
        if on_step is not None:
            on_step(num_envs, len(closed))


def collect_shard(config: CollectConfig, out_dir: Path, plan: ShardPlan, on_step=None, policy=None) -> ShardInfo:
    """Record one shard's episodes, streaming each into the shard file, and commit it atomically.

    `policy`: an already loaded stateless agent (a PPO policy) to reuse across shards.
    """
    with ShardWriter(out_dir, shard_file_name(config.collection, plan.index), config.collection, plan.index) as writer:
        for k, e in play_episodes(config, plan.index, plan.episodes, on_step, policy):
            episode_id = f"{config.collection}-{plan.index:05d}-{k:04d}"
            batch = episode_batch(episode_id, e.frames, e.actions, e.rewards, e.terminated, e.truncated,
                                  e.level_seed, config.agent_name, e.logp, e.value)
            writer.write_episode(batch, assign_split(episode_id, config))
        return writer.commit()


class Collector:
    """Body of a collector actor; `progress()` runs concurrently with `collect()` (threaded actor)."""

    def __init__(self, config: CollectConfig, out_dir: str) -> None:
        self.config, self.out_dir = config, Path(out_dir)
        self._lock = threading.Lock()
        self._frames = 0
        self._episodes = 0
        self._policy = make_agent(config.agent, 1, checkpoint=config.checkpoint) if config.agent == "ppo" else None

    def _count(self, frames: int, episodes: int) -> None:
        with self._lock:
            self._frames += frames
            self._episodes += episodes

    def collect(self, plan: ShardPlan) -> ShardInfo:
        return collect_shard(self.config, self.out_dir, plan, self._count, self._policy)

    def progress(self) -> tuple[int, int]:
        with self._lock:
            return self._frames, self._episodes

    def pid(self) -> int:
        return os.getpid()


def prepare_dataset(config: CollectConfig, out_dir: Path) -> tuple[Manifest, list[ShardPlan]]:
    """Load or create the manifest, check settings, clean temp files, adopt orphan shards, plan the rest."""
    manifest = Manifest.load_or_create(out_dir)
    settings = config.data_settings()
    recorded = manifest.collections.get(config.collection)
    if recorded is not None and recorded != settings:
        changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
        raise ConfigError(
            f"{out_dir} already holds collection {config.collection!r} made with different settings "
            f"({', '.join(changed)}); use the same settings to extend it, another --seed, or another --out"
        )
    manifest.collections[config.collection] = settings
    for path in out_dir.glob(f".{config.collection}-*"):
        if is_temp_file(path.name):
            path.unlink(missing_ok=True)  # a shard being written when its process died (or renamed just now)
    listed = {s.file for s in manifest.shards}
    for path in sorted(out_dir.glob(f"{config.collection}-*{SHARD_SUFFIX}")):
        if path.name not in listed:
            manifest.add_shard(adopt_shard(path, config))
    manifest.save()
    existing = {s.index: len(s.episodes) for s in manifest.shards_of(config.collection)}
    return manifest, plan_shards(existing, config.episodes, config.episodes_per_shard)


def adopt_shard(path: Path, config: CollectConfig) -> ShardInfo:
    """Describe a complete shard file that a killed run committed but did not list."""
    batches, sha = check_shard_file(path)
    index = int(path.stem.rsplit("-", 1)[1])
    episodes = [episode_info(b, i, assign_split(b.column("episode_id")[0].as_py(), config)) for i, b in enumerate(batches)]
    return ShardInfo(
        file=path.name,
        collection=config.collection,
        index=index,
        sha256=sha,
        bytes=path.stat().st_size,
        rows=sum(b.num_rows for b in batches),
        agent=config.agent_name,
        episodes=episodes,
    )


def _poll_progress(ray, actors) -> list[tuple[int, int]]:
    """Live counters of busy actors; an actor that is restarting simply reports nothing this time."""
    refs = [a.progress.remote() for a in actors]
    ready, _ = ray.wait(refs, num_returns=len(refs), timeout=1.0)
    counts = []
    for ref in ready:
        try:
            counts.append(ray.get(ref))
        except ray.exceptions.RayError:
            pass
    return counts


def _free_cpus(ray, needed: float, patience: float = 60.0) -> float:
    """Free Ray CPUs, waiting for actors that are still shutting down (e.g. those of a driver that was
    killed a moment ago, which Ray reaps within seconds) to release theirs."""
    deadline = time.monotonic() + patience
    free = ray.available_resources().get("CPU", 0.0)
    while free < needed and time.monotonic() < deadline:
        time.sleep(0.25)
        free = ray.available_resources().get("CPU", 0.0)
    return free


def _stop_actors(ray, actors) -> None:
    """Stop the collectors; the next stage waits for their CPUs in `_free_cpus`."""
    for actor in actors:
        ray.kill(actor, no_restart=True)


def collect_dataset(config: CollectConfig, out_dir: str | Path, show_progress: bool = True) -> Manifest:
    """Collect (or complete) a dataset with `config.workers` Ray actors. Ray must be initialised."""
    import ray
    from tqdm import tqdm

    out_dir = Path(out_dir)
    manifest, plans = prepare_dataset(config, out_dir)
    if not plans:
        return manifest
    free = _free_cpus(ray, config.cpus_per_worker)
    workers = min(config.workers, len(plans), int(free // config.cpus_per_worker + 1e-9))
    if workers < 1:
        raise ConfigError(f"no free Ray CPUs for a collector ({free:g} free, {config.cpus_per_worker:g} needed each); "
                          f"lower --cpus-per-worker or free the cluster")
    if workers < min(config.workers, len(plans)):
        print(f"note: {free:g} free Ray CPUs: running {workers} collectors instead of {config.workers}")
    run_id = uuid.uuid4().hex[:8]
    actors = [
        ray.remote(Collector)
        .options(
            num_cpus=config.cpus_per_worker, max_concurrency=2, max_restarts=3, max_task_retries=3,
            name=f"{COLLECTOR_NAME_PREFIX}{config.collection}-{run_id}-{i}", namespace=COLLECTOR_NAMESPACE,
        )
        .remote(config, str(out_dir.resolve()))
        for i in range(workers)
    ]
    queue = list(plans)
    pending: dict[Any, Any] = {}
    done_frames, done_episodes = 0, 0
    total = sum(p.episodes for p in plans)
    bar = tqdm(total=total, unit="ep", desc=f"collect {config.collection}", disable=not show_progress, dynamic_ncols=True)
    start = time.monotonic()
    try:
        for actor in actors:
            if queue:
                pending[actor.collect.remote(queue.pop(0))] = actor
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            for ref in ready:
                actor = pending.pop(ref)
                shard: ShardInfo = ray.get(ref)
                manifest.add_shard(shard)
                manifest.save()
                done_frames += shard.rows
                done_episodes += len(shard.episodes)
                if queue:
                    pending[actor.collect.remote(queue.pop(0))] = actor
            live = _poll_progress(ray, actors) if show_progress else []
            frames = max(done_frames, sum(f for f, _ in live))
            elapsed = max(time.monotonic() - start, 1e-9)
            bar.n = min(total, max(bar.n, done_episodes, sum(e for _, e in live)))
            bar.set_postfix(frames_s=f"{frames / elapsed:,.0f}", ep_s=f"{bar.n / elapsed:.1f}", refresh=False)
            bar.refresh()
    finally:
        bar.close()
        _stop_actors(ray, actors)
    for path in out_dir.glob(f".{config.collection}-*"):
        if is_temp_file(path.name):
            path.unlink(missing_ok=True)  # left by a collector that crashed and was restarted during this run
    return manifest
