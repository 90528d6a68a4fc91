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

with ray_session(num_cpus=1):
    url = ray._private.worker.get_dashboard_url()
    print("actors:", len(list_actors(address=f"http://{url}")))
"""


def test_local_session_serves_the_state_api():
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "RAY_ADDRESS": ""})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "actors:" in run.stdout
