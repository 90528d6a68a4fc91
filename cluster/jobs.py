"""`genie submit` and `genie jobs`: run any genie command as a Ray job on a cluster, through Ray's Jobs API.

Why jobs and not `genie COMMAND --address`: a job's driver runs on the cluster's head, so it survives
your laptop sleeping or losing Wi-Fi; its logs stay on the cluster; it is listed and stopped by id.
The job runs the very same CLI command (`genie COMMAND ARGS`), so nothing behaves differently on a
cluster except where the work lands (cluster/placement.py).

What code runs: by default the genie-redux installed on the cluster (cluster.yaml installs a pinned
wheel on every node; the job warns when it differs from your local version). `--working-dir DIR`
instead uploads a source checkout with the job (Ray's `runtime_env`), for trying unreleased changes.
Paths in ARGS are paths on the cluster: use storage URIs, e.g. '$GENIE_STORAGE/data/random'
(single-quoted, so that the cluster expands it from the GENIE_STORAGE that cluster.yaml exports).

The job server is the head's dashboard (port 8265; needs ray[default] there), reached through
`ray dashboard cluster.yaml`, which forwards http://127.0.0.1:8265 over SSH.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import sys
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from urllib.parse import urlparse

from genie_common.config import option
from genie_common.errors import ConfigError

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
STORAGE_VARIABLE = "GENIE_STORAGE"
# Options whose value is a location; a plain local path there is a path on the cluster, not on your laptop.
PATH_OPTIONS = ("--out", "--data", "--checkpoint")
# Left out of an uploaded working dir: data, runs and environments are large and not code.
# (Ray also leaves out what .gitignore lists.)
WORKING_DIR_EXCLUDES = [".git", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info", "data", "runs",
                        "wandb", "*.arrow", "*.ckpt", "*.pt", "benchmarks/results"]
NOT_JOB_COMMANDS = ("submit", "jobs")  # the commands a job cannot run


class JobError(ConfigError):
    """A job request the cluster cannot serve (no job server, unknown job, bad command): one line, no traceback."""


@dataclass
class SubmitRequest:
    """One `genie submit`: which genie command with which arguments, where, and with what code. The fields that
    are options of `genie submit` say so with their help (`genie_common.config.option`)."""

    command: str  # a top-level genie command: collect, data, agent, train, pipeline, ...
    args: list[str] = field(default_factory=list)
    address: str = DEFAULT_ADDRESS
    # upload this source tree instead of using the installed package
    working_dir: Path | None = option(None, help="upload this genie-redux checkout with the job instead of using the "
                                                 "installed package")
    env: dict[str, str] = field(default_factory=dict)
    submission_id: str | None = option(None, help="submission id (default: genie-COMMAND-DATE-TIME-XXXX)",
                                       flag="--job-id")
    # stream logs and exit with the job's status
    wait: bool = option(True, help="submit, print the job id and return", flag="--no-wait")

    def __post_init__(self) -> None:
        self.address = job_server_address(self.address)
        if self.working_dir is not None:
            self.working_dir = Path(self.working_dir).resolve()
            if not (self.working_dir / "cluster" / "cli.py").is_file():
                raise JobError(f"--working-dir {self.working_dir} is not a genie-redux checkout (no cluster/cli.py); "
                               f"give the repository root, or leave it out to run the version installed on the cluster")
        if self.submission_id is None:
            self.submission_id = f"genie-{self.command}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.submission_id):
            raise JobError(f"job id {self.submission_id!r}: use letters, digits, '.', '_' and '-' only")


def job_server_address(address: str | None) -> str:
    """The job server URL: the argument, else RAY_API_SERVER_ADDRESS, else an http RAY_ADDRESS, else local."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS")
    if not address and os.environ.get("RAY_ADDRESS", "").startswith(("http://", "https://")):
        address = os.environ["RAY_ADDRESS"]
    address = (address or DEFAULT_ADDRESS).rstrip("/")
    if not address.startswith(("http://", "https://")):
        raise JobError(f"--address {address}: jobs go to the cluster's job server, an http URL such as "
                       f"{DEFAULT_ADDRESS} (run `ray dashboard cluster.yaml` to forward it from a `ray up` cluster); "
                       f"host:6379 is the GCS, which `genie COMMAND --address` joins instead")
    return address


