"""Shared fixtures: one real local Ray instance per test session and small real datasets."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

warnings.filterwarnings("ignore", message=".*Gym has been unmaintained.*")

# OpenMP threads sleep rather than spin while they wait (set before torch loads; Ray's workers and the `genie`
# subprocesses inherit it). Two pytest workers on 2 cores run torch in several processes at once, and spinning
# threads took the cores from the ones with work: the two-worker step-equality test beside the dynamics learning test
# took 313 s (239 s + 74 s setup) against 145 s with sleeping threads, the learning test 284 s against 278 s
# (2026-12-02); in the whole suite that test had taken 340 s.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


# The longest test files first (their total time on a 2-core machine, longest first): pytest-xdist hands out
# whole files in collection order (given --no-loadscope-reorder, as scripts/test.sh does), so starting with the long
# ones keeps both workers busy to the end instead of leaving one to finish test_training.py alone.
# A file not listed keeps its place after these.
LONGEST_FILES = ("test_training.py", "test_world_model_learning.py", "test_tuning.py", "test_pipeline.py",
                 "test_cluster_jobs.py", "test_token_cache.py", "test_agent.py", "test_crash_safety.py",
                 "test_play_server.py", "test_evaluation.py", "test_ppo_learner.py")


# Fixtures that start Ray or a Ray cluster (directly or through the fixtures they use): a test that uses one is an
# integration test. So are the tests of these files, which start Ray, clusters or whole `genie` commands themselves.
RAY_FIXTURES = {"ray_cluster", "autoscaling_cluster", "cluster"}
INTEGRATION_FILES = {"test_cluster_jobs.py", "test_autoscaling.py", "test_pipeline.py", "test_tuning.py",
                     "test_play_server.py", "test_data_faults.py", "test_cli_help.py", "test_bad_input.py"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: starts Ray, a cluster or a whole `genie` command (minutes); "
                                       "`pytest -m 'not integration'` runs the unit tests alone")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept
    for item in items:
        if item.path.name in INTEGRATION_FILES or RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    os.environ["GENIE_CACHE_DIR"] = str(tmp_path_factory.mktemp("decoded-cache"))


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray instance (4 logical CPUs on 2 cores, so collectors never starve the driver), with its
    dashboard, as `genie` starts one (cluster/ray_session.py): Ray Train's placement-group cleaner needs it."""
    import ray

    ray.init(num_cpus=4, include_dashboard=None, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def batches_by_id(root) -> dict:
    """episode id -> record batch, for every episode of a dataset folder."""
    from rl_agent.store.manifest import Manifest
    from rl_agent.store.writer import read_shard_batches

    manifest = Manifest.load(root)
    return {b.column("episode_id")[0].as_py(): b
            for s in manifest.shards for b in read_shard_batches(manifest.root / s.file)}


def batches_equal(a, b) -> bool:
    """Record batches equal column by column, NaN equal to NaN (Arrow's `equals` says NaN != NaN)."""
    import numpy as np
    import pyarrow as pa

    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.columns, b.columns):
        if pa.types.is_floating(x.type):
            if not np.array_equal(x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False), equal_nan=True):
                return False
        elif not x.equals(y):
            return False
    return True


def small_config(**overrides):
    from rl_agent.coinrun_env import CoinRunConfig
    from rl_agent.collection import CollectConfig

    env = CoinRunConfig(max_episode_frames=overrides.pop("max_episode_frames", 120))
    values = dict(agent="random", episodes=10, seed=7, episodes_per_shard=4, envs_per_shard=4, workers=2, env=env)
    values.update(overrides)
    return CollectConfig(**values)


@pytest.fixture(scope="session")
def small_dataset(ray_cluster, tmp_path_factory) -> Path:
    """10 random-agent episodes in 3 shards (cap 120 frames, so both episode ends occur)."""
    from rl_agent.collection import collect_dataset

    out = tmp_path_factory.mktemp("small") / "data"
    collect_dataset(small_config(), out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def train_data(ray_cluster, tmp_path_factory) -> Path:
    """24 real random-agent episodes (cap 100 frames), a fifth of them in the 'val' split (training, sweeps)."""
    from rl_agent.collection import collect_dataset

    out = tmp_path_factory.mktemp("train-data") / "random"
    collect_dataset(small_config(episodes=24, seed=11, max_episode_frames=100, val_fraction=0.2, test_fraction=0.0),
                    out, show_progress=False)
    return out


@pytest.fixture(scope="session")
def sticky_dataset(ray_cluster, tmp_path_factory) -> Path:
    """30 random-agent episodes with sticky actions (p=0.9): keys held for ~10 steps, as a player holds them,
    so actions visibly move the agent (uniform random actions barely do: they cancel out)."""
    from rl_agent.collection import collect_dataset

    out = tmp_path_factory.mktemp("sticky") / "data"
    collect_dataset(small_config(sticky_prob=0.9, episodes=30, episodes_per_shard=10), out, show_progress=False)
    return out


def _cpu_ticks() -> dict[int, tuple[int, str]]:
    """pid -> (user + system clock ticks, command line) of every process we can read."""
    ticks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
        except OSError:
            continue
        ticks[int(entry.name)] = (int(fields[11]) + int(fields[12]), command)
    return ticks


@pytest.fixture(scope="module", autouse=True)
def _leftover_cpu_report(request):
    """With GENIE_LEFTOVER_LOG=FILE: after each test module, the processes still busy (>20% of a core over 2 s),
    so a test that leaves work running (and slows every later test) can be named."""
    yield
    log = os.environ.get("GENIE_LEFTOVER_LOG")
    if not log:
        return
    import time

    before = _cpu_ticks()
    time.sleep(2.0)
    after = _cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = [(100 * (t - before[pid][0]) / hz / 2.0, pid, command) for pid, (t, command) in after.items()
            if pid in before and pid != os.getpid() and t - before[pid][0] > 0.4 * hz]
    with open(log, "a") as handle:
        handle.write(f"after {request.module.__name__}: {len(busy)} busy\n")
        for share, pid, command in sorted(busy, reverse=True):
            handle.write(f"  {share:5.0f}% {pid} {command}\n")
