"""Start or join Ray the same way for every command (docs/design.md, 'Conventions').

Without `--address` (or `RAY_ADDRESS`) an embedded local Ray instance starts and stops with
the command; with it, the command joins that cluster as a driver.

The local instance runs Ray's dashboard (`include_dashboard=None` starts it since ray[default] is
installed; one that fails to start does not fail the command): it serves the State API that Ray Train's
PlacementGroupCleaner polls, without which a crashed run's workers are never freed.
"""

from __future__ import annotations

import contextlib
import os
import socket
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
        try:
            yield
        finally:
            ray.shutdown()
        return
    with _restored_env(API_SERVER_VARIABLE):
        port = free_port()
        # Every process of this instance (Ray Train's cleaner included) asks the State API of *this* instance:
        # without an address Ray looks for the one running instance and fails ("Found multiple active Ray
        # instances") when another command or test runs Ray on the same machine. Set before ray.init, so the
        # raylet and every worker it starts inherit it.
        os.environ[API_SERVER_VARIABLE] = f"http://127.0.0.1:{port}"
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=None, dashboard_host="127.0.0.1",
                 dashboard_port=port, log_to_driver=True)
        try:
            yield
        finally:
            ray.shutdown()


API_SERVER_VARIABLE = "RAY_API_SERVER_ADDRESS"


@contextlib.contextmanager
def _restored_env(name: str) -> Iterator[None]:
    """Leave the environment variable `name` as it was found (tests run several sessions in one process)."""
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it), so that several commands, test
    clusters and benchmark process groups can run side by side."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
