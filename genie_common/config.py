"""Typed configs from plain dicts (presets, JSON records, command-line overrides)."""

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
