"""Bad input gets a clear error naming the problem, a non-zero exit, and damages nothing else."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

from cluster.cli import main
from rl_agent.store.manifest import Manifest
from rl_agent.store.schema import EPISODE_SCHEMA


@pytest.fixture
def dataset_copy(small_dataset, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(small_dataset, out)
    return out


def _run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_verify_passes_on_a_good_dataset(small_dataset, capsys):
    code, out = _run(capsys, "data", "verify", str(small_dataset))
    assert code == 0 and "10 episodes" in out


def test_truncated_shard_is_named(dataset_copy, capsys):
    shard = dataset_copy / Manifest.load(dataset_copy).shards[1].file
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    code, out = _run(capsys, "data", "verify", str(dataset_copy))
    assert code == 1 and shard.name in out and "damaged" in out


def test_corrupted_bytes_are_caught_by_checksum(dataset_copy, capsys):
    shard = dataset_copy / Manifest.load(dataset_copy).shards[0].file
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    before = {p.name: p.read_bytes() for p in dataset_copy.iterdir()}
    code, out = _run(capsys, "data", "verify", str(dataset_copy))
    assert code == 1 and shard.name in out and "checksum" in out
    assert {p.name: p.read_bytes() for p in dataset_copy.iterdir()} == before, "verify must not modify anything"


def test_wrong_frame_size_is_refused(dataset_copy, capsys):
    manifest = Manifest.load(dataset_copy)
    shard = manifest.shards[0]
    schema = EPISODE_SCHEMA.set(2, pa.field("frame", pa.binary(32 * 32 * 3), nullable=False))
    rows = 3
    columns = [pa.array(["x"] * rows), pa.array(np.arange(rows, dtype=np.int32)),
               pa.array([bytes(32 * 32 * 3)] * rows, pa.binary(32 * 32 * 3)), pa.array([1, 2, -1], pa.int8()),
               pa.array(np.zeros(rows, np.float32)), pa.array([False, False, True]), pa.array([False] * rows),
               pa.array(np.zeros(rows, np.int64)),
               pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, np.int8)), pa.array(["random"])),
               pa.nulls(rows, pa.float32()), pa.nulls(rows, pa.float32())]
    path = dataset_copy / shard.file
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(pa.RecordBatch.from_arrays(columns, schema=schema))
    from rl_agent.store.writer import file_sha256

    data = json.loads((dataset_copy / "manifest.json").read_text())
    data["shards"][0]["sha256"] = file_sha256(path)
    data["shards"][0]["bytes"] = path.stat().st_size
    (dataset_copy / "manifest.json").write_text(json.dumps(data))
    code, out = _run(capsys, "data", "verify", str(dataset_copy))
    assert code == 1 and shard.file in out and "schema" in out


def test_missing_manifest(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out = _run(capsys, "data", "verify", str(tmp_path / "empty"))
    assert code == 1 and "missing manifest" in out and "genie collect" in out
    code, out = _run(capsys, "data", "stats", str(tmp_path / "nowhere"))
    assert code == 1 and "no such dataset folder" in out


def test_unlisted_shard_is_reported(dataset_copy, capsys):
    first = Manifest.load(dataset_copy).shards[0].file
    shutil.copy(dataset_copy / first, dataset_copy / "random-s7-00099.arrow")
    code, out = _run(capsys, "data", "verify", str(dataset_copy))
    assert code == 1 and "random-s7-00099.arrow" in out and "not listed" in out


def test_unknown_agent_and_option(tmp_path, capsys):
    code, out = _run(capsys, "collect", "--agent", "expert", "--out", str(tmp_path / "x"))
    assert code == 2 and "unknown agent 'expert'" in out and "random" in out
    assert not (tmp_path / "x").exists(), "a refused command must not create anything"
    with pytest.raises(SystemExit) as exit_info:
        main(["collect", "--out", str(tmp_path / "x"), "--distribution-mode", "medium"])
    assert exit_info.value.code == 2
    with pytest.raises(SystemExit):
        main(["collect", "--out", str(tmp_path / "x"), "--frobnicate"])


def test_changed_settings_on_resume_are_refused(ray_cluster, small_dataset, tmp_path, capsys):
    out = tmp_path / "copy2"
    shutil.copytree(small_dataset, out)
    code, text = _run(capsys, "collect", "--out", str(out), "--seed", "7", "--episodes", "12",
                      "--episodes-per-shard", "4", "--envs-per-worker", "4", "--max-episode-frames", "200",
                      "--no-progress", "--address", ray_cluster)
    assert code == 2 and "different settings" in text and "env" in text


# ---- arguments and presets are checked before anything starts (cluster/arguments.py, cluster/presets) -------------
TRAIN = ["train", "tokenizer", "--data", "nowhere", "--out", "{tmp}/run", "--no-wandb", "--no-progress"]


@pytest.mark.parametrize("argv, message", [
    (TRAIN + ["--set", "world_model.optim.lr=["], "'[' is not a value"),
    (TRAIN + ["--micro-batch", "-1"], "argument --micro-batch: must be a whole number >= 1, got '-1'"),
    (TRAIN + ["--batch", "-4"], "argument --batch: must be a whole number >= 1"),
    (TRAIN + ["--batch", "0"], "argument --batch: must be a whole number >= 1, got '0'"),
    (TRAIN + ["--workers", "two"], "argument --workers: must be a whole number >= 1, got 'two'"),
    (TRAIN + ["--set", "world_model.tokenizer.image_size=32", "--set", "world_model.dynamics.grid=8"],
     "CoinRun frames are 64x64"),
    (TRAIN + ["--set", "world_model.optim.betas=0.9"], "betas must be a list of 2 values"),
    (TRAIN + ["--set", "world_model.optim.betas=[0.9, fast]"], "betas[1] must be a number"),
    (TRAIN + ["--set", "world_modle.optim.lr=0.1"], "unknown section(s) ['world_modle']"),
    (["tune", "lam", "--data", "nowhere", "--out", "{tmp}/sweep", "--set", "world_model.batch_size=2.5"],
     "batch_size must be a whole number"),
    (["agent", "train", "--out", "{tmp}/agent", "--set", "agent.lr=fast"], "agent.lr must be a number"),
    (["datasets", "make", "--out", "{tmp}/sets", "--set", "data.test_episodes=-1"],
     "data.test_episodes must be at least 1"),
    (["pipeline", "--out", "{tmp}/run", "--set", "world_model.optim.betas=[1]"], "betas must be a list of 2 values"),
    (["collect", "--out", "{tmp}/data", "--episodes", "0"], "argument --episodes: must be a whole number >= 1"),
    (["collect", "--out", "{tmp}/data", "--sticky-prob", "1.5"], "argument --sticky-prob: must be a number in [0, 1]"),
    (["collect", "--out", "{tmp}/data", "--cpus-per-worker", "nan"],
     "argument --cpus-per-worker: must be a number > 0"),
    (["eval", "--model", "m", "--data", "d", "--out", "{tmp}/eval", "--horizon", "0"], "argument --horizon"),
    (["play", "--model", "m", "--port", "70000"], "argument --port: must be a port number in 1..65535"),
    (["play", "--model", "m", "--host", "0.0.0.0", "--token", "short"], "a token must have at least 8 characters"),
    (["play", "--model", "m", "--token", "has space;x=1"], "a token must have at least 8 characters"),
    (["dream", "--model", "m", "--actions", "R", "--out", "{tmp}/no/dir/x.gif"], "the folder"),
    (["agent", "eval", "--checkpoint", "{tmp}/agent", "--json", "{tmp}/nodir/x.json"],
     "argument --json: the folder"),
    (["data", "stats", "{tmp}", "--plot", "{tmp}/nodir/x.png"], "argument --plot: the folder"),
    (["data", "stats", "{tmp}", "--plot", "{tmp}"], "is a folder; name the file to write"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_arguments_stop_before_anything_starts(tmp_path, capsys, argv, message):
    """One line naming the option, exit code 2, nothing created (no Ray starts: these return in well under a second
    of work; `genie` without a check here started Ray, collected or trained first)."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    before = sorted(tmp_path.rglob("*"))
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own refusals
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(tmp_path.rglob("*")) == before, "a refused command must not create anything"


