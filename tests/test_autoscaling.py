"""GPU requests and collections on an autoscaling cluster whose node types are at min_workers 0, as on `ray up
cluster.yaml`.

The cluster is Ray's fake multi-node autoscaler (what `ray.cluster_utils.AutoscalingCluster` runs): a head with
0 CPUs, a node type `gpu` with fake GPUs and a node type `collector` with the `collector` resource, both at
min_workers 0, whose nodes the autoscaler starts as local raylets. It is started here as one
`ray start --head --block` with its own port, token and --temp-dir instead of `AutoscalingCluster.start()`,
whose `ray stop --force` would kill every other Ray on this machine (the session's `ray_cluster` fixture
included); the checks run in a child process, since this one may already be connected to that session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from cluster.ray_session import free_port
from tests.test_cluster_jobs import _processes_using, _terminate

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"


def fake_autoscaling_config(gcs_port: int, worker_types: dict) -> dict:
    """The base config AutoscalingCluster reads from fake_multi_node/example.yaml (missing from the pip wheel)."""
    return {
        "cluster_name": "genie-fake", "max_workers": 8, "idle_timeout_minutes": 5, "upscaling_speed": 1.0,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{gcs_port}"},
        "auth": {"ssh_user": "ubuntu"}, "docker": {}, "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [], "head_node_type": "ray.head.default",
        "available_node_types": {"ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
                                 **worker_types},
    }


@pytest.fixture(scope="module")
def autoscaling_cluster():
    base = Path(tempfile.mkdtemp(prefix="genie-as-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port = free_port()
    config = fake_autoscaling_config(port, {
        "gpu": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        "collector": {"resources": {"CPU": 2, "collector": 2}, "node_config": {}, "min_workers": 0, "max_workers": 2}})
    (base / "autoscaling.json").write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex + uuid.uuid4().hex, RAY_FAKE_CLUSTER="1",
               AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO),
               PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", WANDB_MODE="offline")
    (base / "shared").mkdir()
    temp_dir, dashboard = base / "ray", free_port()
    # the head's processes (job drivers) see the shared storage, as cluster.yaml's `ray start` exports it
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", "--port", str(port), "--temp-dir", str(temp_dir),
         "--node-ip-address", "127.0.0.1", "--num-cpus", "0", "--autoscaling-config", str(base / "autoscaling.json"),
         "--include-dashboard=true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
         "--disable-usage-stats", "--dashboard-agent-listen-port", str(free_port()),
         "--ray-client-server-port", str(free_port())],
        env={**env, "GENIE_STORAGE": f"file://{base / 'shared'}"}, stdout=open(base / "head.log", "w"),
        stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield {"address": f"127.0.0.1:{port}", "env": env, "base": base, "head": head,
               "jobs": f"http://127.0.0.1:{dashboard}"}
    finally:
        _terminate(head)
        for pid in _processes_using(temp_dir):  # the fake GPU nodes, started by the monitor, outlive the head
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(base, ignore_errors=True)


# the child's first lines: join the fake cluster given as argv[1] once its head answers
CONNECT = textwrap.dedent("""
    import json, sys, time
    import ray
    for _ in range(120):  # the head is starting
        try:
            ray.init(address=sys.argv[1], log_to_driver=False)
            break
        except ConnectionError:
            time.sleep(0.5)
""")

CHECKS = CONNECT + textwrap.dedent("""
    from cluster.placement import cluster_capacity, use_gpu
    from rl_agent.coinrun_env import ConfigError
    from tuning.sweep import SweepConfig, check_resources, concurrency
    from world_model.training.job import TrainJob
    from world_model.training.trainer import _check_resources

    out = {"gpus_before": ray.cluster_resources().get("GPU", 0), "use_gpu": use_gpu(),
           "types": [[t.name, t.resources, t.max_workers] for t in cluster_capacity().node_types or []],
           "concurrency": concurrency(SweepConfig(stage="tokenizer", data=["d"], out="s", gpus_per_trial=1))}
    refused = {}
    for name, call in [
            ("gpus_per_node", lambda: check_resources(SweepConfig(stage="tokenizer", data=["d"], out="s",
                                                                  gpus_per_trial=4))),
            ("gpus_in_all", lambda: _check_resources(TrainJob(stage="tokenizer", data=["d"], out="r", workers=4,
                                                              gpus_per_worker=1)))]:
        try:
            call()
            refused[name] = None
        except ConfigError as err:
            refused[name] = str(err)
    out["refused"] = refused
    out["gpus_after_refusals"] = ray.cluster_resources().get("GPU", 0)
    _check_resources(TrainJob(stage="tokenizer", data=["d"], out="r", workers=1, gpus_per_worker=1))
    out["gpus_after"] = ray.cluster_resources().get("GPU", 0)
    out["gpu_nodes"] = sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU"))
    print("RESULT " + json.dumps(out))
