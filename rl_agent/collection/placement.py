"""Where collector actors run: the Ray resources one asks for, chosen from the cluster's collector nodes.

Kept apart from the actor and the pool because the cluster side (`cluster.placement`) reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rl_agent.capacity import NodeType, node_types

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
