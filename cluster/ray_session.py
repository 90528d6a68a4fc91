"""Start or join Ray the same way for every command (DESIGN §8).

Without `--address` (or `RAY_ADDRESS`) an embedded local Ray instance starts and stops with
the command; with it, the command joins that cluster as a driver.
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
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=True)
    try:
        yield
    finally:
        ray.shutdown()
