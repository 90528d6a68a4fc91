"""Faults in a dataset's life (issue 16): two writers on one folder, listed shards missing or damaged.

Real Ray collectors, real Procgen, real files; a writer is held still with SIGSTOP (not a sleep) so
that "while the first one writes" is a fact, not a race.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from cluster.cli import main as genie
from rl_agent.collection import COLLECTOR_NAME_PREFIX, COLLECTOR_NAMESPACE, collect_dataset
from rl_agent.store.errors import DatasetError
from rl_agent.store.lock import LEASE_NAME, LOCK_NAME, FolderInUse, folder_lock
from rl_agent.store.manifest import Manifest
from rl_agent.store.verify import verify_dataset
from rl_agent.store.writer import is_temp_file
from tests.conftest import batches_by_id, small_config

REPO = Path(__file__).resolve().parents[1]


def _collector_pids() -> list[int]:
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if a["name"].startswith(COLLECTOR_NAME_PREFIX)]
    return [ray.get(ray.get_actor(n, namespace=COLLECTOR_NAMESPACE).pid.remote(), timeout=30) for n in names]


def _temp_shards(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if is_temp_file(p.name)] if folder.is_dir() else []


def _copy_dataset(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(LOCK_NAME, "*.png"))
    return target


# ---- two writers -------------------------------------------------------------------------------------
def test_a_second_collect_into_a_busy_folder_is_refused_and_the_first_finishes(ray_cluster, small_dataset, tmp_path,
                                                                               capsys):
    out = tmp_path / "busy"
    errors: list[BaseException] = []
    first = threading.Thread(target=_capture, args=(errors, collect_dataset, small_config(workers=1), out),
                             kwargs={"show_progress": False})
    first.start()
    deadline, stopped = time.monotonic() + 120, None
    while stopped is None and time.monotonic() < deadline and first.is_alive():
        pids = _collector_pids() if _temp_shards(out) else []
        if pids:
            os.kill(pids[0], signal.SIGSTOP)  # the first writer is now frozen with a shard in flight
            stopped = pids[0]
        else:
            time.sleep(0.05)
    assert stopped is not None, f"the first collection never had a shard in flight: {errors}"
    try:
        in_flight = _temp_shards(out)
        assert in_flight, "the collector was frozen between two shards"
        same = ["collect", "--out", str(out), "--seed", "7", "--episodes", "10", "--episodes-per-shard", "4",
                "--envs-per-worker", "4", "--max-episode-frames", "120", "--workers", "1", "--no-progress"]
        assert genie(same) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in lines[0] and "since" in lines[0], lines[0]
        assert "genie collect" in lines[0] and "another --out" in lines[0], lines[0]
        assert all(p.exists() for p in in_flight), "the refused writer removed the first one's temporary shard"
    finally:
        os.kill(stopped, signal.SIGCONT)
    first.join(timeout=240)
    assert not first.is_alive() and not errors, errors
    assert verify_dataset(out).episodes == 10
    reference, made = batches_by_id(small_dataset), batches_by_id(out)
    assert reference.keys() == made.keys() and all(reference[k].equals(made[k]) for k in reference)
    assert genie(["data", "verify", str(out)]) == 0, "the lock file must not upset verify"


@pytest.mark.parametrize("command", [["tune", "tokenizer", "--data", "{data}", "--out", "{out}"],
                                     ["pipeline", "--out", "{out}"]])
def test_a_second_sweep_or_pipeline_into_a_busy_folder_is_refused(small_dataset, tmp_path, capsys, command):
    out = tmp_path / "busy"
    argv = [a.format(data=small_dataset, out=out) for a in command]
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from rl_agent.store.lock import folder_lock\n"
        f"with folder_lock({str(out)!r}, 'genie {command[0]}'):\n"
        "    print('held', flush=True); time.sleep(600)")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert genie(argv) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and f"`genie {command[0]}` (pid {holder.pid} on host" in lines[0], lines
    finally:
        holder.kill()
        holder.wait()


def test_a_lease_on_a_storage_uri_names_its_holder_and_expires_when_the_holder_dies(tmp_path):
    uri = f"file://{tmp_path / 'remote'}"
    with folder_lock(uri, "genie train"):
        errors: list[BaseException] = []
        other = threading.Thread(target=_capture, args=(errors, _hold, uri))  # another writer: another thread
        other.start()
        other.join()
        assert len(errors) == 1 and isinstance(errors[0], FolderInUse), errors
        assert re.search(rf"`genie train` \(pid {os.getpid()} on host .*since .*expires in", str(errors[0])), errors[0]
    assert not (tmp_path / "remote" / LEASE_NAME).exists(), "a released lease must be removed"
    # a holder that dies keeps the folder only until its lease runs out
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from rl_agent.store.lock import folder_lock\n"
        f"with folder_lock({uri!r}, 'genie collect', lease_s=2.0):\n"
        "    print('held', flush=True); time.sleep(600)")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(FolderInUse, match=f"pid {holder.pid}"):
        with folder_lock(uri, "genie collect"):
            pass
    time.sleep(2.1)
    with folder_lock(uri, "genie collect"):
        pass


def test_manifest_save_keeps_shards_another_writer_listed_meanwhile(small_dataset, tmp_path):
    out = _copy_dataset(small_dataset, tmp_path / "merge")
    full = Manifest.load(out)
    first, second = full.shards[0], full.shards[1]
    # two writers each started from a manifest without their shard, and each lists its own
    for shard in (first, second):
        full.drop_shard(shard.file)
    full.save()
    writer_a, writer_b = Manifest.load(out), Manifest.load(out)
    writer_a.add_shard(first)
    writer_a.save()
    writer_b.add_shard(second)
    writer_b.save()
    assert {s.file for s in Manifest.load(out).shards} == {s.file for s in Manifest.load(small_dataset).shards}
    assert verify_dataset(out).episodes == 10


# ---- listed shards missing or damaged ------------------------------------------------------------------
def test_rerunning_collect_makes_missing_and_damaged_listed_shards_again(ray_cluster, small_dataset, tmp_path, capsys):
    out = _copy_dataset(small_dataset, tmp_path / "damaged")
    shards = sorted(Manifest.load(out).shards, key=lambda s: s.index)
    with open(out / shards[1].file, "r+b") as handle:  # cut short
        handle.truncate(shards[1].bytes // 2)
    _flip_a_byte(out / shards[2].file)  # same size, another checksum: only --verify reads every byte
    with pytest.raises(DatasetError, match="genie data repair"):
        verify_dataset(out)
    collect_dataset(small_config(), out, show_progress=False)
    with pytest.raises(DatasetError, match=f"{shards[2].file}: checksum or size differs"):
        verify_dataset(out)  # shard 1 is back; shard 2 needs the checksum
    same = ["collect", "--out", str(out), "--seed", "7", "--episodes", "10", "--episodes-per-shard", "4",
            "--envs-per-worker", "4", "--max-episode-frames", "120", "--workers", "1", "--no-progress", "--verify"]
    assert genie(same) == 0
    assert verify_dataset(out).episodes == 10
    assert {s.file: s.sha256 for s in Manifest.load(out).shards} == {s.file: s.sha256 for s in shards}


def test_genie_data_repair_makes_damaged_shards_again_byte_for_byte(ray_cluster, small_dataset, tmp_path, capsys):
    out = _copy_dataset(small_dataset, tmp_path / "repair")
    shards = sorted(Manifest.load(out).shards, key=lambda s: s.index)
    _flip_a_byte(out / shards[0].file)
    (out / shards[2].file).unlink()
    assert genie(["data", "verify", str(out)]) == 1
    assert "genie data repair" in capsys.readouterr().err
    uri = f"file://{out}"  # through a storage URI, as on a cluster: shards are staged and uploaded
    assert genie(["data", "repair", uri, "--workers", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "2 shard(s) made again" in printed and shards[0].file in printed and shards[2].file in printed, printed
    assert verify_dataset(out).episodes == 10
    assert {s.file: s.sha256 for s in Manifest.load(out).shards} == {s.file: s.sha256 for s in shards}
    assert genie(["data", "repair", str(out), "--no-progress"]) == 0
    assert "0 shard(s) made again" in capsys.readouterr().out


def _hold(location: str) -> None:
    with folder_lock(location, "genie collect"):
        pass


def _flip_a_byte(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def _capture(errors, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except BaseException as err:  # noqa: BLE001 - reported by the test
        errors.append(err)


# ---- the decoded-frame cache ---------------------------------------------------------------------
def _frames_of_every_episode(store):
    return [store.window(e, 0, int(store.lengths[e]))[0] for e in range(len(store))]


def test_the_decoded_cache_keeps_under_its_cap_evicting_the_least_recently_used_and_cleans_stale_temps(
        small_dataset, tmp_path, monkeypatch):
    """GENIE_CACHE_MAX_GB caps the cache: the least recently used shards go first, never one the reader holds;
    temporaries left by killed decodes (over an hour old) are removed, a live decode's are not; windows stay exact."""
    from rl_agent.store.reader import EpisodeStore

    cache = tmp_path / "cache"
    expected = _frames_of_every_episode(EpisodeStore(small_dataset, cache_dir=tmp_path / "reference"))
    sizes = sorted(p.stat().st_size for p in (tmp_path / "reference").glob("*.npy"))
    assert len(sizes) >= 3, "the test needs at least three shards"
    cache.mkdir()
    stale, live = cache / ".dead.0badc0de.npy", cache / ".busy.1234abcd.npy"
    stale.write_bytes(b"x"), live.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    old_unrelated = cache / f"{'0' * 64}.npy"
    old_unrelated.write_bytes(b"\0" * sizes[0])
    os.utime(old_unrelated, (time.time() - 60, time.time() - 60))
    cap = sum(sizes) + 64  # every shard of the set fits; the unrelated one must make way
    monkeypatch.setenv("GENIE_CACHE_MAX_GB", str(cap / (1 << 30)))
    store = EpisodeStore(small_dataset, cache_dir=cache)
    assert all((a == b).all() for a, b in zip(_frames_of_every_episode(store), expected))
    assert not stale.exists() and live.exists()
    assert not old_unrelated.exists(), "the least recently used shard was not evicted"
    assert sum(p.stat().st_size for p in cache.glob("[!.]*.npy")) <= cap
    # a cap below what one reader holds at once: it says what to do instead of thrashing or crashing
    monkeypatch.setenv("GENIE_CACHE_MAX_GB", str(sizes[-1] / 2 / (1 << 30)))
    with pytest.raises(DatasetError, match="no room for .* GENIE_CACHE_MAX_GB"):
        _frames_of_every_episode(EpisodeStore(small_dataset, cache_dir=tmp_path / "small"))
    monkeypatch.setenv("GENIE_CACHE_MAX_GB", "lots")
    with pytest.raises(DatasetError, match="GENIE_CACHE_MAX_GB must be a number"):
        _frames_of_every_episode(EpisodeStore(small_dataset, cache_dir=tmp_path / "bad"))


