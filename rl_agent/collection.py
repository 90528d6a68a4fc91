"""Parallel episode collection: Ray actors step their own vector envs and write their own shards.

Why shards are planned, not streamed: a shard's content is a pure function of (collection
seed, shard index), whichever actor makes it. So the same seed and config give the same
episode ids, actions and frames for any number of workers, and a killed run is completed
by collecting only the shards that are not yet on disk, and a listed shard that is missing or
damaged is made again byte for byte (`check_listed_shards`, `genie data repair`).

Within a shard, E env slots start episodes in a fixed order and every started episode is
finished; episodes are never chosen by how fast they end (that would favour short ones).
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from genie_common.errors import ConfigError
from genie_common.storage import RemoteFolder, is_uri
from rl_agent.agents import check_agent_spec, make_agent
from rl_agent.capacity import Capacity, NodeType, cluster_capacity, format_resources, node_types, pending_summary
from rl_agent.coinrun_env import CoinRunConfig, CoinRunVecEnv, derive_seed
from rl_agent.recorder import Episode, EpisodeRecorder
from rl_agent.store.errors import DatasetError
from rl_agent.store.lock import folder_lock
from rl_agent.store.manifest import SPLITS, Manifest, ShardInfo
from rl_agent.store.schema import episode_batch
from rl_agent.store.verify import check_listed_shards, check_shard_file
from rl_agent.store.writer import SHARD_SUFFIX, ShardWriter, episode_info, file_sha256, is_temp_file


COLLECTOR_NAMESPACE = "genie"
COLLECTOR_NAME_PREFIX = "genie-collector-"
COLLECTOR_RESOURCE = "collector"  # custom resource of the collector nodes in cluster.yaml


@dataclass(frozen=True)
class Placement:
    """Ray resource requests of one collector actor."""

    num_cpus: float
    resources: tuple[tuple[str, float], ...] = ()

    def options(self) -> dict[str, Any]:
        return {"num_cpus": self.num_cpus, "resources": dict(self.resources)}

    def bundle(self) -> dict[str, float]:
        return {"CPU": self.num_cpus, **dict(self.resources)}

    def describe(self) -> str:
        return f"CPU={self.num_cpus:g}" + "".join(f", {k}={v:g}" for k, v in self.resources)


def collector_placement(cpus_per_worker: float, resources: dict[str, float] | None = None,
                        types: list[NodeType] | None = None) -> Placement:
    """Collectors ask for one unit of the `collector` resource (plus their CPUs) when a running node
    advertises it or a node type of the autoscaler (`types`) does, so they run on the cluster's cheap CPU
    nodes, never on GPU nodes, and their pending requests make the autoscaler launch collector nodes even
    from zero; elsewhere (a laptop, a cluster without collector nodes) they ask for CPUs only.
    `resources` and `types` default to the live cluster's (Ray must be up)."""
    if resources is None:
        import ray

        resources, types = ray.cluster_resources(), node_types()
    launchable = any(t.resources.get(COLLECTOR_RESOURCE, 0) >= 1 and t.max_workers > 0 for t in types or [])
    if launchable or resources.get(COLLECTOR_RESOURCE, 0) >= 1:
        return Placement(cpus_per_worker, ((COLLECTOR_RESOURCE, 1.0),))
    return Placement(cpus_per_worker)


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


def _claim_collection(manifest: Manifest, config: CollectConfig, where: str) -> None:
    """Record this collection's settings in the manifest, refusing to mix settings under one name."""
    settings = config.data_settings()
    recorded = manifest.collections.get(config.collection)
    if recorded is not None and recorded != settings:
        changed = sorted(k for k in set(recorded) | set(settings) if recorded.get(k) != settings.get(k))
        raise ConfigError(
            f"{where} already holds collection {config.collection!r} made with different settings "
            f"({', '.join(changed)}); use the same settings to extend it, another --seed, or another --out"
        )
    manifest.collections[config.collection] = settings


def _drop_bad_shards(manifest: Manifest, bad: list[tuple[ShardInfo, str]], where: str,
                     remove: Callable[[str], None]) -> None:
    for shard, why in bad:
        manifest.drop_shard(shard.file)
        remove(shard.file)
        print(f"note: {where}/{shard.file} is {why}; making it again", flush=True)


