"""Presets, named data sets and `genie data compare`."""

import shutil

import pytest

from cluster.cli import main
from cluster.presets import known_presets, load_preset
from rl_agent.coinrun_env import ConfigError
from rl_agent.named_datasets import dataset_config
from rl_agent.ppo_config import PPOSettings


def test_presets_load_and_build_valid_agent_settings():
    assert {"tiny", "small", "paper"} <= set(known_presets())
    for name in ("tiny", "laptop", "small", "paper"):
        settings = PPOSettings.from_dict(load_preset(name)["agent"])
        assert settings.train_batch_size % settings.minibatches == 0
    paper = PPOSettings.from_dict(load_preset("paper")["agent"])
    assert paper.train_batch_size == 64 * 256 and paper.gamma == 0.999 and paper.total_env_steps == 25_000_000


def test_preset_errors_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*tiny"):
        load_preset("huge")
    assert load_preset("tiny", overrides=["agent.lr=0.001"])["agent"]["lr"] == 0.001
    with pytest.raises(ConfigError, match="section.field=value"):
        load_preset("tiny", overrides=["lr=1"])
    with pytest.raises(ConfigError, match="unknown agent setting"):
        PPOSettings.from_dict(load_preset("tiny", overrides=["agent.learning_rate=1"])["agent"])
    # an optional field takes null, as the presets' comments offer ("vf_clip: ... null = none"); others refuse it
    assert PPOSettings.from_dict(load_preset("tiny", overrides=["agent.vf_clip=null"])["agent"]).vf_clip is None
    with pytest.raises(ConfigError, match="agent.lr must be a number, got None"):
        load_preset("tiny", overrides=["agent.lr=null"])


def test_named_datasets_use_disjoint_levels():
    train = dataset_config("random-train", 10, None)
    test = dataset_config("basic-test", 10, None)
    train_levels = range(train.env.start_level, train.env.start_level + train.env.num_levels)
    test_levels = range(test.env.start_level, test.env.start_level + test.env.num_levels)
    assert not set(range(train_levels.start, train_levels.stop, 997)) & set(test_levels)
    assert train_levels.stop <= test_levels.start and test.split == "test" and train.split == "auto"
    with pytest.raises(ConfigError, match="--checkpoint"):
        dataset_config("diverse-test", 10, None)
    with pytest.raises(ConfigError, match="unknown data set"):
        dataset_config("hard-test", 10, None)


def test_data_compare_prints_both_datasets(small_dataset, tmp_path, capsys):
    other = tmp_path / "other"
    shutil.copytree(small_dataset, other)
    plot = tmp_path / "cmp.png"
    assert main(["data", "compare", str(small_dataset), str(other), "--plot", str(plot),
                 "--progress-episodes", "4"]) == 0
    text = capsys.readouterr().out
    assert "action entropy" in text and "frame diversity" in text and plot.stat().st_size > 0


def test_pipeline_steps_take_a_models_own_entry_over_its_stages_and_refuse_unknown_names(tmp_path):
    from cluster.pipeline.plan import PipelineSettings, build_plan
    from cluster.pipeline.runner import make_context

    context = make_context(tmp_path, "tiny", None, [])
    sections = context.sections
    tasks = {t.name: t for t in build_plan(context)}
    assert tasks["genie"].config["steps"] == sections["pipeline"]["steps"]["genie"]
    assert tasks["genie-g"].config["steps"] == sections["pipeline"]["steps"]["dynamics"]
    with pytest.raises(ConfigError, match="genei"):
        PipelineSettings.from_dict({"steps": {"tokenizer": 1, "lam": 1, "dynamics": 1, "genei": 1}})


def test_one_pipeline_table_field_overridden_keeps_the_others(tmp_path):
    """`--set pipeline.eval.workers=1` on a preset without a pipeline section changes one field, not the table."""
    from cluster.pipeline.plan import PipelineSettings
    from cluster.pipeline.runner import make_context

    defaults = PipelineSettings()
    settings = PipelineSettings.from_dict({"eval": {"workers": 1}, "steps": {"dynamics": 7}})
    assert settings.eval == {**defaults.eval, "workers": 1}
    assert settings.steps == {**defaults.steps, "dynamics": 7}
    context = make_context(tmp_path, "small", None, ["pipeline.eval.workers=1"])
    assert context.settings.eval["workers"] == 1
    assert context.settings.eval["maskgit_steps"] == defaults.eval["maskgit_steps"]
    with pytest.raises(ConfigError, match="table"):
        PipelineSettings.from_dict({"eval": 3})


