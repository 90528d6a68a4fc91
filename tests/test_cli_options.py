"""The typed configs are the CLI of genie agent, datasets, data repair, play and dream: their options are made from the
configs' fields, default to the configs' defaults, land in the configs built back, and every flag users knew is
still there."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from cluster.arguments import preset_of
from cluster.cli import build_parser
from cluster.commands.agent import AGENT_OPTIONS, agent_settings
from cluster.commands.datasets import base_config
from cluster.commands.play import DREAM_OPTIONS, PLAY_OPTIONS, play_config
from cluster.dataclass_options import add_options, config_from_args, overrides_from_args
from cluster.play.access import LOOPBACK_NAMES
from cluster.play.config import DreamConfig, PlayConfig
from genie_common.config import option
from rl_agent.coinrun_env import CoinRunConfig
from rl_agent.collection.config import CollectConfig
from rl_agent.ppo_config import PPOSettings


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_every_documented_field_of_play_dream_and_ppo_is_an_option():
    for cls, names in ((PlayConfig, PLAY_OPTIONS), (DreamConfig, DREAM_OPTIONS), (PPOSettings, AGENT_OPTIONS)):
        assert {f.name for f in dataclasses.fields(cls) if "help" in f.metadata} == set(names), cls


def test_play_defaults_are_the_configs_and_each_flag_lands_in_its_field():
    assert play_config(parse("play", "--model", "m"), None, LOOPBACK_NAMES) == PlayConfig()
    config = play_config(parse("play", "--model", "m", "--rate", "5", "--max-gif-frames", "9", "--steps", "3",
                               "--temperature", "0.5", "--max-sessions", "4", "--session-ttl", "60",
                               "--max-upload-kb", "10", "--model-cpus", "0.5", "--gpus", "1", "--replicas", "2",
                               "--torch-threads", "3"), "t" * 8, None)
    assert config == PlayConfig(rate_per_s=5.0, rate_burst=10, max_gif_frames=9, steps=3, temperature=0.5,
                                max_sessions=4, ttl_s=60.0, max_upload_kb=10, model_cpus=0.5, model_gpus=1.0,
                                model_replicas=2, torch_threads=3, token="t" * 8, allowed_hosts=None)
    assert config.max_upload_bytes == 10 * 1024


def test_dream_defaults_are_the_configs_and_each_flag_lands_in_its_field():
    base = ("dream", "--model", "m", "--actions", "RR")
    assert config_from_args(DreamConfig, parse(*base), DREAM_OPTIONS) == DreamConfig()
    got = config_from_args(DreamConfig, parse(*base, "--start", "test", "--level-seed", "3", "--steps", "2",
                                              "--temperature", "0", "--guidance", "1.5", "--seed", "7", "--fps", "5",
                                              "--scale", "2", "--side-by-side"), DREAM_OPTIONS)
    assert got == DreamConfig("test", 3, 2, 0.0, 1.5, 7, 5.0, 2, True)


def test_agent_train_is_the_presets_agent_section_with_the_options_given_laid_over_it():
    args = parse("agent", "train", "--out", "o")
    assert overrides_from_args(PPOSettings, args, AGENT_OPTIONS) == {}
    assert agent_settings(args) == PPOSettings.from_dict(preset_of(args)["agent"])
    args = parse("agent", "train", "--out", "o", "--preset", "small", "--env-runners", "0", "--envs-per-runner", "4",
                 "--steps", "2048", "--gpus-per-learner", "0.5")
    settings = agent_settings(args)
    expected = dataclasses.replace(PPOSettings.from_dict(preset_of(args)["agent"]), num_env_runners=0,
                                   envs_per_runner=4, total_env_steps=2048, num_gpus_per_learner=0.5)
    assert settings == expected


def test_agent_eval_datasets_make_and_data_repair_share_the_configs_words():
    args = parse("agent", "eval", "--checkpoint", "c")
    assert config_from_args(CoinRunConfig, args, ["distribution_mode"]) == CoinRunConfig()
    args = parse("agent", "eval", "--checkpoint", "c", "--distribution-mode", "hard")
    assert config_from_args(CoinRunConfig, args, ["distribution_mode"]).distribution_mode == "hard"
    args = parse("datasets", "make", "--out", "o")
    assert base_config(args, {}) == CollectConfig()
    assert base_config(parse("datasets", "make", "--out", "o", "--workers", "3"), {"episodes_per_shard": 16}) == (
        CollectConfig(workers=3, episodes_per_shard=16))
    assert parse("data", "repair", "d").workers == CollectConfig().workers
    assert parse("data", "repair", "d", "--workers", "5").workers == 5


# every flag each subcommand's --help listed before its options were made from the configs
FLAGS = {
    ("agent", "train"): "--address --env-runners --envs-per-runner --gpus-per-learner --no-progress --out --preset "
                        "--preset-file --set --steps",
    ("agent", "eval"): "--checkpoint --distribution-mode --episodes --json --no-progress --seed --test-levels",
    ("agent", "export"): "",
    ("datasets", "make"): "--address --checkpoint --names --no-progress --out --preset --preset-file --set --workers",
    ("data", "verify"): "",
    ("data", "repair"): "--address --checkpoint --no-progress --workers",
    ("data", "stats"): "--json --plot --progress-episodes",
    ("data", "compare"): "--plot --progress-episodes",
    ("play",): "--address --data --gpus --host --max-gif-frames --max-sessions --max-upload-kb --model --model-cpus "
               "--port --rate --replicas --seed --session-ttl --steps --temperature --token --torch-threads",
    ("dream",): "--actions --data --fps --guidance --level-seed --model --out --scale --seed --side-by-side --start "
                "--steps --temperature",
}


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_help_still_lists_every_flag_it_listed(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*command, "--help"])
    shown = capsys.readouterr().out
    assert exit_.value.code == 0
    missing = [flag for flag in FLAGS[command].split() if f"{flag} " not in shown and f"{flag}\n" not in shown]
    assert not missing, missing


def test_preset_overrides_default_to_the_preset_and_name_its_key(capsys):
    @dataclasses.dataclass
    class Settings:
        steps: int = option(10, help="steps", range="positive")
        share: float | None = option(None, help="a share", range="fraction")
        loud: bool = option(False, help="shout")

    parser = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_options(parser, Settings, ["steps", "share"], overriding="demo")
    assert overrides_from_args(Settings, parser.parse_args([]), ["steps", "share"]) == {}
    assert overrides_from_args(Settings, parser.parse_args(["--share", "0.5"]), ["steps", "share"]) == {"share": 0.5}
    shown = parser.format_help()
    assert "the preset's demo.steps" in shown and "None" not in shown
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "0"])
    with pytest.raises(TypeError, match="switch"):
        add_options(argparse.ArgumentParser(), Settings, ["loud"], overriding="demo")


def test_no_help_ends_an_option_with_an_empty_default():
    """'(default: None)' after a required option or '(default: False)' after a switch says nothing: every command's
    help shows a default only where it has one (cluster.arguments.DefaultsHelpFormatter)."""
    from cluster.cli import build_parser
    from tests.test_storage_uris import leaf_parsers

    noisy = {name: [text for text in ("(default: None)", "(default: False)", "(default: [])")
                    if text in " ".join(parser.format_help().split())]
             for name, parser in leaf_parsers(build_parser())}
    assert not {name: found for name, found in noisy.items() if found}
