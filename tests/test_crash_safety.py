"""Killing a collector or the driver mid-way never leaves a partial shard, and a re-run completes the data."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import ray

from rl_agent.collection import COLLECTOR_NAME_PREFIX, COLLECTOR_NAMESPACE, collect_dataset
from rl_agent.store.verify import check_shard_file, verify_dataset
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
    deadline = time.monotonic() + 60
    handles = []
    while not handles and time.monotonic() < deadline:
        handles = _collector_handles()
        time.sleep(0.2)
    assert handles, "collector actor never appeared"
    pid = ray.get(handles[0].pid.remote())
    time.sleep(1.0)  # let it get into a shard
    os.kill(pid, signal.SIGKILL)
    worker.join(timeout=240)
    assert not worker.is_alive() and not errors, errors
    assert verify_dataset(out).episodes == 10
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left behind"
    reference, resumed = batches_by_id(small_dataset), batches_by_id(out)
    assert reference.keys() == resumed.keys()
    assert all(reference[k].equals(resumed[k]) for k in reference)


def test_killed_driver_leaves_only_whole_shards_and_rerun_completes(ray_cluster, small_dataset, tmp_path):
    out = tmp_path / "driver-kill"
    command = [sys.executable, "-m", "cluster.cli", "collect", "--out", str(out), "--seed", "7", "--episodes", "10",
               "--episodes-per-shard", "4", "--envs-per-worker", "4", "--max-episode-frames", "120",
               "--workers", "1", "--no-progress", "--address", ray_cluster]
    log = tmp_path / "driver.log"
    driver = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.monotonic() + 120
    # kill as soon as the first whole shard is on disk: waiting for the driver to also list it in the manifest
    # gave a loaded machine's collector time to finish every shard first (then nothing was interrupted)
    while time.monotonic() < deadline and driver.poll() is None:
        if out.is_dir() and any(p.suffix == ".arrow" and not p.name.startswith(".") for p in out.iterdir()):
            break
        time.sleep(0.05)
    assert driver.poll() is None, f"the collection ended before it could be interrupted:\n{log.read_text()[-3000:]}"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    visible = [p for p in out.iterdir() if p.suffix == ".arrow" and not p.name.startswith(".")]
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
