"""What `genie submit` sends, checked without a cluster: the job's shell command passes every argument
through unchanged except a leading $GENIE_STORAGE, which the cluster's shell expands (bash runs it
here exactly as the job supervisor would), and addresses and paths get clear messages."""

from __future__ import annotations

import subprocess

import pytest

from cluster.jobs import (AGENT_NOT_READY, JobError, SubmitRequest, build_entrypoint, job_server_address, path_warnings,
                          runtime_env, submit_when_agent_ready)


def _words_on_the_cluster(args: list[str], storage: str | None) -> subprocess.CompletedProcess:
    """Run the job's command line in bash with the entrypoint swapped for printf, one argument per line."""
    entrypoint = build_entrypoint(SubmitRequest(command="collect", args=args))
    words = entrypoint.split(" -- collect ", 1)[1]
    env = {"PATH": "/usr/bin:/bin", **({"GENIE_STORAGE": storage} if storage is not None else {})}
    return subprocess.run(["bash", "-c", f"printf '%s\\n' {words}"], capture_output=True, text=True, env=env)


def test_arguments_reach_the_command_unchanged_and_genie_storage_expands_on_the_cluster():
    args = ["--out", "$GENIE_STORAGE/data/random train", "--set", "a.b=it's $HOME; `x`", "--data=$GENIE_STORAGE",
            "--checkpoint", "${GENIE_STORAGE}/runs/agent"]
    result = _words_on_the_cluster(args, "s3://bucket/genie")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["--out", "s3://bucket/genie/data/random train",
                                          "--set", "a.b=it's $HOME; `x`",
                                          "--data=s3://bucket/genie", "--checkpoint", "s3://bucket/genie/runs/agent"]


def test_an_unset_genie_storage_stops_the_job_with_what_to_do():
    result = _words_on_the_cluster(["--out", "$GENIE_STORAGE/data"], None)
    assert result.returncode != 0 and "GENIE_STORAGE" in result.stderr and "cluster.yaml" in result.stderr


def test_the_entrypoint_names_the_local_version_unless_code_is_uploaded(tmp_path):
    installed = build_entrypoint(SubmitRequest(command="collect", args=["--out", "x"]))
    assert installed.startswith("python -m cluster.job_entry --expect-version ")
    with pytest.raises(JobError, match="not a genie-redux checkout"):
        SubmitRequest(command="collect", working_dir=tmp_path)
    from tests.test_cluster_jobs import REPO

    uploaded = SubmitRequest(command="collect", working_dir=REPO, env={"WANDB_MODE": "online"})
    assert "--expect-version" not in build_entrypoint(uploaded)
    assert runtime_env(uploaded)["working_dir"] == str(REPO) and ".git" in runtime_env(uploaded)["excludes"]
    assert runtime_env(uploaded)["env_vars"] == {"PYTHONUNBUFFERED": "1", "WANDB_MODE": "online"}


def test_addresses_and_paths_get_clear_messages(monkeypatch):
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    assert job_server_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # a GCS address is not a job server: fall back
    assert job_server_address(None) == "http://127.0.0.1:8265"
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://head:8265/")
    assert job_server_address(None) == "http://head:8265"
    with pytest.raises(JobError, match="job server.*GCS"):
        job_server_address("10.0.0.1:6379")
    with pytest.raises(JobError, match="letters, digits"):
        SubmitRequest(command="collect", submission_id="my job")
    remote = path_warnings(["--out", "data/x", "--data=/mnt/d", "--checkpoint", "s3://b/c",
                            "--out", "$GENIE_STORAGE/y"],
                           "http://head:8265")
    assert len(remote) == 2 and "--out data/x" in remote[0] and "--data /mnt/d" in remote[1]
    assert len(path_warnings(["--out", "/shared/x", "--data", "rel"], "http://127.0.0.1:8265")) == 1


class _JobServer:
    """Refuses the first `refusals` submissions with `message` (as Ray's job server does), then accepts."""

    def __init__(self, refusals: int, message: str):
        self.refusals, self.message, self.calls = refusals, message, []

    def submit_job(self, **job):
        self.calls.append(job)
        if len(self.calls) <= self.refusals:
            raise RuntimeError(f"Request failed with status code 500: {self.message}, please try again later.")
        return job["submission_id"]


def test_a_job_is_resubmitted_while_the_heads_job_agent_starts_and_other_refusals_are_not(capsys):
    """Right after `ray start`/`ray up` the job server lists jobs but refuses them until its agent registers."""
    job = {"entrypoint": "genie collect", "submission_id": "genie-collect-x"}
    starting = _JobServer(refusals=2, message=AGENT_NOT_READY)
    assert submit_when_agent_ready(starting, job, wait_s=10, poll_s=0) == "genie-collect-x"
    assert starting.calls == [job] * 3  # the same submission id each time, so a job is never created twice
    assert "job agent is still starting" in capsys.readouterr().err
    never = _JobServer(refusals=99, message=AGENT_NOT_READY)
    with pytest.raises(RuntimeError, match=AGENT_NOT_READY):
        submit_when_agent_ready(never, job, wait_s=0, poll_s=0)
    other = _JobServer(refusals=1, message="Job with submission_id genie-collect-x already exists")
    with pytest.raises(RuntimeError, match="already exists"):
        submit_when_agent_ready(other, job, wait_s=10, poll_s=0)
    assert len(other.calls) == 1
