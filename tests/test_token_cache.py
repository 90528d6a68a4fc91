"""The token cache (world_model/token_cache.py): the dynamics trains on ids encoded once by the frozen
tokenizer and LAM. Real CoinRun episodes (session fixtures), real tiny models with random weights."""

from __future__ import annotations

import copy
import csv
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cluster.cli import main as genie
from rl_agent.store.manifest import Manifest
from rl_agent.store.reader import EpisodeStore
from world_model.checkpoint import save_checkpoint
from world_model.config import load_preset
from world_model.dynamics import Dynamics
from world_model.lam import LatentActionModel
from world_model.optim import Optimization
from world_model.steps import DynamicsTrainee, TokenBatch, train_step
from world_model.token_cache import (
    MANIFEST_FILE, TOKENS_FILE, StaleTokenCache, TokenCache, cache_key, ensure_token_cache, episode_latents,
)
from world_model.tokenizer import Tokenizer
from world_model.training.trainee import dynamics_config
from world_model.training.job import TrainJob

TINY = load_preset("tiny")


def seeded_tokenizer(store: EpisodeStore, seed: int) -> Tokenizer:
    """The tiny tokenizer with random weights and its codebook seeded from real frames (so ids vary)."""
    torch.manual_seed(seed)
    tokenizer = Tokenizer(TINY.tokenizer).train()
    with torch.no_grad():
        tokenizer(torch.as_tensor(store.window(0, 0, 4)[0][None]).float() / 255)  # (1, 4, H, W, C)
    return tokenizer.eval()


FEW = [0, 1, 2]  # episodes of the training split the caches hold (~300 frames: each build takes seconds)


@pytest.fixture(scope="module")
def store(train_data) -> EpisodeStore:
    return EpisodeStore(train_data, split="train").subset(FEW)


@pytest.fixture(scope="module")
def models(store):
    torch.manual_seed(3)
    return seeded_tokenizer(store, 1), seeded_tokenizer(store, 2), LatentActionModel(TINY.lam).eval()


@pytest.fixture(scope="module")
def built(store, models, tmp_path_factory) -> dict[str, Path]:
    """Caches of the first tokenizer, without and with the LAM's latent ids; tests work on copies."""
    tokenizer, _, lam = models
    root = tmp_path_factory.mktemp("token-caches")
    ensure_token_cache(root / "true", tokenizer, None, store, progress=False)
    ensure_token_cache(root / "latent", tokenizer, lam, store, progress=False)
    # tiny's scrolled copy path: each frame's scroll and shifted predecessor too (the agent's box not shifted)
    scrolled = dict(max_scroll=TINY.dynamics.max_scroll, locked=TINY.dynamics.camera_locked_box)
    ensure_token_cache(root / "scrolled-true", tokenizer, None, store, progress=False, **scrolled)
    ensure_token_cache(root / "scrolled-latent", tokenizer, lam, store, progress=False, **scrolled)
    return {name: root / name for name in ("true", "latent", "scrolled-true", "scrolled-latent")}


def copied(built: dict[str, Path], kind: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built[kind], tmp_path / "cache"))


def notes() -> tuple[list[str], callable]:
    lines: list[str] = []
    return lines, lines.append


def test_cached_ids_are_the_tokenizers_ids_and_latent_ids_are_read_as_evaluation_reads_them(store, models, built):
    tokenizer, _, lam = models
    cache = TokenCache.open(built["latent"], cache_key(tokenizer, lam, store))
    assert cache.tokens[0].dtype == np.int16 and len(cache.tokens) == len(store)
    episodes, starts = store.sample_positions(np.random.default_rng(0), 12, 4)
    frames, actions = store.windows(episodes, starts, 4)  # (12, 4, H, W, C), (12, 3)
    tokens, cached_actions, references, _ = cache.windows(episodes, starts, 4)  # (12, 4, h, w), (12, 3)
    assert references is None and not cache.scrolled  # made for the plain copy path
    assert np.array_equal(tokens, tokenizer.tokenize(frames).numpy()), "cached ids differ from the tokenizer's"
    assert np.array_equal(cached_actions, actions)
    assert len(np.unique(tokens)) > 20, "a degenerate tokenizer would make the comparison meaningless"
    shortest = int(np.argmin(store.lengths))
    video = store.episode_frames(shortest)  # (L, H, W, C)
    whole = lam.infer_actions(video[None])[0].numpy()  # (L-1,)
    assert np.array_equal(cache.latents[shortest][:-1], whole) and cache.latents[shortest][-1] == -1
    part = video[:24]  # (24, H, W, C)
    assert np.array_equal(episode_latents(lam, part, chunk=7), lam.infer_actions(part[None])[0].numpy()), \
        "pieces must read what one pass reads"
    assert not np.array_equal(cache.windows(episodes, starts, 4, latent=True)[1], actions)


