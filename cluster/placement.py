"""Where each command's Ray work runs, decided from what the cluster offers, so the same command fits a
laptop, a static cluster and `ray up cluster.yaml`.

- Collectors ask for the custom resource `collector` when a running node or a node type of the
  autoscaler advertises it (the collector type of cluster.yaml, at min_workers 0), so they land on
  cheap CPU machines, never on GPU machines, and their pending requests make the autoscaler launch
  collector nodes; without it (a laptop) they ask for plain CPUs. The rule lives with the collectors
  (`rl_agent.collection.collector_placement`, since `rl_agent` imports nothing from here) and is
  re-exported below.
- Training and sweeps use GPUs when the cluster has any or its autoscaler can start some: `use_gpu()`.
  Call it where the command is launched (the CLI) and pass the answer into the training config, so models
  never ask how they run.
- What is asked for is checked by `ensure_resources` (rl_agent/capacity.py, re-exported): refused when no
  node type can ever hold it, else requested from the autoscaler and waited for, printing what is pending.

Ray must be initialised.
"""

from __future__ import annotations

from rl_agent.capacity import cluster_capacity, ensure_resources
from rl_agent.collection import COLLECTOR_RESOURCE, Placement, collector_placement

__all__ = ["COLLECTOR_RESOURCE", "Placement", "collector_placement", "use_gpu", "gpus_in_cluster", "cluster_capacity",
           "ensure_resources"]


def gpus_in_cluster(resources: dict[str, float] | None = None) -> float:
    """GPUs of all alive nodes plus those the autoscaler can start (0 on a CPU-only machine or cluster)."""
    if resources is None:
        resources = cluster_capacity().most()
    return float(resources.get("GPU", 0.0))


def use_gpu(resources: dict[str, float] | None = None) -> bool:
    """True when the cluster has, or its autoscaler can start, at least one whole GPU, so training workers
    should ask for one each (on `ray up cluster.yaml` the GPU type is at min_workers 0: asking starts it)."""
    return gpus_in_cluster(resources) >= 1