def _local_size(out_dir: Path) -> Callable[[str], int | None]:
    def size(name: str) -> int | None:
        path = out_dir / name
        return path.stat().st_size if path.is_file() else None
    return size


def prepare_dataset(config: CollectConfig, out_dir: Path, verify: bool = False) -> tuple[Manifest, list[ShardPlan]]:
    """Load or create the manifest, check settings, clean temp files, drop listed shards that are missing or
    damaged (size; checksum with `verify`), adopt orphan shards, plan the rest."""
    manifest = Manifest.load_or_create(out_dir)
    _claim_collection(manifest, config, str(out_dir))
    for path in out_dir.glob(f".{config.collection}-*"):
        if is_temp_file(path.name):
            path.unlink(missing_ok=True)  # a shard being written when its process died (or renamed just now)
    bad = check_listed_shards(manifest, config.collection, _local_size(out_dir),
                              (lambda name: file_sha256(out_dir / name)) if verify else None)
    _drop_bad_shards(manifest, bad, str(out_dir), lambda name: (out_dir / name).unlink(missing_ok=True))
    listed = {s.file for s in manifest.shards}
    for path in sorted(out_dir.glob(f"{config.collection}-*{SHARD_SUFFIX}")):
        if path.name not in listed:
            try:
                manifest.add_shard(adopt_shard(path, config))
            except DatasetError as err:  # committed shards are whole: the disk damaged this one
                path.unlink()
                print(f"note: {err}; removed, it is made again", flush=True)
    manifest.save()
    existing = {s.index: len(s.episodes) for s in manifest.shards_of(config.collection)}
    return manifest, plan_shards(existing, config.episodes, config.episodes_per_shard)


def prepare_remote_dataset(config: CollectConfig, remote: RemoteFolder, staging: Path,
                           verify: bool = False) -> tuple[Manifest, list[ShardPlan]]:
    """`prepare_dataset` for a dataset at a storage URI; the manifest is kept in `staging` and uploaded."""
    remote.makedirs()
    remote.download_manifest(staging)
    try:
        manifest = Manifest.load_or_create(staging)
    except DatasetError as err:  # name the URI, not the staging copy
        raise DatasetError(str(err).replace(str(staging), remote.uri)) from err
    _claim_collection(manifest, config, remote.uri)
    names = remote.names()
    for name in names:
        if name.startswith(f".{config.collection}-") and is_temp_file(name):
            remote.remove(name)  # an upload or shard cut short when its process or node died

    def remote_sha(name: str) -> str:
        local = remote.download(name, staging)
        try:
            return file_sha256(local)
        finally:
            local.unlink()

    bad = check_listed_shards(manifest, config.collection, remote.size, remote_sha if verify else None)
    _drop_bad_shards(manifest, bad, remote.uri, remote.remove)
    listed = {s.file for s in manifest.shards}
    for name in remote.names():
        if fnmatch.fnmatch(name, f"{config.collection}-*{SHARD_SUFFIX}") and name not in listed:
            local = remote.download(name, staging)
            try:
                manifest.add_shard(adopt_shard(local, config))
            except DatasetError as err:
                remote.remove(name)
                print(f"note: {str(err).replace(str(staging), remote.uri)}; removed, it is made again", flush=True)
            finally:
                local.unlink()
    manifest.save()
    remote.upload_manifest(staging)
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


@dataclass
class _Member:
    """One collector actor as the driver sees it."""

    actor: Any
    name: str
    placement: Placement
    ready: bool = False  # answered a status call: it was scheduled and its constructor ran
    node: str | None = None  # node it last reported
    counts: tuple[int, int] = (0, 0)
    plan: ShardPlan | None = None
    work: Any = None  # ObjectRef of collect(plan)
    ping: Any = None  # ObjectRef of an outstanding status()
    pinged: float = 0.0