def test_a_cache_of_another_tokenizer_is_never_used_and_is_rebuilt_saying_why(store, models, built, tmp_path):
    first, second, _ = models
    folder = copied(built, "true", tmp_path)
    with pytest.raises(StaleTokenCache, match="another tokenizer"):
        TokenCache.open(folder, cache_key(second, None, store))
    lines, note = notes()
    cache = ensure_token_cache(folder, second, None, store, note=note, progress=False)
    assert len(lines) == 1 and "stale, rebuilt" in lines[0] and "another tokenizer" in lines[0], lines
    frames = store.window(1, 5, 4)[0][None]  # (1, 4, H, W, C)
    assert np.array_equal(cache.windows([1], [5], 4)[0], second.tokenize(frames).numpy())
    assert not np.array_equal(cache.windows([1], [5], 4)[0], first.tokenize(frames).numpy())
    lines.clear()
    ensure_token_cache(folder, second, None, store, note=note, progress=False)
    assert "verified, reused" in lines[0], lines


def test_a_cache_without_a_scrolled_copy_paths_references_is_never_used_for_one(store, models, built, tmp_path):
    tokenizer, _, _ = models
    max_scroll = TINY.dynamics.max_scroll
    with pytest.raises(StaleTokenCache, match="no scrolled copy references"):
        TokenCache.open(built["true"], cache_key(tokenizer, None, store, max_scroll))
    with pytest.raises(StaleTokenCache, match="copies the previous frame"):
        TokenCache.open(built["scrolled-true"], cache_key(tokenizer, None, store))
    folder = copied(built, "scrolled-true", tmp_path)
    lines, note = notes()
    cache = ensure_token_cache(folder, tokenizer, None, store, note=note, progress=False, max_scroll=max_scroll + 2)
    assert f"shifted by at most {max_scroll} px, this run's dynamics by {max_scroll + 2}" in lines[0], lines
    assert cache.scrolled and cache.key["scrolled"] == max_scroll + 2


def test_a_changed_dataset_is_rebuilt_saying_why(train_data, models, tmp_path):
    tokenizer, _, _ = models
    data = tmp_path / "data"
    shutil.copytree(train_data, data)
    folder = tmp_path / "cache"
    ensure_token_cache(folder, tokenizer, None, EpisodeStore(data, split="train").subset(FEW), progress=False)
    manifest = Manifest.load(data)
    manifest.drop_shard(manifest.shards[-1].file)  # the dataset loses a shard; the cached episodes stay in it
    manifest.save()
    changed = EpisodeStore(data, split="train").subset(FEW)
    lines, note = notes()
    cache = ensure_token_cache(folder, tokenizer, None, changed, note=note, progress=False)
    assert "stale, rebuilt: the dataset changed" in lines[0], lines
    assert cache.episode_ids == [ref.episode.id for ref in changed.episodes]