""")


def test_gpu_requests_start_a_min_workers_0_gpu_node_and_impossible_ones_are_refused(autoscaling_cluster):
    result = subprocess.run([sys.executable, "-c", CHECKS, autoscaling_cluster["address"]], cwd=REPO,
                            env=autoscaling_cluster["env"], capture_output=True, text=True, timeout=240)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:] + \
        (autoscaling_cluster["base"] / "head.log").read_text()[-2000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["types"] == [["gpu", {"CPU": 2.0, "GPU": 1.0}, 2], ["collector", {"CPU": 2.0, "collector": 2.0}, 2]], \
        out["types"]
    # no GPU runs yet, but the autoscaler can start two: GPUs are used, two 1-GPU trials fit side by side
    assert out["gpus_before"] == 0 and out["use_gpu"] and out["concurrency"] == 2, out
    # what no node type can provide is refused before anything is launched, saying what the node types are
    per_node, in_all = out["refused"]["gpus_per_node"], out["refused"]["gpus_in_all"]
    assert per_node and "no node can ever hold {CPU: 1, GPU: 4}" in per_node and "gpu {CPU: 2, GPU: 1} x2" in per_node
    assert in_all and "need {CPU: 4, GPU: 4}" in in_all and "--gpus-per-worker" in in_all, in_all
    assert out["gpus_after_refusals"] == 0, out
    # a worker asking for a GPU is accepted: the autoscaler launches a `gpu` node and the check returns
    assert out["gpus_after"] >= 1 and out["gpu_nodes"] >= 1, out
    assert "asking the autoscaler for {CPU: 1, GPU: 1}" in result.stderr, result.stderr[-3000:]


COLLECT = CONNECT + textwrap.dedent("""
    import subprocess
    from ray._private.state import state

    before = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("collector")}
    collect = subprocess.run([sys.executable, "-m", "cluster.cli", "collect", "--out", sys.argv[2], "--episodes", "8",
                              "--seed", "5", "--max-episode-frames", "100", "--episodes-per-shard", "2",
                              "--envs-per-worker", "2", "--workers", "2", "--no-progress", "--address", sys.argv[1]],
                             capture_output=True, text=True, timeout=180)
    nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes()}
    collectors = [a for a in state.actor_table(None).values() if a["ActorClassName"] == "Collector"]
    print("RESULT " + json.dumps({
        "before": sorted(before), "returncode": collect.returncode, "output": collect.stdout + collect.stderr,
        "collector_nodes": sorted({a["Address"]["NodeID"] for a in collectors}),
        "node_resources": {n: {k: v for k, v in r.items() if k in ("CPU", "GPU", "collector")}
                           for n, r in nodes.items()}}))
""")


def test_collect_scales_the_collector_type_up_from_zero(autoscaling_cluster, tmp_path):
    """No collector node runs, the head has no CPUs, a `gpu` node may be up with free CPUs: the collectors ask for
    `collector` anyway, and the autoscaler launches a collector node for them."""
    from rl_agent.store.verify import verify_dataset

    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-c", COLLECT, autoscaling_cluster["address"], str(out)], cwd=REPO,
                            env=autoscaling_cluster["env"], capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:] + \
        (autoscaling_cluster["base"] / "head.log").read_text()[-2000:]
    res = json.loads(lines[-1][len("RESULT "):])
    assert res["returncode"] == 0, res["output"][-5000:]
    assert res["before"] == [], "a collector node ran before the collection asked for one"
    assert "note: no collector node runs yet" in res["output"], res["output"][-3000:]
    assert res["collector_nodes"], "no collector actor recorded"
    for node in res["collector_nodes"]:  # on a node of the collector type, which the autoscaler started
        assert res["node_resources"][node] == {"CPU": 2.0, "collector": 2.0}, res["node_resources"]
    assert verify_dataset(out).episodes == 8
    print("collect on the autoscaling cluster:",
          *[line for line in res["output"].splitlines() if line.startswith("note:")], sep="\n  ")


def test_without_an_autoscaler_only_the_running_nodes_count(ray_cluster):
    """A laptop or a static cluster: what its nodes do not have is refused at once, with what to do."""
    from rl_agent.capacity import cluster_capacity, ensure_resources
    from rl_agent.coinrun_env import ConfigError

    assert cluster_capacity().node_types is None
    ensure_resources([{"CPU": 1}] * 2, "2 workers", "use fewer")  # the session cluster's 4 CPUs hold them
    with pytest.raises(ConfigError, match=r"1 workers need \{CPU: 1, GPU: 1\}; .* no autoscaler .*: drop --gpus"):
        ensure_resources([{"CPU": 1, "GPU": 1}], "1 workers", "drop --gpus-per-worker")


TRAIN = CONNECT + textwrap.dedent("""
    import subprocess

    train = subprocess.run([sys.executable, "-m", "cluster.cli", "train", "tokenizer", "--data", sys.argv[2],
                            "--out", sys.argv[3], "--preset", "tiny", "--steps", "2", "--workers", "1",
                            "--gpus-per-worker", "1", "--max-failures", "0", "--no-wandb", "--no-progress",
                            "--address", sys.argv[1]], capture_output=True, text=True, timeout=240)
    gpu_nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    print("RESULT " + json.dumps({"returncode": train.returncode, "output": train.stdout + train.stderr,
                                  "gpu_nodes": gpu_nodes}))