class _CollectorPool:
    """Collector actors that get shards as they start; Ray restarts them when they or their node fail.

    Why shards go to started actors only: on a cluster, collectors wait for resources (the autoscaler adds
    collector nodes in minutes), and a shard given to a waiting actor would wait with it while others idle.

    Failures are Ray's to handle: an actor is restarted (`max_restarts`) wherever its request fits, on the same
    node after a crash, on another or a newly launched one after its node is lost, and its calls are retried
    there (`max_task_retries`), so a shard in flight is made again by the restarted actor. On an autoscaling
    cluster the request holds `collector`, so a restart waiting for a node is demand that makes the autoscaler
    launch one. The driver steps in only where Ray cannot:
    - an actor Ray gave up on (restarts used up) is replaced, and its shard goes back to the queue;
    - an actor whose constructor raised ends the collection with its message (a replacement would raise too);
    - on a cluster without an autoscaler, an actor asking for `collector` once no node offers it (the collector
      nodes were lost) would wait forever: it is replaced by one asking for what the cluster offers now.
    Shards are deterministic, so a shard collected twice is the same file, and only the driver lists it in the
    manifest, once.
    """

    PING_EVERY_S = 1.0  # status calls: readiness, progress counts, and a policy that did not load
    PLACEMENT_CHECK_EVERY_S = 2.0
    MAX_RESTARTS = 3  # per actor; each lost node costs one

    def __init__(self, ray, config: CollectConfig, target: str) -> None:
        self.ray, self.config, self.target = ray, config, target
        self.run_id = uuid.uuid4().hex[:8]
        self.spawned = 0
        self.members: list[_Member] = []
        self.types: list[NodeType] | None = None  # the autoscaler's node types, read once in start()
        self.last_answer = time.monotonic()  # when a collector last answered: the start timeout counts from it
        self.last_check = 0.0  # of replace_stranded

    def placement(self) -> Placement:
        return collector_placement(self.config.cpus_per_worker, self.ray.cluster_resources(), self.types)

    def start(self, workers: int) -> None:
        """Start `workers` collectors. A request that no node can ever hold is refused here, at once, rather
        than after the start timeout."""
        capacity = cluster_capacity()
        self.types = capacity.node_types
        placement = self.placement()
        if not capacity.fits_one_node(placement.bundle()):
            nodes = ", ".join(format_resources(n) for n in capacity.nodes) or "none"
            raise ConfigError(
                f"each collector asks for {format_resources(placement.bundle())}, which no node can ever hold (running "
                f"nodes: {nodes}; node types: {capacity.describe_types()}): lower --cpus-per-worker")
        if dict(placement.resources).get(COLLECTOR_RESOURCE) and not capacity.running.get(COLLECTOR_RESOURCE):
            print(f"note: no collector node runs yet; the collectors ask for {placement.describe()} each, so the "
                  f"autoscaler launches collector nodes for them", flush=True)
        for _ in range(workers):
            self.spawn()
        self.last_answer = time.monotonic()

    def spawn(self) -> _Member:
        placement = self.placement()
        name = f"{COLLECTOR_NAME_PREFIX}{self.config.collection}-{self.run_id}-{self.spawned}"
        self.spawned += 1
        actor = (self.ray.remote(Collector)
                 .options(**placement.options(), max_concurrency=2, max_restarts=self.MAX_RESTARTS,
                          max_task_retries=-1, name=name, namespace=COLLECTOR_NAMESPACE)  # -1: while it restarts
                 .remote(self.config, self.target))
        member = _Member(actor, name, placement)
        self.members.append(member)
        return member

    def busy(self) -> bool:
        return any(m.plan is not None for m in self.members)

    def assign(self, queue: "deque[ShardPlan]") -> None:
        for member in self.members:
            if member.ready and member.plan is None and queue:
                member.plan = queue.popleft()
                member.work = member.actor.collect.remote(member.plan)

    def finished_shards(self, queue: "deque[ShardPlan]", timeout: float = 0.5) -> list[tuple[_Member, ShardInfo]]:
        """Wait up to `timeout` s for the collectors' calls; return the shards made meanwhile, with their makers."""
        self._ping()
        refs = {m.ping: (m, "status") for m in self.members if m.ping is not None}
        refs.update({m.work: (m, "shard") for m in self.members if m.work is not None})
        ready, _ = self.ray.wait(list(refs), num_returns=1, timeout=timeout) if refs else ([], [])
        if ready:
            ready, _ = self.ray.wait(list(refs), num_returns=len(refs), timeout=0)
        shards = []
        for ref in ready:
            member, kind = refs[ref]
            if member not in self.members:
                continue  # replaced meanwhile
            try:
                result = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as err:
                self._lost(member, err, queue)
                continue
            self.last_answer = time.monotonic()
            if kind == "status":
                self._record_status(member, result)
            else:
                member.plan = member.work = None
                shards.append((member, result))
        return shards

    def _ping(self) -> None:
        now = time.monotonic()
        for m in self.members:
            if m.ping is None and now - m.pinged >= self.PING_EVERY_S:
                m.ping, m.pinged = m.actor.status.remote(), now

    def _record_status(self, member: _Member, status: tuple[int, int, str, str | None]) -> None:
        member.ping = None
        frames, episodes, node, error = status
        if error is not None:
            raise ConfigError(f"collector {member.name} on node {node[:12]} cannot collect: {error}")
        member.counts, member.node, member.ready = (frames, episodes), node, True

    def _lost(self, member: _Member, err: Exception, queue: "deque[ShardPlan]") -> None:
        if getattr(err, "actor_init_failed", False):
            raise ConfigError(f"collector {member.name} could not start: {err}")
        if isinstance(err, self.ray.exceptions.ActorDiedError):
            self.drop(member, f"died {self.MAX_RESTARTS + 1} times; Ray restarts it no more", queue)
        else:
            self.drop(member, f"is unreachable ({type(err).__name__})", queue)

    def replace_stranded(self, queue: "deque[ShardPlan]") -> None:
        """Replace collectors that ask for a resource no node offers now or can ever offer (checked every few
        seconds): without an autoscaler, a lost collector node leaves its actors' restarts pending for good."""
        now = time.monotonic()
        if now - self.last_check < self.PLACEMENT_CHECK_EVERY_S:
            return
        self.last_check = now
        most = Capacity(running=dict(self.ray.cluster_resources()), node_types=self.types).most()
        for member in [m for m in self.members if any(most.get(k, 0.0) < v for k, v in m.placement.resources)]:
            self.drop(member, f"waits for {member.placement.describe()}, which no node offers any more", queue)

    def drop(self, member: _Member, why: str, queue: "deque[ShardPlan]") -> None:
        """Stop a collector, give its shard back to the queue, start a replacement."""
        self.ray.kill(member.actor, no_restart=True)
        self.members.remove(member)
        if member.plan is not None:
            queue.appendleft(member.plan)
        replacement = self.spawn() if queue else None
        print(f"note: collector {member.name} {why}"
              + (f"; shard {member.plan.index} goes back to the queue" if member.plan is not None else "")
              + (f"; a replacement asks for {replacement.placement.describe()}" if replacement else ""), flush=True)

    def stop(self) -> None:
        """Stop every collector; their resources return to Ray within seconds."""
        for member in self.members:
            self.ray.kill(member.actor, no_restart=True)

    def frames_and_episodes(self) -> tuple[int, int]:
        """What the current actors counted since they started (a restarted or replaced actor's counts are gone)."""
        return sum(m.counts[0] for m in self.members), sum(m.counts[1] for m in self.members)


