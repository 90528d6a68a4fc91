"""Command-line values checked where they are parsed: `genie`'s parser class and its argument types.

Every command checks its arguments before it starts anything (Ray, a collection, a training run): a bad
value ends the command with one line naming the option and exit code 2, the same as a bad preset value.
An output file is checked here too (its folder exists and is writable), so a long computation never
ends in "no such directory".

Every path argument has one of two types, so none goes through a bare `Path(...)` (which turns
`s3://b/x` into `s3:/b/x`, a local folder named `s3:`): `storage_location` keeps a path or a storage
URI as the text given, for the commands that read or write URIs; `local_path(...)` (and `output_file`)
is for files only this machine uses (a figure, a preset YAML, a checkout to upload), and refuses a
URI in one line that says what to give instead.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import math
import os
import sys
from pathlib import Path
from typing import Callable, Iterator, NoReturn

from genie_common.uris import is_uri  # pyarrow-free: `genie --help` stays light

# False while `genie submit` parses a command's arguments: its output paths name files on the cluster, not here
_LOCAL_OUTPUTS = contextvars.ContextVar("local_outputs", default=True)


class GenieParser(argparse.ArgumentParser):
    """argparse, with errors as one line (`genie train: error: argument --batch: ...`) instead of the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise SystemExit(status)


def _number(text: str, kind: type, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (counts, sizes, steps)."""
    value = _number(text, int, "a whole number >= 1")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A whole number >= 0 (seeds, optional counts where 0 means none)."""
    value = _number(text, int, "a whole number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float, "a number > 0")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    value = _number(text, float, "a number >= 0")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1] (probabilities, shares)."""
    value = _number(text, float, "a number in [0, 1]")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}")
    return value


def port(text: str) -> int:
    value = _number(text, int, "a port number in 1..65535")
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"must be a port number in 1..65535, got {text!r}")
    return value


def storage_location(text: str) -> str:
    """A local path or a storage URI (s3://, gs://, file://, ...), kept exactly as given: the command reads or
    writes it with pyarrow's filesystems, so the same command works on a laptop and on a cluster's bucket."""
    if is_uri(text) and not text.split("://", 1)[1].strip("/"):
        raise argparse.ArgumentTypeError(f"{text!r} names no bucket or folder; e.g. s3://bucket/folder")
    return text


storage_location.path_kind = "storage"  # type: ignore[attr-defined]  (tests find every path argument by this)


def local_path(instead: str) -> Callable[[str], str]:
    """A path only this machine uses, kept as given; a URI is refused with `instead`, the line that says what to
    give."""

    def parse(text: str) -> str:
        if is_uri(text):
            raise argparse.ArgumentTypeError(f"{text} is a storage URI, but {instead}")
        return text

    parse.path_kind = "local"  # type: ignore[attr-defined]
    parse.__name__ = "local path"  # argparse names the type in some messages
    return parse


LOCAL_FILE = "this file is read here: give a path on this machine"
_local_output = local_path("this file is written on this machine: give a local path (and copy it to storage after)")


def output_file(text: str) -> Path:
    """A file the command will write: its folder must exist and be writable, and it must not be a folder."""
    path = Path(_local_output(text))
    if _LOCAL_OUTPUTS.get():
        check_output_file(path)
    return path


output_file.path_kind = "local"  # type: ignore[attr-defined]


@contextlib.contextmanager
def outputs_elsewhere() -> Iterator[None]:
    """Parse arguments for another machine (a job on the cluster): output files are not looked for here."""
    token = _LOCAL_OUTPUTS.set(False)
    try:
        yield
    finally:
        _LOCAL_OUTPUTS.reset(token)


def check_output_file(path: Path) -> None:
    """The check of `output_file`, for a path a command computes itself (argparse.ArgumentTypeError when bad)."""
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; name the file to write")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"the folder {folder} does not exist; create it first (mkdir -p {folder})")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise argparse.ArgumentTypeError(f"{path} cannot be written (no permission)")


def add_address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray cluster to join (e.g. 127.0.0.1:6379 or 'auto'); default: RAY_ADDRESS, else a local "
                             "Ray instance")


def add_preset(parser: argparse.ArgumentParser) -> None:
    """--preset, --preset-file and --set of the commands that read a preset's `agent:` or `data:` section."""
    parser.add_argument("--preset", default="tiny",
                        help="tiny (2-core laptop, minutes), laptop (2 cores, under 2 h), small (one GPU), paper "
                             "(GPU cluster)")
    parser.add_argument("--preset-file", type=local_path(LOCAL_FILE), default=None,
                        help="your own preset YAML (overrides --preset)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override one preset field, e.g. --set agent.lr=0.001 (repeatable)")


def preset_of(args: argparse.Namespace) -> dict:
    """The preset that `add_preset`'s options name, with their overrides."""
    from cluster.presets import load_preset

    return load_preset(args.preset, args.preset_file, args.set)


def conditioning(text: str) -> str:
    """The type of --actions (`genie train`, `genie tune`): DynamicsConfig's words (`ground_truth`, `latent`, the
    field's choices); `true`, its older word, still means ground_truth, with a one-line note."""
    if text == "true":
        sys.stderr.write("genie: note: --actions true is deprecated; it means --actions ground_truth\n")
        return "ground_truth"
    return text


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: X)" after an option's help, only where X tells the reader something: not after a
    required option, a switch (False), or an unset default (None, empty), whose help says what happens instead."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.default is False or action.default in ([], ()):
            return action.help
        return super()._get_help_string(action)