@pytest.mark.parametrize("damage, reason", [
    ("truncate", "truncated"), ("flip", "checksum differs"), ("manifest", "unreadable"), ("delete", "missing"),
])
def test_a_damaged_cache_is_refused_and_rebuilt_saying_why(store, models, built, tmp_path, damage, reason):
    tokenizer, _, _ = models
    folder = copied(built, "true", tmp_path)
    good = TokenCache.open(folder, cache_key(tokenizer, None, store)).windows([2], [7], 4)[0]
    tokens_file = folder / TOKENS_FILE
    data = tokens_file.read_bytes()
    if damage == "truncate":
        tokens_file.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        middle = len(data) // 2
        tokens_file.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    elif damage == "manifest":
        (folder / MANIFEST_FILE).write_text('{"format": "genie-redux/token-cache", "key": ')
    else:
        tokens_file.unlink()
    lines, note = notes()
    cache = ensure_token_cache(folder, tokenizer, None, store, note=note, progress=False)
    assert "refused and rebuilt" in lines[0] and reason in lines[0], lines
    assert np.array_equal(cache.windows([2], [7], 4)[0], good)


def test_references_that_keep_the_agents_box_unshifted_are_cached_apart_and_read_as_a_step_computes_them(
        store, models, built, tmp_path):
    """camera_locked_box changes every reference: a cache made with tiny's box is stale for a dynamics without one
    (rebuilt, saying why), and each cache's references are those a step from frames computes with its setting."""
    tokenizer, _, _ = models
    box = TINY.dynamics.camera_locked_box
    assert box is not None, "tiny leaves the agent's box unshifted"
    job = TrainJob(stage="dynamics", data=[str(store.manifests[0].root)], out=str(tmp_path / "run"), tokenizer="t",
                   actions="true", wandb=False)
    locked = dataclasses.replace(dynamics_config(job, TINY, tokenizer, None), copy_reference="scrolled")
    unlocked = dataclasses.replace(locked, camera_locked_box=None)
    with pytest.raises(StaleTokenCache, match="camera_locked_box"):
        TokenCache.open(built["scrolled-true"], cache_key(tokenizer, None, store, unlocked.max_scroll))
    lines, note = notes()
    rebuilt = ensure_token_cache(copied(built, "scrolled-true", tmp_path), tokenizer, None, store, note=note,
                                 progress=False, max_scroll=unlocked.max_scroll)
    assert f"keep the box {list(box)} unshifted" in lines[0] and "locked_box" not in rebuilt.key, lines
    episodes, starts = store.sample_positions(np.random.default_rng(1), 8, 4)
    frames = store.windows(episodes, starts, 4)
    caches = {locked: TokenCache.open(built["scrolled-true"], cache_key(tokenizer, None, store, locked.max_scroll,
                                                                        box)),
              unlocked: rebuilt}
    references = {}
    for config, cache in caches.items():
        trainee = DynamicsTrainee(Dynamics(config), tokenizer)
        references[config], scrolls = trainee.scrolled_inputs(frames)  # (8, 4, h, w), (8, 4, 2)
        cached = trainee.scrolled_inputs(TokenBatch(*cache.windows(episodes, starts, 4)))
        assert torch.equal(references[config], cached[0]) and torch.equal(scrolls, cached[1])
    assert not torch.equal(references[locked], references[unlocked])


