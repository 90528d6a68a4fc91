"""The process `genie submit` starts on the cluster: `python -m cluster.job_entry [--expect-version V] -- COMMAND ARGS`.

It says where it runs, warns when the cluster's genie-redux differs from the one the job was
submitted with (the arguments may then mean something else), and runs `genie COMMAND ARGS`. Inside a
job, RAY_ADDRESS points at the cluster, so the command joins it instead of starting its own Ray.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from cluster.jobs import installed_version


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    expected = None
    if argv[:1] == ["--expect-version"]:
        expected, argv = argv[1], argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    import cluster

    installed = installed_version()
    code = Path(cluster.__file__).resolve().parent.parent  # an uploaded working dir comes first on sys.path
    print(f"genie job on {socket.gethostname()}: genie-redux {installed or '(not installed)'}, code in {code}, "
          f"Ray at {os.environ.get('RAY_ADDRESS', '(none)')}", flush=True)
    if expected and installed != expected:
        print(f"warning: the cluster runs genie-redux {installed}, the job was submitted from {expected}; "
              f"rebuild the wheel and `ray up cluster.yaml` again, or submit with --working-dir", file=sys.stderr,
              flush=True)
    from cluster.cli import main as genie

    return genie(argv)


if __name__ == "__main__":
    sys.exit(main())