class _Waiting:
    """What the user sees while collectors wait for resources: notes, and the start timeout.

    The timeout counts from the last answer of any collector, so it fires only when none runs for that long,
    not while the autoscaler launches nodes within it or while a lost node's collectors restart elsewhere."""

    REPORT_EVERY_S = 30.0
    PARTIAL_NOTE_AFTER_S = 10.0

    def __init__(self, ray, config: CollectConfig, pool: _CollectorPool) -> None:
        self.ray, self.config, self.pool = ray, config, pool
        self.start = self.last_report = time.monotonic()
        self.noted_partial = False

    def check(self) -> None:
        now = time.monotonic()
        if now - self.pool.last_answer > self.config.start_timeout_s:
            raise ConfigError(
                f"no collector could start for {self.config.start_timeout_s:g}s: each asks for {self._asks()} and the "
                f"cluster has {self._resources()}{self._autoscaler()}; free the cluster, lower --cpus-per-worker, "
                f"or add nodes")
        members = self.pool.members
        waiting = sum(not m.ready for m in members)
        if not waiting:
            return
        if waiting < len(members) and not self.noted_partial and now - self.start > self.PARTIAL_NOTE_AFTER_S:
            self.noted_partial = True
            print(f"note: {waiting} of {len(members)} collectors are waiting for free resources "
                  f"({self._asks()} each); the others do the work", flush=True)
        elif waiting == len(members) and now - self.last_report >= self.REPORT_EVERY_S:
            self.last_report = now
            print(f"note: waiting {now - self.start:.0f} s for collectors to start: each asks for {self._asks()} and "
                  f"the cluster has {self._resources()}{self._autoscaler()}", flush=True)

    def _asks(self) -> str:
        return self.pool.members[0].placement.describe() if self.pool.members else "?"

    def _resources(self) -> str:
        return f"{_describe(self.ray.available_resources())} free of {_describe(self.ray.cluster_resources())}"

    def _autoscaler(self) -> str:
        if self.pool.types is None:
            return " (no autoscaler)"
        return f" (autoscaler: {pending_summary()})"


