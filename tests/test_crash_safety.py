"""Killing a collector or the driver mid-way never leaves a partial shard, and a re-run completes the data."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import ray

from rl_agent.collection import COLLECTOR_NAME_PREFIX, COLLECTOR_NAMESPACE, collect_dataset
from rl_agent.store.lock import LOCK_NAME
from rl_agent.store.verify import check_shard_file, verify_dataset
from rl_agent.store.writer import TEMP_MARKER, is_temp_file
from tests.conftest import batches_by_id, small_config

REPO = Path(__file__).resolve().parents[1]


def _collector_handles():
    names = [a for a in ray.util.list_named_actors(all_namespaces=True) if a["name"].startswith(COLLECTOR_NAME_PREFIX)]
    return [ray.get_actor(a["name"], namespace=COLLECTOR_NAMESPACE) for a in names]


def test_killed_collector_actor_is_restarted_and_the_data_is_whole(ray_cluster, small_dataset, tmp_path):
    out = tmp_path / "actor-kill"
    errors = []
    worker = threading.Thread(
        target=lambda: _capture(errors, collect_dataset, small_config(workers=1), out, show_progress=False))
    worker.start()
    deadline = time.monotonic() + 120
    pid, cut = None, []
    # kill while a shard is being written: the collector is frozen (SIGSTOP) before we look, so it cannot
    # commit between the look and the kill; one that committed just before is let go to its next shard
    while not cut and time.monotonic() < deadline and worker.is_alive():
        handles = _collector_handles() if _temp_shards(out) else []
        if not handles:
            time.sleep(0.02)
            continue
        pid = ray.get(handles[0].pid.remote())
        os.kill(pid, signal.SIGSTOP)
        cut = _temp_shards(out)
        if not cut:
            os.kill(pid, signal.SIGCONT)
    assert cut, f"no shard was ever in flight: {errors}"
    os.kill(pid, signal.SIGKILL)
    for temp in cut:  # the shard in flight was cut: never committed under its name
        assert temp.exists() and not (out / temp.name[1:temp.name.index(TEMP_MARKER)]).exists(), temp.name
    worker.join(timeout=240)
    assert not worker.is_alive() and not errors, errors
    assert verify_dataset(out).episodes == 10
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != LOCK_NAME], "temp files left behind"
    reference, resumed = batches_by_id(small_dataset), batches_by_id(out)
    assert reference.keys() == resumed.keys()
    assert all(reference[k].equals(resumed[k]) for k in reference)


def _whole_shards(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.suffix == ".arrow" and not p.name.startswith(".")]


def _temp_shards(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if is_temp_file(p.name)] if folder.is_dir() else []


def test_killed_driver_leaves_only_whole_shards_and_rerun_completes(ray_cluster, small_dataset, tmp_path):
    out = tmp_path / "driver-kill"
    command = [sys.executable, "-m", "cluster.cli", "collect", "--out", str(out), "--seed", "7", "--episodes", "10",
               "--episodes-per-shard", "4", "--envs-per-worker", "4", "--max-episode-frames", "120",
               "--workers", "1", "--no-progress", "--address", ray_cluster]
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    # only a guard against a hang: on a loaded 2-core machine the driver's first shard took over 120 s to start
    deadline = time.monotonic() + 400
    # kill when a whole shard is on disk and the next one is in flight; the collector is frozen first, so
    # neither it nor the driver can move on between the look and the kill
    pid, cut = None, []
    while not cut and time.monotonic() < deadline and driver.poll() is None:
        handles = _collector_handles() if _whole_shards(out) and _temp_shards(out) else []
        if not handles:
            time.sleep(0.02)
            continue
        pid = ray.get(handles[0].pid.remote())
        os.kill(pid, signal.SIGSTOP)
        cut = _temp_shards(out)
        if not cut:
            os.kill(pid, signal.SIGCONT)
    assert cut, f"no shard was in flight while the driver ran:\n{log.read_text()[-3000:]}"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    with contextlib.suppress(ProcessLookupError):  # a frozen collector might not act on Ray's stop when its driver dies
        os.kill(pid, signal.SIGKILL)
    for temp in cut:
        assert temp.exists() and not (out / temp.name[1:temp.name.index(TEMP_MARKER)]).exists(), temp.name
    visible = _whole_shards(out)
    assert 1 <= len(visible) < 3, f"visible shards after the kill: {sorted(p.name for p in out.iterdir())}"
    for path in visible:
        check_shard_file(path)  # every visible shard is whole
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, f"re-run failed:\n{rerun.stdout[-3000:]}\n{rerun.stderr[-3000:]}"
    assert verify_dataset(out).episodes == 10
    reference, resumed = batches_by_id(small_dataset), batches_by_id(out)
    assert reference.keys() == resumed.keys(), "duplicates or missing episodes after resuming"
    assert all(reference[k].equals(resumed[k]) for k in reference)


def _capture(errors, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as err:  # noqa: BLE001 - reported by the test
        errors.append(err)


def test_a_shard_that_crashes_every_collector_ends_the_collection_and_keeps_the_others(ray_cluster, tmp_path,
                                                                                       monkeypatch):
    """A shard whose making kills its process (a seed that crashes the game, a node too small for it) was handed
    to replacement after replacement for ever; now the collection ends after MAX_SHARD_DEATHS collectors died on
    it, says which shard and what to do, and the shards made meanwhile stay listed for a resume."""
    from genie_common.errors import ConfigError
    from rl_agent.collection.actor import Collector
    from rl_agent.collection.pool import CollectorPool
    from rl_agent.store.manifest import Manifest

    class CrashesOnShardOne(Collector):  # a class of this test: Ray ships it by value to the worker
        def collect(self, plan):
            if plan.index == 1:
                os._exit(3)  # the process dies as a segfault or the OOM killer would end it
            return super().collect(plan)

    monkeypatch.setattr(CollectorPool, "actor_class", CrashesOnShardOne)
    monkeypatch.setattr(CollectorPool, "MAX_RESTARTS", 0)  # each death is final: the test needs no restart waits
    out = tmp_path / "crashing-shard"
    try:
        collect_dataset(small_config(workers=1), out, show_progress=False)
    except ConfigError as err:
        message = str(err)
    else:
        raise AssertionError("the collection ended normally although shard 1 crashes every collector")
    assert "shard 1 of" in message and f"ended {CollectorPool.MAX_SHARD_DEATHS} collectors" in message, message
    assert "the same command collects the rest" in message, message
    listed = {shard.index for shard in Manifest.load(out).shards}
    assert listed == {0}, f"one collector makes the shards in order: 0 is made, 1 crashes, 2 waits; listed {listed}"
    assert not _collector_handles(), "collectors left running after the collection ended"
