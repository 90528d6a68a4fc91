"""Stages as Ray jobs on a real two-node Ray cluster on loopback, started and stopped here.

The cluster: a head (2 CPUs, job server) and a second node that advertises `collector` (as the
collector nodes of cluster.yaml do), each a `ray start --block` process with its own ports and a
private --temp-dir, so it neither sees nor disturbs any other Ray on this machine (the session's
`ray_cluster` fixture included). Shared storage is a folder given as a file:// URI in GENIE_STORAGE,
exported to both nodes like cluster.yaml exports the S3 bucket. The tests talk to the cluster only
through `genie submit` / `genie jobs` (Jobs API) and Ray's state API over HTTP.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cluster.ray_session import free_port
from rl_agent.store.verify import verify_dataset
from tests.conftest import batches_by_id

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# 16 short episodes in 4-episode shards, a fifth for validation (the training test trains on them).
COLLECT = ["collect", "--agent", "random", "--episodes", "16", "--seed", "11", "--max-episode-frames", "100",
           "--val-fraction", "0.2", "--test-fraction", "0", "--episodes-per-shard", "4", "--envs-per-worker", "4",
           "--workers", "2", "--no-progress"]


@dataclass
class LoopbackCluster:
    temp_dir: Path
    shared: Path  # GENIE_STORAGE, as file://
    env: dict[str, str]
    gcs_port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    head: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, args: list[str], log: str) -> subprocess.Popen:
        command = [str(BIN / "ray"), "start", "--block", "--temp-dir", str(self.temp_dir), "--node-ip-address",
                   "127.0.0.1", "--dashboard-agent-listen-port", str(free_port()), "--disable-usage-stats", *args]
        return subprocess.Popen(command, env=self.env, stdout=open(self.temp_dir.parent / log, "a"),
                                stderr=subprocess.STDOUT, start_new_session=True)

    def start_head(self) -> None:
        self.head = self._start(["--head", "--port", str(self.gcs_port), "--dashboard-port", str(self.dashboard_port),
                                 "--include-dashboard=true", "--dashboard-host", "127.0.0.1", "--num-cpus", "2",
                                 "--ray-client-server-port", str(free_port())], "head.log")
        self._wait(lambda: self._job_server_up(), "the head's job server", self.head)

    def start_worker(self) -> None:
        self.worker = self._start(["--address", f"127.0.0.1:{self.gcs_port}", "--num-cpus", "2",
                                   "--resources", json.dumps({"collector": 2})], "worker.log")
        self._wait(lambda: len(self.alive_nodes()) == 2, "the collector node", self.worker)

    def crash_worker(self) -> None:
        """The collector machine vanishes (a spot reclaim, a kernel panic): every process of that node gets
        SIGKILL at once, and the GCS finds out by missed health checks, as on a real cluster. Every process of the
        node's session, not only its process group: the raylet starts each worker (the collectors) in a process
        group of its own, and a collector left running would finish its shards as if nothing had happened."""
        for pid in _session_members(self.worker.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.worker.wait()
        self.worker = None

    def _get(self, path: str):
        """GET a dashboard endpoint as JSON, with the cluster's token (Ray 2.60 checks it)."""
        request = urllib.request.Request(self.address + path,
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def _job_server_up(self) -> bool:
        try:
            return "ray_version" in self._get("/api/version")
        except OSError:  # not listening yet
            return False

    def _wait(self, ready, what: str, process: subprocess.Popen, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            assert process.poll() is None, f"{what} exited: {self.logs()}"
            assert time.monotonic() < deadline, f"{what} not up after {timeout}s: {self.logs()}"
            time.sleep(0.5)

    def _state(self, kind: str, filters: str = "") -> list[dict]:
        """Rows of Ray's state API (what `ray list nodes|actors` shows), over HTTP."""
        return self._get(f"/api/v0/{kind}?limit=1000&detail=1{filters}")["data"]["result"]["result"]

    def alive_nodes(self) -> list[dict]:
        try:
            return [n for n in self._state("nodes") if n["state"] == "ALIVE"]
        except OSError:  # state API not answering yet
            return []

    def collector_node_id(self) -> str:
        return next(n["node_id"] for n in self.alive_nodes() if n["resources_total"].get("collector"))

    def collector_actors(self) -> list[dict]:
        return [a for a in self._state("actors") if a["class_name"] == "Collector"]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.temp_dir.parent.glob("*.log")))

    def genie(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`genie ARGS` from the laptop side (this machine, outside the cluster)."""
        env = {k: v for k, v in self.env.items() if k not in ("GENIE_STORAGE",)}
        return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=timeout)


def _session_members(session: int) -> list[int]:
    """Pids of every live process in a session (what `ray start` and everything it started share)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getsid(int(entry)) == session:
                    members.append(int(entry))
    return members


def _terminate(process: subprocess.Popen | None) -> None:
    """Stop one `ray start --block` and the node processes it owns: SIGTERM, and SIGKILL to its process
    group if it is still shutting down after 15 s (while its leader lives, so the group is surely ours)."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _processes_using(path: Path) -> list[int]:
    """Pids of processes whose command line names our private temp dir (leftovers of our cluster only)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(path) in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def cluster():
    base = Path(tempfile.mkdtemp(prefix="genie-2node-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    shared = base / "shared"
    shared.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    # Ray 2.60 authenticates with a token when RAY_AUTH_MODE=token; this cluster gets its own, and `genie`
    # (started with this environment) sends it, as a laptop does with the cluster's token in RAY_AUTH_TOKEN.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex + uuid.uuid4().hex)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", GENIE_STORAGE=f"file://{shared}", WANDB_MODE="offline",
               GENIE_CACHE_DIR=str(base / "cache"), RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    loopback = LoopbackCluster(base / "ray", shared, env)
    try:
        loopback.start_head()
        loopback.start_worker()
        yield loopback
    finally:
        _terminate(loopback.worker)
        _terminate(loopback.head)
        for pid in _processes_using(loopback.temp_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def submitted_collection(cluster):
    """A collection run as a job, writing to shared storage through a '$GENIE_STORAGE/...' URI."""
    start = time.monotonic()
    result = cluster.genie("submit", *COLLECT, "--out", "$GENIE_STORAGE/data/random", "--address", cluster.address)
    return result, time.monotonic() - start


def test_a_submitted_collection_runs_its_collectors_on_the_collector_node(cluster, submitted_collection):
    result, seconds = submitted_collection
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:] + cluster.logs()
    assert "SUCCEEDED" in result.stdout and "collection random-s11: 16 episodes" in result.stdout, result.stdout
    actors = cluster.collector_actors()
    assert actors, "no collector actors recorded by the state API"
    collector_node = cluster.collector_node_id()
    assert {a["node_id"] for a in actors} == {collector_node}, "collectors ran outside the collector node"
    assert all(a["required_resources"].get("collector") == 1 for a in actors), actors[0]["required_resources"]
    data = cluster.shared / "data" / "random"
    verify = cluster.genie("data", "verify", str(data))
    assert verify.returncode == 0 and "16 episodes" in verify.stdout, verify.stdout + verify.stderr
    assert not [p.name for p in data.iterdir() if p.name.startswith(".")], "temp files left in shared storage"
    listed = cluster.genie("jobs", "list", "--address", cluster.address)
    assert listed.returncode == 0 and "SUCCEEDED" in listed.stdout and "genie collect" in listed.stdout, listed.stdout
    print(f"submitted collection: {seconds:.1f}s end to end")


def test_a_failing_job_exits_with_its_status_and_bad_input_fails_before_submitting(cluster, submitted_collection):
    # same collection name (random-s11), other settings: the command refuses with exit code 2, and so does submit
    existing = cluster.genie("submit", *COLLECT, "--sticky-prob", "0.5", "--out", "$GENIE_STORAGE/data/random",
                             "--address", cluster.address)
    assert existing.returncode == 2, existing.stdout + existing.stderr
    assert "FAILED" in existing.stderr and "different settings" in existing.stdout + existing.stderr
    typo = cluster.genie("submit", "colect", "--out", "x", "--address", cluster.address)
    assert typo.returncode == 2 and "unknown command 'colect'" in typo.stderr
    unparsable = cluster.genie("submit", "collect", "--episodes", "many", "--out", "x", "--address", cluster.address)
    assert unparsable.returncode == 2 and "nothing was submitted" in unparsable.stderr
    gcs = cluster.genie("submit", "collect", "--out", "x", "--address", f"127.0.0.1:{cluster.gcs_port}")
    assert gcs.returncode == 2 and "job server" in gcs.stderr
    unknown = cluster.genie("jobs", "logs", "no-such-job", "--address", cluster.address)
    assert unknown.returncode == 2 and "no-such-job" in unknown.stderr


def test_a_job_from_a_working_dir_can_be_followed_and_stopped(cluster):
    """--working-dir uploads this checkout and runs it (no installed version involved); `genie jobs logs`
    shows its output, `genie jobs stop` ends it, and its collectors end with it."""
    submitted = cluster.genie("submit", "--no-wait", "--working-dir", str(REPO), "--job-id", "genie-stop-me",
                              *COLLECT, "--episodes", "400", "--seed", "99", "--out", "$GENIE_STORAGE/data/stopped",
                              "--address", cluster.address)
    assert submitted.returncode == 0 and "genie-stop-me" in submitted.stdout, submitted.stdout + submitted.stderr
    assert "--expect-version" not in submitted.stdout  # the uploaded code is what runs
    deadline = time.monotonic() + 120
    while not any(a["state"] == "ALIVE" and "-s99-" in (a.get("name") or "") for a in cluster.collector_actors()):
        assert time.monotonic() < deadline, "the job's collectors never started"
        time.sleep(0.5)
    stopped = cluster.genie("jobs", "stop", "genie-stop-me", "--address", cluster.address)
    assert stopped.returncode == 0 and "STOPPED" in stopped.stdout, stopped.stdout + stopped.stderr
    log = cluster.genie("jobs", "logs", "genie-stop-me", "--address", cluster.address).stdout
    # the uploaded copy
    assert re.search(rf"code in {re.escape(str(cluster.temp_dir))}/\S*working_dir", log), log[:3000]
    listed = cluster.genie("jobs", "list", "--address", cluster.address).stdout
    assert any(line.startswith("genie-stop-me") and "STOPPED" in line for line in listed.splitlines()), listed
    deadline = time.monotonic() + 60
    while any(a["state"] != "DEAD" and "-s99-" in (a.get("name") or "") for a in cluster.collector_actors()):
        assert time.monotonic() < deadline, "collectors outlived their stopped job"
        time.sleep(1)


def test_a_submitted_tiny_training_run_checkpoints_into_shared_storage(cluster, submitted_collection):
    if cluster.genie("train", "--help").returncode != 0:
        pytest.skip("genie train is not available")
    assert submitted_collection[0].returncode == 0
    result = cluster.genie("submit", "train", "tokenizer", "--data", "$GENIE_STORAGE/data/random",
                           "--out", "$GENIE_STORAGE/runs/tokenizer", "--preset", "tiny", "--steps", "20",
                           "--workers", "1", "--batch", "2", "--set", "world_model.train.val_windows=4", "--no-wandb",
                           "--no-progress", "--address", cluster.address, timeout=400)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    from world_model.checkpoint import load_checkpoint

    latest = cluster.shared / "runs" / "tokenizer" / "latest.pt"
    assert latest.is_file(), (sorted(p.name for p in latest.parent.iterdir()) if latest.parent.exists()
                              else "no run folder")
    assert load_checkpoint(latest, "tokenizer").step == 20


def committed_shards(folder: Path) -> list[str]:
    """Names of the whole shards in a dataset folder (temporaries start with a dot)."""
    return sorted(p.name for p in folder.glob("*.arrow") if not p.name.startswith(".")) if folder.is_dir() else []


def test_losing_the_collector_node_mid_collection_finishes_on_the_head_without_duplicates(
        cluster, submitted_collection):
    """The job goes on: collectors of the lost node are replaced by collectors asking for plain CPUs, which
    run on the remaining node; every episode is there once, and re-submitting adds nothing."""
    assert submitted_collection[0].returncode == 0
    out = cluster.shared / "data" / "node-loss"
    # 16 one-episode shards of up to 500 frames, one game per collector
    command = [*COLLECT, "--envs-per-worker", "1", "--episodes-per-shard", "1", "--max-episode-frames", "500",
               "--out", "$GENIE_STORAGE/data/node-loss", "--address", cluster.address]
    earlier = {a["actor_id"] for a in cluster.collector_actors()}
    job = subprocess.Popen([sys.executable, "-m", "cluster.cli", "submit", *command], cwd=REPO,
                           env={k: v for k, v in cluster.env.items() if k != "GENIE_STORAGE"},
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lost_node = cluster.collector_node_id()
    # Only the collector node runs collectors (the head has no `collector` resource), so the moment its first shard
    # is committed the other 15 are still to be made there: the node goes then, and replacements must take them
    # over. Watching the folder (not the state API, which answers in seconds) keeps this independent of timing:
    # a shard of up to 500 frames takes far longer than one look at the folder.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and job.poll() is None and not committed_shards(out):
        time.sleep(0.02)
    done = committed_shards(out)
    cluster.crash_worker()
    assert job.poll() is None, f"the collection ended before the node could be stopped:\n{job.communicate()[0][-4000:]}"
    assert 1 <= len(done) < 16, done
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 0, output[-5000:]
    replacements = re.findall(r"a replacement asks for ([^\n;]+)", output)
    assert "CPU=1" in replacements, output[-5000:]  # plain CPUs: the cluster has no collector node any more
    # (an actor killed while still waiting for resources never had a node)
    nodes = {a["node_id"] for a in cluster.collector_actors() if a["actor_id"] not in earlier} - {None}
    assert lost_node in nodes and len(nodes) == 2, "collectors did not move from the lost node to the remaining one"
    assert verify_dataset(out).episodes == 16
    expected = [f"random-s11-{shard:05d}-0000" for shard in range(16)]  # one episode per shard
    assert sorted(batches_by_id(out)) == expected, "duplicates or missing episodes"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")], "temp files left in shared storage"
    # re-submitting the same command finds the collection complete and adds nothing
    listed = json.loads((out / "manifest.json").read_text())["shards"]
    again = cluster.genie("submit", *command)
    assert again.returncode == 0 and "16 episodes" in again.stdout, again.stdout[-3000:] + again.stderr[-3000:]
    assert json.loads((out / "manifest.json").read_text())["shards"] == listed
    print("node loss:", *[line for line in output.splitlines() if line.startswith("note:")], sep="\n  ")