""")


def test_a_gpu_training_run_gets_a_gpu_node_and_refuses_to_train_on_its_cpu(autoscaling_cluster, train_data, tmp_path):
    """`genie train --gpus-per-worker 1` on a cluster whose GPU type is at min_workers 0 is not refused: the autoscaler
    starts a `gpu` node and the worker lands on it. Its GPU is Ray's fake one and this torch a CPU build, as on a GPU
    node whose setup installed the wrong wheel: Ray Train's NCCL setup fails there, and the user reads what to do in
    one line, not a traceback that says to resume."""
    result = subprocess.run([sys.executable, "-c", TRAIN, autoscaling_cluster["address"], str(train_data),
                             str(tmp_path / "run")], cwd=REPO, env=autoscaling_cluster["env"], capture_output=True,
                            text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    res = json.loads(lines[-1][len("RESULT "):])
    assert res["gpu_nodes"], "no gpu node was started for the training worker"
    assert res["returncode"] != 0, res["output"][-3000:]
    assert "asked for 1 GPU(s) each, but the torch on their nodes is a CPU-only build" in res["output"], \
        res["output"][-4000:]
    errors = [line for line in res["output"].splitlines() if line.startswith("genie: error:")]
    assert len(errors) == 1 and "install torch's CUDA build" in errors[0], res["output"][-4000:]
    assert "run the same command again" not in res["output"], res["output"][-4000:]
    assert not (tmp_path / "run" / "best.pt").exists()


TUNE = CONNECT + textwrap.dedent("""
    import subprocess

    tune = subprocess.run([sys.executable, "-m", "cluster.cli", "tune", "tokenizer", "--data", sys.argv[2],
                           "--out", sys.argv[3], "--preset-sweep", "tiny", "--budget-steps", "2", "--val-every", "1",
                           "--scheduler", "none", "--gpus-per-trial", "1", "--workers", "1", "--no-wandb",
                           "--address", sys.argv[1]], capture_output=True, text=True, timeout=240)
    gpu_nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    print("RESULT " + json.dumps({"returncode": tune.returncode, "output": tune.stdout + tune.stderr,
                                  "gpu_nodes": gpu_nodes}))
""")


def test_a_gpu_sweep_gets_a_gpu_node_and_its_trials_say_what_their_node_lacks(autoscaling_cluster, train_data,
                                                                              tmp_path):
    """`genie tune --gpus-per-trial 1` with trials on shared storage (a file:// URI standing in for S3): not refused,
    the autoscaler starts a `gpu` node for the trial, and a trial that cannot use its GPU is reported with why."""
    out = f"file://{tmp_path / 'sweep'}"
    result = subprocess.run([sys.executable, "-c", TUNE, autoscaling_cluster["address"], str(train_data), out],
                            cwd=REPO, env=autoscaling_cluster["env"], capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    res = json.loads(lines[-1][len("RESULT "):])
    assert res["gpu_nodes"], "no gpu node was started for the trial"
    assert res["returncode"] == 1, res["output"][-4000:]
    # the summary names the failed trial and why, in one line (not Ray's `ray::ImplicitFunc.train()` wrapper)
    assert "1 of 1 trials failed" in res["output"], res["output"][-4000:]
    failed = [line.strip() for line in res["output"].splitlines() if line.strip().startswith("trial-000: ")]
    assert failed and "the torch on their nodes is a CPU-only build" in failed[0], res["output"][-4000:]
    table = (tmp_path / "sweep" / "results.md").read_text()
    assert "error: the training workers asked for 1 GPU(s) each" in table, table


def wait_for_job_server(cluster: dict) -> None:
    """The job server answers once the head's dashboard is up (seconds to a minute after `ray start`)."""
    for _ in range(120):
        probe = subprocess.run([sys.executable, "-m", "cluster.cli", "jobs", "list", "--address", cluster["jobs"]],
                               cwd=REPO, env=cluster["env"], capture_output=True, text=True, timeout=60)
        if probe.returncode == 0:
            return
        time.sleep(1)


def test_a_submitted_collection_runs_on_collector_nodes_the_autoscaler_starts(autoscaling_cluster):
    """`genie submit collect` as on a `ray up cluster.yaml` cluster: the job's driver on a head with no CPUs, the
    output on shared storage through '$GENIE_STORAGE', the collectors on `collector` nodes the autoscaler starts."""
    from rl_agent.store.verify import verify_dataset

    base = autoscaling_cluster["base"]
    wait_for_job_server(autoscaling_cluster)
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "submit", "collect", "--agent", "random", "--episodes", "6",
         "--seed", "7", "--max-episode-frames", "100", "--episodes-per-shard", "2", "--envs-per-worker", "2",
         "--workers", "2", "--no-progress", "--out", "$GENIE_STORAGE/data/submitted",
         "--address", autoscaling_cluster["jobs"]],
        cwd=REPO, env=autoscaling_cluster["env"], capture_output=True, text=True, timeout=300)
    head_log = (base / "head.log").read_text()[-2000:]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:] + head_log
    assert "SUCCEEDED" in result.stdout and "6 episodes" in result.stdout, result.stdout[-3000:]
    assert verify_dataset(base / "shared" / "data" / "submitted").episodes == 6


