"""Parallel episode collection: Ray actors step their own vector envs and write their own shards.

Why shards are planned, not streamed: a shard's content is a pure function of (collection
seed, shard index), whichever actor makes it. So the same seed and config give the same
episode ids, actions and frames for any number of workers, and a killed run is completed
by collecting only the shards that are not yet on disk, and a listed shard that is missing or
damaged is made again byte for byte (`check_listed_shards`, `genie data repair`).

Within a shard, E env slots start episodes in a fixed order and every started episode is
finished; episodes are never chosen by how fast they end (that would favour short ones).

One module per concern; this package re-exports what callers use:
- `config`: what to collect (`CollectConfig`) and which shards are still to make (`plan_shards`);
- `shards`: playing one shard's episodes and writing (or adopting) its file;
- `placement`: the Ray resources one collector asks for;
- `actor`: the collector actor's body (`Collector`);
- `pool`: the driver's scheduling of shards over collector actors, and its waiting notes;
- `dataset`: a dataset folder (local or a URI) made ready for collecting: manifest, temp files, bad and
  orphan shards;
- `driver`: `collect_dataset` and `repair_dataset`, which tie the rest together.
"""

from __future__ import annotations

from rl_agent.collection.config import CollectConfig, ShardPlan, assign_split, plan_shards, shard_file_name

# the rest (Ray, the store) is imported when first used: `genie --help` builds its options from CollectConfig alone
_LAZY = {
    "Collector": "actor", "prepare_dataset": "dataset", "prepare_remote_dataset": "dataset",
    "collect_dataset": "driver", "repair_dataset": "driver", "COLLECTOR_NAME_PREFIX": "placement",
    "COLLECTOR_NAMESPACE": "placement", "COLLECTOR_RESOURCE": "placement", "Placement": "placement",
    "collector_placement": "placement", "adopt_shard": "shards", "collect_shard": "shards", "play_episodes": "shards",
}

__all__ = [
    "COLLECTOR_NAME_PREFIX", "COLLECTOR_NAMESPACE", "COLLECTOR_RESOURCE", "CollectConfig", "Collector", "Placement",
    "ShardPlan", "adopt_shard", "assign_split", "collect_dataset", "collect_shard", "collector_placement",
    "plan_shards", "play_episodes", "prepare_dataset", "prepare_remote_dataset", "repair_dataset", "shard_file_name",
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
