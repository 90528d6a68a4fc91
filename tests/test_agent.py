"""The PPO explorer: RLlib training, checkpoints and resume, the module, and collection with a checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rl_agent.coinrun_env import CoinRunConfig, ConfigError, make_replay_env
from rl_agent.collection import collect_dataset
from rl_agent.ppo_config import PPOSettings
from rl_agent.ppo_policy import PPOAgent, load_module
from rl_agent.ppo_training import checkpoints_of, train_agent
from rl_agent.store.schema import frames_of
from rl_agent.store.verify import verify_dataset
from tests.conftest import batches_by_id, batches_equal, small_config

TINY = dict(num_env_runners=0, envs_per_runner=4, rollout_length=64, epochs=1, minibatches=2, channels=(8, 16, 16),
            hidden=64, blocks=1, checkpoint_every=1, env=CoinRunConfig(max_episode_frames=120))


@pytest.fixture(scope="session")
def trained_run(ray_cluster, tmp_path_factory) -> Path:
    """Trained into a *relative* folder, as `genie pipeline --out runs/tiny` (the README's demo) does."""
    import os

    parent, here = tmp_path_factory.mktemp("agent"), os.getcwd()
    os.chdir(parent)
    try:
        train_agent(PPOSettings(total_env_steps=256, **TINY), Path("run"), show_progress=False, random_reference=2.0)
    finally:
        os.chdir(here)
    return parent / "run"


def test_training_checkpoints_writes_curve_and_resumes(trained_run):
    assert [p.name for p in checkpoints_of(trained_run)] == ["iter_000001"]
    assert (trained_run / "reward_curve.png").stat().st_size > 0
    rows = (trained_run / "curve.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and rows[0].startswith("iteration,env_steps")
    summary = train_agent(PPOSettings(total_env_steps=512, **TINY), trained_run, show_progress=False)
    assert summary.iterations == 2 and summary.env_steps >= 512
    assert [p.name for p in checkpoints_of(trained_run)][-1] == "iter_000002"
    assert len((trained_run / "curve.csv").read_text().strip().splitlines()) == 3
    state = json.loads((trained_run / "checkpoints" / "iter_000002" / "genie_state.json").read_text())
    assert state["iteration"] == 2


def test_changed_settings_refused_on_resume(trained_run):
    with pytest.raises(ConfigError, match="different settings"):
        train_agent(PPOSettings(total_env_steps=512, **(TINY | {"lr": 1e-3})), trained_run, show_progress=False)


def test_module_casts_uint8_frames_and_has_the_right_outputs(trained_run):
    import os

    from ray.rllib.core.rl_module.rl_module import RLModule

    from rl_agent.impala_module import ImpalaPolicyNet
    from rl_agent.ppo_policy import MODULE_SUBDIR

    module, folder = load_module(os.path.relpath(trained_run))  # a relative path, as typed on the command line
    assert isinstance(module, ImpalaPolicyNet) and folder.name == "policy"  # plain torch weights, no RLlib pickle
    frames = torch.randint(0, 256, (5, 64, 64, 3), dtype=torch.uint8)
    logits, values = module.policy_and_value(frames)
    assert logits.shape == (5, 15) and values.shape == (5,) and logits.dtype == torch.float32
    # the exported weights are RLlib's module's: same logits and values
    rllib = RLModule.from_checkpoint(str(checkpoints_of(trained_run)[-1] / MODULE_SUBDIR))
    with torch.no_grad():
        assert torch.allclose(rllib.forward_inference({"obs": frames})["action_dist_inputs"], logits, atol=1e-6)
        assert torch.allclose(rllib.compute_values({"obs": frames}), values, atol=1e-6)
    # the cast happens inside: uint8 and the same frames given as float 0..255 agree
    assert torch.allclose(module.policy_and_value(frames.float())[0], logits, atol=1e-5)


def test_the_policy_loads_from_tensors_only(trained_run, tmp_path):
    """weights.pt holds a state dict that torch.load(weights_only=True) reads; a broken one is refused clearly."""
    import shutil

    from rl_agent.ppo_policy import WEIGHTS_FILE

    folder = checkpoints_of(trained_run)[-1] / "policy"
    state = torch.load(folder / WEIGHTS_FILE, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and "vf.weight" in state
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    torch.save({k: v for k, v in state.items() if k != "vf.weight"}, broken / WEIGHTS_FILE)
    with pytest.raises(ConfigError, match="cannot load the policy"):
        load_module(broken)


def test_ppo_collection_replays_exactly_and_is_deterministic(ray_cluster, trained_run, tmp_path):
    config = small_config(agent="ppo", checkpoint=str(trained_run), episodes=4, max_episode_frames=60)
    first, second = tmp_path / "a", tmp_path / "b"
    collect_dataset(config, first, show_progress=False)
    collect_dataset(small_config(agent="ppo", checkpoint=str(trained_run), episodes=4, max_episode_frames=60,
                                 workers=1),
                    second, show_progress=False)
    assert verify_dataset(first).episodes == 4
    env = CoinRunConfig(max_episode_frames=60)
    batches, again = batches_by_id(first), batches_by_id(second)
    assert batches.keys() == again.keys() and all(batches_equal(batches[k], again[k]) for k in batches)
    for batch in batches.values():
        assert batch.column("agent")[0].as_py() == PPOAgent(trained_run).name
        logp = batch.column("logp").to_numpy(zero_copy_only=False)
        assert np.isfinite(logp[:-1]).all() and (logp[:-1] <= 0).all() and np.isnan(logp[-1])
        assert np.isfinite(batch.column("value").to_numpy(zero_copy_only=False)[:-1]).all()
        assert_replays(batch, env)


def assert_replays(batch, env: CoinRunConfig) -> None:
    """The recorded episode is what its level gives for its recorded actions, frame for frame."""
    frames, actions = frames_of(batch), batch.column("action").to_numpy()
    replay = make_replay_env(env, batch.column("level_seed")[0].as_py())
    for t in range(len(frames) - 1):
        replay.act(np.array([actions[t]], np.int32))
        _, obs, _ = replay.observe()
        assert np.array_equal(obs["rgb"][0], frames[t + 1])


def test_bad_checkpoints_are_refused_clearly(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_module(tmp_path / "missing")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a PPO checkpoint of genie-redux"):
        load_module(tmp_path / "junk")
    import gymnasium as gym

    from rl_agent.impala_module import ImpalaCNNModule

    other = ImpalaCNNModule(observation_space=gym.spaces.Box(0, 255, (32, 32, 3), np.uint8),
                            action_space=gym.spaces.Discrete(15), model_config={"channels": [8], "hidden": 16})
    other.save_to_path(str(tmp_path / "other"))
    with pytest.raises(ConfigError, match="genie agent export"):
        load_module(tmp_path / "other")  # RLlib's pickle alone: not loaded
    from rl_agent.ppo_policy import export_policy

    with pytest.raises(ConfigError, match=r"trained for observations \(32, 32, 3\)"):
        export_policy(tmp_path / "other")  # trusted, loaded, and still not a CoinRun policy
    assert not (tmp_path / "other" / "policy").exists()


class _RunsCodeWhenUnpickled:
    """What a hostile checkpoint's pickle may hold: unpickling it creates `marker` (any code could run instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_checkpoint_that_only_rllibs_pickles_hold_is_refused_unread(tmp_path, capsys):
    """collect --agent ppo, agent eval and the pipeline load tensors alone: a checkpoint holding only a pickle (RLlib's
    module format) is refused before it is read, in one line that names the opt-in (`genie agent export`)."""
    import pickle

    from cluster.cli import main
    from rl_agent.ppo_policy import MODULE_SUBDIR

    marker = tmp_path / "the pickle ran"
    checkpoint = tmp_path / "foreign"
    (checkpoint / MODULE_SUBDIR).mkdir(parents=True)
    (checkpoint / MODULE_SUBDIR / "class_and_ctor_args.pkl").write_bytes(pickle.dumps(_RunsCodeWhenUnpickled(marker)))
    for refused in (checkpoint, checkpoint / MODULE_SUBDIR):
        with pytest.raises(ConfigError, match=f"genie agent export {refused}"):
            load_module(refused)
        with pytest.raises(ConfigError, match="genie agent export"):
            PPOAgent(refused)
        with pytest.raises(ConfigError, match="genie agent export"):
            small_config(agent="ppo", checkpoint=str(refused))  # collection: refused before any collector starts
    assert main(["agent", "eval", "--checkpoint", str(checkpoint), "--episodes", "2", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pickle" in err and "genie agent export" in err, err
    assert not marker.exists(), "the checkpoint's pickle ran"
    # the opt-in does run it (so the refusal above is what kept the marker away), and still refuses the non-policy
    assert main(["agent", "export", str(checkpoint)]) == 2
    assert marker.exists() and "cannot load the policy" in capsys.readouterr().err


def test_an_rllib_checkpoint_the_user_trusts_is_exported_once_and_then_loads_from_tensors(
        trained_run, tmp_path, capsys):
    """`genie agent export` turns a checkpoint made before policy folders existed into one: the same network."""
    import shutil

    from cluster.cli import main

    old = shutil.copytree(checkpoints_of(trained_run)[-1], tmp_path / "old" / "iter_000001",
                          ignore=shutil.ignore_patterns("policy"))
    with pytest.raises(ConfigError, match="genie agent export"):
        load_module(old)
    assert main(["agent", "export", str(old)]) == 0
    assert "genie agent eval" in capsys.readouterr().out
    exported, folder = load_module(old)
    original, _ = load_module(trained_run)
    assert folder == old / "policy"
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(exported.policy_and_value(frames),
                                                     original.policy_and_value(frames)))


def test_ppo_agent_needs_a_checkpoint():
    with pytest.raises(ConfigError, match="--checkpoint"):
        small_config(agent="ppo")


def test_agent_eval_cli_compares_with_random_on_the_same_levels(trained_run, tmp_path, capsys):
    from cluster.cli import main

    out = tmp_path / "eval.json"
    assert main(["agent", "eval", "--checkpoint", str(trained_run), "--episodes", "6", "--no-progress",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "random (6 levels)" in text and "blind (6 levels)" in text and "level progress" in text
    numbers = json.loads(out.read_text())
    assert set(numbers["random"]) == set(numbers["blind"]) == {"return", "success", "length", "level progress"}
    assert "return, paired per level (6 levels): ppo:" in text and " - blind " in text
    paired = numbers["paired_return"]
    ppo = next(name for name in numbers if name.startswith("ppo:"))
    assert set(paired) == {f"{ppo} - random", f"{ppo} - blind"}
    for other in ("random", "blind"):  # the mean of differences is the difference of the means
        assert paired[f"{ppo} - {other}"]["mean"] == pytest.approx(
            numbers[ppo]["return"]["mean"] - numbers[other]["return"]["mean"])


def test_the_paired_difference_pairs_levels_and_refuses_different_ones():
    from rl_agent.agent_eval import EvalResult, paired_return_difference

    def result(name, returns, seeds):
        n = len(returns)
        return EvalResult(name, np.array(returns, float), np.ones(n), np.zeros(n, bool), np.zeros(n), np.array(seeds))

    # level difficulty varies a lot, the agents' gap is constant: paired, the CI is 0
    a, b = result("a", [10, 0, 10, 0], [1, 2, 3, 4]), result("b", [9, -1, 9, -1], [1, 2, 3, 4])
    assert paired_return_difference(a, b) == (1.0, 0.0)
    with pytest.raises(ValueError, match="played different levels"):
        paired_return_difference(a, result("c", [1, 2, 3, 4], [1, 2, 3, 5]))


def test_the_blind_agent_presses_only_right_and_right_jump():
    from rl_agent.agent_eval import evaluate_agent
    from rl_agent.agents import BlindAgent
    from rl_agent.coinrun_env import ACTION_NAMES

    actions = BlindAgent().act(np.zeros((1000, 64, 64, 3), np.uint8), np.random.default_rng(0)).actions
    assert {ACTION_NAMES[a] for a in actions} == {"RIGHT", "RIGHT+UP"}
    # never looking, it still beats the random agent on the same levels
    env = CoinRunConfig(max_episode_frames=200)
    blind, random_agent = (evaluate_agent(agent, 24, seed=1, env=env).returns.mean() for agent in ("blind", "random"))
    assert blind > random_agent


def test_evaluation_uses_the_same_levels_for_every_agent():
    from rl_agent.agent_eval import evaluate_agent
    from rl_agent.agents import AgentOutput

    class AlwaysRight:
        name = "right"

        def act(self, obs, rng):
            return AgentOutput(actions=np.full(len(obs), 7))

    env = CoinRunConfig(max_episode_frames=40)
    a = evaluate_agent("random", 5, seed=3, env=env, batch=3)
    b = evaluate_agent(AlwaysRight(), 5, seed=3, env=env, batch=3)
    assert np.array_equal(a.level_seeds, b.level_seeds) and len(set(a.level_seeds)) == 5
    assert (a.lengths <= 40).all()


def test_a_relative_checkpoint_reaches_the_collectors_as_an_absolute_path(trained_run):
    import os

    config = small_config(agent="ppo", checkpoint=os.path.relpath(trained_run))
    assert config.checkpoint == str(trained_run)  # collector actors may run in another working directory


def test_the_learner_is_remote_only_when_it_has_gpus():
    """On GPUs a remote learner (it lands on a GPU node, not on the CPU head running the driver); on CPUs it
    stays in the driver (the tiny preset's speed depends on it); --gpus-per-learner / the preset decide first."""
    from rl_agent.ppo_config import build_ppo_config, learner_bundles

    def layout(gpus_available, **values):
        config = build_ppo_config(PPOSettings(**(TINY | values)), gpus_available=gpus_available)
        return config.num_learners, config.num_gpus_per_learner

    assert layout(0) == (0, 0) and learner_bundles(PPOSettings(**TINY), 0) == []
    assert layout(4) == (1, 1)  # a cluster with (or able to start) GPUs
    assert layout(0, num_gpus_per_learner=0.5) == (1, 0.5)  # asked for: the autoscaler is to start a GPU node
    assert layout(4, num_gpus_per_learner=0) == (0, 0)
    assert learner_bundles(PPOSettings(**TINY, num_gpus_per_learner=1), 0) == [{"GPU": 1.0}]
    assert learner_bundles(PPOSettings(**TINY, num_learners=1), 0) == [{"CPU": 1.0}]
    with pytest.raises(ConfigError, match="must be >= 0"):
        PPOSettings(**TINY, num_gpus_per_learner=-1)


def test_a_remote_learner_trains_on_cpus(ray_cluster, tmp_path):
    """num_learners=1 without GPUs: the learner actor trains an iteration and the checkpoint holds its weights."""
    from ray.util.state import list_actors

    before = {a.actor_id for a in list_actors(address=ray_cluster, limit=1000)}
    summary = train_agent(PPOSettings(total_env_steps=256, num_learners=1, **TINY), tmp_path / "run",
                          show_progress=False, random_reference=2.0)
    assert summary.iterations == 1 and summary.env_steps >= 256
    # RLlib wraps its remote learners and env runners as `_WrappedExecutable` actors; with 0 env runners the one
    # this run started is the learner (the driver-side learner of num_learners=0 starts none)
    started = [a for a in list_actors(address=ray_cluster, detail=True, limit=1000) if a.actor_id not in before]
    learners = [a for a in started if a.class_name.endswith("_WrappedExecutable")]
    assert len(learners) == 1 and learners[0].required_resources.get("CPU") == 1, [a.class_name for a in started]
    module, _ = load_module(str(tmp_path / "run"))
    logits, values = module.policy_and_value(torch.zeros((2, 64, 64, 3), dtype=torch.uint8))
    assert logits.shape == (2, 15) and torch.isfinite(values).all()


def test_a_policy_restricted_to_some_actions_never_picks_the_others(ray_cluster, tmp_path):
    """allowed_actions (the tiny preset's CoinRun direction combos): RLlib trains a policy over those ids alone (its
    first entropy is ln 9, not ln 15), the exported policy keeps the restriction, samples only those ids and still
    speaks Procgen's 15-id numbering; a description from before the setting loads with every action allowed."""
    import math

    from rl_agent.ppo_policy import DESCRIPTION_FILE

    directions = tuple(range(9))
    train_agent(PPOSettings(total_env_steps=256, allowed_actions=directions, **TINY), tmp_path / "run",
                show_progress=False, random_reference=2.0)
    first = (tmp_path / "run" / "curve.csv").read_text().splitlines()[1].split(",")
    assert math.isclose(float(first[-1]), math.log(9), abs_tol=0.01), first  # entropy over 9 actions at the start
    module, folder = load_module(str(tmp_path / "run"))
    assert json.loads((folder / DESCRIPTION_FILE).read_text())["allowed_actions"] == list(directions)
    logits, _ = module.policy_and_value(torch.randint(0, 256, (4, 64, 64, 3), dtype=torch.uint8))
    assert logits.shape == (4, 15) and (logits[:, 9:] < -1e8).all() and (logits[:, :9] > -1e3).all()
    agent = PPOAgent(str(tmp_path / "run"))
    rng = np.random.default_rng(0)
    picked = np.concatenate([agent.act(np.zeros((64, 64, 64, 3), dtype=np.uint8), rng).actions for _ in range(4)])
    assert set(picked.tolist()) <= set(directions) and len(set(picked.tolist())) > 4  # 256 draws over 9 ids

    description = json.loads((folder / DESCRIPTION_FILE).read_text())
    del description["allowed_actions"]  # a policy saved before the setting existed
    (folder / DESCRIPTION_FILE).write_text(json.dumps(description))
    older, _ = load_module(folder)
    assert (older.policy_and_value(torch.zeros((1, 64, 64, 3), dtype=torch.uint8))[0] > -1e3).all()


@pytest.mark.parametrize("allowed", [(3,), (0, 15), (4, 4), (-1, 2)])
def test_allowed_actions_outside_procgens_ids_are_refused_with_the_ids(allowed):
    with pytest.raises(ConfigError, match="at least two distinct Procgen action ids in 0..14 .*7 RIGHT,"):
        PPOSettings(**TINY, allowed_actions=allowed)


def test_building_the_policy_module_prints_no_deprecation_about_rllibs_own_code():
    """RLlib 2.60's RLModule.__init__ logs that `RLModule(config=...)` is deprecated for every module it builds;
    the module is built the current way, so that line is filtered (and only that one), in a fresh process."""
    import subprocess
    import sys

    code = ("import gymnasium as gym, numpy as np\n"
            "from ray.rllib.core.rl_module.rl_module import RLModuleSpec\n"
            "from rl_agent.impala_module import ImpalaCNNModule\n"
            "spec = RLModuleSpec(module_class=ImpalaCNNModule, observation_space=gym.spaces.Box(0, 255, (64, 64, 3),"
            " np.uint8), action_space=gym.spaces.Discrete(15), model_config={'channels': [8], 'hidden': 16})\n"
            "spec.build()\n"
            "from ray._common.deprecation import deprecation_warning\n"
            "deprecation_warning(old='something_else')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "RLModuleConfig" not in done.stderr and "`something_else` has been deprecated" in done.stderr, done.stderr


class _ConstantAgent:
    """Always RIGHT, with a log-probability: a stand-in policy whose every choice is known."""

    name = "constant"

    def act(self, obs, rng):
        from rl_agent.agents import AgentOutput

        n = len(obs)
        return AgentOutput(actions=np.full(n, 7, np.int64), logp=np.full(n, -0.5, np.float32),
                           value=np.ones(n, np.float32))


def test_held_keys_last_their_frames_and_record_no_policy_probability():
    from rl_agent.agents import HOLD_KEYS, HeldKeys

    envs, steps, hold_prob, hold_frames = 64, 400, 0.05, 8
    agent, rng = HeldKeys(_ConstantAgent(), envs, hold_prob, hold_frames), np.random.default_rng(0)
    outputs = [agent.act(np.zeros((envs, 64, 64, 3), np.uint8), rng) for _ in range(steps)]
    actions = np.stack([o.actions for o in outputs], 1)  # (E, T)
    held = np.stack([np.isnan(o.logp) for o in outputs], 1)  # (E, T)
    assert np.all(actions[~held] == 7) and np.all(np.isin(actions[held], HOLD_KEYS))
    assert np.all(np.stack([o.value for o in outputs], 1) == 1)  # the state's value is kept on held steps
    assert set(np.unique(actions[held])) == set(HOLD_KEYS)  # every effect is held, RIGHT among them
    for row, keys in zip(held, actions):  # every run of held steps is whole (hold_frames long, one key) or cut by T
        edges = np.flatnonzero(np.diff(np.r_[0, row.astype(int), 0]))
        for start, stop in zip(edges[::2], edges[1::2]):
            assert (stop - start) % hold_frames == 0 or stop == steps
            assert all(len(set(keys[s:s + hold_frames])) == 1 for s in range(start, stop, hold_frames))
    expected = hold_prob * hold_frames / (1 + hold_prob * hold_frames)  # share of steps inside a hold, renewal
    assert abs(held.mean() - expected) < 0.04
    again = HeldKeys(_ConstantAgent(), envs, hold_prob, hold_frames)
    rng = np.random.default_rng(0)
    assert all(np.array_equal(again.act(np.zeros((envs, 64, 64, 3), np.uint8), rng).actions, o.actions)
               for o in outputs)


def test_ppo_collection_with_held_keys_sits_beside_the_plain_one_and_replays(ray_cluster, trained_run, tmp_path):
    out = tmp_path / "data"
    plain = small_config(agent="ppo", checkpoint=str(trained_run), episodes=4, max_episode_frames=60)
    holds = small_config(agent="ppo", checkpoint=str(trained_run), episodes=4, max_episode_frames=60,
                         hold_prob=0.2, hold_frames=6)
    assert holds.collection != plain.collection and "hold" in holds.collection
    assert "hold_prob" not in plain.data_settings()  # no holds: recorded exactly as before holds existed
    collect_dataset(plain, out, show_progress=False)
    collect_dataset(holds, out, show_progress=False)
    assert verify_dataset(out).episodes == 8
    env = CoinRunConfig(max_episode_frames=60)
    held_steps = 0
    for episode_id, batch in batches_by_id(out).items():
        logp = batch.column("logp").to_numpy(zero_copy_only=False)[:-1]
        held_steps += int(np.isnan(logp).sum()) if episode_id.startswith(holds.collection) else 0
        if not episode_id.startswith(holds.collection):
            assert np.isfinite(logp).all()
        assert_replays(batch, env)
    assert held_steps > 0


def test_holds_are_refused_outside_their_range():
    with pytest.raises(ConfigError, match="hold_prob"):
        small_config(hold_prob=1.0)
    with pytest.raises(ConfigError, match="hold_frames"):
        small_config(hold_prob=0.1, hold_frames=0)