def test_ta_replay_trains_the_named_ta_tasks_on_both_training_sets_and_changes_only_their_keys(tmp_path):
    """`pipeline.ta_replay: [genie-g]` against none: GenieRedux-G-TA trains on the agent's and the random agent's
    data (in that order), its key and its evaluations' keys change, and every other task (the TA tokenizer's
    included) is kept."""
    from cluster.pipeline.actions import train_job
    from cluster.pipeline.plan import PipelineSettings, build_plan
    from cluster.pipeline.runner import make_context

    plain = {t.name: t for t in build_plan(make_context(tmp_path, "tiny", None, ["pipeline.ta_replay=[]"]))}
    context = make_context(tmp_path, "tiny", None, ["pipeline.ta_replay=[genie-g]"])  # tiny's own since 2026-12-01
    replay = {t.name: t for t in build_plan(context)}
    assert train_job(context, replay["genie-g-ta"]).data == [str(tmp_path / "data" / "agent-train"),
                                                              str(tmp_path / "data" / "random-train")]
    assert train_job(context, replay["tokenizer-ta"]).data == [str(tmp_path / "data" / "agent-train")]
    changed = {name for name in plain if plain[name].key != replay[name].key}
    assert changed == {"genie-g-ta", *[n for n in plain if n.startswith("eval:genie-g-ta:")], "report"}, changed
    with pytest.raises(ConfigError, match="ta_replay"):
        PipelineSettings.from_dict({"ta": ["genie"], "ta_replay": ["genie-g"]})
    assert train_job(context, replay["genie-g-ta"]).data_shares is None  # no share given: in proportion to windows


def test_ta_replay_share_sets_each_training_sets_part_of_the_batch_and_changes_only_its_tasks_keys(tmp_path):
    """`pipeline.ta_replay_share: 0.3`: the replaying GenieRedux-G-TA draws 70% of each batch from the agent's data
    and 30% from the random agent's (`genie train --data-shares 0.7,0.3`); its key and its evaluations' change, no
    other; a share outside (0, 1) is refused."""
    from cluster.pipeline.actions import train_job
    from cluster.pipeline.plan import PipelineSettings, build_plan
    from cluster.pipeline.runner import make_context

    plain = {t.name: t for t in build_plan(make_context(tmp_path, "tiny", None, []))}
    context = make_context(tmp_path, "tiny", None, ["pipeline.ta_replay_share=0.3"])
    shared = {t.name: t for t in build_plan(context)}
    assert train_job(context, shared["genie-g-ta"]).data_shares == pytest.approx([0.7, 0.3])
    assert train_job(context, shared["tokenizer-ta"]).data_shares is None  # not replaying: one data set
    changed = {name for name in plain if plain[name].key != shared[name].key}
    assert changed == {"genie-g-ta", *[n for n in plain if n.startswith("eval:genie-g-ta:")], "report"}, changed
    for bad in (0, 1, 1.5, "half", True):
        with pytest.raises(ConfigError, match="ta_replay_share"):
            PipelineSettings.from_dict({"ta_replay_share": bad})


def test_random_train_hold_keys_reach_random_train_alone_and_change_only_its_branch(tmp_path):
    """`data.random_train_hold_prob: 0.1`: random-train's random agent holds keys (8 frames each), basic-test stays the
    uniform agent; random-train's key and everything trained on it change, the agent and its data sets do not; null
    leaves every key as it was before the field existed; a probability outside [0, 1) is refused."""
    from cluster.pipeline.plan import build_plan
    from cluster.pipeline.runner import make_context
    from rl_agent.named_datasets import with_preset_holds

    data = load_preset("tiny", overrides=["data.random_train_hold_prob=0.1"])["data"]
    held = with_preset_holds("random-train", dataset_config("random-train", 10, None), data)
    assert (held.hold_prob, held.hold_frames, held.agent) == (0.1, 8, "random")
    assert with_preset_holds("basic-test", dataset_config("basic-test", 10, None), data).hold_prob == 0.0
    uniform = ["data.random_train_hold_prob=null"]
    assert with_preset_holds("random-train", dataset_config("random-train", 10, None),
                             load_preset("tiny", overrides=uniform)["data"]).hold_prob == 0.0

    plain = {t.name: t for t in build_plan(make_context(tmp_path, "tiny", None, uniform))}
    assert plain["data:random-train"].config["data"] == {k: v for k, v in load_preset("tiny")["data"].items()
                                                          if not k.startswith("random_train_hold")}
    held_plan = {t.name: t for t in build_plan(make_context(tmp_path, "tiny", None,
                                                            ["data.random_train_hold_prob=0.1"]))}
    changed = {name for name in plain if plain[name].key != held_plan[name].key}
    assert "data:random-train" in changed and "genie-g" in changed and "genie-g-ta" in changed
    assert not changed & {"agent", "data:agent-train", "data:basic-test", "data:diverse-test"}, changed
    with pytest.raises(ConfigError, match="random_train_hold_prob must be in"):
        load_preset("tiny", overrides=["data.random_train_hold_prob=1.5"])
