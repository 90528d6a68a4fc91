"""`genie train` on real Ray Train (CPU, gloo DDP): correctness of distribution, fault tolerance,
resumption, windows, and each stage learning at `tiny` on a small collected dataset."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cluster.cli import main as genie
from world_model.checkpoint import load_checkpoint, save_checkpoint
from world_model.config import ConfigError, load_preset
from world_model.tokenizer import Tokenizer
from world_model.training.job import TrainJob
from world_model.training.trainer import run_training
from world_model.training.windows import WindowPlan

QUICK = ["world_model.train.log_every=1", "world_model.train.val_windows=8"]


def job(data, out, stage="tokenizer", steps=4, overrides=(), **options) -> TrainJob:
    return TrainJob(stage=stage, data=[str(d) for d in data], out=str(out), steps=steps, wandb=False,
                    overrides=[*QUICK, *overrides], **options)


def metric_rows(run: Path, kind: str) -> list[dict]:
    with open(run / "metrics.csv") as handle:
        return [row for row in csv.DictReader(handle) if row["kind"] == kind]


# ---- windows --------------------------------------------------------------------------------
def write_indexed_dataset(root: Path, lengths: list[int]) -> None:
    """Episodes whose frames encode (episode, step) in their pixels and whose actions encode both too."""
    from rl_agent.store.manifest import Manifest
    from rl_agent.store.schema import NO_ACTION, episode_batch
    from rl_agent.store.writer import ShardWriter

    manifest = Manifest.load_or_create(root)
    with ShardWriter(root, "indexed-000.arrow", "indexed", 0) as writer:
        for episode, length in enumerate(lengths):
            frames = np.zeros((length, 64, 64, 3), np.uint8)
            frames[..., 0] = np.arange(length, dtype=np.uint8)[:, None, None]  # step index
            frames[..., 1] = episode  # episode index
            actions = np.array([(7 * step + episode) % 15 for step in range(length - 1)] + [NO_ACTION])
            batch = episode_batch(f"ep{episode}", frames, actions, np.zeros(length, np.float32), True, False, episode,
                                  "random")
            writer.write_episode(batch, "train")
        manifest.add_shard(writer.commit())
    manifest.save()


def test_windows_never_cross_episodes_and_actions_stay_aligned(tmp_path):
    from rl_agent.store.reader import EpisodeStore

    write_indexed_dataset(tmp_path, [5, 9, 4, 30, 6])  # short episodes make boundaries frequent
    store = EpisodeStore(tmp_path, cache_dir=tmp_path / "cache")
    seen_starts = set()
    for world in (1, 2, 4):
        plan = WindowPlan(batch=8, length=4, world=world, seed=3)
        for step in range(40):
            parts = [plan.worker_batch(store, step, rank) for rank in range(world)]
            frames = np.concatenate([p[0] for p in parts])  # (B, T, H, W, C)
            actions = np.concatenate([p[1] for p in parts])  # (B, T-1)
            assert frames.shape == (8, 4, 64, 64, 3) and actions.shape == (8, 3)
            for window, acts in zip(frames, actions):
                steps, episode = window[:, 0, 0, 0].astype(int), int(window[0, 0, 0, 1])
                assert (window[:, 0, 0, 1] == episode).all(), "a window crossed an episode boundary"
                assert (np.diff(steps) == 1).all(), "frames of a window are not consecutive"
                assert [int(a) for a in acts] == [(7 * s + episode) % 15 for s in steps[:-1]], \
                    "action i must follow frame i"
                seen_starts.add((episode, int(steps[0])))
    assert len(seen_starts) == sum(max(0, n - 3) for n in [5, 9, 4, 30, 6]), "every valid window is reachable"


def test_the_windows_of_a_step_do_not_depend_on_the_number_of_workers(tmp_path):
    from rl_agent.store.reader import EpisodeStore

    write_indexed_dataset(tmp_path, [20, 25, 30])
    store = EpisodeStore(tmp_path, cache_dir=tmp_path / "cache")
    one = WindowPlan(8, 4, 1, seed=5).worker_batch(store, 7, 0)[0]
    two = [WindowPlan(8, 4, 2, seed=5).worker_batch(store, 7, r)[0] for r in (0, 1)]
    assert np.array_equal(one, np.concatenate(two))


# ---- distribution -----------------------------------------------------------------------------
def test_reading_ahead_gives_each_step_its_own_windows_and_surfaces_read_errors():
    from world_model.training.windows import StepPrefetcher

    reads = []

    def fetch(step):
        reads.append(step)
        if step == 3:
            raise ValueError("shard 3 is damaged")
        return np.full((2, 4), step, dtype=np.int16), np.full((2, 3), step, dtype=np.int8)

    prefetcher = StepPrefetcher(fetch)
    for step in range(3):
        inputs, actions = prefetcher.get(step, step + 1)
        assert isinstance(inputs, torch.Tensor) and inputs.dtype == torch.int16
        assert int(inputs.unique()) == step and int(actions.unique()) == step
    with pytest.raises(ValueError, match="damaged"):
        prefetcher.get(3, None)  # read ahead by get(2, 3): its error surfaces here
    prefetcher.close()
    assert reads == [0, 1, 2, 3], "each step is read once (when a read happens is the thread's business, not asserted)"


def test_two_workers_and_accumulation_give_the_same_step_as_one_process(ray_cluster, train_data, tmp_path):
    """Global batch 4, two steps (DDP's static graph records its buckets in the first): 1 worker x 4 == 2 workers
    x 2 (DDP) == 1 worker x 4 micro batches of 1 == 2 workers x 2 micro batches of 1."""
    config = load_preset("tiny").tokenizer
    config = type(config)(**{**config.__dict__, "quantizer": type(config.quantizer)(
        **{**config.quantizer.__dict__, "restart_dead_codes": False})})
    torch.manual_seed(0)
    start = Tokenizer(config).train()
    with torch.no_grad():  # seed the codebook from data once, so no step depends on the worker's data alone
        start(torch.rand(2, 4, 64, 64, 3))
    init = save_checkpoint(tmp_path / "init.pt", start.eval(), "tiny")
    runs = {
        "one": job([train_data], tmp_path / "one", steps=2, batch_size=4, init=str(init)),
        # the two-worker run also reads and writes through storage URIs
        "two": job([f"file://{train_data}"], f"file://{tmp_path / 'two'}", steps=2, batch_size=4, init=str(init),
                   workers=2),
        "accumulated": job([train_data], tmp_path / "accumulated", steps=2, batch_size=4, init=str(init),
                           micro_batch=1),
        "two_accumulated": job([train_data], tmp_path / "two_accumulated", steps=2, batch_size=4, init=str(init),
                               workers=2, micro_batch=1),
    }
    states = {}
    for name, train_job in runs.items():
        run_training(train_job, show_progress=False)
        states[name] = load_checkpoint(tmp_path / name / "latest.pt", "tokenizer").model_state
    before = load_checkpoint(init, "tokenizer").model_state
    moved = max(float((states["one"][k].float() - before[k].float()).abs().max()) for k in before)
    assert moved > 1e-4, "the step must change the weights for the comparison to mean anything"
    for other in ("two", "accumulated", "two_accumulated"):
        worst = max(float((states["one"][k].float() - states[other][k].float()).abs().max()) for k in before)
        assert worst < 1e-5 * max(1.0, moved) + 1e-6, \
            f"{other}: parameters differ by {worst} (the step moved them {moved})"


def test_decoder_only_fine_tuning_keeps_every_token_id_and_trains_the_decoder(ray_cluster, train_data, tmp_path):
    """`train.tokenizer_finetune=decoder` (tiny's TA stage): frames map to the base tokenizer's ids, id for id, so
    the TA dynamics goes on from its base; the decoder learns the new data."""
    torch.manual_seed(0)
    base = Tokenizer(load_preset("tiny").tokenizer).train()
    with torch.no_grad():
        base(torch.rand(2, 4, 64, 64, 3))  # seed the codebook
    init = save_checkpoint(tmp_path / "init.pt", base.eval(), "tiny")
    run_training(job([train_data], tmp_path / "ta", steps=3, batch_size=4, init=str(init),
                     overrides=["world_model.train.tokenizer_finetune=decoder"]), show_progress=False)
    tuned = load_checkpoint(tmp_path / "ta" / "latest.pt", "tokenizer").model_state
    before = load_checkpoint(init, "tokenizer").model_state
    frozen = [k for k in before if k.split(".")[0] in ("patch_embedding", "encoder", "to_code", "quantizer")]
    assert frozen and all(torch.equal(before[k], tuned[k]) for k in frozen), "the encoder or codebook moved"
    assert any(not torch.equal(before[k], tuned[k]) for k in before if k.startswith("decoder.")), \
        "the decoder did not train"


# ---- fault tolerance and resumption ---------------------------------------------------------------
def test_a_worker_that_dies_is_restarted_from_the_latest_checkpoint(ray_cluster, train_data, tmp_path):
    out = tmp_path / "crash"
    train_job = job([train_data], out, steps=12, workers=2, batch_size=4, inject_failure_at=6,
                    overrides=["world_model.train.checkpoint_every=4", "world_model.optim.warmup_steps=2"])
    result = run_training(train_job, show_progress=False)
    assert (out / ".injected_failure").exists(), "the failure was not injected"
    assert load_checkpoint(out / "latest.pt", "tokenizer").step == 12
    rows = metric_rows(out, "train")
    assert [int(float(r["step"])) for r in rows] == list(range(1, 13)), "the step count must be continuous"
    lrs = [float(r["lr"]) for r in rows]
    preset = train_job.load_preset()
    optim = train_job.optim(preset)
    assert lrs[-1] == pytest.approx(optim.min_lr), "the LR reaches its minimum exactly at the final step"
    assert all(a >= b - 1e-12 for a, b in zip(lrs[2:], lrs[3:])), "after warmup the LR never rises"
    assert result.steps == 12


def test_a_killed_driver_is_resumed_by_running_the_same_command(ray_cluster, train_data, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "cluster.cli", "train", "tokenizer", "--data", str(train_data), "--out", str(out),
               "--steps", "14", "--batch", "2", "--no-wandb", "--no-progress", "--address", ray_cluster,
               "--set", "world_model.train.checkpoint_every=3", "--set", "world_model.train.val_windows=4"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    deadline = time.monotonic() + 240
    while not (out / "latest.pt").exists() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
    assert (out / "latest.pt").exists(), \
        driver.communicate()[0] if driver.poll() is not None else "no checkpoint in time"
    os.killpg(driver.pid, signal.SIGSTOP)  # frozen, still holding the run folder: a second trainer is refused
    second = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert second.returncode == 2, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()  # refused before it connects to Ray: no other line
    assert len(lines) == 1 and f"`genie train` (pid {driver.pid} on host" in lines[0], second.stderr
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    killed_at = load_checkpoint(out / "latest.pt", "tokenizer").step
    assert killed_at < 14
    again = subprocess.run(command, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resumed from step" in again.stdout, again.stdout
    assert load_checkpoint(out / "latest.pt", "tokenizer").step == 14


def test_an_unreadable_latest_checkpoint_falls_back_to_ray_trains_own(trained_tokenizer, train_data, tmp_path, capsys):
    run, _ = trained_tokenizer
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(".genie-lock"))
    (copy / "latest.pt").write_bytes(b"cut short by a crash")
    result = run_training(job([train_data], copy, steps=40, overrides=["world_model.train.log_every=10"]),
                          show_progress=False)
    assert result.already_done and result.steps == 40
    assert load_checkpoint(copy / "latest.pt", "tokenizer").step == 40, "latest.pt is rewritten from Ray's checkpoint"
    assert "resuming from Ray Train's checkpoint at step 40" in capsys.readouterr().out


def test_a_checkpoint_write_that_fails_leaves_no_temporary_behind(tmp_path):
    model = Tokenizer(load_preset("tiny").tokenizer)
    target = tmp_path / "latest.pt"
    target.mkdir()
    (target / "in-the-way").write_text("a folder where the checkpoint should go: the rename fails")
    with pytest.raises(OSError):
        save_checkpoint(target, model, "tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"], "a temporary checkpoint was left behind"
    assert save_checkpoint(tmp_path / "ok.pt", model, "tiny").is_file()


def test_wandb_rejoins_the_same_run_from_another_process(tmp_path):
    from world_model.training.trainer import wandb_run_id

    train_job = TrainJob(stage="tokenizer", data=[str(tmp_path / "data")], out=str(tmp_path / "run"))
    started = subprocess.run([sys.executable, "-c", (
        "import sys; from world_model.training.job import TrainJob; from world_model.training.trainer import "
        "_start_wandb\n"
        f"run = _start_wandb(TrainJob(stage='tokenizer', data=[{str(tmp_path / 'data')!r}], "
        f"out={str(tmp_path / 'run')!r}))\n"
        "print(run.id); run.finish()")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "WANDB_MODE": "offline", "PYTHONHASHSEED": "1"},
        cwd=Path(__file__).resolve().parents[1])
    assert started.returncode == 0, started.stderr
    assert started.stdout.strip().splitlines()[-1] == wandb_run_id(train_job), \
        "a resumed run would start a new wandb run"


# ---- damaged data -------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["lost", "cut short"])
def test_a_lost_shard_is_refused_before_any_worker_starts(ray_cluster, train_data, tmp_path, capsys, damage):
    """A listed shard missing, or there at another size than the manifest's (a copy cut short): one line naming it
    and `genie data repair`, before Ray Train starts (no retries, no traceback from inside a worker)."""
    data = tmp_path / "data"
    shutil.copytree(train_data, data, ignore=shutil.ignore_patterns(".genie-lock"))
    lost = sorted(p.name for p in data.glob("*.arrow"))[-1]
    if damage == "lost":
        (data / lost).unlink()
    else:
        os.truncate(data / lost, (data / lost).stat().st_size // 2)
    out = tmp_path / "run"
    argv = ["train", "tokenizer", "--data", str(data), "--out", str(out), "--steps", "2", "--no-wandb", "--no-progress",
            "--max-failures", "0"]
    assert genie(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and lost in err and f"genie data repair {data}" in err, err
    assert ("missing" if damage == "lost" else "cut short") in err, err
    assert not (out / "ray").exists(), f"Ray Train started on a dataset with a {damage} shard"


def test_a_data_error_inside_a_worker_reaches_the_user_as_one_line(ray_cluster, train_data, tmp_path, capsys):
    from rl_agent.store.manifest import Manifest

    data = tmp_path / "data"
    shutil.copytree(train_data, data, ignore=shutil.ignore_patterns(".genie-lock"))
    for shard in Manifest.load(data).shards:  # same size, other bytes: only a worker that reads them can tell
        with open(data / shard.file, "r+b") as handle:
            handle.seek(shard.bytes // 2)
            byte = handle.read(1)
            handle.seek(-1, os.SEEK_CUR)
            handle.write(bytes([byte[0] ^ 0xFF]))
        # as on a machine that never decoded it (the decoded cache, keyed by checksum, would hide the damage)
        (Path(os.environ["GENIE_CACHE_DIR"]) / f"{shard.sha256}.npy").unlink(missing_ok=True)
    argv = ["train", "tokenizer", "--data", str(data), "--out", str(tmp_path / "run"), "--steps", "2", "--no-wandb",
            "--no-progress", "--max-failures", "0", "--batch", "2"]
    assert genie(argv) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checksum differs" in err and "genie data repair" in err, err
    assert "resume" not in err, err


# ---- each stage learns -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_tokenizer(ray_cluster, train_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tokenizer"
    return out, run_training(job([train_data], out, steps=40, overrides=["world_model.train.log_every=10"]),
                             show_progress=False)


def _assert_learned(result, run: Path):
    assert result.last_val["val_loss"] < result.first_val["val_loss"], (result.first_val, result.last_val)
    assert (run / "best.pt").is_file() and (run / "latest.pt").is_file() and list((run / "samples").glob("*.png"))


def test_tokenizer_trains_end_to_end_and_validation_improves(trained_tokenizer):
    run, result = trained_tokenizer
    _assert_learned(result, run)
    assert result.last_val["val_psnr"] > result.first_val["val_psnr"] + 3


def test_lam_and_both_dynamics_train_end_to_end(ray_cluster, train_data, trained_tokenizer, tmp_path):
    tokenizer_run, _ = trained_tokenizer
    lam = run_training(job([train_data], tmp_path / "lam", stage="lam", steps=20), show_progress=False)
    _assert_learned(lam, tmp_path / "lam")
    genie_g = run_training(job([train_data], tmp_path / "genie-g", stage="dynamics", steps=20,
                               tokenizer=str(tokenizer_run), actions="true"), show_progress=False)
    _assert_learned(genie_g, tmp_path / "genie-g")
    genie = run_training(job([train_data], tmp_path / "genie", stage="dynamics", steps=10,
                             tokenizer=str(tokenizer_run), lam=str(tmp_path / "lam"), actions="latent"),
                             show_progress=False)
    _assert_learned(genie, tmp_path / "genie")
    from world_model.runs import load_world_model

    world = load_world_model(tmp_path / "genie")
    assert world.name == "GenieRedux" and world.model.lam is not None
    assert load_world_model(tmp_path / "genie-g").name == "GenieRedux-G"


def test_fine_tuning_with_init_starts_from_the_base_weights_with_a_fresh_optimiser(
        ray_cluster, train_data, trained_tokenizer, tmp_path):
    base, _ = trained_tokenizer
    result = run_training(job([train_data], tmp_path / "ta", steps=2, init=str(base)), show_progress=False)
    base_psnr = load_checkpoint(base / "best.pt", "tokenizer").extra["val"]["val_psnr"]
    assert result.first_val["val_psnr"] == pytest.approx(base_psnr, abs=0.5), "step 0 of a fine-tune is the base model"


# ---- bad input -------------------------------------------------------------------------------------
def test_bad_training_input_is_refused_with_what_to_do(ray_cluster, train_data, trained_tokenizer, tmp_path, capsys):
    tokenizer_run, _ = trained_tokenizer
    base = ["train", "dynamics", "--data", str(train_data), "--no-progress", "--no-wandb", "--steps", "2"]
    cases = [
        (["train", "tokenizer", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "a")], "genie collect"),
        ([*base, "--out", str(tmp_path / "b")], "--tokenizer"),
        ([*base, "--out", str(tmp_path / "c"), "--tokenizer", str(tokenizer_run), "--actions", "latent"],
         "genie train lam"),
        ([*base, "--out", str(tmp_path / "d"), "--tokenizer", str(tokenizer_run), "--actions", "latent",
          "--lam", str(tokenizer_run)], "'tokenizer' run, but a 'lam' checkpoint"),
        (["train", "tokenizer", "--data", str(train_data), "--out", str(tmp_path / "e"), "--workers", "3"],
         "divisible by --workers"),
        (["train", "tokenizer", "--data", str(train_data), "--out", str(tokenizer_run), "--steps", "7"],
         "different tokenizer run"),
        (["train", "tokenizer", "--data", str(train_data), "--out", str(tmp_path / "f"), "--preset", "huge"],
         "known presets"),
        (["train", "tokenizer", "--data", str(train_data), "--out", str(tmp_path / "g"), "--set",
          "world_model.tokenizer.encoder.heads=3"], "not divisible by heads"),
    ]
    for argv, expected in cases:
        assert genie(argv) != 0, argv
        assert expected in capsys.readouterr().err, argv


def test_job_refuses_a_tokenizer_for_a_non_dynamics_stage(train_data, tmp_path):
    with pytest.raises(ConfigError, match="inputs of `genie train dynamics`"):
        job([train_data], tmp_path, stage="lam", tokenizer="x")


def test_ray_trains_per_report_info_lines_are_quieted_in_the_workers():
    """Ray 2.60 logs "Reporting training result N: TrainingReport(...)" per worker per checkpoint through a logger
    named by its file path, outside "ray.train": the training workers set it to WARNING with the rest."""
    import logging

    from ray.train.v2._internal.execution import context as train_context

    from world_model.training.loop import quiet_ray_train_logs

    reporting = logging.getLogger(train_context.__file__)
    assert reporting is train_context.logger  # the logger the line goes through
    before = reporting.level, logging.getLogger("ray.train").level
    try:
        quiet_ray_train_logs()
        assert not reporting.isEnabledFor(logging.INFO) and reporting.isEnabledFor(logging.WARNING)
        assert not logging.getLogger("ray.train.v2.something").isEnabledFor(logging.INFO)
    finally:
        reporting.setLevel(before[0])
        logging.getLogger("ray.train").setLevel(before[1])
