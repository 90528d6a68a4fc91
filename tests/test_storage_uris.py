"""Storage URIs on every path argument, and PPO checkpoints on shared storage (a file:// URI stands in for S3)."""

from __future__ import annotations

import argparse

import pytest

from cluster.cli import build_parser, main

URI = "s3://bucket/x"
# string options that are not paths (names, addresses, lists of names, ...)
NOT_PATHS = {"address", "preset", "set", "names", "agent", "tasks", "host", "token", "job_id", "stage", "job_command",
             "job_args", "modes", "start", "env", "preset_sweep", "actions"}


def leaf_parsers(parser: argparse.ArgumentParser, name: str = "genie"):
    """Every command that runs (`genie data stats`, ...), with its parser."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield name, parser
    for action in subs:
        for sub_name, sub in action.choices.items():
            yield from leaf_parsers(sub, f"{name} {sub_name}")


def path_arguments():
    """(command, option, action) of every argument that takes a path, found by its type."""
    found = []
    for command, parser in leaf_parsers(build_parser()):
        for action in parser._actions:
            if action.nargs == 0 or action.choices or isinstance(action, argparse._HelpAction):
                continue
            kind = getattr(action.type, "path_kind", None)
            assert action.type is not None or action.dest in NOT_PATHS, (
                f"{command} {action.dest}: a string argument without a type; a path needs storage_location "
                "or local_path")
            assert action.type not in (str, __import__("pathlib").Path), f"{command} {action.dest}: bare {action.type}"
            if kind is not None:
                found.append((command, (action.option_strings or [action.dest])[0], action))
    return found


def test_every_path_argument_keeps_a_uri_intact_or_refuses_it_in_one_line():
    kept, refused = set(), set()
    for command, option, action in path_arguments():
        try:
            value = action.type(URI)
        except argparse.ArgumentTypeError as err:
            assert action.type.path_kind == "local" and "storage URI" in str(err) and "\n" not in str(err)
            refused.add(f"{command} {option}")
        else:
            assert value in (URI, (URI,)), f"{command} {option} turned {URI} into {value!r}"  # (URI,): a list option
            kept.add(f"{command} {option}")
    # the commands of issue 15 that mangled URIs now keep them
    assert {"genie agent train --out", "genie datasets make --out", "genie data verify dir", "genie data stats dir",
            "genie data compare dir_a", "genie play --data", "genie collect --checkpoint",
            "genie agent eval --checkpoint",
            "genie train --data", "genie eval --out", "genie pipeline --out", "genie tune --out"} <= kept
    # what only this machine uses is refused (figures, preset files, a checkout to upload)
    assert {"genie data stats --plot", "genie agent train --preset-file", "genie submit --working-dir"} <= refused


def test_a_refused_uri_ends_the_command_in_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "compare", "a", "b", "--plot", "s3://bucket/compare.png"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--plot" in err and "local path" in err


@pytest.fixture(scope="module")
def agent_uri(ray_cluster, tmp_path_factory) -> str:
    """A tiny PPO run trained straight into a file:// URI (S3's stand-in): nothing of it stays on local disk."""
    from rl_agent.ppo_config import PPOSettings
    from rl_agent.ppo_training import train_agent
    from tests.test_agent import TINY

    uri = f"file://{tmp_path_factory.mktemp('bucket')}/runs/agent"
    summary = train_agent(PPOSettings(total_env_steps=128, keep_checkpoints=1, **TINY), uri, show_progress=False)
    assert summary.out_dir == uri and str(summary.checkpoint).startswith(f"{uri}/checkpoints/iter_")
    return uri


def test_ppo_checkpoints_go_to_a_uri_and_resume_from_it(agent_uri):
    from pathlib import Path

    from rl_agent.ppo_config import PPOSettings
    from rl_agent.ppo_training import train_agent
    from tests.test_agent import TINY

    run = Path(agent_uri.removeprefix("file://"))
    assert {"settings.json", "curve.csv", "reward_curve.png"} <= {p.name for p in run.iterdir()}
    first = [p.name for p in (run / "checkpoints").iterdir()]
    assert first == ["iter_000001"] and (run / "checkpoints" / first[0] / ".complete").exists()
    # resumed with the learner placed explicitly (as `genie pipeline --gpus-per-learner` does): placement may change
    summary = train_agent(PPOSettings(total_env_steps=300, keep_checkpoints=1, num_gpus_per_learner=0, **TINY),
                          agent_uri, show_progress=False)
    assert summary.iterations == 2  # resumed after iteration 1 (4 envs x 64 steps), not from scratch
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["iter_000002"]  # the older one dropped there


