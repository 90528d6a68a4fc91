"""`genie`'s local Ray instance serves the State API (its dashboard), which Ray Train's placement-group
cleaner polls for every training run; without it the cleaner floods the output and never exits."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import ray
from ray.util.state import list_actors
from cluster.ray_session import ray_session

@ray.remote
def actors_seen_from_a_worker():
    return len(list_actors())  # no address: what Ray Train's placement-group cleaner does

with ray_session(num_cpus=1):
    url = ray._private.worker.get_dashboard_url()
    print("dashboard:", len(list_actors(address=f"http://{url}")))
    print("driver:", len(list_actors()), "worker:", ray.get(actors_seen_from_a_worker.remote()))
"""


def test_a_local_session_serves_its_own_state_api_beside_another_ray_instance(ray_cluster):
    """The State API answers at the dashboard's address, and without an address too, from the driver and from
    a worker, while another local Ray instance runs (the test session's). Before, a second local instance's
    processes failed with "Found multiple active Ray instances", so Ray Train's cleaner of a `genie train` run
    beside another command could not work."""
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "RAY_ADDRESS": ""})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "dashboard:" in run.stdout and "driver:" in run.stdout and "worker:" in run.stdout
