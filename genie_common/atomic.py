"""Write to a hidden temporary name, then rename into place: a reader sees the old file or the whole new one.

One naming scheme for every temporary the project writes next to its final file: `.<name>.tmp-<8 hex>`
(`temp_name`), so `is_temp_file` recognises any of them left by a crash, and a cleanup can remove them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_MARKER = ".tmp-"


def temp_name(name: str) -> str:
    """A hidden, unique temporary name for a file that will be renamed to `name`."""
    return f".{name}{TEMP_MARKER}{uuid.uuid4().hex[:8]}"


def is_temp_file(name: str) -> bool:
    return name.startswith(".") and TEMP_MARKER in name


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path` to write; renamed to `path` when the block ends, removed if it raises."""
    path = Path(path)
    temp = path.with_name(temp_name(path.name))
    try:
        yield temp
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)  # a failed write (full disk, Ctrl-C) leaves nothing behind
        raise


def write_atomic(path: str | os.PathLike, data: bytes | str, fsync: bool = False) -> None:
    """Write `data` (text as UTF-8) to the local `path` atomically; with `fsync`, on disk before the rename."""
    with atomic_path(path) as temp, open(temp, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)
        if fsync:
            handle.flush()
            os.fsync(handle.fileno())
