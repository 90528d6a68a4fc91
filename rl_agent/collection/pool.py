"""The driver's side of the collector actors: which actor makes which shard, what happens when one fails or
waits for resources, and what the user is told meanwhile."""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any

from genie_common.errors import ConfigError
from rl_agent.capacity import Capacity, NodeType, cluster_capacity, format_resources, pending_summary
from rl_agent.collection.actor import Collector
from rl_agent.collection.config import CollectConfig, ShardPlan
from rl_agent.collection.placement import (COLLECTOR_NAME_PREFIX, COLLECTOR_NAMESPACE, COLLECTOR_RESOURCE, Placement,
                                           collector_placement)
from rl_agent.store.manifest import ShardInfo


@dataclass
class Member:
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


class CollectorPool:
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
      nodes were lost) would wait forever: it is replaced by one asking for what the cluster offers now;
    - a shard whose collectors die every time they make it (a crash that its seeds cause, or a node too small for
      it) would be replaced and retried forever: after `MAX_SHARD_DEATHS` collectors have died on it, the
      collection ends with what happened (the shards made so far stay listed; the same command resumes).
    Shards are deterministic, so a shard collected twice is the same file, and only the driver lists it in the
    manifest, once.
    """

    PING_EVERY_S = 1.0  # status calls: readiness, progress counts, and a policy that did not load
    PLACEMENT_CHECK_EVERY_S = 2.0
    MAX_RESTARTS = 3  # per actor; each lost node costs one
    MAX_SHARD_DEATHS = 2  # collectors that may die (each after its MAX_RESTARTS) on one shard before giving up
    actor_class: Any = Collector  # what spawn() starts (tests start a collector that crashes on purpose)

    def __init__(self, ray, config: CollectConfig, target: str) -> None:
        self.ray, self.config, self.target = ray, config, target
        self.run_id = uuid.uuid4().hex[:8]
        self.spawned = 0
        self.members: list[Member] = []
        self.types: list[NodeType] | None = None  # the autoscaler's node types, read once in start()
        self.last_answer = time.monotonic()  # when a collector last answered: the start timeout counts from it
        self.last_check = 0.0  # of replace_stranded
        self.shard_deaths: dict[int, int] = {}  # shard index -> collectors that died while making it

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

    def spawn(self) -> Member:
        placement = self.placement()
        name = f"{COLLECTOR_NAME_PREFIX}{self.config.collection}-{self.run_id}-{self.spawned}"
        self.spawned += 1
        actor = (self.ray.remote(self.actor_class)
                 .options(**placement.options(), max_concurrency=2, max_restarts=self.MAX_RESTARTS,
                          max_task_retries=-1, name=name, namespace=COLLECTOR_NAMESPACE)  # -1: while it restarts
                 .remote(self.config, self.target))
        member = Member(actor, name, placement)
        self.members.append(member)
        return member

    def busy(self) -> bool:
        return any(m.plan is not None for m in self.members)

    def assign(self, queue: "deque[ShardPlan]") -> None:
        for member in self.members:
            if member.ready and member.plan is None and queue:
                member.plan = queue.popleft()
                member.work = member.actor.collect.remote(member.plan)

    def finished_shards(self, queue: "deque[ShardPlan]", timeout: float = 0.5) -> list[tuple[Member, ShardInfo]]:
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

    def _record_status(self, member: Member, status: tuple[int, int, str, str | None]) -> None:
        member.ping = None
        frames, episodes, node, error = status
        if error is not None:
            raise ConfigError(f"collector {member.name} on node {node[:12]} cannot collect: {error}")
        member.counts, member.node, member.ready = (frames, episodes), node, True

    def _lost(self, member: Member, err: Exception, queue: "deque[ShardPlan]") -> None:
        if getattr(err, "actor_init_failed", False):
            raise ConfigError(f"collector {member.name} could not start: {err}")
        if isinstance(err, self.ray.exceptions.ActorDiedError):
            if member.plan is not None:
                self._count_death(member, err)
            self.drop(member, f"died {self.MAX_RESTARTS + 1} times; Ray restarts it no more", queue)
        else:
            self.drop(member, f"is unreachable ({type(err).__name__})", queue)

    def _count_death(self, member: Member, err: Exception) -> None:
        """One more collector died making `member.plan`; end the collection when that shard has had its last."""
        index = member.plan.index
        self.shard_deaths[index] = deaths = self.shard_deaths.get(index, 0) + 1
        if deaths >= self.MAX_SHARD_DEATHS:  # the driver's pool.stop() then kills every collector
            last = str(err).strip().splitlines()
            raise ConfigError(
                f"shard {index} of {self.config.collection} ended {deaths} collectors, each after "
                f"{self.MAX_RESTARTS + 1} tries ({last[0] if last else type(err).__name__}): it crashes every process "
                f"that makes it. Look for the cause in the collectors' logs (`ray logs` or /tmp/ray/session_latest/"
                f"logs; out of memory: raise --cpus-per-worker or use larger nodes); the shards made so far are kept, "
                f"and the same command collects the rest")

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

    def drop(self, member: Member, why: str, queue: "deque[ShardPlan]") -> None:
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


class Waiting:
    """What the user sees while collectors wait for resources: notes, and the start timeout.

    The timeout counts from the last answer of any collector, so it fires only when none runs for that long,
    not while the autoscaler launches nodes within it or while a lost node's collectors restart elsewhere."""

    REPORT_EVERY_S = 30.0
    PARTIAL_NOTE_AFTER_S = 10.0

    def __init__(self, ray, config: CollectConfig, pool: CollectorPool) -> None:
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


def _describe(resources: dict[str, float]) -> str:
    keys = [k for k in ("CPU", "GPU", COLLECTOR_RESOURCE) if k in resources] or ["CPU"]
    return ", ".join(f"{k}={resources.get(k, 0):g}" for k in keys)
