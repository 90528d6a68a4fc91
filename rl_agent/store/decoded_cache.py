"""The folder of decoded shards (`$GENIE_CACHE_DIR`): room is made before a shard is decoded into it.

A decoded shard is ~12x its compressed file (64x64x3 bytes a frame), and readers memory-map it: a
file written into a full disk is sparse, and the first read of a page the disk never got kills
the process with SIGBUS, far from the cause. So before decoding, the cache
1. removes temporaries older than an hour (left by processes killed mid-decode; a live decode of one
   shard takes seconds),
2. evicts the least recently used decoded shards while the cache would exceed its cap
   (`$GENIE_CACHE_MAX_GB`, none by default) or the disk would keep less than 256 MiB free
   (shards this process has mapped are never evicted by it; evicting a file another process has
   mapped is safe on POSIX: its mapping lives on, only the name goes, and its blocks are freed
   when that process lets go, so on a full disk such an eviction frees the name, not yet the space),
3. allocates the file's blocks up front (`posix_fallocate`), so a disk that fills anyway fails here,
   as a DatasetError that says what to do, and not later as a SIGBUS.
A shard counts as used when it is decoded or opened (its mtime is touched).
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

from rl_agent.store.errors import DatasetError

STALE_TEMP_SECONDS = 3600.0
FREE_MARGIN_BYTES = 256 << 20  # keep 256 MiB free beside the cache
GIB = 1 << 30


# decoded shards this process has memory-mapped (file names), whichever store mapped them: never evicted by it
MAPPED_HERE: set[str] = set()


def _remove(path: Path) -> bool:
    """Delete a cache file; False when it cannot be (another user's file in a shared cache, a read-only folder)."""
    try:
        path.unlink(missing_ok=True)
        return True
    except OSError:
        return False


def cache_cap_bytes() -> int | None:
    """`$GENIE_CACHE_MAX_GB` in bytes (None: no cap, only the free-space check)."""
    text = os.environ.get("GENIE_CACHE_MAX_GB", "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise DatasetError(f"GENIE_CACHE_MAX_GB must be a number of GB, got {text!r}") from None
    if value <= 0:
        raise DatasetError(f"GENIE_CACHE_MAX_GB must be > 0, got {text!r} (unset it for no cap)")
    return int(value * GIB)


def is_temporary(path: Path) -> bool:
    return path.name.startswith(".") and path.suffix == ".npy"


class DecodedCache:
    """One cache folder: where a shard's decoded frames live, and making room for a new one."""

    def __init__(self, folder: Path, max_bytes: int | None = None) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def path(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.npy"

    def touch(self, path: Path) -> None:
        """Mark a decoded shard as used now (the eviction order)."""
        try:
            os.utime(path)
        except OSError:
            pass  # a read-only cache still serves; it is just not reordered

    def make_room(self, size: int) -> None:
        """Clean stale temporaries, then evict least recently used shards (never one this process has mapped)
        until `size` more bytes fit under the cap and leave the margin free; DatasetError when they cannot."""
        self.folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        decoded = []
        for entry in os.scandir(self.folder):
            path = Path(entry.path)
            if path.suffix != ".npy" or not entry.is_file():
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue  # renamed into place or evicted by another process since the listing
            if is_temporary(path):
                if now - stat.st_mtime > STALE_TEMP_SECONDS:
                    _remove(path)
                continue
            decoded.append((stat.st_mtime, stat.st_size, path))
        decoded.sort()  # oldest use first
        used = sum(s for _, s, _ in decoded)

        def fits() -> bool:
            under_cap = self.max_bytes is None or used + size <= self.max_bytes
            return under_cap and shutil.disk_usage(self.folder).free >= size + FREE_MARGIN_BYTES

        for _, file_size, path in decoded:
            if fits():
                return
            if path.name in MAPPED_HERE or not _remove(path):
                continue
            used -= file_size
        if not fits():
            free = shutil.disk_usage(self.folder).free
            capped = self.max_bytes is not None and used + size > self.max_bytes
            cap = f", cap {self.max_bytes / GIB:.1f} GB (GENIE_CACHE_MAX_GB)" if self.max_bytes is not None else ""
            todo = ("raise GENIE_CACHE_MAX_GB, or point GENIE_CACHE_DIR at a larger disk" if capped else
                    f"free space on that disk (it must keep {FREE_MARGIN_BYTES >> 20} MiB free), "
                    f"or point GENIE_CACHE_DIR at a larger one")
            raise DatasetError(
                f"the decoded-frame cache {self.folder} has no room for a {size / GIB:.2f} GB shard "
                f"({free / GIB:.1f} GB free on its disk, {used / GIB:.1f} GB held by shards in use{cap}): {todo}")

    def allocate(self, path: Path) -> None:
        """Reserve every block of a freshly created file, so a full disk fails now and not on first read.

        The caller removes the file when this raises (it is a temporary, never renamed into place then)."""
        if not hasattr(os, "posix_fallocate"):
            return  # not on this OS (macOS): the free-space check above is all there is
        try:
            with open(path, "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
        except OSError as err:
            if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                return  # a filesystem that cannot reserve blocks (e.g. ZFS): nothing more to check
            size = os.stat(path).st_size
            raise DatasetError(
                f"the decoded-frame cache {self.folder} filled up while a {size / GIB:.2f} GB shard was "
                f"decoded into it ({err.strerror}): free space on that disk, or point GENIE_CACHE_DIR at a larger "
                "one") from err
