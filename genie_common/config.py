"""Typed configs from plain dicts (presets, JSON records, command-line overrides)."""

from __future__ import annotations

import dataclasses
from typing import Any

from genie_common.errors import ConfigError


def dataclass_from_dict(cls, values: dict[str, Any], what: str):
    """Build a config dataclass from a dict, refusing unknown keys by name (a typo must not pass silently)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {what}(s) {unknown}; known: {sorted(known)}")
    return cls(**values)
