"""What a Ray cluster can ever provide, and waiting for the autoscaler to provide it.

`ray.cluster_resources()` counts running nodes only, so on `ray up cluster.yaml` the GPU type (min_workers 0)
adds nothing until something asks for GPUs. Commands that ask for resources call `ensure_resources` before
they start: it refuses at once what no node can ever hold, and otherwise asks the autoscaler for the bundles
(`ray.autoscaler.sdk.request_resources`) and waits, printing what is pending, until the nodes are up.

The autoscaler's node types are read from the cluster itself:
- the GCS cluster config (`ray._private.state.state.get_cluster_config()`), where the platform reports it
  (KubeRay, autoscaler v2);
- else the config file of the v1 autoscaler (what `ray up` runs): its monitor's pid is in the GCS
  (`__autoscaling_status`), its command line names `--autoscaling-config`, and a zero-CPU task on the head
  reads both there, so this works from a laptop's driver too.
Without an autoscaler (a laptop, a static cluster) the running nodes are all there is.

Lives in `rl_agent` (the lowest floor: training, sweeps and the CLI all import it; cluster/placement.py
re-exports it), and needs `ray.init` done.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

from genie_common.errors import ConfigError

# Node types and pending launches are read from the v1 autoscaler's status record under this GCS key.
AUTOSCALING_STATUS_KEY = "__autoscaling_status"
HEAD_RESOURCE = "node:__internal_head__"
UNLIMITED = 10**9  # max_workers of a node type without a limit (GCS max_count -1)


@dataclass(frozen=True)
class NodeType:
    """One kind of worker node the autoscaler may launch."""

    name: str
    resources: dict[str, float]
    max_workers: int


@dataclass
class Capacity:
    """The running nodes' resources, and the node types an autoscaler may add (None: no autoscaler)."""

    running: dict[str, float]
    nodes: list[dict[str, float]] = field(default_factory=list)  # each alive node's total resources
    node_types: list[NodeType] | None = None

    def fits_one_node(self, bundle: dict[str, float]) -> bool:
        """A bundle lands on one node: some running node or some node type must hold all of it."""
        shapes = self.nodes + [t.resources for t in self.node_types or [] if t.max_workers > 0]
        return any(all(shape.get(k, 0.0) >= v for k, v in bundle.items()) for shape in shapes)

    def most(self) -> dict[str, float]:
        """The most of each resource the cluster can ever have: running nodes plus every launchable node."""
        total = dict(self.running)
        for t in self.node_types or []:
            for key, value in t.resources.items():
                total[key] = total.get(key, 0.0) + value * t.max_workers
        return total

    def describe_types(self) -> str:
        if not self.node_types:
            return "no autoscaler (only the running nodes)"
        return "; ".join(f"{t.name} {format_resources(t.resources)} "
                         f"x{t.max_workers if t.max_workers < UNLIMITED else 'any'}"
                         for t in self.node_types)


def format_resources(resources: dict[str, float]) -> str:
    """{CPU: 4, GPU: 1, collector: 1}: the resources a user asks for, without Ray's node: and memory entries."""
    shown = {k: v for k, v in resources.items() if k in ("CPU", "GPU") or not (k.startswith("node:") or k in
                                                                                  ("memory", "object_store_memory"))}
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(shown.items())) + "}"


def _sum(bundles: list[dict[str, float]]) -> dict[str, float]:
    total: dict[str, float] = {}
    for bundle in bundles:
        for key, value in bundle.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _autoscaling_status() -> dict | None:
    from ray.experimental.internal_kv import _internal_kv_get

    raw = _internal_kv_get(AUTOSCALING_STATUS_KEY)
    return json.loads(raw) if raw else None


def _types_from_gcs() -> list[NodeType] | None:
    import ray._private.state

    config = ray._private.state.state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    return [NodeType(g.name, {k: float(v) for k, v in g.resources.items()},
                     UNLIMITED if g.max_count < 0 else int(g.max_count)) for g in config.node_group_configs]


