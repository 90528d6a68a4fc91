"""Evaluation: metrics against scikit-image, ΔtPSNR sign, determinism, level overlap, FID path, CLI outputs."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rl_agent.store.errors import DatasetError
from rl_agent.store.manifest import Manifest
from rl_agent.store.reader import EpisodeStore
from world_model.checkpoint import save_checkpoint
from world_model.config import (ConfigError, DynamicsConfig, LAMConfig, QuantizerConfig, TokenizerConfig,
                                TransformerConfig)
from world_model.dynamics import Dynamics
from world_model.evaluation import EvalConfig, copy_last_frame_baseline, evaluate
from world_model.evaluation.fid import GaussianFit, InceptionFeatures, fid, fit_gaussian, frechet_distance
from world_model.evaluation.metrics import (
    PSNR_CAP, MetricInputError, copy_last_frame_psnr, identical_frames, psnr_per_frame, ssim_per_frame,
)
from world_model.evaluation.models import load_model_under_test
from world_model.evaluation.registration import agent_motion, motion_class
from world_model.evaluation.worker import Batch, evaluate_batch
from world_model.frames import to_uint8
from world_model.lam import LatentActionModel
from world_model.runs import export_world_model, read_run_info, write_run_info
from world_model.tokenizer import Tokenizer

torch.set_num_threads(1)
BLOCK = TransformerConfig(dim=32, depth=1, heads=4, mlp_ratio=2.0)


# ---- tiny models (untrained: plumbing, not quality) -----------------------------------------------
def tiny_tokenizer(seed=0):
    torch.manual_seed(seed)
    return Tokenizer(TokenizerConfig(patch=8, frames=4, encoder=BLOCK, decoder=BLOCK,
                                     quantizer=QuantizerConfig(codebook_size=32, code_dim=8))).eval()


def tiny_lam(seed=1):
    torch.manual_seed(seed)
    return LatentActionModel(LAMConfig(patch=16, frames=4, encoder=BLOCK, decoder=BLOCK,
                                       quantizer=QuantizerConfig(codebook_size=7, code_dim=8))).eval()


def tiny_dynamics(conditioning="ground_truth", seed=2, steps=2):
    torch.manual_seed(seed)
    return Dynamics(DynamicsConfig(vocab_size=32, grid=8, frames=4, transformer=BLOCK, conditioning=conditioning,
                                   latent_action_dim=8, sampling_steps=steps)).eval()


@pytest.fixture(scope="module")
def world_run(tmp_path_factory) -> Path:
    """An untrained GenieRedux-G run folder (run.json without training data)."""
    return export_world_model(tmp_path_factory.mktemp("runs") / "g", tiny_tokenizer(), tiny_dynamics())


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory) -> Path:
    return export_world_model(tmp_path_factory.mktemp("runs") / "latent", tiny_tokenizer(), tiny_dynamics("latent"),
                              tiny_lam())


@pytest.fixture(scope="module")
def real_frames(small_dataset) -> np.ndarray:
    store = EpisodeStore(small_dataset)
    return store.window(0, 0, 12)[0]  # (12, 64, 64, 3) uint8


def quick(model, data, **overrides) -> EvalConfig:
    values = dict(model=str(model), data=str(data), context=2, horizon=4, maskgit_steps=2, episodes=4, workers=1,
                  batch_size=2, control_steps=1, samples=1, show_progress=False)
    values.update(overrides)
    return EvalConfig(**values)


# ---- PSNR / SSIM against scikit-image --------------------------------------------------------------
def test_psnr_and_ssim_agree_with_scikit_image_on_random_and_real_frames(real_frames):
    skimage_metrics = pytest.importorskip("skimage.metrics")  # the reference; no other test needs it
    rng = np.random.default_rng(0)
    random_a = rng.random((3, 64, 64, 3))
    random_b = np.clip(random_a + rng.normal(0, 0.1, random_a.shape), 0, 1)
    noise = rng.integers(-20, 21, real_frames.shape)
    noisy_real = np.clip(real_frames.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    pairs = [(random_a, random_b), (real_frames[:-1], real_frames[1:]), (noisy_real, real_frames)]
    for prediction, target in pairs:
        ours_psnr = psnr_per_frame(prediction, target).numpy()
        ours_ssim = ssim_per_frame(prediction, target).numpy()
        p = prediction / 255.0 if prediction.dtype == np.uint8 else prediction
        t = target / 255.0 if target.dtype == np.uint8 else target
        for i in range(len(p)):
            if np.array_equal(p[i], t[i]):
                continue
            assert ours_psnr[i] == pytest.approx(skimage_metrics.peak_signal_noise_ratio(t[i], p[i], data_range=1.0),
                                                 abs=1e-6)
            expected = skimage_metrics.structural_similarity(
                t[i], p[i], data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False)
            assert ours_ssim[i] == pytest.approx(expected, abs=1e-6)


def test_identical_frames_get_the_cap_explicitly_and_are_counted(real_frames):
    frames = real_frames[:3]
    values = psnr_per_frame(frames, frames)
    assert torch.all(values == PSNR_CAP) and torch.isfinite(values).all()
    assert identical_frames(frames, frames) == 3
    changed = frames.copy()
    changed[1, 0, 0, 0] ^= 1  # one LSB of one pixel: finite, below the cap
    values = psnr_per_frame(changed, frames)
    assert values[0] == PSNR_CAP and values[1] < PSNR_CAP and identical_frames(changed, frames) == 2
    assert ssim_per_frame(frames, frames).numpy() == pytest.approx(1.0)


@pytest.mark.parametrize("prediction, target, message", [
    (np.zeros((2, 64, 64, 3)), np.zeros((3, 64, 64, 3)), "differs from target shape"),
    (np.zeros((2, 3, 64, 64)), np.zeros((2, 3, 64, 64)), "last axis must be colour channels"),
    (np.full((2, 64, 64, 3), 2.0), np.zeros((2, 64, 64, 3)), "must lie in \\[0, 1\\]"),
    (np.zeros((2, 64, 64, 3), np.int32), np.zeros((2, 64, 64, 3), np.int32), "uint8 or float"),
    (np.zeros((64, 64)), np.zeros((64, 64)), "\\(\\.\\.\\., H, W, C\\)"),
])
def test_metrics_refuse_bad_shapes_and_dtypes_with_clear_errors(prediction, target, message):
    with pytest.raises(MetricInputError, match=message):
        psnr_per_frame(prediction, target)
    with pytest.raises(MetricInputError, match=message):
        ssim_per_frame(prediction, target)


def test_copy_last_frame_psnr_scores_the_last_context_frame_against_each_future_frame(real_frames):
    window = real_frames[None, :6]  # (1, 6, H, W, C)
    values = copy_last_frame_psnr(window, 2).numpy()[0]  # (4,)
    expected = [psnr_per_frame(real_frames[1], real_frames[k]).item() for k in range(2, 6)]
    assert values == pytest.approx(expected)
    with pytest.raises(MetricInputError, match="context must be in"):
        copy_last_frame_psnr(window, 6)


# ---- Fréchet distance / FID ---------------------------------------------------------------------------
def test_frechet_distance_is_zero_for_a_set_with_itself_and_exact_for_known_gaussians():
    features = np.random.default_rng(0).normal(size=(200, 16))
    assert fid(features, features) == pytest.approx(0.0, abs=1e-6)
    # N(0, 1) vs N(1, 4) in 1-D: (0 - 1)^2 + 1 + 4 - 2 * sqrt(1 * 4) = 2
    a, b = GaussianFit(np.zeros(1), np.eye(1), 10), GaussianFit(np.ones(1), 4 * np.eye(1), 10)
    assert frechet_distance(a, b) == pytest.approx(2.0)
    shifted = fit_gaussian(features + 3.0)
    assert frechet_distance(fit_gaussian(features), shifted) == pytest.approx(9.0 * 16, rel=1e-6)


class _TinyFeatures(torch.nn.Module):
    """A real (random) conv feature extractor saved as TorchScript: stands in for Inception's file format."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 5, stride=4)

    def forward(self, images: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        x = images.float() / 255.0
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
def test_fid_is_skipped_with_a_message_without_weights_and_computed_with_a_local_file(
        ray_cluster, small_dataset, world_run, tmp_path):
    with pytest.raises(ConfigError, match="no Inception weights file"):
        InceptionFeatures(tmp_path / "missing.pt")
    results = evaluate(quick(world_run, small_dataset, modes=("teacher_forced",), control_steps=0))
    assert "skipped" in results["fid"] and "--inception-weights" in results["fid"]["skipped"]
    assert not any(m["metric"] == "fid" for m in results["metrics"])
    weights = tmp_path / "features.pt"
    torch.jit.script(_TinyFeatures()).save(str(weights))
    results = evaluate(quick(world_run, small_dataset, modes=("teacher_forced",), control_steps=0,
                             inception_weights=str(weights)))
    (value,) = [m["value"] for m in results["metrics"] if m["metric"] == "fid"]
    assert math.isfinite(value) and value > 0  # untrained predictions are not the real frames
    assert results["fid"]["frames"] == 4 * 4 and len(results["fid"]["weights_sha256"]) == 64


# ---- ΔtPSNR ------------------------------------------------------------------------------------------------
def _self_consistent_batch(model, context_frames, actions, horizon):
    """Ground truth = the model's own rollout from real context frames with these actions (temperature 0)."""
    from world_model.evaluation import rollouts

    ids = torch.as_tensor(actions).long()
    rollout = rollouts.autoregressive(model.world, context_frames, ids, 2, horizon, 2, 0.0, seed=0)
    frames = np.concatenate([context_frames[:, :2], to_uint8(rollout).numpy()], axis=1)  # (B, 2+h, H, W, C)
    return Batch(0, [{"episode": i, "id": f"e{i}", "start": 0, "level_seed": 0} for i in range(len(frames))],
                 frames, actions, seed=0, keep_frames=np.zeros(len(frames), bool))


def test_delta_psnr_is_zero_without_action_conditioning_and_positive_with_it(real_frames, tmp_path):
    horizon = 5
    uses = tiny_dynamics(steps=2)
    ignores = tiny_dynamics(steps=2)
    with torch.no_grad():
        ignores.action_embedding.weight.zero_()  # the same network, blind to the action
    config = EvalConfig(model="-", data="-", context=2, horizon=horizon, maskgit_steps=2, temperature=0.0,
                        modes=("autoregressive",), control_steps=0)
    rng = np.random.default_rng(0)
    actions = rng.integers(0, 15, (4, 1 + horizon)).astype(np.int8)
    context = np.stack([real_frames[i : i + 2 + horizon] for i in range(4)])  # (4, 2+h, H, W, C)
    deltas = {}
    for name, dynamics in (("uses", uses), ("ignores", ignores)):
        model = load_model_under_test(export_world_model(tmp_path / name, tiny_tokenizer(), dynamics))
        batch = _self_consistent_batch(model, context, actions, horizon)
        records = evaluate_batch(model, batch, config, None)["records"]
        deltas[name] = [r["delta_psnr"] for r in records]
        deltas[f"{name} by effect"] = [r["delta_psnr_effect"] for r in records]
    assert all(d["delta"] == 0.0 for d in deltas["ignores"] + deltas["ignores by effect"])
    assert all(d["other_action"] != d["action"] for d in sum(deltas.values(), []))
    assert all(d["effect"] != d["other_effect"] for d in deltas["uses by effect"] + deltas["ignores by effect"])
    assert np.mean([d["delta"] for d in deltas["uses"]]) > 3.0, deltas["uses"]
    assert np.mean([d["delta"] for d in deltas["uses by effect"]]) > 3.0, deltas["uses by effect"]


# ---- determinism, level overlap -------------------------------------------------------------------------
def test_evaluation_is_deterministic_for_a_seed_whatever_the_number_of_workers(ray_cluster, small_dataset, world_run):
    one = evaluate(quick(world_run, small_dataset, workers=1, seed=3))
    two = evaluate(quick(world_run, small_dataset, workers=2, seed=3))
    assert one["metrics"] == two["metrics"] and one["episodes"] == two["episodes"]
    other = evaluate(quick(world_run, small_dataset, workers=2, seed=4, modes=("teacher_forced",), control_steps=0))
    assert [e["id"] for e in other["episodes"]] != [e["id"] for e in one["episodes"]] or \
        [e["start"] for e in other["episodes"]] != [e["start"] for e in one["episodes"]]
    names = {(m["metric"], m["mode"]) for m in one["metrics"]}
    assert {("psnr", "autoregressive"), ("ssim", "teacher_forced"), ("delta_psnr", "autoregressive"),
            ("delta_psnr_effect", "autoregressive"), ("forked_future_score", "autoregressive"),
            ("psnr", "copy_last_frame")} <= names
    for m in one["metrics"]:
        assert {"model", "checkpoint", "data", "context", "horizon", "maskgit_steps", "seed"} <= set(m)
        assert m["context"] == 2 and m["horizon"] == 4 and m["maskgit_steps"] == 2 and m["seed"] == 3


def test_gpu_workers_that_no_node_can_hold_are_refused_before_any_actor_starts(ray_cluster, small_dataset, world_run):
    """`genie eval --gpus-per-worker 1` asks the autoscaler (ensure_resources): on a cluster without one and
    without GPUs it is refused at once with what to do, instead of actors that wait forever."""
    from rl_agent.coinrun_env import ConfigError

    with pytest.raises(ConfigError, match=r"evaluation workers x \{CPU: 1, GPU: 1\}.*drop --gpus-per-worker"):
        evaluate(quick(world_run, small_dataset, workers=1, gpus_per_worker=1.0, device="cpu"))


def _with_levels_shifted(src: Path, dst: Path, shift: int) -> Path:
    """A copy of a dataset's manifest whose level seeds are moved by `shift` (a different-levels data set)."""
    manifest = Manifest.load(src)
    dst.mkdir(parents=True)
    for shard in manifest.shards:
        for episode in shard.episodes:
            episode.level_seed += shift
    moved = dataclasses.replace(manifest, root=dst)
    moved.save()
    return dst


def test_a_test_set_sharing_levels_with_the_training_data_is_refused(ray_cluster, small_dataset, tmp_path):
    run = export_world_model(tmp_path / "trained", tiny_tokenizer(), tiny_dynamics())
    info = read_run_info(run)
    write_run_info(run, {**info, "data": [str(small_dataset)]})
    with pytest.raises(DatasetError, match="shares .* level"):
        evaluate(quick(run, small_dataset))
    disjoint = _with_levels_shifted(small_dataset, tmp_path / "other-levels", 10**6)
    write_run_info(run, {**info, "data": [str(disjoint)]})
    results = evaluate(quick(run, small_dataset, modes=("teacher_forced",), control_steps=0, episodes=2))
    assert results["level_overlap"]["checked"] and results["model"]["variant"] == "Base"
    # the frozen tokenizer of the world model was trained on the test levels: refused too
    tokenizer_run = tmp_path / "tokenizer-run"
    save_checkpoint(tokenizer_run / "best.pt", tiny_tokenizer(), "tiny")
    write_run_info(tokenizer_run, {"stage": "tokenizer", "data": [str(small_dataset)]})
    write_run_info(run, {**info, "data": [str(disjoint)], "tokenizer": str(tokenizer_run)})
    with pytest.raises(DatasetError, match="shares .* level"):
        evaluate(quick(run, small_dataset))


# ---- tokenizer, LAM, latent world model ----------------------------------------------------------------
def test_tokenizer_lam_and_genie_redux_runs_are_evaluated_by_their_stage(ray_cluster, small_dataset, latent_run,
                                                                         tmp_path):
    tokenizer_file = save_checkpoint(tmp_path / "tok.pt", tiny_tokenizer(), "tiny")
    lam_file = save_checkpoint(tmp_path / "lam.pt", tiny_lam(), "tiny")
    tok = evaluate(quick(tokenizer_file, small_dataset, episodes=2))
    assert tok["model"]["name"] == "Tokenizer" and len(tok["per_step"]["reconstruction"]["psnr"]) == 6
    lam = evaluate(quick(lam_file, small_dataset, episodes=2))
    assert lam["model"]["name"] == "LAM" and len(lam["per_step"]["reconstruction"]["psnr"]) == 5
    assert "copy_last_frame" in lam["per_step"]
    latent = evaluate(quick(latent_run, small_dataset, episodes=2, modes=("autoregressive",)))
    assert latent["model"]["name"] == "GenieRedux"
    control = latent["controllability"]["actions"]
    assert set(control) == {f"latent {i}" for i in range(7)}
    assert all(0 <= e["delta_psnr"]["other_action"] < 7 for e in latent["episodes"])
    # latent ids have no known effect: no effect-class ΔtPSNR; forks dreamt from the LAM's reading of each real fork
    assert "delta_psnr_effect" not in latent["episodes"][0] and "latent" in latent["delta_psnr_effect_skipped"]
    assert latent["forked_futures"]["windows"] >= 1 and "LAM" in latent["forked_futures"]["dream_actions"]
    assert "forked_futures" not in tok and "forked_futures" not in lam


# ---- registration (controllability) ----------------------------------------------------------------------
def test_agent_motion_recovers_known_shifts_of_a_real_frame(real_frames):
    canvas = np.concatenate([np.concatenate([real_frames[0], real_frames[5]], 1),
                             np.concatenate([real_frames[9], real_frames[3]], 1)], 0)  # (128, 128, 3)
    before = canvas[32:96, 32:96][None]
    for dx, dy in [(3, 0), (-4, 0), (0, 2), (0, -3), (2, 2)]:
        # the agent moves right by dx (the camera follows: the view slides right) and up by dy (the view slides up)
        after = canvas[32 - dy : 96 - dy, 32 + dx : 96 + dx][None]
        motion = agent_motion(before, after)[0]
        assert motion == pytest.approx([dx, dy], abs=0.5), (dx, dy, motion)
    assert motion_class(np.array([[3.0, 0.2], [-2.0, 0.0], [0.1, 2.0], [0.0, -1.5], [0.1, 0.1]])) == \
        ["right", "left", "up", "down", "still"]


# ---- baseline for the pipeline, CLI outputs -----------------------------------------------------------------
def test_copy_last_frame_baseline_uses_the_windows_evaluate_scores(ray_cluster, small_dataset, world_run):
    baseline = copy_last_frame_baseline(str(small_dataset), context=2, horizon=4, episodes=4, seed=3)
    results = evaluate(quick(world_run, small_dataset, seed=3, modes=("teacher_forced",), control_steps=0))
    assert len(baseline["per_step"]) == 4
    assert baseline["per_step"] == pytest.approx(results["per_step"]["copy_last_frame"]["psnr"])


def test_genie_eval_and_report_write_their_outputs(ray_cluster, small_dataset, world_run, tmp_path, capsys):
    from cluster.cli import main

    out = tmp_path / "eval"
    code = main(["eval", "--model", str(world_run), "--data", str(small_dataset), "--context", "2", "--horizon", "4",
                 "--maskgit-steps", "2", "--episodes", "2", "--workers", "1", "--control-steps", "1", "--out", str(out),
                 "--no-progress"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["name"] == "GenieRedux-G" and results["settings"]["maskgit_steps"] == 2
    assert (out / "results.md").read_text().count("| psnr |") >= 2
    assert (out / "psnr_over_horizon.png").stat().st_size > 0
    assert any(p.suffix == ".gif" for p in (out / "samples").iterdir())
    assert "results.json" in capsys.readouterr().out
    # the real game's answer to the same held keys, replayed from the same contexts, beside the dreams'
    game = results["controllability"]["real_game"]
    assert game["windows"] + len(game["skipped"]) == 2 and game["windows"] >= 1
    for row in results["controllability"]["actions"].values():
        assert 0 <= row["real_game"]["enacted"] <= 1 and 0 <= row["real_game"]["agreement"] <= 1
    assert "dream agrees with the game" in (out / "results.md").read_text()
    assert main(["report", str(out), "--out", str(tmp_path / "report.md")]) == 0
    table = (tmp_path / "report.md").read_text()
    assert "GenieRedux-G" in table and "34.44" in table  # ours beside the paper's
    assert main(["eval", "--model", str(tmp_path / "nothing"), "--data", str(small_dataset)]) == 1
    assert "no such checkpoint or run folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse refuses it before anything loads: one line, exit 2
        main(["eval", "--model", str(world_run), "--data", str(small_dataset), "--horizon", "0"])
    assert refused.value.code == 2 and "--horizon: must be a whole number >= 1" in capsys.readouterr().err


def test_a_dream_that_moves_as_the_real_game_agrees_with_it_and_enacts_what_it_enacts():
    """controllability_summary's real-game columns: dreams whose held-key motions are the real game's agree with it
    in every window and enact each key exactly as often; dreams that never move agree only where the game is still."""
    from types import SimpleNamespace

    from world_model.evaluation.runner import controllability_summary

    rng = np.random.default_rng(0)
    names = ("LEFT", "RIGHT", "UP", "NOOP")
    game = {(f"ep{i}", 3): {n: rng.normal(0, 2, 2).tolist() for n in names} for i in range(20)}
    game[("ep0", 3)] = {n: [0.0, 0.0] for n in names}  # a window where nothing moves in the real game either

    def records(control_of):
        return [{"id": key[0], "start": key[1], "control": control_of(key), "action_ids": [4],
                 "real_motion": {"motion": [[0.0, 0.0]]}} for key in game]

    model = SimpleNamespace(conditioning="ground_truth")
    faithful = controllability_summary(model, records(lambda key: game[key]), 3, game, [])
    assert faithful["real_game"]["windows"] == 20 and faithful["real_game"]["mean_agreement"] == 1.0
    for row in faithful["actions"].values():
        assert row["real_game"]["enacted"] == row["enacted"] and row["real_game"]["agreement"] == 1.0
        assert row["real_game"]["key_way"] == row["key_way"]  # None for NOOP, the same share for the keys
    frozen = controllability_summary(model, records(lambda key: {n: [0.0, 0.0] for n in names}), 3, game, [])
    left = frozen["actions"]["LEFT"]
    assert left["enacted"] == 0.0 and left["real_game"]["agreement"] == left["real_game"]["observed"]["still"] / 20
    assert left["key_way"]["share"] == 0.0 and left["real_game"]["key_way"]["share"] > 0  # a still dream moves no way
    assert left["real_game"]["agreement"] == left["real_game"]["agreement_if_still"]  # the baseline is that dream
    without = controllability_summary(model, records(lambda key: game[key]), 3)  # no replay: no real-game columns
    assert "real_game" not in without["actions"]["LEFT"] and without["real_game"]["windows"] == 0


def test_a_key_moves_the_agent_its_way_by_the_sign_along_its_axis_at_any_size():
    """key_way_share: a held key counts where the motion relative to NOOP has the key's sign along the key's axis,
    however small (CoinRun's momentum keeps a few held frames' difference under the 'still' threshold in the real
    game too), and not where it is exactly 0 or the other way; NOOP and latent ids have no direction."""
    from world_model.evaluation.runner import key_way_share

    motions = np.array([[0.2, 0.0], [0.01, -3.0], [0.0, 5.0], [-1.0, 0.0]])  # (W, 2) [dx right, dy up]
    right = key_way_share(motions, "right")
    assert right["share"] == 0.5 and right["ci95"] > 0  # 0.2 and 0.01 px right count; 0 and -1 do not
    assert key_way_share(motions, "left")["share"] == 0.25
    assert key_way_share(motions, "up")["share"] == 0.25 and key_way_share(motions, "down")["share"] == 0.25
    assert key_way_share(motions, "still") is None and key_way_share(motions, None) is None
    assert key_way_share(np.zeros((0, 2)), "right") is None


def test_registration_reads_the_real_games_response_to_held_keys(sticky_dataset):
    """On real CoinRun with keys held (sticky actions), RIGHT moves the agent right, LEFT left, UP (jump) up."""
    store = EpisodeStore(sticky_dataset)
    motion: dict[int, list] = {1: [], 7: [], 5: []}  # LEFT, RIGHT, UP
    for episode in range(len(store)):
        frames, actions = store.window(episode, 0, int(store.lengths[episode]))
        steps = agent_motion(frames[:-1], frames[1:])  # (L-1, 2)
        for action in motion:
            held = (actions[1:] == action) & (actions[:-1] == action)  # the key was already down a step before
            motion[action] += steps[1:][held].tolist()
    mean = {a: np.mean(v, axis=0) for a, v in motion.items()}
    # measured: RIGHT (+0.84, -0.02), LEFT (-0.19, -0.14), UP (+0.04, +0.85) px per step. LEFT is weaker:
    # levels start at their left wall, so a held LEFT often pushes against it
    assert mean[7][0] > 0.5 and mean[1][0] < -0.1, mean
    assert mean[5][1] > 0.5 and mean[5][1] > abs(mean[5][0]) and mean[5][1] > mean[7][1] + 0.5, mean