def installed_version() -> str | None:
    try:
        return metadata.version("genie-redux")
    except metadata.PackageNotFoundError:
        return None


def known_commands() -> list[str]:
    """Top-level `genie` commands a job can run (every one but submit and jobs themselves)."""
    from cluster.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")  # the sub-parser action
    return [name for name in commands.choices if name not in NOT_JOB_COMMANDS]


def check_command_args(command: str, args: list[str]) -> None:
    """Parse `genie COMMAND ARGS` here, so a typo fails in a second on your laptop, not minutes later on the cluster."""
    from cluster.arguments import outputs_elsewhere
    from cluster.cli import build_parser

    commands = known_commands()
    if command not in commands:
        raise JobError(f"unknown command {command!r}; a job runs one of: {', '.join(commands)}")
    if any(a == "--address" or a.startswith("--address=") for a in args):
        raise JobError("give --address once, for the job server; inside a job the command joins the cluster by itself")
    try:
        with outputs_elsewhere():  # the job writes its files on the cluster
            parsed = build_parser().parse_args([command, *args])
    except SystemExit as exit_:
        if exit_.code == 0:  # --help was asked for and printed
            raise JobError(f"--help is for `genie {command} --help` on your machine; nothing was submitted") from None
        raise JobError(f"`genie {command} {shlex.join(args)}` does not parse (the line above says why); nothing "
                       "was submitted") from None
    if getattr(parsed, "preset_file", None) is None and isinstance(getattr(parsed, "preset", None), str):
        from cluster.presets import load_preset  # a shipped preset and --set: the cluster runs this same version

        try:
            load_preset(parsed.preset, None, list(getattr(parsed, "set", None) or []))
        except ConfigError as err:
            raise JobError(f"{err}; nothing was submitted") from None


def path_warnings(args: list[str], address: str) -> list[str]:
    """Local paths given to a remote cluster name folders on its nodes, which other nodes do not see."""
    host = urlparse(address).hostname or ""
    if host in ("127.0.0.1", "localhost", "::1"):
        host = ""  # could be a forwarded remote cluster; still worth a hint only for relative paths
    notes = []
    for i, arg in enumerate(args):
        option, _, value = arg.partition("=")
        if option in PATH_OPTIONS and not value and i + 1 < len(args):
            value = args[i + 1]
        if option in PATH_OPTIONS and value and "://" not in value and not value.startswith(f"${STORAGE_VARIABLE}"):
            if host or not value.startswith("/"):
                notes.append(f"note: {option} {value} is a path on the cluster's nodes; for data every node must see, "
                             f"use '${STORAGE_VARIABLE}/...' or an s3:// URI")
    return notes


def _shell_word(arg: str) -> str:
    """Quote one argument for the job's shell, except that a leading $GENIE_STORAGE is expanded there."""
    prefix, body = "", arg
    match = re.fullmatch(r"(--[A-Za-z0-9-]+=)?\$(?:\{GENIE_STORAGE\}|GENIE_STORAGE)(.*)", arg, flags=re.S)
    if not match:
        return shlex.quote(arg)
    prefix, body = match.group(1) or "", match.group(2)
    storage = f'"${{{STORAGE_VARIABLE}:?is not set on the cluster: export it in the start commands of cluster.yaml}}"'
    return (shlex.quote(prefix) if prefix else "") + storage + (shlex.quote(body) if body else "")


def build_entrypoint(request: SubmitRequest) -> str:
    """The shell command the job runs: the genie command through `cluster.job_entry` (version check, then `genie`)."""
    words = ["python", "-m", "cluster.job_entry"]
    version = installed_version()
    if request.working_dir is None and version:
        words += ["--expect-version", version]
    words += ["--", request.command]
    return " ".join([*(shlex.quote(w) for w in words), *(_shell_word(a) for a in request.args)])


