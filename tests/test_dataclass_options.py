"""The typed configs are the CLI: options made from dataclass fields (help, flag, check in the field's metadata), and
one word for the dynamics conditioning switch."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys

import pytest

from cluster.arguments import GenieParser
from cluster.cli import build_parser
from cluster.commands.collect import COLLECT_OPTIONS, ENV_OPTIONS
from cluster.commands.evaluation import EVAL_OPTIONS
from cluster.dataclass_options import add_options, config_from_args, flag_of
from genie_common.config import option
from rl_agent.coinrun_env import CoinRunConfig
from rl_agent.collection.config import CollectConfig
from world_model.evaluation.config import EvalConfig
from world_model.training.job import recorded_actions


def test_the_defaults_of_genie_eval_and_genie_collect_are_the_configs_own():
    args = build_parser().parse_args(["eval", "--model", "m", "--data", "d"])
    assert config_from_args(EvalConfig, args, EVAL_OPTIONS) == EvalConfig(model="m", data="d")
    args = build_parser().parse_args(["collect", "--out", "o"])
    env = config_from_args(CoinRunConfig, args, ENV_OPTIONS)
    assert env == CoinRunConfig() and config_from_args(CollectConfig, args, COLLECT_OPTIONS, env=env) == CollectConfig()


def test_every_documented_field_is_an_option_and_sets_its_field():
    for cls, names in ((EvalConfig, EVAL_OPTIONS), (CollectConfig, COLLECT_OPTIONS), (CoinRunConfig, ENV_OPTIONS)):
        documented = {f.name for f in dataclasses.fields(cls) if "help" in f.metadata}
        assert documented == set(names), cls
    args = build_parser().parse_args([
        "eval", "--model", "s3://b/run", "--data", "d", "--no-bf16", "--no-progress", "--checkpoint", "latest",
        "--modes", "teacher_forced", "--context", "3", "--split", "test", "--gpus-per-worker", "0.5"])
    config = config_from_args(EvalConfig, args, EVAL_OPTIONS, device="cuda")
    assert (config.model, config.bf16, config.show_progress, config.prefer, config.modes, config.context,
            config.split, config.gpus_per_worker) == ("s3://b/run", False, False, "latest", ("teacher_forced",), 3,
                                                      "test", 0.5)
    args = build_parser().parse_args(["collect", "--out", "o", "--envs-per-worker", "4", "--no-backgrounds",
                                      "--num-levels", "10", "--sticky-prob", "0.25", "--split", "train"])
    env = config_from_args(CoinRunConfig, args, ENV_OPTIONS)
    config = config_from_args(CollectConfig, args, COLLECT_OPTIONS, env=env)
    assert (config.envs_per_shard, env.use_backgrounds, env.num_levels, config.sticky_prob, config.split) == (
        4, False, 10, 0.25, "train")


def test_the_flag_users_know_is_kept_and_its_help_names_the_field():
    field = {f.name: f for f in dataclasses.fields(CollectConfig)}["envs_per_shard"]
    assert flag_of(field) == "--envs-per-worker" and "envs_per_shard" in field.metadata["help"]


@dataclasses.dataclass
class Example:
    name: str = option(help="a name")
    count: int = option(2, help="how many", range="positive")
    share: float | None = option(None, help="a share", range="fraction")
    loud: bool = option(False, help="shout")
    colour: bool = option(True, help="no colours", flag="--no-colour")
    parts: tuple[str, ...] = option(("a", "b"), help="parts")
    kept: int = 7  # no option


def test_the_helper_takes_type_default_and_check_from_the_field(capsys):
    parser = GenieParser(prog="x", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    names = ("name", "count", "share", "loud", "colour", "parts")
    add_options(parser, Example, names)
    assert config_from_args(Example, parser.parse_args(["--name", "n"]), names) == Example(name="n")
    got = config_from_args(Example, parser.parse_args(["--name", "n", "--count", "3", "--share", "0.5", "--loud",
                                                       "--no-colour", "--parts", "c, d"]), names, kept=1)
    assert got == Example("n", 3, 0.5, True, False, ("c", "d"), 1)
    assert "how many (default: 2)" in parser.format_help()
    for argv, what in ((["--count", "3"], "--name"), (["--name", "n", "--count", "0"], "--count"),
                       (["--name", "n", "--share", "2"], "--share")):
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2 and what in capsys.readouterr().err


def test_the_helper_refuses_an_undocumented_field_and_an_on_switch_without_no():
    @dataclasses.dataclass
    class Bad:
        on: bool = option(True, help="on")

    with pytest.raises(TypeError, match="kept has no help"):
        add_options(argparse.ArgumentParser(), Example, ["kept"])
    with pytest.raises(TypeError, match="--no-"):
        add_options(argparse.ArgumentParser(), Bad, ["on"])


@pytest.mark.parametrize("command", [["train", "dynamics", "--out", "o"], ["tune", "dynamics"]])
def test_actions_speak_the_dynamics_config_words_and_true_is_an_alias(command, capsys):
    def parse(*extra):
        return build_parser().parse_args([*command, "--data", "d", *extra]).actions

    assert parse() == "ground_truth" and parse("--actions", "latent") == "latent"
    assert parse("--actions", "ground_truth") == "ground_truth" and "deprecated" not in capsys.readouterr().err
    assert parse("--actions", "true") == "ground_truth"
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and "deprecated" in note and "ground_truth" in note
    with pytest.raises(SystemExit) as exit_:
        parse("--actions", "yes")
    assert exit_.value.code == 2 and "ground_truth" in capsys.readouterr().err
    # TrainJob and SweepConfig record ground truth as 'true' (run.json, sweep.json): runs still resume
    assert (recorded_actions("ground_truth"), recorded_actions("latent")) == ("true", "latent")


def test_genie_help_imports_neither_torch_nor_pyarrow_nor_ray():
    code = ("import sys; from cluster.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'pyarrow', 'ray') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]", result.stdout