AGENT = CONNECT + textwrap.dedent("""
    import subprocess

    agent = subprocess.run([sys.executable, "-m", "cluster.cli", "agent", "train", "--preset", "tiny", "--out",
                            sys.argv[2], "--steps", "256", "--gpus-per-learner", "1", "--no-progress",
                            "--address", sys.argv[1]], capture_output=True, text=True, timeout=240)
    gpu_nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    print("RESULT " + json.dumps({"returncode": agent.returncode, "output": agent.stdout + agent.stderr,
                                  "gpu_nodes": gpu_nodes}))
""")


def test_a_gpu_ppo_learner_gets_a_gpu_node_and_a_cpu_only_torch_there_is_one_line(autoscaling_cluster, tmp_path):
    """`genie agent train --gpus-per-learner 1` (what `genie submit pipeline` chooses by itself on a cluster that can
    start GPU nodes): the learner is a remote actor on a `gpu` node the autoscaler starts; on a node whose torch is a
    CPU build, RLlib's learner group fails in its NCCL setup, and the user reads what to do in one line instead of a
    traceback (found by running the whole `genie submit pipeline` on this cluster)."""
    result = subprocess.run([sys.executable, "-c", AGENT, autoscaling_cluster["address"], str(tmp_path / "agent")],
                            cwd=REPO, env=autoscaling_cluster["env"], capture_output=True, text=True, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    res = json.loads(lines[-1][len("RESULT "):])
    assert res["gpu_nodes"], "no gpu node was started for the learner"
    assert res["returncode"] != 0, res["output"][-3000:]
    errors = [line for line in res["output"].splitlines() if line.startswith("genie: error:")]
    assert len(errors) == 1, res["output"][-4000:]
    assert "the PPO learner asked for 1 GPU(s), but the torch on their nodes is a CPU-only build" in errors[0], errors
    assert "--gpus-per-learner 0" in errors[0] and "Traceback" not in res["output"], res["output"][-4000:]


@pytest.mark.skipif(os.environ.get("GENIE_CLUSTER_STUDY") != "1",
                    reason="the whole submitted study on the autoscaling cluster takes 2-3 min more than the suite's "
                           "budget allows; GENIE_CLUSTER_STUDY=1 runs it (do before a release)")
def test_the_whole_submitted_pipeline_runs_on_nodes_the_autoscaler_starts(autoscaling_cluster):
    """`genie submit pipeline` as the README tells a cluster user, on the reduced tiny budget of
    tests/test_pipeline.py: the job's driver on the 0-CPU head, every task's output under '$GENIE_STORAGE' (a
    file:// URI on shared storage), collectors, Ray Train workers and evaluation workers on nodes the autoscaler
    starts. The learner stays on CPUs (`--gpus-per-learner 0`): this torch is a CPU build, and the GPU learner's
    one-line refusal has its own test above. 2026-12-01: 15 tasks ran in 136 s on 2 cores."""
    from tests.test_pipeline import REDUCED

    base = autoscaling_cluster["base"]
    wait_for_job_server(autoscaling_cluster)
    result = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "submit", "pipeline", "--preset", "tiny", "--no-progress",
         "--out", "$GENIE_STORAGE/runs/tiny", "--gpus-per-learner", "0", *[f"--set={o}" for o in REDUCED],
         "--address", autoscaling_cluster["jobs"]],
        cwd=REPO, env=autoscaling_cluster["env"], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "SUCCEEDED" in result.stdout and "0 reused" in result.stdout, result.stdout[-3000:]
    run = base / "shared" / "runs" / "tiny"
    assert (run / "report.html").is_file() and (run / "report.md").is_file()
    assert {"agent", "data", "models", "eval", "pipeline"} <= {p.name for p in run.iterdir()}
