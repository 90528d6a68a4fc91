"""Start or join Ray the same way for every command (DESIGN §8).

Without `--address` (or `RAY_ADDRESS`) an embedded local Ray instance starts and stops with
the command; with it, the command joins that cluster as a driver.

The local instance runs Ray's dashboard (~1 s more to start; `include_dashboard=None` starts it
since ray[default] is installed, and a dashboard that fails to start does not fail the command):
besides showing the run at the printed address, it serves the State API that Ray Train's PlacementGroupCleaner polls for every
training run. Without it the cleaner never learns that its run ended, so it neither frees a crashed
run's workers nor exits, and it printed "Failed to query Ray Train Controller actor state" about
twice a second for the whole run (517 of the tiny study's 687 log lines).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        yield
        return
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=None, log_to_driver=True)
    try:
        yield
    finally:
        ray.shutdown()