def test_collectors_load_a_ppo_checkpoint_from_a_uri(ray_cluster, agent_uri, tmp_path, capsys):
    from rl_agent.ppo_policy import PPOAgent
    from rl_agent.store.manifest import Manifest
    from rl_agent.store.verify import verify_dataset

    data = f"file://{tmp_path}/data"
    assert main(["collect", "--agent", "ppo", "--checkpoint", agent_uri, "--episodes", "2", "--workers", "1",
                 "--envs-per-worker", "2", "--max-episode-frames", "30", "--out", data, "--no-progress"]) == 0
    assert verify_dataset(tmp_path / "data").episodes == 2
    settings = next(iter(Manifest.load(tmp_path / "data").collections.values()))
    assert f"ppo:{settings['checkpoint_id']}" == PPOAgent(agent_uri).name  # each collector mirrored the same policy
    assert main(["agent", "eval", "--checkpoint", agent_uri, "--episodes", "2", "--no-progress"]) == 0
    assert "random (2 levels)" in capsys.readouterr().out


def test_a_collector_that_cannot_read_the_checkpoint_stops_the_collection_at_once(ray_cluster, agent_uri, tmp_path):
    """What a collector on another node meets with a checkpoint on the head's disk: one clear error, no 300 s wait."""
    import shutil

    from rl_agent.coinrun_env import ConfigError
    from rl_agent.collection import collect_dataset
    from tests.conftest import small_config

    local = tmp_path / "agent"
    shutil.copytree(agent_uri.removeprefix("file://"), local)
    config = small_config(agent="ppo", checkpoint=str(local), episodes=2, max_episode_frames=30, workers=1)
    config.start_timeout_s = 3600.0
    shutil.rmtree(local)  # gone for the collectors, as the head's disk is for other nodes
    with pytest.raises(ConfigError, match="cannot collect: checkpoint .* does not exist.*storage URI"):
        collect_dataset(config, tmp_path / "data", show_progress=False)


def test_data_commands_read_a_dataset_uri(small_dataset, tmp_path, capsys):
    uri = f"file://{small_dataset}"
    assert main(["data", "verify", uri]) == 0
    assert f"OK {uri}: 3 shards, 10 episodes" in capsys.readouterr().out
    assert main(["data", "stats", uri, "--plot", str(tmp_path / "stats.png"), "--progress-episodes", "2"]) == 0
    assert "episodes" in capsys.readouterr().out and (tmp_path / "stats.png").is_file()
    (small_dataset / "manifest.json").rename(tmp_path / "manifest.json")
    try:
        assert main(["data", "verify", uri]) == 1
        err = capsys.readouterr().err
        assert "missing manifest" in err and uri in err and "remote" not in err  # names the URI, not the mirror
    finally:
        (tmp_path / "manifest.json").rename(small_dataset / "manifest.json")


def test_compare_and_play_starts_read_a_dataset_uri(small_dataset, tmp_path, capsys):
    from cluster.play.starts import EpisodeStarts

    uri = f"file://{small_dataset}"
    assert main(["data", "compare", uri, str(small_dataset), "--plot", str(tmp_path / "c.png"),
                 "--progress-episodes", "2"]) == 0
    assert (tmp_path / "c.png").is_file()
    assert len(EpisodeStarts(uri)) == len(EpisodeStarts(small_dataset)) > 0  # `genie play --data URI`, on any node


def test_a_dataset_mirror_follows_the_remote_manifest_fetching_only_new_shards(small_dataset, tmp_path):
    """Extended at its URI, a dataset's mirror gets the new shards alone (the ones it holds stay, untouched) and
    the new manifest; two processes' worth of mirroring at once on one node both end with a whole mirror."""
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    from genie_common.storage import local_dataset
    from rl_agent.store.manifest import Manifest
    from rl_agent.store.reader import EpisodeStore

    data = tmp_path / "data"
    shutil.copytree(small_dataset, data)
    full_manifest = (data / "manifest.json").read_bytes()
    manifest = Manifest.load(data)
    later = manifest.drop_shard(manifest.shards[-1].file)  # the dataset before its last shard was collected
    manifest.save()
    uri = f"file://{data}"
    first = local_dataset(uri)
    assert local_dataset(uri) == first and not (first / later.file).exists()
    held = {s.file: (first / s.file).stat().st_ino for s in manifest.shards}
    episodes_before = len(EpisodeStore(first))

    (data / "manifest.json").write_bytes(full_manifest)  # extended at the URI
    again = local_dataset(uri)
    assert again == first and (again / "manifest.json").read_bytes() == full_manifest
    assert {f: (again / f).stat().st_ino for f in held} == held, "a shard the mirror held was fetched again"
    assert (again / later.file).stat().st_size == later.bytes
    assert len(EpisodeStore(again)) == episodes_before + len(later.episodes)

    # a shard made again at the same size with other bytes (a repair, a re-collection): fetched again by checksum
    import json
    shard = data / later.file
    changed = bytearray(shard.read_bytes())
    changed[-1] ^= 0xFF
    shard.write_bytes(bytes(changed))
    listed = json.loads(full_manifest)
    next(s for s in listed["shards"] if s["file"] == later.file)["sha256"] = "f" * 64
    (data / "manifest.json").write_text(json.dumps(listed))
    assert (local_dataset(uri) / later.file).read_bytes() == bytes(changed)

    fresh = f"file://{shutil.copytree(small_dataset, tmp_path / 'other')}"
    with ThreadPoolExecutor(2) as pool:
        mirrors = list(pool.map(local_dataset, [fresh, fresh]))
    assert mirrors[0] == mirrors[1] and len(EpisodeStore(mirrors[0])) == len(EpisodeStore(small_dataset))
    assert not [p for p in mirrors[0].rglob(".*") if p.is_file()], "a temporary file was left in the mirror"


