"""`collect_dataset` and `repair_dataset`: hold the dataset's lock, make the folder ready, run the collectors over
the planned shards and list each finished shard in the manifest (only the driver writes the manifest)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections import deque
from pathlib import Path
from typing import Callable

from genie_common.errors import ConfigError
from genie_common.storage import RemoteFolder, is_uri
from rl_agent.collection.config import CollectConfig, ShardPlan
from rl_agent.collection.dataset import (LocalFiles, RemoteFiles, check_anywhere, load_manifest, prepare_dataset,
                                         prepare_remote_dataset, remove_temp_files)
from rl_agent.collection.pool import CollectorPool, Member, Waiting
from rl_agent.store.errors import DatasetError
from rl_agent.store.lock import folder_lock
from rl_agent.store.manifest import Manifest, ShardInfo


def collect_dataset(config: CollectConfig, out_dir: str | Path, show_progress: bool = True,
                    verify: bool = False) -> Manifest:
    """Collect (or complete) a dataset with up to `config.workers` Ray actors. Ray must be initialised.

    `out_dir`: a local folder or a storage URI (s3://..., file://...). For a URI the returned
    manifest's `root` is a staging folder that no longer exists; its content is what was uploaded.
    Listed shards of this collection that are missing or of the wrong size (`verify`: or checksum)
    are made again. Refused with `FolderInUse` while another process writes into `out_dir`.
    """
    with folder_lock(out_dir, "genie collect"):
        return _collect_holding_lock(config, out_dir, show_progress, verify)


def _collect_holding_lock(config: CollectConfig, out_dir: str | Path, show_progress: bool, verify: bool) -> Manifest:
    import ray

    remote = RemoteFolder(str(out_dir)) if is_uri(out_dir) else None
    staging = Path(tempfile.mkdtemp(prefix="genie-manifest-")) if remote is not None else None
    try:
        if remote is not None:
            manifest, plans = prepare_remote_dataset(config, remote, staging, verify)
            files, target = RemoteFiles(remote, staging), remote.uri

            def save() -> None:
                remote.download_manifest(staging)  # what is there now, for the merge in save()
                manifest.save()
                remote.upload_manifest(staging)
        else:
            out_dir = Path(out_dir)
            manifest, plans = prepare_dataset(config, out_dir, verify)
            files, target, save = LocalFiles(out_dir), str(out_dir.resolve()), manifest.save
        if plans:
            _run_collectors(ray, config, target, manifest, save, plans, show_progress,
                            None if remote is not None else out_dir)
            remove_temp_files(files, config.collection)  # of collectors restarted during this run
        return manifest
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def repair_dataset(location: str | Path, checkpoint: str | None = None, workers: int = 2,
                   show_progress: bool = True) -> dict[str, list[str]]:
    """`genie data repair`: every listed shard is checked (existence, size, checksum) and the missing or damaged
    ones are made again from their collection's recorded settings (shards are deterministic: byte for byte).
    PPO collections with damage need `checkpoint` (the same policy: its weights' hash is checked).
    Returns collection -> the shard files made again. Ray must be initialised."""
    with folder_lock(location, "genie data repair"):
        manifest = load_manifest(location)
        remade: dict[str, list[str]] = {}
        for name, settings in manifest.collections.items():
            settings = dict(settings)
            episodes = sum(len(s.episodes) for s in manifest.shards_of(name))
            if not episodes:
                continue
            if settings["agent"] == "ppo" and checkpoint is None:
                bad = check_anywhere(manifest, name, location)
                if bad:
                    raise ConfigError(
                        f"{location}: {len(bad)} shard(s) of {name} ({bad[0][0].file}: {bad[0][1]}) were played by the "
                        f"PPO agent {settings.get('checkpoint_id')}: pass --checkpoint (the run folder that made them)")
                continue
            if settings["agent"] == "ppo":
                settings.pop("checkpoint_id")  # computed from --checkpoint and compared with the recorded one
            config = CollectConfig(**settings, episodes=episodes, workers=workers,
                                   checkpoint=checkpoint if settings["agent"] == "ppo" else None)
            result = _collect_holding_lock(config, location, show_progress, verify=True)
            remade[name] = sorted(result.dropped)
        return remade


def _run_collectors(ray, config: CollectConfig, target: str, manifest: Manifest, save: Callable[[], None],
                    plans: list[ShardPlan], show_progress: bool, local_dir: Path | None = None) -> None:
    from tqdm import tqdm

    queue = deque(plans)
    pool = CollectorPool(ray, config, target)
    total = sum(p.episodes for p in plans)
    bar = tqdm(total=total, unit="ep", desc=f"collect {config.collection}", disable=not show_progress,
               dynamic_ncols=True)
    done_frames, done_episodes = 0, 0
    start = time.monotonic()
    try:
        pool.start(min(config.workers, len(plans)))
        waiting = Waiting(ray, config, pool)
        while queue or pool.busy():
            for member, shard in pool.finished_shards(queue):
                _check_visible(shard, member, local_dir)
                manifest.add_shard(shard)
                save()
                done_frames += shard.rows
                done_episodes += len(shard.episodes)
            pool.replace_stranded(queue)
            pool.assign(queue)
            waiting.check()
            frames, episodes = pool.frames_and_episodes()
            elapsed = max(time.monotonic() - start, 1e-9)
            bar.n = min(total, max(bar.n, done_episodes, episodes))
            bar.set_postfix(frames_s=f"{max(done_frames, frames) / elapsed:,.0f}", ep_s=f"{bar.n / elapsed:.1f}",
                            refresh=False)
            bar.refresh()
    finally:
        bar.close()
        pool.stop()


def _check_visible(shard: ShardInfo, member: Member, local_dir: Path | None) -> None:
    """A local --out must be a folder the collectors' nodes share with the driver."""
    if local_dir is not None and not (local_dir / shard.file).is_file():
        raise DatasetError(
            f"collector {member.name} on node {member.node} wrote {shard.file} to its own disk, which this driver "
            f"does not see: on a multi-node cluster give --out a storage URI (s3://...) or a folder that every node "
            f"mounts")
