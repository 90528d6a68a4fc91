"""genie train, tune, pipeline and submit take their options from the typed configs (TrainJob, SweepConfig,
PipelineResources, SubmitRequest): the parsed defaults are the configs' own, every option lands in its field, every
flag the commands had is still there, and `--actions` says ground_truth while records keep saying 'true'."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from cluster.cli import build_parser
from cluster.commands.jobs import SUBMIT_OPTIONS
from cluster.commands.pipeline import RESOURCE_OPTIONS
from cluster.commands.train import TRAIN_OPTIONS, job_from_args
from cluster.commands.tune import TUNE_OPTIONS, sweep_from_args
from cluster.dataclass_options import config_from_args
from cluster.jobs import SubmitRequest
from cluster.pipeline.context import MODELS, PipelineResources
from tuning.trials import SweepConfig
from world_model.training.job import TrainJob

# the flags each command had before its options were made from its config (users' scripts use them)
FLAGS_BEFORE = {name: flags.split() for name, flags in {
    "train": "--data --out --preset --preset-file --set --workers --gpus-per-worker --cpus-per-worker "
             "--threads-per-worker --steps --batch --micro-batch --init --tokenizer --lam --actions --seed --compile "
             "--no-bf16 --max-failures --no-wandb --no-progress --address",
    "tune": "--data --out --space --preset-sweep --preset --preset-file --set --samples --seed --scheduler --metric "
            "--budget-steps --val-every --grace-steps --reduction-factor --gpus-per-trial --workers --cpus-per-worker "
            "--max-concurrent --tokenizer --lam --actions --no-wandb --address",
    "pipeline": "--out --preset --preset-file --set --gpus-per-worker --gpus-per-learner --stages --list --no-progress "
                "--address",
    "submit": "--address --working-dir --env --job-id --no-wait",
}.items()}
# flags added since, each beside the old name it stands for
FLAGS_ADDED = {"pipeline": ["--tasks"],  # --stages
               "train": ["--data-shares"]}  # new: each --data folder's share of a batch


def command_parser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", sorted(FLAGS_BEFORE))
def test_every_flag_is_still_there_in_order_and_in_help(command):
    parser = command_parser(command)
    flags = [s for action in parser._actions for s in action.option_strings if s != "-h" and s != "--help"]
    assert [f for f in flags if f not in FLAGS_ADDED.get(command, [])] == FLAGS_BEFORE[command]
    text = parser.format_help()
    assert all(flag in text for flag in FLAGS_BEFORE[command])


@pytest.mark.parametrize("cls, names", [(TrainJob, TRAIN_OPTIONS), (SweepConfig, TUNE_OPTIONS),
                                        (PipelineResources, RESOURCE_OPTIONS), (SubmitRequest, SUBMIT_OPTIONS)])
def test_every_documented_field_is_an_option(cls, names):
    assert {f.name for f in dataclasses.fields(cls) if "help" in f.metadata} == set(names)


def test_the_parsed_defaults_are_the_configs_own():
    assert job_from_args(parse("train", "tokenizer", "--data", "d", "--out", "o")) == \
        TrainJob(stage="tokenizer", data=["d"], out="o")
    assert sweep_from_args(parse("tune", "lam", "--data", "d"), 0.0) == SweepConfig(stage="lam", data=["d"])
    assert config_from_args(PipelineResources, parse("pipeline", "--out", "o"), RESOURCE_OPTIONS) == \
        PipelineResources()
    request = config_from_args(SubmitRequest, parse("submit", "collect", "--out", "x"), SUBMIT_OPTIONS,
                               command="collect", args=["--out", "x"])
    default = SubmitRequest(command="collect", args=["--out", "x"])
    assert dataclasses.replace(request, submission_id="x") == dataclasses.replace(default, submission_id="x")
    assert request.submission_id.startswith("genie-collect-")


def test_each_option_lands_in_its_field(tmp_path, capsys):
    job = job_from_args(parse(
        "train", "dynamics", "--data", "a, s3://b/c", "--out", "s3://b/run", "--tokenizer", "t", "--lam", "l",
        "--actions", "latent", "--workers", "2", "--gpus-per-worker", "0.5", "--cpus-per-worker", "3", "--steps", "7",
        "--batch", "8", "--micro-batch", "2", "--init", "i", "--seed", "4", "--compile", "--no-bf16",
        "--max-failures", "1", "--no-wandb", "--set", "world_model.optim.lr=0.001", "--data-shares", "3,1"))
    assert job.data_shares == [0.75, 0.25]  # weights, normalised
    assert (job.data[1:], job.out, job.actions, job.workers, job.gpus_per_worker, job.cpus_per_worker,
            job.threads_per_worker, job.steps, job.batch_size, job.micro_batch, job.seed, job.compile, job.bf16,
            job.max_failures, job.wandb, job.overrides) == (
        ["s3://b/c"], "s3://b/run", "latent", 2, 0.5, 3.0, 3, 7, 8, 2, 4, True, False, 1, False,
        ["world_model.optim.lr=0.001"])
    assert job.data[0].endswith("/a") and job.init.endswith("/i") and job.tokenizer.endswith("/t")
    assert job_from_args(parse("train", "lam", "--data", "d", "--out", "o", "--cpus-per-worker", "2",
                               "--threads-per-worker", "1")).threads_per_worker == 1

    sweep = sweep_from_args(parse(
        "tune", "dynamics", "--data", "d", "--out", "s3://b/sweep", "--tokenizer", "t", "--samples", "2", "--seed", "3",
        "--scheduler", "none", "--metric", "psnr", "--budget-steps", "9", "--val-every", "3", "--grace-steps", "3",
        "--reduction-factor", "3", "--workers", "2", "--cpus-per-worker", "2", "--max-concurrent", "2", "--no-wandb",
        "--preset-sweep", "tiny,small", "--space", str(tmp_path / "space.yaml")), 1.0)
    assert (sweep.out, sweep.samples, sweep.seed, sweep.scheduler, sweep.metric, sweep.budget_steps, sweep.val_every,
            sweep.grace_steps, sweep.reduction_factor, sweep.workers, sweep.cpus_per_worker, sweep.max_concurrent,
            sweep.wandb, sweep.presets, sweep.gpus_per_trial, sweep.actions, sweep.space) == (
        "s3://b/sweep", 2, 3, "none", "psnr", 9, 3, 3, 3, 2, 2.0, 2, False, ["tiny", "small"], 1.0, "ground_truth",
        str(tmp_path / "space.yaml"))
    assert sweep_from_args(parse("tune", "lam", "--data", "d"), 0.0).out == "sweeps/lam"

    resources = config_from_args(PipelineResources, parse("pipeline", "--out", "o", "--gpus-per-worker", "0.5",
                                                          "--gpus-per-learner", "0"), RESOURCE_OPTIONS)
    assert resources == PipelineResources(gpus_per_worker=0.5, gpus_per_learner=0.0)

    request = config_from_args(SubmitRequest, parse("submit", "--job-id", "my-job", "--no-wait", "train", "lam"),
                               SUBMIT_OPTIONS, command="train", args=[])
    assert (request.submission_id, request.wait, request.working_dir) == ("my-job", False, None)

    for argv, what in ((["train", "lam", "--data", "d", "--out", "o", "--workers", "0"], "--workers"),
                       (["tune", "lam", "--data", "d", "--scheduler", "fifo"], "--scheduler"),
                       (["pipeline", "--out", "o", "--gpus-per-worker", "-1"], "--gpus-per-worker"),
                       (["train", "lam", "--data", "s3://", "--out", "o"], "--data")):
        with pytest.raises(SystemExit) as exit_:
            parse(*argv)
        assert exit_.value.code == 2 and what in capsys.readouterr().err


def test_data_shares_are_one_weight_per_folder_and_enter_the_identity_only_when_given():
    """--data-shares: one weight >= 0 per --data folder (normalised), else a ConfigError saying what is wrong; a
    run without shares keeps the identity it had before the option existed (its resumption is not refused)."""
    from genie_common.errors import ConfigError

    two = dict(stage="lam", data=["a", "b"], out="o")
    assert TrainJob(**two, data_shares=[1, 1]).data_shares == [0.5, 0.5]
    assert "data_shares" not in TrainJob(**two).identity()
    assert TrainJob(**two, data_shares=[0.2, 0.8]).identity()["data_shares"] == [0.2, 0.8]
    for shares, said in (([1.0], "1 shares for 2 --data folder"), ([1, -1], ">= 0"), ([0, 0], "positive sum"),
                         (["x", 1], "numbers")):
        with pytest.raises(ConfigError, match=said):
            TrainJob(**two, data_shares=shares)


def test_records_keep_saying_true_for_ground_truth():
    """Runs, sweeps and pipeline tasks recorded with actions 'true' resume: configs read 'true' as ground_truth,
    and identities and task keys still say 'true'."""
    old = TrainJob.from_dict({**TrainJob(stage="dynamics", data=["d"], out="o", tokenizer="t").to_dict(),
                              "actions": "true"})
    assert old.actions == "ground_truth" and old.conditioning == "ground_truth"
    assert old.identity()["actions"] == "true"
    assert TrainJob(stage="dynamics", data=["d"], out="o", tokenizer="t").identity() == old.identity()
    sweep = SweepConfig.from_dict({**SweepConfig(stage="dynamics", data=["d"], tokenizer="t").to_dict(),
                                   "actions": "true"})
    assert sweep.actions == "ground_truth" and sweep.identity([])["actions"] == "true"
    assert MODELS["genie-g"] == ("dynamics", "ground_truth")


def test_the_pipeline_trains_genie_g_on_ground_truth_with_the_recorded_key(tmp_path):
    from cluster.pipeline.actions import train_job
    from cluster.pipeline.plan import build_plan
    from cluster.pipeline.runner import make_context

    context = make_context(str(tmp_path / "run"), "tiny", None, [])
    tasks = {task.name: task for task in build_plan(context)}
    assert tasks["genie-g"].config["conditioning"] == "true"  # as recorded runs' keys say it
    assert tasks["genie"].config["conditioning"] == "latent" and tasks["tokenizer"].config["conditioning"] is None
    assert train_job(context, tasks["genie-g"]).actions == "ground_truth"
    assert train_job(context, tasks["genie"]).actions == "latent"