def runtime_env(request: SubmitRequest) -> dict:
    env = {"PYTHONUNBUFFERED": "1", **request.env}  # unbuffered: logs reach `genie jobs logs` as they are printed
    runtime = {"env_vars": env}
    if request.working_dir is not None:
        runtime.update(working_dir=str(request.working_dir), excludes=WORKING_DIR_EXCLUDES)
    return runtime


def _use_local_token() -> None:
    """Send ~/.ray/auth_token (or RAY_AUTH_TOKEN) when there is one, as `ray.init` does when it joins a
    cluster: Ray 2.60 turns token authentication on for clusters started where a token exists, and
    its Jobs client sends the token only in token mode. Without a token nothing changes."""
    import logging

    try:
        from ray._private.authentication.authentication_token_setup import maybe_enable_token_auth_if_token_available
    except ImportError:  # a Ray without token authentication
        return
    quiet = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level, quiet.level = quiet.level, logging.ERROR
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        quiet.setLevel(level)


def client(address: str):
    """A JobSubmissionClient, or a JobError that says how to reach the job server."""
    try:
        from ray.job_submission import JobSubmissionClient
    except ImportError as err:  # ray without the [default] extra
        raise JobError("the Jobs API needs ray[default]: pip install 'ray[default]'") from err
    _use_local_token()
    try:
        return JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise JobError(f"no Ray job server at {address} ({str(err).splitlines()[0]}). Is the cluster up, and is "
                       f"`ray dashboard cluster.yaml` forwarding port 8265? The head needs ray[default].") from err


def submit(request: SubmitRequest) -> int:
    """Submit the command as a job; with `wait`, stream its logs and return its exit status."""
    check_command_args(request.command, request.args)
    for note in path_warnings(request.args, request.address):
        print(note, file=sys.stderr)
    jobs = client(request.address)
    entrypoint = build_entrypoint(request)
    # the key keeps its name from before `genie submit COMMAND` (jobs submitted earlier carry it; filters may use it)
    metadata_ = {"genie_stage": request.command, "genie_version": installed_version() or "source"}
    try:
        job_id = submit_when_agent_ready(jobs, dict(entrypoint=entrypoint, runtime_env=runtime_env(request),
                                                    submission_id=request.submission_id, metadata=metadata_))
    except RuntimeError as err:
        raise JobError(f"the job server at {request.address} refused the job: {str(err).splitlines()[0]}") from err
    print(f"submitted job {job_id} to {request.address}: {entrypoint}", flush=True)
    if not request.wait:
        print(f"follow it: genie jobs logs {job_id} --follow --address {request.address}")
        return 0
    return follow(jobs, job_id, request.address)


# Ray's job server answers (lists jobs) before the head's dashboard agent, which starts the job's driver, has
# registered; until then it refuses a job with this message. Seen for seconds after `ray start` / `ray up`.
AGENT_NOT_READY = "No available agent to submit job"


def submit_when_agent_ready(jobs, job: dict, wait_s: float = 120.0, poll_s: float = 2.0) -> str:
    """`jobs.submit_job(**job)`, retried while the head's job agent is still starting (up to `wait_s`).

    Safe to retry: a refusal for a missing agent creates no job, and the submission id stays the same."""
    deadline = time.monotonic() + wait_s
    told = False
    while True:
        try:
            return jobs.submit_job(**job)
        except RuntimeError as err:
            if AGENT_NOT_READY not in str(err) or time.monotonic() >= deadline:
                raise
            if not told:
                print(f"the cluster's job agent is still starting; retrying for up to {wait_s:.0f} s",
                      file=sys.stderr, flush=True)
                told = True
            time.sleep(poll_s)