def _cleanup_temp_files(config: CollectConfig, out_dir: Path | None, remote: RemoteFolder | None) -> None:
    """Remove temp files left by collectors that crashed and were restarted during this run."""
    if remote is not None:
        for name in remote.names():
            if name.startswith(f".{config.collection}-") and is_temp_file(name):
                remote.remove(name)
        return
    for path in out_dir.glob(f".{config.collection}-*"):
        if is_temp_file(path.name):
            path.unlink(missing_ok=True)


def collect_dataset(config: CollectConfig, out_dir: str | Path, show_progress: bool = True,
                    verify: bool = False) -> Manifest:
    """Collect (or complete) a dataset with up to `config.workers` Ray actors. Ray must be initialised.

    `out_dir`: a local folder or a storage URI (s3://..., file://...). For a URI the returned
    manifest's `root` is a staging folder that no longer exists; its content is what was uploaded.
    Listed shards of this collection that are missing or of the wrong size (`verify`: or checksum)
    are made again. Refused with `FolderInUse` while another process writes into `out_dir`.
    """
    with folder_lock(out_dir, "genie collect"):
        return _collect_holding_lock(config, out_dir, show_progress, verify)


def _collect_holding_lock(config: CollectConfig, out_dir: str | Path, show_progress: bool, verify: bool) -> Manifest:
    import ray

    remote = RemoteFolder(str(out_dir)) if is_uri(out_dir) else None
    staging = Path(tempfile.mkdtemp(prefix="genie-manifest-")) if remote is not None else None
    try:
        if remote is not None:
            manifest, plans = prepare_remote_dataset(config, remote, staging, verify)
            target = remote.uri

            def save() -> None:
                remote.download_manifest(staging)  # what is there now, for the merge in save()
                manifest.save()
                remote.upload_manifest(staging)
        else:
            out_dir = Path(out_dir)
            manifest, plans = prepare_dataset(config, out_dir, verify)
            target, save = str(out_dir.resolve()), manifest.save
        if plans:
            _run_collectors(ray, config, target, manifest, save, plans, show_progress,
                            None if remote is not None else out_dir)
            _cleanup_temp_files(config, None if remote else out_dir, remote)
        return manifest
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def repair_dataset(location: str | Path, checkpoint: str | None = None, workers: int = 2,
                   show_progress: bool = True) -> dict[str, list[str]]:
    """`genie data repair`: every listed shard is checked (existence, size, checksum) and the missing or damaged
    ones are made again from their collection's recorded settings (shards are deterministic: byte for byte).
    PPO collections with damage need `checkpoint` (the same policy: its weights' hash is checked).
    Returns collection -> the shard files made again. Ray must be initialised."""
    with folder_lock(location, "genie data repair"):
        manifest = _load_manifest(location)
        remade: dict[str, list[str]] = {}
        for name, settings in manifest.collections.items():
            settings = dict(settings)
            episodes = sum(len(s.episodes) for s in manifest.shards_of(name))
            if not episodes:
                continue
            if settings["agent"] == "ppo" and checkpoint is None:
                bad = _check_anywhere(manifest, name, location)
                if bad:
                    raise ConfigError(
                        f"{location}: {len(bad)} shard(s) of {name} ({bad[0][0].file}: {bad[0][1]}) were played by the "
                        f"PPO agent {settings.get('checkpoint_id')}: pass --checkpoint (the run folder that made them)")
                continue
            if settings["agent"] == "ppo":
                settings.pop("checkpoint_id")  # computed from --checkpoint and compared with the recorded one
            config = CollectConfig(**settings, episodes=episodes, workers=workers,
                                   checkpoint=checkpoint if settings["agent"] == "ppo" else None)
            result = _collect_holding_lock(config, location, show_progress, verify=True)
            remade[name] = sorted(result.dropped)
        return remade


