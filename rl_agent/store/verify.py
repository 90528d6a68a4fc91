"""`genie data verify`: prove that a dataset is whole and obeys the episode record.

Checks, naming the first bad file: the manifest parses; every listed shard exists, has the
listed checksum and size, opens as Arrow IPC with exactly the episode schema; every episode
is one whole record batch (steps 0..L-1, one episode id and level seed, actions in range with
-1 on the last row, exactly one of terminated/truncated and only on the last row); episode
ids are unique; the manifest's episode list agrees with the files; no unlisted shard files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from rl_agent.coinrun_env import NUM_ACTIONS
from rl_agent.store.errors import DatasetError
from rl_agent.store.manifest import Manifest, ShardInfo
from rl_agent.store.schema import EPISODE_SCHEMA, NO_ACTION
from rl_agent.store.writer import SHARD_SUFFIX, file_sha256, is_temp_file, read_shard_batches


@dataclass
class VerifyReport:
    root: Path
    shards: int = 0
    episodes: int = 0
    frames: int = 0
    warnings: list[str] = field(default_factory=list)


def check_episode_batch(batch: pa.RecordBatch, where: str) -> None:
    length = batch.num_rows
    if length == 0:
        raise DatasetError(f"{where}: empty episode batch")
    ids = batch.column("episode_id").unique()
    if len(ids) != 1:
        raise DatasetError(f"{where}: one batch holds {len(ids)} episode ids; an episode must be one whole batch")
    episode = ids[0].as_py()
    steps = batch.column("step").to_numpy()
    if not np.array_equal(steps, np.arange(length)):
        raise DatasetError(f"{where}: episode {episode} steps are not 0..{length - 1}")
    actions = batch.column("action").to_numpy()
    if actions[-1] != NO_ACTION:
        raise DatasetError(f"{where}: episode {episode} last row action is {actions[-1]}, expected -1")
    if length > 1 and (actions[:-1].min() < 0 or actions[:-1].max() >= NUM_ACTIONS):
        raise DatasetError(f"{where}: episode {episode} has actions outside [0, {NUM_ACTIONS})")
    terminated = batch.column("terminated").to_numpy(zero_copy_only=False)
    truncated = batch.column("truncated").to_numpy(zero_copy_only=False)
    if terminated[:-1].any() or truncated[:-1].any() or terminated[-1] == truncated[-1]:
        raise DatasetError(f"{where}: episode {episode} must end with exactly one of terminated/truncated, on its "
                           "last row only")
    if len(batch.column("level_seed").unique()) != 1:
        raise DatasetError(f"{where}: episode {episode} changes level seed mid-episode")
    missing_frames = "frame" in batch.schema.names and batch.column("frame").null_count
    if missing_frames or not np.isfinite(batch.column("reward").to_numpy()).all():
        raise DatasetError(f"{where}: episode {episode} has missing frames or non-finite rewards")


METADATA_COLUMNS = [f.name for f in EPISODE_SCHEMA if f.name != "frame"]


def check_shard_file(path: Path, read_frames: bool = True) -> tuple[list[pa.RecordBatch], str]:
    """Open a shard and check schema and every episode; returns its batches and checksum.

    With `read_frames=False` the frame column is not decompressed: for a file whose checksum
    already matches the manifest, the frames are the bytes that were written and checked.
    """
    try:
        if read_frames:
            batches = read_shard_batches(path)
        else:
            with pa.OSFile(str(path), "rb") as source:
                schema = pa.ipc.open_file(source).schema
            batches = read_shard_batches(path, METADATA_COLUMNS)
    except (pa.ArrowInvalid, OSError) as err:
        raise DatasetError(f"{path}: not a readable Arrow shard ({err}); it is truncated or damaged") from err
    if not batches:
        raise DatasetError(f"{path}: shard holds no episodes")
    schema = (batches[0].schema if read_frames else schema).remove_metadata()
    if not schema.equals(EPISODE_SCHEMA.remove_metadata()):
        raise DatasetError(f"{path}: schema differs from the episode record (e.g. wrong frame size); got\n{schema}")
    for i, batch in enumerate(batches):
        check_episode_batch(batch, f"{path} (episode batch {i})")
    return batches, file_sha256(path)


def check_listed_shards(manifest: Manifest, collection: str | None, size_of: Callable[[str], int | None],
                        sha_of: Callable[[str], str] | None = None) -> list[tuple[ShardInfo, str]]:
    """Listed shards (of one collection, or all) that are missing, of another size or (with `sha_of`) another
    checksum, each with what is wrong (a phrase after "is"). `size_of(file)` is None for a missing file; local or
    remote alike."""
    bad = []
    for shard in manifest.shards if collection is None else manifest.shards_of(collection):
        size = size_of(shard.file)
        if size is None:
            bad.append((shard, "missing"))
        elif size != shard.bytes:
            bad.append((shard, f"cut short or damaged ({size} bytes, the manifest says {shard.bytes})"))
        elif sha_of is not None and sha_of(shard.file) != shard.sha256:
            bad.append((shard, "damaged (its checksum differs from the manifest's)"))
    return bad



def verify_dataset(root: str | Path) -> VerifyReport:
    """Raise `DatasetError` on the first problem; return counts and warnings when the dataset is sound."""
    manifest = Manifest.load(root)
    report = VerifyReport(root=manifest.root)
    seen_ids: set[str] = set()
    for shard in manifest.shards:
        path = manifest.root / shard.file
        if not path.is_file():
            raise DatasetError(f"{path}: listed in the manifest but missing; run `genie data repair {manifest.root}` "
                               f"to make it again (or re-run the `genie collect` that made it)")
        if path.stat().st_size != shard.bytes or file_sha256(path) != shard.sha256:
            raise DatasetError(f"{path}: checksum or size differs from the manifest; the file is damaged. Run "
                               f"`genie data repair {manifest.root}` to make it again (or the `genie collect` that "
                               f"made it, with --verify)")
        batches, _ = check_shard_file(path, read_frames=False)
        if len(batches) != len(shard.episodes) or sum(b.num_rows for b in batches) != shard.rows:
            raise DatasetError(f"{path}: holds {len(batches)} episodes/{sum(b.num_rows for b in batches)} rows, "
                               f"manifest says {len(shard.episodes)}/{shard.rows}")
        for batch, info in zip(batches, shard.episodes):
            episode_id = batch.column("episode_id")[0].as_py()
            if episode_id != info.id or batch.num_rows != info.length:
                raise DatasetError(f"{path}: episode {episode_id} ({batch.num_rows} rows) does not match manifest "
                                   f"entry {info.id} ({info.length})")
            if episode_id in seen_ids:
                raise DatasetError(f"{path}: episode {episode_id} appears twice in the dataset")
            seen_ids.add(episode_id)
        report.shards += 1
        report.episodes += len(batches)
        report.frames += shard.rows
    listed = {s.file for s in manifest.shards}
    for path in sorted(manifest.root.iterdir()):
        if path.name.endswith(SHARD_SUFFIX) and not path.name.startswith(".") and path.name not in listed:
            raise DatasetError(f"{path}: shard file not listed in the manifest; re-run the `genie collect` that "
                               f"made it (it adopts complete shards) or remove the file")
        if is_temp_file(path.name):
            report.warnings.append(f"{path.name}: leftover temp file of an interrupted write (ignored; `genie "
                                   "collect` removes it)")
    return report


def require_listed_shards(location: str | Path) -> int:
    """Every shard listed by the dataset at `location` (folder or storage URI) exists with its listed size;
    cheap (no checksums), for commands about to read it. Returns the number of shards."""
    import tempfile

    from genie_common.storage import RemoteFolder, is_uri

    if not is_uri(location):
        manifest = Manifest.load(location)
        root = manifest.root
        bad = check_listed_shards(manifest, None,
                                  lambda name: (root / name).stat().st_size if (root / name).is_file() else None)
    else:
        remote = RemoteFolder(str(location))
        with tempfile.TemporaryDirectory(prefix="genie-manifest-") as staging:
            if not remote.download_manifest(Path(staging)):
                raise DatasetError(f"{location}: no manifest.json; make the dataset with `genie collect "
                                   f"--out {location}`")
            manifest = Manifest.load(staging)
        bad = check_listed_shards(manifest, None, remote.size)
    if bad:
        shard, why = bad[0]
        others = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DatasetError(f"{str(location).rstrip('/')}/{shard.file}: a listed shard is {why}{others}; "
                           f"run `genie data repair {location}` to make it again")
    return len(manifest.shards)