def follow(jobs, job_id: str, address: str) -> int:
    """Stream a job's logs until it ends; return 0 if it succeeded, else its exit code (1 if unknown).

    Ctrl-C stops following, not the job."""
    try:
        try:
            asyncio.run(_stream(jobs, job_id))
        except (RuntimeError, OSError) as err:  # the log stream broke (network, head restart); the job may go on
            print(f"\nlost the log stream ({str(err).splitlines()[0]}); waiting for the job to end. Its logs: "
                  f"genie jobs logs {job_id} --address {address}", file=sys.stderr, flush=True)
            info = _wait_terminal(jobs, job_id, timeout_s=float("inf"))
        else:
            info = _wait_terminal(jobs, job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job_id} keeps running. Follow again: genie jobs logs {job_id} --follow "
              f"--address {address}; stop it: genie jobs stop {job_id} --address {address}", file=sys.stderr)
        return 130
    return report(info)


async def _stream(jobs, job_id: str) -> None:
    async for chunk in jobs.tail_job_logs(job_id):
        sys.stdout.write(chunk)
        sys.stdout.flush()


def _wait_terminal(jobs, job_id: str, timeout_s: float = 60.0):
    """The job's info once it is terminal (the log stream can end a moment before the status does)."""
    deadline = time.monotonic() + timeout_s
    info = job_info(jobs, job_id)
    while not info.status.is_terminal() and time.monotonic() < deadline:
        time.sleep(0.5 if timeout_s < 600 else 5.0)
        info = job_info(jobs, job_id)
    return info


def job_info(jobs, job_id: str):
    try:
        return jobs.get_job_info(job_id)
    except RuntimeError as err:
        raise JobError(f"job {job_id}: {str(err).splitlines()[0]}; `genie jobs list` shows the jobs") from err
    except OSError as err:  # requests' connection errors
        raise JobError(f"job {job_id}: the job server does not answer ({str(err).splitlines()[0]}); is "
                       f"`ray dashboard cluster.yaml` still running? The job itself goes on.") from err


def exit_code(info) -> int:
    """0 for a job that succeeded; the command's own exit code when it failed (1 when Ray does not know it)."""
    status = str(info.status)
    if status == "SUCCEEDED":
        return 0
    if status == "STOPPED":
        return 130
    code = getattr(info, "driver_exit_code", None)
    return code if isinstance(code, int) and code != 0 else 1


def report(info) -> int:
    seconds = ((info.end_time or time.time() * 1000) - (info.start_time or 0)) / 1000 if info.start_time else 0
    line = f"job {info.submission_id} {info.status} after {seconds:.0f}s"
    if str(info.status) != "SUCCEEDED" and info.message:
        line += f": {info.message.strip().splitlines()[-1]}"
    print(line, file=sys.stderr if str(info.status) != "SUCCEEDED" else sys.stdout, flush=True)
    return exit_code(info)


def list_jobs(address: str) -> list:
    jobs = client(job_server_address(address))
    return sorted(jobs.list_jobs(), key=lambda j: j.start_time or 0)


def format_jobs(details: list) -> str:
    rows = [("ID", "STATUS", "STARTED", "TIME", "COMMAND")]
    for job in details:
        start = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)) if job.start_time else "-"
        end = job.end_time or (time.time() * 1000 if job.start_time else None)
        took = f"{(end - job.start_time) / 1000:.0f}s" if job.start_time and end else "-"
        command = re.sub(r"^python -m cluster\.job_entry (--expect-version \S+ )?-- ", "genie ", job.entrypoint)
        rows.append((job.submission_id or job.job_id or "-", str(job.status), start, took,
                     command if len(command) <= 90 else command[:87] + "..."))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows)


def logs(address: str, job_id: str, follow_: bool) -> int:
    jobs = client(job_server_address(address))
    info = job_info(jobs, job_id)
    if follow_:
        return follow(jobs, job_id, address)
    sys.stdout.write(jobs.get_job_logs(job_id))
    return exit_code(info) if info.status.is_terminal() else 0


def stop(address: str, job_id: str, wait: bool = True) -> int:
    jobs = client(job_server_address(address))
    info = job_info(jobs, job_id)
    if info.status.is_terminal():
        print(f"job {job_id} already ended: {info.status}")
        return 0
    jobs.stop_job(job_id)
    if wait:
        info = _wait_terminal(jobs, job_id)
    print(f"job {job_id}: {info.status}")
    return 0
