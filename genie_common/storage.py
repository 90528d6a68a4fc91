"""Local paths and storage URIs (`s3://`, `gs://`, `file://`, ...) behind one small interface.

A multi-node cluster needs data, checkpoints and results on storage every node sees, and a
laptop has only its disk; every command takes either (docs/design.md, 'Conventions'). pyarrow's filesystems do the
I/O, so any URI pyarrow understands works. Remote inputs are mirrored into a node-local cache, because
training reads windows at random and memory-maps decoded shards. A mirror follows its remote: a file by
its size and modification time (`local_copy`), a dataset by its manifest (`local_dataset`); files arrive
under temporary names and are renamed into place, and no mirror folder is ever removed while in use.

`RemoteFolder` is one folder at a URI seen as a dataset or run folder (list, download, upload atomically,
delete): on a cluster, collectors write each shard to a local staging folder on their own node and upload
it under a hidden temp name, then move it to its final name (the temp-name convention of `genie_common.atomic`,
so a crash leaves nothing that looks like a shard); the driver keeps the manifest in a local staging folder
and uploads it after every change the same way.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from genie_common.atomic import temp_name
from genie_common.errors import DatasetError, StorageError
from genie_common.uris import is_uri, join

MANIFEST_NAME = "manifest.json"  # a dataset's manifest (`rl_agent.store.manifest`)


def resolve(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem and the path inside it for a local path or URI."""
    text = str(location)
    if not is_uri(text):
        return pafs.LocalFileSystem(), str(Path(text).resolve())
    try:
        return pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise StorageError(f"{text}: not a storage location pyarrow can open ({err})") from err


