"""A dataset or run folder on shared storage (`s3://`, `gs://`, `file://`, ... URIs), for collection on a cluster.

Why: on a cluster, collectors run on many machines and the next stage on yet another, so the dataset
must live where every node sees it. Collectors write each shard to a local staging folder on their own
node and upload it under a hidden temp name, then move it to its final name (the same temp-name
convention as local shards, so a crash leaves nothing that looks like a shard); the driver keeps the
manifest in a local staging folder and uploads it after every change the same way.

pyarrow's filesystems do the I/O (what `world_model.storage` also uses; this module stays in
`rl_agent` because imports point from the world model to the agent, never back).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow.fs as pafs

from rl_agent.store.errors import DatasetError
from rl_agent.store.manifest import MANIFEST_NAME
from rl_agent.store.writer import TEMP_MARKER


def is_uri(location: str | os.PathLike) -> bool:
    """True for 'scheme://...' (including file://), False for local paths."""
    return "://" in str(location)


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
                pafs.copy_files(str(file), target, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
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
        temp = self._full(f".{name}{TEMP_MARKER}{uuid.uuid4().hex[:8]}")
        try:
            pafs.copy_files(str(local_file), temp, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=self.fs)
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