def _load_manifest(location: str | Path) -> Manifest:
    if not is_uri(location):
        return Manifest.load(location)
    with tempfile.TemporaryDirectory(prefix="genie-manifest-") as staging:
        remote = RemoteFolder(str(location))
        if not remote.download_manifest(Path(staging)):
            raise DatasetError(f"{location}: no manifest.json; not a genie-redux dataset")
        return Manifest.load(staging)


def _check_anywhere(manifest: Manifest, collection: str, location: str | Path) -> list[tuple[ShardInfo, str]]:
    """`check_listed_shards` with checksums, for a local folder or a URI."""
    if not is_uri(location):
        root = Path(location)
        return check_listed_shards(manifest, collection, _local_size(root), lambda name: file_sha256(root / name))
    remote = RemoteFolder(str(location))
    with tempfile.TemporaryDirectory(prefix="genie-check-") as staging:
        def sha(name: str) -> str:
            local = remote.download(name, Path(staging))
            try:
                return file_sha256(local)
            finally:
                local.unlink()  # one shard on local disk at a time
        return check_listed_shards(manifest, collection, remote.size, sha)


def _run_collectors(ray, config: CollectConfig, target: str, manifest: Manifest, save: Callable[[], None],
                    plans: list[ShardPlan], show_progress: bool, local_dir: Path | None = None) -> None:
    from tqdm import tqdm

    queue = deque(plans)
    pool = _CollectorPool(ray, config, target)
    total = sum(p.episodes for p in plans)
    bar = tqdm(total=total, unit="ep", desc=f"collect {config.collection}", disable=not show_progress, dynamic_ncols=True)
    done_frames, done_episodes = 0, 0
    start = time.monotonic()
    try:
        pool.start(min(config.workers, len(plans)))
        waiting = _Waiting(ray, config, pool)
        while queue or pool.busy():
            for member, shard in pool.finished_shards(queue):
                _check_visible(shard, member, local_dir)
                manifest.add_shard(shard)
                save()
                done_frames += shard.rows
                done_episodes += len(shard.episodes)
            pool.replace_stranded(queue)
            pool.assign(queue)
            waiting.check()
            frames, episodes = pool.frames_and_episodes()
            elapsed = max(time.monotonic() - start, 1e-9)
            bar.n = min(total, max(bar.n, done_episodes, episodes))
            bar.set_postfix(frames_s=f"{max(done_frames, frames) / elapsed:,.0f}", ep_s=f"{bar.n / elapsed:.1f}",
                            refresh=False)
            bar.refresh()
    finally:
        bar.close()
        pool.stop()


def _check_visible(shard: ShardInfo, member: _Member, local_dir: Path | None) -> None:
    """A local --out must be a folder the collectors' nodes share with the driver."""
    if local_dir is not None and not (local_dir / shard.file).is_file():
        raise DatasetError(
            f"collector {member.name} on node {member.node} wrote {shard.file} to its own disk, which this driver "
            f"does not see: on a multi-node cluster give --out a storage URI (s3://...) or a folder that every node "
            f"mounts")


def _describe(resources: dict[str, float]) -> str:
    keys = [k for k in ("CPU", "GPU", COLLECTOR_RESOURCE) if k in resources] or ["CPU"]
    return ", ".join(f"{k}={resources.get(k, 0):g}" for k in keys)