# ---- model and run-folder mirrors ---------------------------------------------------------------------
def _tiny_tokenizer():
    import torch

    from world_model.config import QuantizerConfig, TokenizerConfig, TransformerConfig
    from world_model.tokenizer import Tokenizer

    torch.manual_seed(0)
    block = TransformerConfig(dim=32, depth=1, heads=4, mlp_ratio=2.0)
    return Tokenizer(TokenizerConfig(patch=8, frames=4, encoder=block, decoder=block,
                                     quantizer=QuantizerConfig(codebook_size=32, code_dim=8)))


def test_a_model_retrained_at_its_uri_is_fetched_again(tmp_path):
    """A model file given as a URI is mirrored by what the remote file is (size, modification time), not by its URI
    alone: retrained at the same URI, the next command loads the new model, not the mirror's old copy."""
    import os

    from world_model.checkpoint import load_checkpoint, save_checkpoint
    from world_model.evaluation.models import detect_stage
    from world_model.runs import resolve_checkpoint

    model = _tiny_tokenizer()
    remote = save_checkpoint(tmp_path / "run" / "best.pt", model, "tiny", step=10)
    uri = f"file://{remote}"
    first = resolve_checkpoint(uri, "tokenizer")
    assert load_checkpoint(first, "tokenizer").step == 10 and detect_stage(uri) == "tokenizer"
    held = first.stat().st_ino
    assert resolve_checkpoint(uri, "tokenizer").stat().st_ino == held, "an unchanged model was fetched again"

    mtime = remote.stat().st_mtime_ns
    save_checkpoint(remote, model, "tiny", step=20)  # retrained: the same URI, another checkpoint
    os.utime(remote, ns=(mtime + 10**9, mtime + 10**9))  # a second later (coarse clocks may stamp both writes alike)
    again = resolve_checkpoint(uri, "tokenizer")
    assert load_checkpoint(again, "tokenizer").step == 20, "the mirror kept the model the URI held before"
    assert not [p for p in again.parent.iterdir() if p.name.startswith(".")], "a temporary file was left in the mirror"


def test_refreshing_a_run_folder_mirror_never_removes_a_file_another_reader_uses(tmp_path):
    """Two processes on one node refresh the mirror of a run folder (its latest.pt rewritten meanwhile) while a
    third reads from it: every read finds its file, whole (a refresh fetches changed files under temporary names
    and renames them into place; it never removes the folder)."""
    import threading

    from genie_common import storage

    run = tmp_path / "run"
    (run / "ray" / "checkpoint_000001").mkdir(parents=True)
    (run / "run.json").write_text('{"stage": "tokenizer"}')
    (run / "ray" / "checkpoint_000001" / "model.pt").write_bytes(b"m" * 4096)
    versions = [bytes([65 + i]) * 65536 for i in range(4)]
    (run / "latest.pt").write_bytes(versions[0])
    uri = f"file://{run}"
    mirror = storage.local_copy(uri, refresh=True)
    done, errors = threading.Event(), []

    def refresh(offset: int) -> None:
        try:
            for i in range(40):
                storage.write_bytes_atomic(run / "latest.pt", versions[(i + offset) % len(versions)])
                assert storage.local_copy(uri, refresh=True) == mirror
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    def read() -> None:
        try:
            while not done.is_set():
                assert (mirror / "latest.pt").read_bytes() in versions, "a half-fetched latest.pt was read"
                assert (mirror / "run.json").read_text()
                assert (mirror / "ray" / "checkpoint_000001" / "model.pt").is_file()
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    reader = threading.Thread(target=read)
    refreshers = [threading.Thread(target=refresh, args=(k,)) for k in (1, 2)]
    reader.start()
    for thread in refreshers:
        thread.start()
    for thread in refreshers:
        thread.join()
    done.set()
    reader.join()
    assert not errors, errors
    final = storage.local_copy(uri, refresh=True)
    assert (final / "latest.pt").read_bytes() == (run / "latest.pt").read_bytes()
    (run / "ray" / "checkpoint_000001" / "model.pt").unlink()  # removed at the source (Ray keeps only the newest)
    assert not (storage.local_copy(uri, refresh=True) / "ray" / "checkpoint_000001" / "model.pt").exists()