def exists(location: str | os.PathLike) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(location: str | os.PathLike) -> bool:
    fs, path = resolve(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def makedirs(location: str | os.PathLike) -> None:
    fs, path = resolve(location)
    fs.create_dir(path, recursive=True)


def move(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename a file or folder within one file system (its parent folders made). Object stores move files only
    (pyarrow cannot rename a prefix): a folder there is refused with a StorageError that says so."""
    fs, source_path = resolve(source)
    _, target_path = resolve(target)
    fs.create_dir(target_path.rsplit("/", 1)[0], recursive=True)
    try:
        fs.move(source_path, target_path)
    except (OSError, NotImplementedError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise StorageError(f"cannot move {source} to {target} ({err})") from err


def read_bytes(location: str | os.PathLike) -> bytes:
    fs, path = resolve(location)
    try:
        with fs.open_input_stream(path) as stream:
            return stream.read()
    except (FileNotFoundError, OSError) as err:
        raise StorageError(f"{location}: cannot read ({err})") from err


def write_bytes_atomic(location: str | os.PathLike, data: bytes) -> None:
    """Write to a temp name then move; readers see the old file or the whole new one.

    (On object stores a move is a copy + delete, still never a half-written object under the name.)
    """
    fs, path = resolve(location)
    parent = path.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    temp = f"{parent}/{temp_name(path.rsplit('/', 1)[1])}"
    try:
        with fs.open_output_stream(temp) as stream:
            stream.write(data)
        fs.move(temp, path)
    except BaseException:
        try:
            fs.delete_file(temp)  # a failed write leaves nothing behind
        except OSError:
            pass
        raise


def upload_file(local: str | os.PathLike, location: str | os.PathLike) -> None:
    """Copy a local file to a path or URI (atomically under its final name)."""
    write_bytes_atomic(location, Path(local).read_bytes())


def remote_cache_dir() -> Path:
    return Path(os.environ.get("GENIE_CACHE_DIR", Path.home() / ".cache" / "genie-redux" / "decoded")).parent / "remote"


def local_copy(location: str | os.PathLike, refresh: bool = False) -> Path:
    """A local path holding `location`: the path itself when local, else a node-local mirror of the URI.

    A file is checked against the remote on every call and fetched again when it changed there (a model
    retrained at the same URI), by `_mirror_file`. A folder (a run folder, an evaluation) is mirrored file by
    file when it has no mirror yet, or with `refresh` (a folder still being written): see `_mirror_folder`.
    """
    text = str(location)
    if not is_uri(text):
        path = Path(text)
        if not path.exists():
            raise StorageError(f"{path}: no such file or folder")
        return path
    fs, path = resolve(text)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise StorageError(f"{text}: nothing at this URI; check the bucket/path and your credentials")
    target = remote_cache_dir() / hashlib.sha256(text.encode()).hexdigest()[:16] / Path(path).name
    if info.type == pafs.FileType.File:
        _mirror_file(fs, info, target, text)
    elif refresh or not target.is_dir():
        _mirror_folder(fs, path, target, text)
    return target


MIRROR_TEMP_SUFFIX = ".mirror-part"  # a file being fetched into a mirror (never read, never synced away)


def _is_current(local: Path, info: pafs.FileInfo) -> bool:
    """Whether a mirrored file is the remote one now: the same size, and stamped with the remote's mtime.

    Size and modification time are what pyarrow reports for every store (no ETag or checksum), so a mirrored
    file carries the remote's mtime as its own (`_mirror_file` sets it). A remote without mtimes: never current.
    """
    try:
        stat = local.stat()
    except FileNotFoundError:
        return False
    return info.mtime_ns is not None and stat.st_size == info.size and stat.st_mtime_ns == info.mtime_ns


def _mirror_file(fs: pafs.FileSystem, info: pafs.FileInfo, target: Path, uri: str) -> None:
    """Fetch the remote file `info` to `target` unless the mirror holds it already.

    It arrives under a temporary name and is renamed into place: a process reading the old copy keeps it
    (its open file lives on), one opening the name gets the old or the new file whole, never a part. The
    remote's mtime stamped on it is the one listed before the fetch: a file replaced at the remote meanwhile
    is fetched again next time, never taken for current with an older content.
    """
    if _is_current(target, info):
        return
    try:
        _fetch_into_place(fs, info.path, target, info.mtime_ns)
    except (OSError, pa.ArrowException) as err:
        raise StorageError(f"{uri}: cannot be fetched to {target} ({err}); check the URI, your credentials "
                           f"and the free space on this node") from err


def _fetch_into_place(fs: pafs.FileSystem, remote_path: str, target: Path, mtime_ns: int | None = None) -> None:
    """Copy a remote file to `target` under a temporary name, then rename it into place (stamped with `mtime_ns`
    when given): a reader of the old copy keeps it, one opening the name gets a whole file. A failed or
    interrupted fetch leaves nothing behind; its error (OSError, ArrowException) is the caller's to word."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}{MIRROR_TEMP_SUFFIX}")
    try:
        pafs.copy_files(remote_path, str(staging), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        if mtime_ns is not None:
            os.utime(staging, ns=(mtime_ns, mtime_ns))
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)  # an error or Ctrl-C: nothing half-fetched stays
        raise


def _mirror_folder(fs: pafs.FileSystem, root: str, target: Path, uri: str) -> None:
    """Bring the mirror folder `target` up to the remote folder `root`, file by file, in place.

    Changed and new files are fetched (`_mirror_file`: atomically), unchanged ones stay, and only files gone
    from the remote are removed from the mirror (each alone; a process that has one open keeps reading it).
    The folder itself is never removed or swapped, so two processes on one node refreshing it at once, or one
    refreshing it while another reads from it, never take a file from each other.
    """
    prefix = root.rstrip("/") + "/"
    try:
        listing = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except (OSError, pa.ArrowException) as err:
        raise StorageError(f"{uri}: cannot list the folder ({err}); check the URI and your credentials") from err
    remote = {info.path[len(prefix):]: info for info in listing
              if info.type == pafs.FileType.File and info.path.startswith(prefix)}
    target.mkdir(parents=True, exist_ok=True)
    for name, info in list(remote.items()):
        try:
            _mirror_file(fs, info, target / name, join(uri, name))
        except StorageError:
            if fs.get_file_info(info.path).type != pafs.FileType.NotFound:
                raise
            remote.pop(name)  # gone since the listing (a writer's temporary renamed into place): not mirrored
    stale_before = time.time() - 3600  # a fetch of one file takes far less; older temporaries were killed mid-fetch
    for local in target.rglob("*"):
        name = local.relative_to(target).as_posix()
        try:
            if local.name.endswith(MIRROR_TEMP_SUFFIX):
                if local.stat().st_mtime < stale_before:
                    local.unlink(missing_ok=True)
            elif name not in remote and local.is_file():
                local.unlink(missing_ok=True)  # gone at the remote (a checkpoint Ray dropped, a lost shard)
        except FileNotFoundError:
            continue  # renamed into place or removed by another process since the listing


def local_dataset(location: str | os.PathLike) -> Path:
    """A local folder holding the dataset at `location` (a folder is itself; a URI is mirrored on this node).

    The mirror is kept by the remote manifest's content, not by the URI alone: when the dataset at the URI
    was extended or repaired since, the shards the manifest now lists that the mirror lacks (or holds at
    another size) are fetched, and nothing else; the manifest is replaced last. Nothing is ever deleted and
    every file arrives under a temporary name and is renamed into place, so two processes mirroring at once
    on one node (two training workers) never remove or half-read each other's files, and a reader that
    loaded the older manifest keeps reading the shards it lists. A shard is fetched again when its checksum
    changed (repaired), and a manifest replaced while shards were fetched is mirrored again, up to three times.
    """
    if not is_uri(location):
        return Path(location)  # the dataset readers say what is wrong with a bad folder
    manifest_uri = join(location, MANIFEST_NAME)
    if not is_file(manifest_uri):
        raise StorageError(f"{location}: no {MANIFEST_NAME} there; not a genie-redux dataset "
                           f"(make one with `genie collect --out {location}`)")
    mirror = remote_cache_dir() / "datasets" / hashlib.sha256(str(location).encode()).hexdigest()[:16]
    mirror.mkdir(parents=True, exist_ok=True)
    local_manifest = mirror / MANIFEST_NAME
    fs, root = resolve(location)
    for _ in range(3):  # a manifest replaced while its shards were fetched: fetch against the new one
        remote_manifest = read_bytes(manifest_uri)
        if local_manifest.is_file() and local_manifest.read_bytes() == remote_manifest:
            return mirror
        held = _listed_shards(local_manifest.read_bytes(), local_manifest) if local_manifest.is_file() else {}
        for file, (size, sha256) in _listed_shards(remote_manifest, manifest_uri).items():
            target = mirror / file
            if held.get(file) == (size, sha256) and target.is_file() and target.stat().st_size == size:
                continue  # the same shard as the one this mirror holds (a repaired one has another checksum)
            try:
                _fetch_into_place(fs, f"{root}/{file}", target)
            except (OSError, pa.ArrowException) as err:
                raise StorageError(f"{location}/{file}: listed in the manifest but cannot be fetched ({err}); "
                                   f"run `genie data repair {location}`") from err
        if read_bytes(manifest_uri) == remote_manifest:
            write_bytes_atomic(local_manifest, remote_manifest)
            return mirror
    raise StorageError(f"{location}: its manifest kept changing while it was mirrored (a collection writing into it?); "
                       f"run again once it is done")


def _listed_shards(manifest: bytes, where: object) -> dict[str, tuple[int, str]]:
    """A manifest's shards: file -> (bytes, sha256)."""
    try:
        return {str(s["file"]): (int(s["bytes"]), str(s["sha256"])) for s in json.loads(manifest).get("shards", [])}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise StorageError(f"{where}: unreadable manifest ({err}); run `genie data verify` on the dataset") from err


class RemoteFolder:
    """A folder given by a storage URI: list, download, upload atomically, delete."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        try:
            self.fs, self.path = pafs.FileSystem.from_uri(self.uri)
        except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise DatasetError(f"{uri}: not a storage location pyarrow can open ({err}); "
                               f"use a local path or a URI such as s3://bucket/folder") from err
        self.path = self.path.rstrip("/")

    def __str__(self) -> str:
        return self.uri

    def _full(self, name: str) -> str:
        return f"{self.path}/{name}" if name else self.path

    def folders(self, name: str = "") -> list[str]:
        """Names of the folders directly inside `name` (a path below this folder); none if it does not exist."""
        infos = self.fs.get_file_info(pafs.FileSelector(self._full(name), allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)

    def kind(self, name: str = "") -> pafs.FileType:
        """What is at `name` below this folder (the folder itself for ""): File, Directory or NotFound."""
        return self.fs.get_file_info(self._full(name)).type

    def download_tree(self, name: str, local_dir: Path) -> Path:
        """Copy the folder `name` (below this one; "" for all of it) into `local_dir`, recursively."""
        Path(local_dir).mkdir(parents=True, exist_ok=True)
        pafs.copy_files(self._full(name), str(local_dir), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return Path(local_dir)

    def upload_tree(self, local_dir: Path, name: str, last: str | None = None) -> None:
        """Copy the local folder `local_dir` to `name` below this folder; the file `last` (a completion marker)
        goes up after all the others, so a reader that trusts the marker never sees a partial folder."""
        files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
        files.sort(key=lambda p: p.name == last)
        try:
            for file in files:
                target = self._full(f"{name}/{file.relative_to(local_dir).as_posix()}")
                self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
                pafs.copy_files(str(file), target, source_filesystem=pafs.LocalFileSystem(),
                                destination_filesystem=self.fs)
        except OSError as err:
            raise DatasetError(f"{self.uri}/{name}: upload failed ({err}); check the URI and your credentials") from err

    def remove_tree(self, name: str) -> None:
        try:
            self.fs.delete_dir(self._full(name))
        except FileNotFoundError:
            pass

    def makedirs(self) -> None:
        try:
            self.fs.create_dir(self.path, recursive=True)
        except OSError as err:
            raise DatasetError(f"{self.uri}: cannot create the dataset folder ({err}); check the URI and your "
                               f"credentials (on a cluster: the nodes' instance profile)") from err

    def names(self) -> list[str]:
        """Names of the files directly inside the folder (none if it does not exist yet)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)

    def size(self, name: str) -> int | None:
        """Bytes of the file `name`, None when there is none."""
        info = self.fs.get_file_info(self._full(name))
        return info.size if info.type == pafs.FileType.File else None

    def exists(self, name: str) -> bool:
        return self.fs.get_file_info(self._full(name)).type == pafs.FileType.File

    def download(self, name: str, local_dir: Path) -> Path:
        target = Path(local_dir) / name
        pafs.copy_files(self._full(name), str(target), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        return target

    def upload(self, local_file: Path, name: str) -> None:
        """Copy a local file under `name`, atomically: readers see the old object or the whole new one."""
        temp = self._full(temp_name(name))
        try:
            pafs.copy_files(str(local_file), temp, source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=self.fs)
            self.fs.move(temp, self._full(name))
        except OSError as err:
            raise DatasetError(f"{self.uri}/{name}: upload failed ({err}); check the URI and your credentials") from err

    def remove(self, name: str) -> None:
        try:
            self.fs.delete_file(self._full(name))
        except FileNotFoundError:
            pass

    def download_manifest(self, local_dir: Path) -> bool:
        """Fetch manifest.json into `local_dir`; False when the dataset has none yet."""
        if not self.exists(MANIFEST_NAME):
            return False
        self.download(MANIFEST_NAME, local_dir)
        return True

    def upload_manifest(self, local_dir: Path) -> None:
        self.upload(Path(local_dir) / MANIFEST_NAME, MANIFEST_NAME)