def test_one_worker_per_node_decodes_every_shard_and_the_others_only_map_them(small_dataset, tmp_path, monkeypatch):
    """What training's local rank 0 does before the others open the same data (issue 15.11)."""
    from rl_agent.store.reader import EpisodeStore

    cache = tmp_path / "cache"
    preparer = EpisodeStore(small_dataset, cache_dir=cache)
    shards = {ref.shard.sha256 for ref in preparer.episodes}
    assert preparer.decode_all() == len(shards)
    assert {p.stem for p in cache.rglob("*.npy")} >= shards
    monkeypatch.setattr(EpisodeStore, "_write_decoded", lambda *a, **k: pytest.fail("a shard was decoded twice"))
    other = EpisodeStore(small_dataset, cache_dir=cache)
    for episode in range(len(other)):
        frames, _ = other.window(episode, 0, 2)
        assert np.array_equal(frames, preparer.window(episode, 0, 2)[0])


def test_a_full_disk_stops_decoding_in_one_line_and_leaves_no_temporary(small_dataset, tmp_path, monkeypatch):
    """The decoded cache on a disk with too little room: refused before writing (the free-space check), or, when
    the disk fills anyway, by allocating the file's blocks (posix_fallocate, ENOSPC): either way one line that says
    to free space or where GENIE_CACHE_DIR should point, no temporary file left, and no SIGBUS later."""
    import errno

    from rl_agent.store.reader import EpisodeStore

    monkeypatch.delenv("GENIE_CACHE_MAX_GB", raising=False)
    usage = type(shutil.disk_usage(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda path: usage(total=1 << 40, used=(1 << 40) - (1 << 20), free=1 << 20))
    cache = tmp_path / "little-room"
    with pytest.raises(DatasetError) as little_room:
        EpisodeStore(small_dataset, cache_dir=cache).window(0, 0, 2)
    assert not list(cache.iterdir()), "something was written into a cache without room"

    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(total=1 << 40, used=0, free=1 << 40))

    def disk_fills(fd, offset, length):  # the check passed, then another process took the space
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", disk_fills, raising=False)
    cache = tmp_path / "filled"
    with pytest.raises(DatasetError) as filled:
        EpisodeStore(small_dataset, cache_dir=cache).window(0, 0, 2)
    assert not list(cache.iterdir()), f"left behind: {list(cache.iterdir())}"
    for caught in (little_room, filled):
        message = str(caught.value)
        assert "\n" not in message and str(cache.parent) in message, message
        assert "free space" in message and "GENIE_CACHE_DIR" in message, message