@pytest.mark.parametrize("copy_reference", ["previous", "scrolled"])
@pytest.mark.parametrize("conditioning", ["ground_truth", "latent"])
def test_a_dynamics_step_from_the_cache_equals_one_from_frames(store, models, built, tmp_path, conditioning,
                                                               copy_reference):
    tokenizer, _, lam = models
    lam = lam if conditioning == "latent" else None
    job = TrainJob(stage="dynamics", data=[str(store.manifests[0].root)], out=str(tmp_path / "run"), tokenizer="t",
                   lam="l" if lam else None, actions="latent" if lam else "true", wandb=False)
    torch.manual_seed(0)
    config = dataclasses.replace(dynamics_config(job, TINY, tokenizer, lam), copy_reference=copy_reference,
                                 camera_locked_box=TINY.dynamics.camera_locked_box if copy_reference == "scrolled"
                                 else None)
    trainee = DynamicsTrainee(Dynamics(config), tokenizer, lam)
    twin = copy.deepcopy(trainee)
    scrolled = copy_reference == "scrolled"
    name = ("scrolled-" if scrolled else "") + ("latent" if lam else "true")
    key = (cache_key(tokenizer, lam, store, config.max_scroll, config.camera_locked_box) if scrolled
           else cache_key(tokenizer, lam, store))
    cache = TokenCache.open(built[name], key)
    assert cache.scrolled == scrolled
    episodes, starts = store.sample_positions(np.random.default_rng(1), 8, 4)
    if lam is not None:
        # the cache reads latent ids from windows ending at each step, as evaluation does; a training window
        # reads them from its own frames: the two agree on windows that start an episode (the LAM's length is 4)
        starts = np.zeros_like(starts)
    frames = store.windows(episodes, starts, 4)  # (8, 4, H, W, C), (8, 3)
    tokens = TokenBatch(*cache.windows(episodes, starts, 4, latent=lam is not None))  # (8, 4, h, w), (8, 3), ...
    if scrolled:  # the cached references and scrolls are the ones a step from frames computes
        references, scrolls = trainee.scrolled_inputs(frames)  # (8, 4, h, w), (8, 4, 2)
        cached_references, cached_scrolls = trainee.scrolled_inputs(tokens)
        assert torch.equal(references, cached_references) and torch.equal(scrolls, cached_scrolls)
        assert (starts > 0).any() or lam is not None  # windows that start inside an episode set frame 0's aside
        assert float(scrolls.abs().sum()) > 0, "windows without any scroll would test nothing"
    losses = []
    for model, batch in ((trainee, frames), (twin, tokens)):
        torch.manual_seed(5)  # the same masks
        losses.append(train_step(model, Optimization(model, TINY.optim), batch))
    assert losses[0]["loss"] == pytest.approx(losses[1]["loss"], rel=1e-6, abs=1e-7), losses
    assert losses[0]["masked_token_accuracy"] == losses[1]["masked_token_accuracy"]
    after = [dict(m.dynamics.named_parameters()) for m in (trainee, twin)]
    assert all(torch.allclose(after[0][k], after[1][k], atol=1e-6) for k in after[0]), \
        "the steps moved the weights apart"


def train_loss(run: Path) -> list[float]:
    with open(run / "metrics.csv") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle) if row["kind"] == "train"]


def test_genie_train_dynamics_reads_the_cache_and_trains_as_from_frames(ray_cluster, train_data, models, tmp_path,
                                                                        capsys):
    tokenizer, _, _ = models
    checkpoint = save_checkpoint(tmp_path / "tokenizer.pt", tokenizer, "tiny")
    data = tmp_path / "data"  # the first shard alone (4 episodes): the run encodes ~300 frames, not ~2000
    shutil.copytree(train_data, data)
    manifest = Manifest.load(data)
    manifest.shards = manifest.shards[:1]
    manifest.save()
    base = ["train", "dynamics", "--data", str(data), "--tokenizer", str(checkpoint), "--actions", "ground_truth",
            "--steps", "3", "--workers", "2", "--batch", "4", "--no-progress", "--no-wandb",
            "--set", "world_model.train.log_every=1", "--set", "world_model.train.val_windows=4"]
    # tiny's scrolled copy path: the cache holds each frame's scroll and shifted predecessor too
    assert genie([*base, "--out", str(tmp_path / "cached"), "--set", "world_model.train.token_cache=true"]) == 0
    printed = capsys.readouterr().out
    assert "token cache" in printed and "no cache yet" in printed, printed
    assert (tmp_path / "cached" / "token_cache" / MANIFEST_FILE).is_file()
    # auto (the default): 3 steps encode 48 frames from frames, far fewer than a cache would encode first
    assert genie([*base, "--out", str(tmp_path / "frames")]) == 0
    assert "token cache off (auto)" in capsys.readouterr().out
    assert not (tmp_path / "frames" / "token_cache").exists()
    cached, from_frames = train_loss(tmp_path / "cached"), train_loss(tmp_path / "frames")
    assert len(cached) == 3 and cached == pytest.approx(from_frames, rel=1e-5), (cached, from_frames)
