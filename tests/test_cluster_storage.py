"""Collection into a storage URI (file:// here; s3:// on a cluster) and placement decisions, on the
session's local Ray instance."""

from __future__ import annotations

import json

import pytest

from cluster.placement import use_gpu
from genie_common.storage import RemoteFolder
from rl_agent.capacity import NodeType
from rl_agent.coinrun_env import ConfigError
from rl_agent.collection import COLLECTOR_RESOURCE, Placement, collect_dataset, collector_placement
from rl_agent.store.errors import DatasetError
from rl_agent.store.manifest import Manifest
from rl_agent.store.verify import verify_dataset
from tests.conftest import batches_by_id, batches_equal, small_config


def test_collection_into_a_uri_equals_the_local_one_and_resumes_after_a_crash(ray_cluster, small_dataset, tmp_path):
    target = tmp_path / "shared" / "data"
    uri = f"file://{target}"
    collect_dataset(small_config(), uri, show_progress=False)
    reference, remote = batches_by_id(small_dataset), batches_by_id(target)
    assert reference.keys() == remote.keys() and all(batches_equal(reference[k], remote[k]) for k in reference)
    assert verify_dataset(target).episodes == 10
    assert not [p.name for p in target.iterdir() if p.name.startswith(".")], "temp files left behind"

    # what a crash leaves: a shard uploaded but never listed, and a half-uploaded temp file
    manifest = json.loads((target / "manifest.json").read_text())
    orphan = manifest["shards"].pop()["file"]
    (target / "manifest.json").write_text(json.dumps(manifest))
    (target / f".{orphan}.tmp-deadbeef").write_bytes(b"half an upload")
    collect_dataset(small_config(), uri, show_progress=False)
    assert orphan in {s.file for s in Manifest.load(target).shards}, "the orphan shard was not adopted"
    assert not (target / f".{orphan}.tmp-deadbeef").exists()
    assert batches_by_id(target).keys() == reference.keys()
    assert verify_dataset(target).episodes == 10

    # extending through the URI collects only the missing episodes
    collect_dataset(small_config(episodes=14), uri, show_progress=False)
    assert verify_dataset(target).episodes == 14


def test_other_settings_into_the_same_uri_are_refused(ray_cluster, tmp_path):
    uri = f"file://{tmp_path / 'data'}"
    collect_dataset(small_config(episodes=4), uri, show_progress=False)
    with pytest.raises(ConfigError, match="different settings"):
        collect_dataset(small_config(episodes=4, sticky_prob=0.5), uri, show_progress=False)


def test_a_location_pyarrow_cannot_open_is_a_clear_error():
    with pytest.raises(DatasetError, match="not a storage location"):
        RemoteFolder("nosuchscheme://bucket/data")


def test_placement_follows_what_the_cluster_offers():
    assert collector_placement(1.0, {"CPU": 8.0}) == Placement(1.0)
    on_cluster = collector_placement(0.5, {"CPU": 8.0, COLLECTOR_RESOURCE: 16.0})
    assert on_cluster.options() == {"num_cpus": 0.5, "resources": {COLLECTOR_RESOURCE: 1.0}}
    assert not use_gpu({"CPU": 8.0}) and not use_gpu({"CPU": 8.0, "GPU": 0.5}) and use_gpu({"GPU": 4.0})


def test_placement_asks_for_collector_nodes_the_autoscaler_can_launch():
    """On `ray up cluster.yaml` no collector node may run yet: asking for `collector` is what makes one start."""
    collector = NodeType("collector", {"CPU": 2.0, COLLECTOR_RESOURCE: 2.0}, 2)
    gpu = NodeType("gpu", {"CPU": 2.0, "GPU": 1.0}, 2)
    assert collector_placement(1.0, {"CPU": 0.0}, [gpu, collector]) == Placement(1.0, ((COLLECTOR_RESOURCE, 1.0),))
    assert collector_placement(1.0, {"CPU": 0.0}, [gpu]) == Placement(1.0)  # no collector type: CPUs, wherever
    assert collector_placement(1.0, {"CPU": 4.0}, [NodeType("collector", collector.resources, 0)]) == Placement(1.0)


def test_collectors_no_node_can_hold_are_refused_at_once(ray_cluster, tmp_path):
    with pytest.raises(ConfigError, match=r"each collector asks for \{CPU: 64\}, which no node can ever hold .*"
                                          r"no autoscaler.*: lower --cpus-per-worker"):
        collect_dataset(small_config(episodes=2, cpus_per_worker=64.0), tmp_path / "data", show_progress=False)


def test_placement_reads_the_live_cluster(ray_cluster):
    import ray

    assert collector_placement(1.0) == Placement(1.0)  # the local instance has no collector nodes
    assert use_gpu() == (ray.cluster_resources().get("GPU", 0) >= 1)


def test_a_damaged_manifest_at_a_uri_is_named_by_its_uri(ray_cluster, tmp_path):
    target = tmp_path / "broken"
    target.mkdir()
    (target / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match=f"file://{target}/manifest.json: manifest is not valid JSON"):
        collect_dataset(small_config(episodes=1), f"file://{target}", show_progress=False)
