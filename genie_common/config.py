"""Typed configs from plain dicts (presets, JSON records, command-line overrides), and their fields that are
command-line options (`option`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from genie_common.errors import ConfigError


def check_known_fields(cls, values: dict[str, Any], what: str) -> None:
    """Refuse keys that are not fields of the dataclass `cls`, naming them and the known ones (a typo must not pass
    silently)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}; known: {sorted(known)}")


def dataclass_from_dict(cls, values: dict[str, Any], what: str):
    """Build a flat config dataclass from a dict, refusing unknown keys by name."""
    check_known_fields(cls, values, what)
    return cls(**values)


def differing_keys(recorded: dict[str, Any], wanted: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """The settings in which a run, collection or sweep recorded in a folder differs from the one asked for now
    (keys in either, sorted), for the "holds a ... with different settings (...)" refusals."""
    return sorted(k for k in set(recorded) | set(wanted) if k not in ignore and recorded.get(k) != wanted.get(k))


RANGES = ("positive", "non_negative", "fraction")
PATHS = ("storage",)


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None, range: str | None = None,
           choices: tuple[Any, ...] | None = None, path: str | None = None) -> Any:
    """A dataclass field that documents itself and is a command-line option (`cluster.dataclass_options` reads it).

    `help` says what the field means (`--help` prints it, with the default); `flag` names the option when it is not
    `--field-name` (a bool field whose default is True is turned off by a flag `--no-...`, and its help says what that
    flag does); `range` checks a number: 'positive' (a whole number >= 1, a real > 0), 'non_negative' (>= 0) or
    'fraction' (in [0, 1]); `choices` lists the values allowed; `path='storage'` marks a local path or storage URI,
    kept exactly as given. The default and the type come from the field itself.
    """
    if range is not None and range not in RANGES:
        raise ValueError(f"range {range!r}: one of {RANGES}")
    if path is not None and path not in PATHS:
        raise ValueError(f"path {path!r}: one of {PATHS}")
    given = {"help": help, "flag": flag, "range": range, "choices": choices, "path": path}
    return dataclasses.field(default=default, metadata={k: v for k, v in given.items() if v is not None})
