"""Controllability measured so that it can be believed (issue 14): CoinRun's action effect classes on the real
game, ΔtPSNR's counterfactual of another effect, forked futures replayed from the record, and their score."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from rl_agent.coinrun_env import ACTION_NAMES, CoinRunConfig, make_replay_env
from rl_agent.store.manifest import Manifest
from rl_agent.store.reader import EpisodeStore
from world_model.evaluation import EvalConfig
from world_model.evaluation.config import ACTION_EFFECTS, FORK_ACTIONS
from world_model.evaluation.episodes import select_windows
from world_model.evaluation.forks import real_forks
from world_model.evaluation.metrics import MetricInputError, forked_direction, forked_future_score, psnr_per_frame
from world_model.evaluation.models import ModelUnderTest, load_model_under_test
from world_model.evaluation.registration import agent_motion
from world_model.evaluation.rollouts import (
    autoregressive, autoregressive_with_counterfactuals, counterfactual_frame, effect_classes, replace_action,
    replace_action_by_effect,
)
from world_model.evaluation.runner import replay_forks
from world_model.evaluation.worker import Batch, evaluate_batch, reconstruct_windowed
from world_model.generation import WorldModel
from world_model.runs import export_world_model
from tests.test_evaluation import tiny_dynamics, tiny_tokenizer

torch.set_num_threads(1)
RIGHT, LEFT = ACTION_NAMES.index("RIGHT"), ACTION_NAMES.index("LEFT")


# ---- effect classes, on the real game ----------------------------------------------------------------
def test_action_effect_classes_match_the_real_game():
    """From real states, each action then 3 NOOPs: one class -> byte-identical futures (but on crates, where DOWN
    acts: ~1% of states); two classes -> different futures in a good share of states (a jump mid-air does nothing)."""
    assert set(ACTION_EFFECTS) == set(ACTION_NAMES)
    effects = effect_classes()  # (15,)
    rng = np.random.default_rng(0)
    same = np.zeros((15, 15), dtype=int)
    states = 0
    for level in range(2000, 2010):
        env = make_replay_env(CoinRunConfig(), level)
        for t in range(40):
            env.act(np.array([rng.integers(0, 15)], np.int32))
            if env.observe()[2][0]:  # the episode ended: the next frame belongs to a new level
                break
            if t % 4:
                continue
            state = env.get_state()
            futures = []
            for action in range(15):
                env.set_state(state)
                frames = []
                for a in (action, 4, 4, 4):
                    env.act(np.array([a], np.int32))
                    frames.append(np.array(env.observe()[1]["rgb"][0]))
                futures.append(np.stack(frames))  # (4, H, W, C)
            env.set_state(state)
            states += 1
            same += np.array([[np.array_equal(a, b) for b in futures] for a in futures])
    assert states >= 50
    one_class = effects[:, None] == effects[None, :]  # (15, 15)
    assert (same[one_class] >= 0.95 * states).all(), "actions of one effect class often gave different frames"
    assert (same[~one_class] <= 0.9 * states).all(), "actions of different effect classes rarely differed"


def test_the_effect_counterfactual_never_shares_the_true_actions_effect():
    effects = effect_classes()
    rng = np.random.default_rng(0)
    true = torch.as_tensor(np.repeat(np.arange(15), 200)).unsqueeze(1).repeat(1, 3)  # (3000, 3): every action, often
    changed = replace_action_by_effect(true, 1, effects, rng)  # (3000, 3)
    assert torch.equal(changed[:, [0, 2]], true[:, [0, 2]]), "only the chosen column may change"
    old, new = true[:, 1].numpy(), changed[:, 1].numpy()
    assert (effects[new] != effects[old]).all()
    for action in range(15):  # every action of another class is drawn, none of the same class
        drawn = set(new[old == action].tolist())
        assert drawn == set(np.flatnonzero(effects != effects[action]).tolist()), (ACTION_NAMES[action], drawn)
    # why: the paper's "any different id" picks an action of the same effect about 2 times in 7 (uniform actions)
    paper = replace_action(true, 1, 15, np.random.default_rng(0))[:, 1].numpy()
    assert (paper != old).all()
    same_effect = float(np.mean(effects[paper] == effects[old]))
    assert 0.2 < same_effect < 0.36, same_effect


# ---- forked futures: the real half -------------------------------------------------------------------------
@pytest.mark.parametrize("t", [1, 3])
@pytest.mark.parametrize("carry", [False, True])
def test_counterfactuals_branching_off_the_factual_rollout_equal_whole_counterfactual_rollouts(real_frames, t, carry):
    """ΔtPSNR's counterfactual frames come from the factual rollout's state at frame t (eval dreams frames 1..t-1
    once): they must be the frames a whole rollout with the changed action dreams, noise included."""
    dynamics = tiny_dynamics(steps=3)
    dynamics.config = dataclasses.replace(dynamics.config, carry_unchanged=carry, temperature=2.0)
    torch.nn.init.normal_(dynamics.action_embedding.weight)  # an untrained model must still react to its actions
    world = WorldModel(tiny_tokenizer(), dynamics).eval()
    frames = real_frames[None, :6].repeat(2, axis=0)  # (B=2, 6, H, W, C)
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, 15, (2, 5)))  # (B, T-1)
    context, horizon, index = 2, 4, 2 - 2 + t
    reference = [counterfactual_frame(world, frames, ids, context, t, 3, 2.0, 11, np.random.default_rng(s), by)
                 for s, by in ((1, False), (3, True))]  # [(frame t (B, H, W, C), changed ids (B, T-1))]
    factual, branches = autoregressive_with_counterfactuals(world, frames, ids, [c for _, c in reference], context,
                                                            horizon, t, 3, 2.0, 11)
    assert torch.equal(factual, autoregressive(world, frames, ids, context, horizon, 3, 2.0, 11))
    for (expected, changed), branch in zip(reference, branches):
        assert (changed[:, index] != ids[:, index]).all()
        assert torch.allclose(branch, expected, atol=1e-6)
    assert any(not torch.allclose(b, factual[:, t - 1]) for b in branches), "a changed action must change frame t"
    with pytest.raises(ValueError, match="within the horizon"):
        autoregressive_with_counterfactuals(world, frames, ids, [], context, horizon, horizon + 1, 3, 2.0, 11)


def test_forks_replay_the_recorded_context_byte_for_byte_and_right_and_left_differ(small_dataset):
    store = EpisodeStore(small_dataset)
    windows = select_windows(store, 12, None, 0)
    env_config = CoinRunConfig.from_dict(Manifest.load(small_dataset).collections["random-s7"]["env"])
    checked, motion = 0, {RIGHT: [], LEFT: []}
    for window in windows:
        forks = real_forks(store, window, 2, 4, FORK_ACTIONS)
        if forks.frames is None:
            assert "ends the episode" in forks.reason, forks.reason  # the only reason a recorded level may give
            continue
        assert forks.frames.shape == (2, 4, 64, 64, 3) and forks.frames.dtype == np.uint8
        assert not np.array_equal(forks.frames[0], forks.frames[1]), "RIGHT x4 and LEFT x4 gave the same frames"
        # an independent replay: the recorded context byte for byte, then RIGHT x4 gives the RIGHT fork
        recorded, actions = store.window(window.episode, 0, window.start + 2)
        env = make_replay_env(env_config, window.level_seed)
        for t in range(window.start + 1):
            env.act(np.array([actions[t]], np.int32))
        context = store.window(window.episode, window.start, 2)[0]
        assert np.array_equal(np.array(env.observe()[1]["rgb"][0]), context[1])
        assert np.array_equal(recorded[window.start : window.start + 2], context)
        for j in range(4):
            env.act(np.array([RIGHT], np.int32))
            assert np.array_equal(np.array(env.observe()[1]["rgb"][0]), forks.frames[0, j])
        for name, frames in zip(FORK_ACTIONS, forks.frames):
            steps = agent_motion(np.concatenate([context[1:], frames[:-1]]), frames)  # (4, 2)
            motion[ACTION_NAMES.index(name)].append(steps[:, 0].sum())
        checked += 1
    assert checked >= 6, f"only {checked} of {len(windows)} windows forked"
    assert np.mean(motion[RIGHT]) > np.mean(motion[LEFT]) + 1.0, motion  # the real game obeyed the keys


def test_windows_that_cannot_be_replayed_are_skipped_with_the_reason(small_dataset, tmp_path):
    no_env = tmp_path / "no-env"
    shutil.copytree(small_dataset, no_env)
    manifest = Manifest.load(no_env)
    for collection in manifest.collections.values():
        collection.pop("env")
    manifest.save()
    config = EvalConfig(model="-", data=str(no_env), context=2, horizon=4, forks=3)
    store = EpisodeStore(no_env)
    forks, skipped = replay_forks(store, select_windows(store, 6, None, 0), config)
    assert forks == {} and len(skipped) == 10 and "records no env options" in skipped[0]["reason"]
    # a level seed that is not the recorded one: the replay differs from the record and says so
    moved = tmp_path / "moved"
    shutil.copytree(small_dataset, moved)
    manifest = Manifest.load(moved)
    for shard in manifest.shards:
        for episode in shard.episodes:
            episode.level_seed += 1
    manifest.save()
    store = EpisodeStore(moved)
    forks, skipped = replay_forks(store, select_windows(store, 6, None, 0), config)
    assert forks == {} and "differs from the recorded frame 0" in skipped[0]["reason"]


# ---- forked futures: the score -----------------------------------------------------------------------------
def _some_forks(store, n=4) -> tuple[np.ndarray, np.ndarray]:
    """Contexts (n, 2, H, W, C) and real forks (n, 2, 4, H, W, C) of the first windows that fork."""
    contexts, forks = [], []
    for window in select_windows(store, 12, None, 1):
        real = real_forks(store, window, 2, 4, FORK_ACTIONS)
        if real.frames is not None:
            contexts.append(store.window(window.episode, window.start, 2)[0])
            forks.append(real.frames)
        if len(forks) == n:
            break
    return np.stack(contexts), np.stack(forks)


def test_the_forked_future_score_is_one_for_a_perfect_model_zero_swapped_and_half_when_blind(small_dataset):
    _, real = _some_forks(EpisodeStore(small_dataset))  # (4, 2, 4, H, W, C)
    score, per_frame = forked_future_score(real, real)
    assert score.tolist() == [1.0] * 4 and (per_frame > 0.5).all()  # frame 1 may tie when one step moves nothing
    swapped, _ = forked_future_score(real[:, ::-1], real)
    assert swapped.tolist() == [0.0] * 4
    blind = np.repeat(real[:, :1], 2, axis=1)  # both dreams = the real RIGHT future: ignores the key
    assert forked_future_score(blind, real)[0].tolist() == [0.5] * 4
    noise = np.random.default_rng(0).integers(-30, 31, real.shape)
    noisy = np.clip(real.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    assert forked_future_score(noisy, real)[0].mean() > 0.8  # noise everywhere, but each dream still nearer its own


def test_the_forked_direction_is_one_for_a_perfect_model_minus_one_swapped_and_zero_when_blind(small_dataset):
    _, real = _some_forks(EpisodeStore(small_dataset))  # (4, 2, 4, H, W, C)
    moved = (real[:, 0] != real[:, 1]).any(axis=(2, 3, 4))  # (4, k): frames where the real forks differ
    cosine, size = forked_direction(real, real)
    assert np.allclose(cosine[moved], 1.0) and np.allclose(size[moved], 1.0)
    cosine, size = forked_direction(real[:, ::-1], real)
    assert np.allclose(cosine[moved], -1.0) and np.allclose(size[moved], 1.0)
    cosine, size = forked_direction(np.repeat(real[:, :1], 2, axis=1), real)  # identical dreams: the key ignored
    assert (cosine == 0).all() and (size[moved] == 0).all() and np.isnan(size[~moved]).all()
    noise = np.random.default_rng(0).integers(-30, 31, real.shape)
    noisy = np.clip(real.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    cosine, size = forked_direction(noisy, real)  # the right difference under a large shared-looking error
    assert (cosine[moved] > 0).all() and (size[moved] > 1).all()
    with pytest.raises(MetricInputError, match=r"\(N, 2, k, H, W, C\)"):
        forked_direction(np.concatenate([real, real], axis=1), np.concatenate([real, real], axis=1))


def test_a_model_blind_to_actions_scores_exactly_chance(small_dataset, tmp_path):
    dynamics = tiny_dynamics(steps=2)
    with torch.no_grad():
        dynamics.action_embedding.weight.zero_()  # the same network, blind to the action
    model = load_model_under_test(export_world_model(tmp_path / "blind", tiny_tokenizer(), dynamics))
    contexts, forks = _some_forks(EpisodeStore(small_dataset))
    frames = np.concatenate([contexts, forks[:, 0]], axis=1)  # (4, 6, H, W, C): the RIGHT fork as the recorded future
    actions = np.full((4, 5), RIGHT, np.int8)
    batch = Batch(0, [{"episode": i, "id": f"e{i}", "start": 0, "level_seed": 0} for i in range(4)], frames, actions,
                  seed=0, keep_frames=np.zeros(4, bool), forks=forks, forked=np.ones(4, bool))
    config = EvalConfig(model="-", data="-", context=2, horizon=4, maskgit_steps=2, modes=("autoregressive",),
                        control_steps=0)
    records = evaluate_batch(model, batch, config, None)["records"]
    assert [r["forked_future"]["score"] for r in records] == [0.5] * 4
    assert all(r["forked_future"]["psnr"]["RIGHT"]["own_dream"] == r["forked_future"]["psnr"]["RIGHT"]["other_dream"]
               for r in records)


# ---- results.json, the printed table, the report --------------------------------------------------------------
def test_results_carry_both_delta_psnr_versions_and_the_forked_future_score(ray_cluster, small_dataset, tmp_path,
                                                                            capsys):
    from cluster.cli import main

    run = export_world_model(tmp_path / "g", tiny_tokenizer(), tiny_dynamics())
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(run), "--data", str(small_dataset), "--context", "2", "--horizon", "4",
                 "--maskgit-steps", "2", "--episodes", "4", "--workers", "1", "--control-steps", "0", "--forks", "3",
                 "--samples", "1", "--modes", "autoregressive", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    metrics = {m["metric"]: m for m in results["metrics"]}
    assert metrics["delta_psnr"]["counterfactual"] != metrics["delta_psnr_effect"]["counterfactual"]
    forked = results["forked_futures"]
    assert forked["windows"] + len(forked["skipped"]) >= 3 and forked["windows"] >= 2 and forked["k"] == 4
    assert metrics["forked_future_score"]["windows"] == forked["windows"] and 0 <= forked["score"] <= 1
    direction = forked["direction"]
    assert -1 <= direction["cosine"] <= 1
    assert len(direction["cosine_per_frame"]) == len(direction["size_median_per_frame"]) == 4
    assert metrics["forked_direction_cosine"]["value"] == direction["cosine"]
    episodes = results["episodes"]
    assert all(e["delta_psnr_effect"]["effect"] != e["delta_psnr_effect"]["other_effect"] for e in episodes)
    assert sum("forked_future" in e for e in episodes) == forked["windows"]
    for text in (printed, (out / "results.md").read_text()):
        for phrase in ("ΔtPSNR, paper (any other id)", "ΔtPSNR, other effect", "forked-future score",
                       "forked-future direction (cosine)"):
            assert phrase in text
    sheet = next((out / "samples").glob("*.png"))
    assert sheet.stat().st_size > 0
    assert main(["report", str(out), "--out", str(tmp_path / "report.md")]) == 0
    table = (tmp_path / "report.md").read_text()
    assert "ΔtPSNR (other effect)" in table and "forked-future score" in table
    row = next(line for line in table.splitlines() if line.startswith("| GenieRedux-G |"))
    assert f"{forked['score']:.3f}" in row


# ---- the tokenizer is scored the way the world model decodes ----------------------------------------------------
def test_the_tokenizer_evaluation_decodes_windows_of_its_training_length(real_frames):
    tokenizer = tiny_tokenizer()  # trained length 4, temporal encoder
    frames = real_frames[None, :10]  # (1, 10, H, W, C): longer than the tokenizer's window
    reconstruction = reconstruct_windowed(tokenizer, frames)  # (1, 10, H, W, C)
    world = WorldModel(tokenizer, tiny_dynamics())
    tokens = torch.cat([tokenizer.tokenize(frames[:, max(0, k - 3) : k + 1])[:, -1:] for k in range(10)], dim=1)
    assert torch.equal(reconstruction, world.decode_windows(tokens, 0))
    at_once = tokenizer.detokenize(tokenizer.tokenize(frames))  # the old way: the whole window at once
    # within the training length nothing changes (but float rounding); past it the frames do
    assert torch.allclose(reconstruction[:, :4], at_once[:, :4], atol=1e-4)
    assert (reconstruction[:, 4:] - at_once[:, 4:]).abs().amax() > 1e-2
    model = ModelUnderTest("tokenizer", "Tokenizer", "-", "-", "tiny", 0, None, tokenizer=tokenizer)
    batch = Batch(0, [{"episode": 0, "id": "e", "start": 0, "level_seed": 0}], frames, np.zeros((1, 9), np.int8),
                  seed=0, keep_frames=np.zeros(1, bool))
    record = evaluate_batch(model, batch, EvalConfig(model="-", data="-"), None)["records"][0]
    assert record["reconstruction"]["psnr"] == pytest.approx(psnr_per_frame(reconstruction[0], frames[0]).tolist())


@pytest.fixture(scope="module")
def real_frames(small_dataset) -> np.ndarray:
    return EpisodeStore(small_dataset).window(0, 0, 12)[0]  # (12, 64, 64, 3) uint8
