"""`genie submit` and `genie jobs list|logs|stop`: genie commands as Ray jobs on a cluster (see cluster/jobs.py)."""

from __future__ import annotations

import argparse

ORDER = 60

SUBMIT_DESCRIPTION = """\
Run `genie COMMAND ARGS` as a Ray job on a cluster: the job's driver runs on the head node (it keeps
running if your laptop disconnects), its collectors and trainers on the worker nodes. Streams the
job's logs and exits with its status (Ctrl-C stops following, not the job).

Paths in ARGS are paths on the cluster: use storage URIs, e.g. '$GENIE_STORAGE/data/random'
(in single quotes: the cluster expands GENIE_STORAGE, which cluster.yaml exports). By default the
job runs the genie-redux installed on the cluster; --working-dir uploads a source checkout instead.
"""

SUBMIT_EPILOG = """\
examples:
  ray up cluster.yaml && ray dashboard cluster.yaml     # forwards http://127.0.0.1:8265
  genie submit collect --agent random --episodes 20000 --workers 64 --out '$GENIE_STORAGE/data/random'
  genie submit --no-wait train tokenizer --data '$GENIE_STORAGE/data/random' --out '$GENIE_STORAGE/runs/tok' --preset paper
  genie submit pipeline --preset small --out '$GENIE_STORAGE/runs/small' --gpus-per-worker 1   # the whole study
  genie jobs list
"""  # noqa: E501 - the example commands stay whole, to copy from --help


# the fields of SubmitRequest that are options of `genie submit`, in the order its help shows them (--env, KEY=VALUE
# items made into a dict, after --working-dir); COMMAND and ARGS are its positional arguments
SUBMIT_OPTIONS = ("working_dir", "submission_id", "wait")


def _add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="the cluster's job server (default: RAY_API_SERVER_ADDRESS, an http RAY_ADDRESS, "
                             "else http://127.0.0.1:8265, where `ray dashboard cluster.yaml` forwards it)")


def register(commands) -> None:
    submit = commands.add_parser(
        "submit", help="run a genie command (collect, train, eval, pipeline, ...) as a Ray job on a cluster",
        description=SUBMIT_DESCRIPTION, epilog=SUBMIT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_address(submit)
    from cluster.arguments import local_path
    from cluster.dataclass_options import add_options
    from cluster.jobs import SubmitRequest

    add_options(submit, SubmitRequest, SUBMIT_OPTIONS[:1], working_dir=local_path(
        "--working-dir is a source checkout on this machine, uploaded with the job"))
    submit.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment variable for the job (repeatable), e.g. --env WANDB_MODE=online")
    add_options(submit, SubmitRequest, SUBMIT_OPTIONS[1:])
    # dest job_command, not command: `command` is the dest of genie's own subcommand (here "submit")
    submit.add_argument("job_command", metavar="COMMAND",
                        help="the genie command the job runs: collect, data, agent, datasets, train, ...")
    submit.add_argument("job_args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="its arguments, as for `genie COMMAND`; a trailing --address URL is taken as submit's")
    submit.set_defaults(handler=run_submit)

    jobs = commands.add_parser("jobs", help="list, follow and stop Ray jobs on a cluster",
                               description="Manage the jobs `genie submit` started (any Ray job, in fact).")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", metavar="SUBCOMMAND", required=True)
    listing = jobs_commands.add_parser("list", help="every job: id, status, start, duration, command")
    _add_address(listing)
    listing.set_defaults(handler=run_list)
    logs = jobs_commands.add_parser("logs", help="a job's output so far (or --follow it to the end)")
    logs.add_argument("job_id", metavar="JOB_ID")
    logs.add_argument("--follow", action="store_true", help="stream until the job ends; exit with its status")
    _add_address(logs)
    logs.set_defaults(handler=run_logs)
    stop = jobs_commands.add_parser("stop", help="stop a running job (its collectors/trainers stop with it)")
    stop.add_argument("job_id", metavar="JOB_ID")
    stop.add_argument("--no-wait", action="store_true", help="do not wait until it has stopped")
    _add_address(stop)
    stop.set_defaults(handler=run_stop)


def _split_trailing_address(args: list[str]) -> tuple[list[str], str | None]:
    """`genie submit COMMAND ... --address URL`: the address belongs to submit, not to the command."""
    from cluster.jobs import job_server_address

    rest, address, i = [], None, 0
    while i < len(args):
        if args[i] == "--address" and i + 1 < len(args):
            address, i = job_server_address(args[i + 1]), i + 2
        elif args[i].startswith("--address="):
            address, i = job_server_address(args[i].split("=", 1)[1]), i + 1
        else:
            rest.append(args[i])
            i += 1
    return rest, address


def run_submit(args: argparse.Namespace) -> int:
    from cluster.dataclass_options import config_from_args
    from cluster.jobs import JobError, SubmitRequest, submit

    job_args, trailing = _split_trailing_address(list(args.job_args))
    if trailing and args.address and trailing != args.address:
        raise JobError(f"two job server addresses: {args.address} and {trailing}; give one")
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise JobError(f"--env {item!r}: expected KEY=VALUE")
        env[key] = value
    request = config_from_args(SubmitRequest, args, SUBMIT_OPTIONS, command=args.job_command, args=job_args,
                               address=trailing or args.address, env=env)
    return submit(request)


def run_list(args: argparse.Namespace) -> int:
    from cluster.jobs import format_jobs, list_jobs

    details = list_jobs(args.address)
    print(format_jobs(details) if details else "no jobs on this cluster yet")
    return 0


def run_logs(args: argparse.Namespace) -> int:
    from cluster.jobs import job_server_address, logs

    return logs(job_server_address(args.address), args.job_id, args.follow)


def run_stop(args: argparse.Namespace) -> int:
    from cluster.jobs import stop

    return stop(args.address, args.job_id, wait=not args.no_wait)
