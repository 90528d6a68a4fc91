"""Where each stage's Ray work runs, decided from what the cluster offers, so the same command fits a
laptop, a static cluster and `ray up cluster.yaml`.

- Collectors ask for the custom resource `collector` when an alive node advertises it (the collector
  node type of cluster.yaml), so they land on cheap CPU machines, never on GPU machines, and queue
  there for the autoscaler; without it (a laptop) they ask for plain CPUs. The rule lives with the
  collectors (`rl_agent.collection.collector_placement`, since `rl_agent` imports nothing from here)
  and is re-exported below.
- Training and sweeps use GPUs when the cluster has any: `use_gpu()`. Call it where the command is
  launched (the CLI) and pass the answer into the training config, so models never ask how they run.

Both read `ray.cluster_resources()` (alive nodes only) when they are called; Ray must be initialised.
"""

from __future__ import annotations

from rl_agent.collection import COLLECTOR_RESOURCE, Placement, collector_placement

__all__ = ["COLLECTOR_RESOURCE", "Placement", "collector_placement", "use_gpu", "gpus_in_cluster"]


def gpus_in_cluster(resources: dict[str, float] | None = None) -> float:
    """GPUs of all alive nodes (0 on a CPU-only machine or cluster)."""
    if resources is None:
        import ray

        resources = ray.cluster_resources()
    return float(resources.get("GPU", 0.0))


def use_gpu(resources: dict[str, float] | None = None) -> bool:
    """True when the cluster has at least one whole GPU, so training workers should ask for one each.

    On an autoscaling cluster whose GPU nodes are all stopped this says False; ask for GPUs
    explicitly there (`genie train --gpus-per-worker 1`), and the autoscaler starts GPU nodes.
    """
    return gpus_in_cluster(resources) >= 1