def _read_monitor_config(pid: int) -> dict | None:
    """On the head: the autoscaling config file named on the monitor's command line (None if unreadable)."""
    import os

    import yaml

    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = [a.decode() for a in f.read().split(b"\0") if a]
    except OSError:
        return None
    path = next((a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")), None)
    if path is None:
        return None
    try:
        with open(os.path.expanduser(path)) as f:
            return yaml.safe_load(f)  # JSON is YAML too
    except OSError:
        return None


def _types_from_monitor() -> list[NodeType] | None:
    import ray

    status = _autoscaling_status()
    if not status or "monitor_pid" not in status:
        return None
    pid = int(status["monitor_pid"])
    here = ray.get_runtime_context().get_node_id()
    if any(n.get("Alive") and n["NodeID"] == here and HEAD_RESOURCE in n["Resources"] for n in ray.nodes()):
        config = _read_monitor_config(pid)  # this driver runs on the head (`genie submit`, `ray up` + ssh)
    else:
        read = ray.remote(num_cpus=0, resources={HEAD_RESOURCE: 0.001}, max_retries=0)(_read_monitor_config)
        try:
            config = ray.get(read.remote(pid), timeout=60)
        except Exception:  # noqa: BLE001 - no head to run on, or a worker that cannot start: as if unknown
            return None
    if not config:
        return None
    head = config.get("head_node_type")
    overall = int(config.get("max_workers", UNLIMITED))
    return [NodeType(name, {k: float(v) for k, v in (spec.get("resources") or {}).items()},
                     min(int(spec.get("max_workers", overall)), overall))
            for name, spec in (config.get("available_node_types") or {}).items() if name != head]


def node_types() -> list[NodeType] | None:
    """The autoscaler's worker node types, or None where no autoscaler runs (a laptop, a static cluster)."""
    return _types_from_gcs() or _types_from_monitor()


def cluster_capacity() -> Capacity:
    """What the cluster has now and what its autoscaler may add."""
    import ray

    nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
    return Capacity(running=dict(ray.cluster_resources()), nodes=nodes, node_types=node_types())


def pending_summary() -> str:
    """What the autoscaler is doing now, in one line (launches pending, nodes starting, launches failed)."""
    status = _autoscaling_status()
    report = (status or {}).get("autoscaler_report") or {}
    parts = []
    if report.get("pending_launches"):
        parts.append("launching " + ", ".join(f"{n} x{c}" for n, c in report["pending_launches"].items()))
    if report.get("pending_nodes"):
        parts.append("starting " + ", ".join(f"{node[1]} ({node[2]})" for node in report["pending_nodes"]))
    if report.get("failed_nodes"):
        parts.append("failed " + ", ".join(str(node[1]) for node in report["failed_nodes"]))
    return "; ".join(parts) or "no launch reported yet"


def ensure_resources(bundles: list[dict[str, float]], what: str, hint: str, *, timeout_s: float | None = None,
                     poll_s: float = 2.0, report_every_s: float = 30.0,
                     log: Callable[[str], None] | None = None) -> Capacity:
    """Refuse `bundles` (one per worker) that no node can ever hold; else ask the autoscaler and wait for them.

    `what` names the request in messages ("2 workers x {GPU: 1, CPU: 4}"), `hint` says what to do when it is
    refused. Returns at once when the running nodes already hold it (Ray queues the work itself then).
    """
    import ray
    from ray.autoscaler.sdk import request_resources

    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    bundles = [{k: float(v) for k, v in b.items() if v} for b in bundles]
    need = _sum(bundles)
    capacity = cluster_capacity()

    def short(resources: dict[str, float]) -> list[str]:
        return [k for k, v in need.items() if resources.get(k, 0.0) < v]

    if not short(capacity.running) and all(capacity.fits_one_node(b) for b in bundles):
        return capacity
    if capacity.node_types is None:
        missing = short(capacity.running) or sorted({k for b in bundles for k in b})
        raise ConfigError(f"{what} need {format_resources(need)}; the Ray cluster has "
                          f"{format_resources(capacity.running)} and no autoscaler to add nodes (short of "
                          f"{', '.join(missing)}): {hint}")
    unplaceable = [b for b in bundles if not capacity.fits_one_node(b)]
    if unplaceable:
        raise ConfigError(f"{what}: no node can ever hold {format_resources(unplaceable[0])} (node types: "
                          f"{capacity.describe_types()}): {hint}")
    if short(capacity.most()):
        raise ConfigError(f"{what} need {format_resources(need)}, more than every node type at its "
                          f"max_workers provides ({format_resources(capacity.most())}; node types: "
                          f"{capacity.describe_types()}): {hint}")
    log(f"{what}: the cluster has {format_resources(capacity.running)}; asking the autoscaler for "
        f"{format_resources(need)} (node types: {capacity.describe_types()})")
    request_resources(bundles=bundles)
    began = last_report = time.monotonic()
    try:
        while short(ray.cluster_resources()):
            now = time.monotonic()
            if timeout_s is not None and now - began > timeout_s:
                raise ConfigError(f"{what}: the autoscaler did not provide {format_resources(need)} within "
                                  f"{timeout_s:g} s ({pending_summary()}); see `ray status` and the autoscaler log "
                                  f"(`ray exec cluster.yaml 'tail -n 100 /tmp/ray/session_latest/logs/monitor.*'`)")
            if now - last_report >= report_every_s:
                log(f"waiting {now - began:.0f} s for {format_resources(need)}: the cluster has "
                    f"{format_resources(ray.cluster_resources())}; {pending_summary()}")
                last_report = now
            time.sleep(poll_s)
    finally:
        request_resources(bundles=[])  # a standing request would keep the nodes up after the run ends
    capacity = cluster_capacity()
    log(f"{what}: the cluster now has {format_resources(capacity.running)} after {time.monotonic() - began:.0f} s")
    return capacity


def gpus_possible() -> float:
    """GPUs the cluster has or its autoscaler can add (0 on a CPU-only machine or cluster)."""
    return float(cluster_capacity().most().get("GPU", 0.0))
