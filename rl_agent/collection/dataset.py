"""A dataset folder made ready for collecting, on local disk or at a storage URI alike: its manifest claimed for
this collection, temp files removed, missing or damaged listed shards dropped, orphan shards adopted.

Why one body for both: the steps are the same and only the file operations differ, so those are behind
`LocalFiles` and `RemoteFiles`, and a fix to the steps reaches both kinds of folder.
"""

from __future__ import annotations

import fnmatch
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from genie_common.config import differing_keys
from genie_common.errors import ConfigError
from genie_common.storage import RemoteFolder, is_uri
from rl_agent.collection.config import CollectConfig, ShardPlan, plan_shards
from rl_agent.collection.shards import adopt_shard
from rl_agent.store.errors import DatasetError
from rl_agent.store.manifest import Manifest, ShardInfo
from rl_agent.store.verify import check_listed_shards
from rl_agent.store.writer import SHARD_SUFFIX, file_sha256, is_temp_file


class LocalFiles:
    """The files of a dataset folder on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_file()) if self.root.is_dir() else []

    def size(self, name: str) -> int | None:
        path = self.root / name
        return path.stat().st_size if path.is_file() else None

    def sha256(self, name: str) -> str:
        return file_sha256(self.root / name)

    def remove(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    @contextmanager
    def local_file(self, name: str) -> Iterator[Path]:
        yield self.root / name

    def shown(self, message: object) -> str:
        return str(message)


class RemoteFiles:
    """The files of a dataset folder at a storage URI; a file read here is fetched into `staging`, one at a time."""

    def __init__(self, remote: RemoteFolder, staging: Path) -> None:
        self.remote, self.staging = remote, staging
        self.where = remote.uri

    def names(self) -> list[str]:
        return self.remote.names()

    def size(self, name: str) -> int | None:
        return self.remote.size(name)

    def remove(self, name: str) -> None:
        self.remote.remove(name)

    def sha256(self, name: str) -> str:
        with self.local_file(name) as local:
            return file_sha256(local)

    @contextmanager
    def local_file(self, name: str) -> Iterator[Path]:
        local = self.remote.download(name, self.staging)
        try:
            yield local
        finally:
            local.unlink()  # one shard on local disk at a time

    def shown(self, message: object) -> str:
        """A message about the staging copy, naming the URI instead."""
        return str(message).replace(str(self.staging), self.remote.uri)


Files = LocalFiles | RemoteFiles


def remove_temp_files(files: Files, collection: str) -> None:
    """Remove the collection's temp files: a shard or upload cut short when its process or node died (or renamed
    just now), or left by collectors that crashed and were restarted during this run."""
    for name in files.names():
        if name.startswith(f".{collection}-") and is_temp_file(name):
            files.remove(name)


def _claim_collection(manifest: Manifest, config: CollectConfig, where: str) -> None:
    """Record this collection's settings in the manifest, refusing to mix settings under one name."""
    settings = config.data_settings()
    recorded = manifest.collections.get(config.collection)
    if recorded is not None and recorded != settings:
        changed = differing_keys(recorded, settings)
        raise ConfigError(
            f"{where} already holds collection {config.collection!r} made with different settings "
            f"({', '.join(changed)}); use the same settings to extend it, another --seed, or another --out"
        )
    manifest.collections[config.collection] = settings


def _tidy(manifest: Manifest, config: CollectConfig, files: Files, verify: bool) -> list[ShardPlan]:
    """Claim the collection, remove temp files, drop listed shards that are missing or damaged (size; checksum with
    `verify`), adopt orphan shards, save the manifest and plan the rest."""
    _claim_collection(manifest, config, files.where)
    remove_temp_files(files, config.collection)
    bad = check_listed_shards(manifest, config.collection, files.size, files.sha256 if verify else None)
    _drop_bad_shards(manifest, bad, files.where, files.remove)
    listed = {s.file for s in manifest.shards}
    for name in files.names():
        if fnmatch.fnmatch(name, f"{config.collection}-*{SHARD_SUFFIX}") and name not in listed:
            with files.local_file(name) as path:
                try:
                    manifest.add_shard(adopt_shard(path, config))
                except DatasetError as err:  # committed shards are whole: the disk damaged this one
                    files.remove(name)
                    print(f"note: {files.shown(err)}; removed, it is made again", flush=True)
    manifest.save()
    existing = {s.index: len(s.episodes) for s in manifest.shards_of(config.collection)}
    return plan_shards(existing, config.episodes, config.episodes_per_shard)


def _drop_bad_shards(manifest: Manifest, bad: list[tuple[ShardInfo, str]], where: str,
                     remove: Callable[[str], None]) -> None:
    for shard, why in bad:
        manifest.drop_shard(shard.file)
        remove(shard.file)
        print(f"note: {where}/{shard.file} is {why}; making it again", flush=True)


def prepare_dataset(config: CollectConfig, out_dir: Path, verify: bool = False) -> tuple[Manifest, list[ShardPlan]]:
    """Load or create the manifest of a local folder, make it ready (`_tidy`), plan the rest."""
    manifest = Manifest.load_or_create(out_dir)
    return manifest, _tidy(manifest, config, LocalFiles(out_dir), verify)


def prepare_remote_dataset(config: CollectConfig, remote: RemoteFolder, staging: Path,
                           verify: bool = False) -> tuple[Manifest, list[ShardPlan]]:
    """`prepare_dataset` for a dataset at a storage URI; the manifest is kept in `staging` and uploaded."""
    remote.makedirs()
    remote.download_manifest(staging)
    try:
        manifest = Manifest.load_or_create(staging)
    except DatasetError as err:  # name the URI, not the staging copy
        raise DatasetError(str(err).replace(str(staging), remote.uri)) from err
    plans = _tidy(manifest, config, RemoteFiles(remote, staging), verify)
    remote.upload_manifest(staging)
    return manifest, plans


def load_manifest(location: str | Path) -> Manifest:
    """The manifest of a local folder or of a dataset at a URI (read from a copy that is gone afterwards)."""
    if not is_uri(location):
        return Manifest.load(location)
    with tempfile.TemporaryDirectory(prefix="genie-manifest-") as staging:
        remote = RemoteFolder(str(location))
        if not remote.download_manifest(Path(staging)):
            raise DatasetError(f"{location}: no manifest.json; not a genie-redux dataset")
        return Manifest.load(staging)


def check_anywhere(manifest: Manifest, collection: str, location: str | Path) -> list[tuple[ShardInfo, str]]:
    """`check_listed_shards` with checksums, for a local folder or a URI."""
    if not is_uri(location):
        files = LocalFiles(Path(location))
        return check_listed_shards(manifest, collection, files.size, files.sha256)
    with tempfile.TemporaryDirectory(prefix="genie-check-") as staging:
        files = RemoteFiles(RemoteFolder(str(location)), Path(staging))
        return check_listed_shards(manifest, collection, files.size, files.sha256)