def test_train_jobs_refuse_bad_batches_without_the_cli():
    """The pipeline and sweeps build TrainJob directly: the same limits hold there."""
    from world_model.training.job import TrainJob
    from world_model.config import ConfigError

    for field, value in (("batch_size", 0), ("micro_batch", -1), ("steps", 0)):
        with pytest.raises(ConfigError, match="must be a whole number >= 1"):
            TrainJob(stage="tokenizer", data=["d"], out="o", **{field: value})


def test_data_stats_writes_beside_the_dataset(dataset_copy, capsys):
    before = sorted(p.name for p in dataset_copy.iterdir())
    code, out = _run(capsys, "data", "stats", str(dataset_copy), "--progress-episodes", "2")
    plot = dataset_copy.parent / f"{dataset_copy.name}-stats.png"
    assert code == 0 and plot.is_file() and f"figure: {plot}" in out
    assert sorted(p.name for p in dataset_copy.iterdir()) == before, "the dataset folder stays as it is"


def test_submit_checks_a_commands_arguments_here_but_not_its_output_folders(capsys):
    """`genie submit` parses the command's arguments on your machine (a bad value fails in a second, nothing is
    submitted), but the files a job writes live on the cluster: their folders are not looked for here."""
    from cluster.jobs import JobError, check_command_args

    check_command_args("agent", ["eval", "--checkpoint", "/runs/agent", "--json", "/results-on-the-cluster/eval.json"])
    with pytest.raises(JobError, match="nothing was submitted"):
        check_command_args("train", ["tokenizer", "--data", "d", "--out", "o", "--batch", "0"])
    assert "argument --batch: must be a whole number >= 1" in capsys.readouterr().err
    with pytest.raises(JobError, match=r"betas must be a list of 2 values.*nothing was submitted"):
        check_command_args("train", ["lam", "--data", "d", "--out", "o", "--set", "world_model.optim.betas=0.9"])
    with pytest.raises(SystemExit):  # here, on this machine, the folder is checked
        main(["agent", "eval", "--checkpoint", "/runs/agent", "--json", "/results-on-the-cluster/eval.json"])
