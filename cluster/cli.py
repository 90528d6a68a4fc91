"""`genie`: one command line for every part of genie-redux (collect, train, eval, play, pipeline, ...).

Each subcommand is a thin shell over a plain function that takes a typed config and paths,
so the CLI, the pipeline, Ray jobs and Tune trials all run the same code. The command groups live in
`cluster.commands`, one module each (the options several groups share are in `cluster.arguments`; a command whose
settings are one typed config makes its options from the config's fields with `cluster.dataclass_options`); this
module builds the parser from them and runs the chosen command's handler, turning user errors into one line and an
exit code.
"""

from __future__ import annotations

import argparse
import sys

from cluster.arguments import GenieParser
from genie_common.errors import ConfigError, DatasetError, StorageError

EPILOG = """\
typical flow:
  genie collect --agent random --episodes 200 --workers 2 --out data/random
  genie data verify data/random
  genie data stats data/random
  genie agent train --preset tiny --out runs/agent
  genie agent eval --checkpoint runs/agent --episodes 512
  genie collect --agent ppo --checkpoint runs/agent --episodes 200 --out data/ppo
  genie data compare data/random data/ppo
  genie datasets make --preset tiny --checkpoint runs/agent --out data

Every command that uses Ray starts a local Ray instance unless --address (or RAY_ADDRESS)
names a cluster to join. Run `genie COMMAND --help` for the options of each command.
"""


def build_parser() -> argparse.ArgumentParser:
    from cluster.commands import command_modules

    parser = GenieParser(
        prog="genie",
        description="genie-redux: learn a playable world model of CoinRun (GenieRedux / GenieRedux-G) on Ray.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in command_modules():
        module.register(commands)
    return parser


def user_errors() -> tuple[type[Exception], ...]:
    """Errors caused by input (bad config, data, checkpoint, storage): printed as one line, no traceback."""
    from world_model.checkpoint import CheckpointError

    return (ConfigError, DatasetError, CheckpointError, StorageError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except user_errors() as err:
        print(f"genie: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1


if __name__ == "__main__":
    sys.exit(main())
