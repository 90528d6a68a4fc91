"""One writer per output folder: `genie collect` on a dataset, `genie train` on a run folder.

Why: two writers on one folder undo each other's work (the second removes the first's temporary
shards, each rewrites the manifest from memory). The second writer is refused at once, with one
line naming the first (command, host, pid, since when) and what to do.

A local folder is locked with `flock` on `.genie-lock` inside it, which holds the holder's
description; the kernel releases the lock when its holder dies, however it dies, so a crash never
leaves the folder locked (only the file, which the next holder takes over). A holder removes the
file when it is done, so a folder left alone has none. A storage URI has no locks, so the holder writes
a lease object (`.genie-lock.json`: owner, host, pid, since, expiry) and renews it while it works;
a lease that has expired (its holder died) is taken over. Object stores offer no compare-and-swap
here, so two writers starting within the same second could both win; the manifest merge
(`Manifest.save`) keeps each one's shards listed even then.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from genie_common.errors import ConfigError

LOCK_NAME = ".genie-lock"
LEASE_NAME = ".genie-lock.json"
LEASE_SECONDS = 60.0  # a dead holder's lease blocks others this long at most
_HELD: dict[str, tuple[int, int]] = {}  # folder -> (thread holding it in this process, depth)


class FolderInUse(ConfigError):
    """Another process writes into this folder; refused before anything starts (exit code 2)."""


def _owner(command: str) -> dict[str, Any]:
    return {"command": command, "host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"), "token": uuid.uuid4().hex}


def _refusal(location: str, owner: dict[str, Any] | None, expires_in: float | None = None) -> FolderInUse:
    if owner:
        who = (f"`{owner.get('command', '?')}` (pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, "
               f"since {owner.get('since', '?')})")
    else:
        who = "another process (it has not recorded itself yet)"
    lease = f"; its lease expires in {expires_in:.0f} s unless renewed" if expires_in is not None else ""
    return FolderInUse(f"{location} is in use by {who}{lease}: wait for it to finish or stop it, "
                       f"or choose another --out")


@contextlib.contextmanager
def folder_lock(location: str | os.PathLike, command: str, lease_s: float = LEASE_SECONDS) -> Iterator[None]:
    """Hold `location` (a local folder, created if missing, or a storage URI) for `command`.

    Raises `FolderInUse` at once when another process (or another thread of this one) holds it. The thread
    that holds it may take it again (the CLI takes it before starting Ray, the command's function inside).
    """
    uri = "://" in str(location)
    key = str(location).rstrip("/") if uri else str(Path(location).resolve())
    held = _HELD.get(key)
    if held is not None and held[0] == threading.get_ident():
        _HELD[key] = (held[0], held[1] + 1)
        try:
            yield
        finally:
            _HELD[key] = (held[0], _HELD[key][1] - 1)
        return
    with _lease(key, command, lease_s) if uri else _flock(Path(key), command):
        _HELD[key] = (threading.get_ident(), 1)
        try:
            yield
        finally:
            del _HELD[key]


@contextlib.contextmanager
def _flock(folder: Path, command: str) -> Iterator[None]:
    created = not folder.exists()
    path = folder / LOCK_NAME
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # a refused writer that had created the folder removed it just now
        try:
            # per open file: also refuses a second holder in this process
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _parse(os.pread(fd, 4096, 0))
            os.close(fd)
            raise _refusal(str(folder), owner) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # we locked a file its holder removed on release: lock the one at the path now
    try:
        os.ftruncate(fd, 0)  # a holder that crashed left its description
        os.pwrite(fd, json.dumps(_owner(command)).encode(), 0)
        yield
    finally:
        os.unlink(path)  # while still holding it: a folder left alone holds no lock file
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):  # not empty: the writer made something
                folder.rmdir()  # a command refused before it wrote anything leaves nothing behind


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


@contextlib.contextmanager
def _lease(uri: str, command: str, lease_s: float) -> Iterator[None]:
    import pyarrow.fs as pafs

    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as err:
        raise ConfigError(f"{uri}: not a storage location pyarrow can open ({err})") from err
    fs.create_dir(path, recursive=True)
    lease_path = f"{path.rstrip('/')}/{LEASE_NAME}"

    def read() -> dict[str, Any] | None:
        try:
            with fs.open_input_stream(lease_path) as stream:
                return _parse(stream.read())
        except (FileNotFoundError, OSError):
            return None

    def write(owner: dict[str, Any]) -> None:
        with fs.open_output_stream(lease_path) as stream:  # one PUT on object stores: whole or absent
            stream.write(json.dumps({**owner, "expires": time.time() + lease_s}).encode())

    mine = _owner(command)
    held = read()
    if held is not None and held.get("token") != mine["token"] and float(held.get("expires", 0)) > time.time():
        raise _refusal(uri, held, float(held["expires"]) - time.time())
    write(mine)
    time.sleep(min(0.5, lease_s / 10))  # a writer that started at the same moment has written by now
    held = read()
    if held is None or held.get("token") != mine["token"]:
        raise _refusal(uri, held, float(held["expires"]) - time.time() if held else None)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_s / 4):
            try:
                write(mine)
            except OSError:
                pass  # storage hiccup: the next renewal retries, well before the lease runs out

    renewer = threading.Thread(target=renew, name="genie-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        held = read()
        if held is not None and held.get("token") == mine["token"]:
            with contextlib.suppress(OSError):
                fs.delete_file(lease_path)
