"""Local paths and storage URIs told apart and joined, without importing pyarrow (`genie --help` stays light)."""

from __future__ import annotations

import os


def is_uri(location: str | os.PathLike) -> bool:
    """True for 'scheme://...' (including file://), False for local paths."""
    return "://" in str(location)


def join(location: str | os.PathLike, *parts: str) -> str:
    """`location/part/...` for paths and URIs alike."""
    text = str(location).rstrip("/")
    return "/".join([text, *parts])
