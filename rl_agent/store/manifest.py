"""The dataset manifest: every shard with its episodes, row count, checksum, agent, env options and split.

The manifest is the dataset's table of contents and the only file that is rewritten; it is
replaced atomically (temp file + rename), so a crash leaves either the old or the new one.
Before replacing it, `save` re-reads it and keeps what another writer listed meanwhile (a
folder has one writer at a time, `rl_agent.store.lock`, but a writer that does not take the
lock must not lose anyone's shards); only shards this process dropped on purpose leave it.
A shard file that is not listed is not part of the dataset (a collector died before the
driver recorded it); `genie collect` adopts such files after checking them.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

from genie_common.atomic import write_atomic
from genie_common.storage import MANIFEST_NAME
from rl_agent.store.errors import DatasetError
from rl_agent.store.schema import FORMAT_NAME, FORMAT_VERSION

SPLITS = ("train", "val", "test")


@dataclass
class EpisodeInfo:
    id: str
    length: int  # number of frames (rows)
    ret: float  # sum of rewards
    level_seed: int
    terminated: bool
    truncated: bool
    split: str
    batch: int  # index of the episode's record batch inside its shard

    @property
    def success(self) -> bool:
        """CoinRun pays 10 for the coin and nothing else, so a positive return means the level was solved."""
        return self.terminated and self.ret > 0


@dataclass
class ShardInfo:
    file: str
    collection: str
    index: int
    sha256: str
    bytes: int
    rows: int
    agent: str
    episodes: list[EpisodeInfo] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "ShardInfo":
        values = dict(values)
        values["episodes"] = [EpisodeInfo(**e) for e in values.get("episodes", [])]
        return cls(**values)


@dataclass
class Manifest:
    """In-memory form of `manifest.json`; `collections` holds each collection run's settings."""

    root: Path
    collections: dict[str, dict[str, Any]] = field(default_factory=dict)
    shards: list[ShardInfo] = field(default_factory=list)
    dropped: set[str] = field(default_factory=set, repr=False, compare=False)  # files removed by this process

    @classmethod
    def load(cls, root: str | os.PathLike) -> "Manifest":
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: no such dataset folder. Create one with `genie collect --out {root}`.")
        path = root / MANIFEST_NAME
        if not path.is_file():
            raise DatasetError(
                f"{path}: missing manifest; {root} is not a genie-redux dataset (or its collection never "
                f"committed a shard). Run `genie collect --out {root} ...` to create or complete it."
            )
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DatasetError(
                f"{path}: manifest is not valid JSON ({err}); restore it or re-collect the dataset") from err
        if data.get("format") != FORMAT_NAME:
            raise DatasetError(f"{path}: not a genie-redux episode manifest (format={data.get('format')!r})")
        if data.get("version") != FORMAT_VERSION:
            raise DatasetError(f"{path}: manifest version {data.get('version')} is not supported (expected "
                               f"{FORMAT_VERSION})")
        try:
            shards = [ShardInfo.from_json(s) for s in data["shards"]]
        except (KeyError, TypeError) as err:
            raise DatasetError(f"{path}: malformed manifest entry ({err})") from err
        return cls(root=root, collections=data.get("collections", {}), shards=shards)

    @classmethod
    def load_or_create(cls, root: str | os.PathLike) -> "Manifest":
        root = Path(root)
        if (root / MANIFEST_NAME).exists():
            return cls.load(root)
        root.mkdir(parents=True, exist_ok=True)
        return cls(root=root)

    def save(self) -> None:
        """Merge with the manifest on disk (shards and collections listed there meanwhile), then replace it."""
        self._merge_from_disk()
        payload = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "frame_shape": [64, 64, 3],
            "collections": self.collections,
            "shards": [s.to_json() for s in sorted(self.shards, key=lambda s: (s.collection, s.index))],
        }
        write_atomic(self.root / MANIFEST_NAME, json.dumps(payload, indent=1), fsync=True)

    def _merge_from_disk(self) -> None:
        if not (self.root / MANIFEST_NAME).is_file():
            return
        try:
            on_disk = Manifest.load(self.root)
        except DatasetError:
            return  # unreadable: ours replaces it (it holds everything we read from it)
        listed = {s.file for s in self.shards}
        self.shards.extend(s for s in on_disk.shards if s.file not in listed and s.file not in self.dropped)
        for name, settings in on_disk.collections.items():
            self.collections.setdefault(name, settings)

    def drop_shard(self, file: str) -> ShardInfo:
        """Remove a listed shard (missing or damaged) so it can be made again; `save` will not bring it back."""
        shard = next(s for s in self.shards if s.file == file)
        self.shards.remove(shard)
        self.dropped.add(file)
        return shard

    def add_shard(self, shard: ShardInfo) -> None:
        listed = next((s for s in self.shards if s.file == shard.file), None)
        if listed is not None and listed.sha256 == shard.sha256:
            return  # shards are deterministic: another writer listed this very file
        if listed is not None:
            raise DatasetError(f"{shard.file} is already listed in {self.root / MANIFEST_NAME}")
        self.shards.append(shard)

    def shards_of(self, collection: str) -> list[ShardInfo]:
        return [s for s in self.shards if s.collection == collection]

    def episodes(self, split: str | None = None) -> Iterator[tuple[ShardInfo, EpisodeInfo]]:
        for shard in self.shards:
            for episode in shard.episodes:
                if split is None or episode.split == split:
                    yield shard, episode

    @property
    def num_episodes(self) -> int:
        return sum(len(s.episodes) for s in self.shards)

    @property
    def num_frames(self) -> int:
        return sum(s.rows for s in self.shards)
