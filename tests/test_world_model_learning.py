"""Learning on real CoinRun frames (the `small_dataset` fixture): the `tiny` tokenizer and LAM on CPU.

Bar: tokenizer reconstruction PSNR >= 25 dB on held-out episodes (printed beside the mean-frame
baseline). (The LAM's bar, latent actions carrying information about the true actions, is not
met yet; see the issue notes.)
"""

import dataclasses
import time

import numpy as np
import pytest
import torch

from rl_agent.store import EpisodeStore
from world_model.config import load_preset
from world_model.frames import psnr, to_unit_float
from world_model.optim import Optimization
from world_model.steps import train_step
from world_model.tokenizer import Tokenizer

HELD_OUT_EPISODES = 2
# a fixed number of training steps: the time is the machine's (the tokenizer fixture took 137 s on one day and
# 417 s on a slower one, 2026-12-01, beside the suite's other worker); the suite's 600 s would fail it on a slow
# CI machine, not a hang
pytestmark = pytest.mark.timeout(1500)


def _train(model, store, steps, batch, length, seed=0):
    torch.manual_seed(seed)
    optim = dataclasses.replace(load_preset("tiny").optim, total_steps=steps)
    optimization = Optimization(model, optim)
    rng = np.random.default_rng(seed)
    metrics = {}
    for _ in range(steps):
        metrics = train_step(model, optimization, store.sample_windows(rng, batch, length))
    return metrics


def _split(store):
    train = list(range(len(store) - HELD_OUT_EPISODES))
    return train, list(range(len(store) - HELD_OUT_EPISODES, len(store)))


class _Subset:
    """The store restricted to some episodes (sample_windows only)."""

    def __init__(self, store, episodes):
        self.store, self.episodes = store, np.array(episodes)

    def sample_windows(self, rng, batch, length):
        frames, actions = [], []
        for _ in range(batch):
            e = int(rng.choice(self.episodes))
            start = int(rng.integers(0, self.store.lengths[e] - length + 1))
            f, a = self.store.window(e, start, length)
            frames.append(f), actions.append(a)
        return np.stack(frames), np.stack(actions)


@pytest.fixture(scope="module")
def tiny_tokenizer(small_dataset):
    """The tiny tokenizer trained on real CoinRun frames (its own test's bar; the dynamics test reads its tokens)."""
    torch.set_num_threads(2)
    store = EpisodeStore(small_dataset)
    train, _ = _split(store)
    # its starting weights from a fixed seed, not from whatever the tests before it in this process drew: the tiny
    # tokenizer's PSNR after 500 steps spread over 24.2-26.2 dB with the starting weights and float details
    # (2026-12-02), so an unseeded start passed or failed by the order pytest-xdist gave the tests
    torch.manual_seed(0)
    model = Tokenizer(load_preset("tiny").tokenizer)
    start = time.perf_counter()
    steps = load_preset("tiny").optim.total_steps
    last = _train(model, _Subset(store, train), steps=steps, batch=8, length=2)
    return model.eval(), last, time.perf_counter() - start, steps


def test_tiny_tokenizer_reconstructs_held_out_coinrun_frames_above_25_db(small_dataset, tiny_tokenizer):
    store = EpisodeStore(small_dataset)
    train, held_out = _split(store)
    model, last, seconds, steps = tiny_tokenizer
    frames = to_unit_float(np.concatenate([store.episode_frames(e) for e in held_out]))[:, None]  # (N, 1, H, W, C)
    with torch.no_grad():
        reconstruction = torch.cat([model(chunk)[0] for chunk in frames.split(64)])
        codes = model.tokenize(frames)
    train_mean = to_unit_float(np.concatenate([store.episode_frames(e) for e in train])).mean(0)  # (H, W, C)
    achieved = float(psnr(reconstruction, frames))
    mean_frame = float(psnr(train_mean.expand_as(frames), frames))
    used = len(torch.unique(codes)) / model.config.quantizer.codebook_size
    print(f"\ntokenizer: held-out PSNR {achieved:.2f} dB vs mean-frame {mean_frame:.2f} dB; train-batch PSNR "
          f"{last['psnr']:.2f}; codebook used {used:.2f}; {seconds:.0f}s for {steps} steps")
    assert achieved > mean_frame + 5
    assert achieved >= 25.0


# Procgen action ids -> horizontal effect: 0 left (LEFT+DOWN, LEFT, LEFT+UP), 2 right, 1 none (the rest)
HORIZONTAL = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1])


def _mutual_information_bits(latent: np.ndarray, true: np.ndarray) -> float:
    joint = np.zeros((latent.max() + 1, true.max() + 1))
    np.add.at(joint, (latent, true), 1)
    joint /= joint.sum()
    independent = joint.sum(1, keepdims=True) @ joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log2(joint[nonzero] / independent[nonzero])).sum())


def test_tiny_lam_latent_actions_carry_information_about_true_actions(sticky_dataset):
    """Mutual information between latent actions and the true action's horizontal effect, on held-out
    episodes, against a permutation null (latent codes shuffled): 'carries information' literally."""
    from world_model.lam import LatentActionModel

    torch.set_num_threads(2)
    store = EpisodeStore(sticky_dataset)
    held_out = list(range(len(store) - 6, len(store)))
    train = list(range(len(store) - 6))
    config = load_preset("tiny").lam
    model = LatentActionModel(config)
    _train(model, _Subset(store, train), steps=300, batch=8, length=config.frames)
    model.eval()
    latent, true = [], []
    for e in held_out:
        frames, actions = store.window(e, 0, int(store.lengths[e]))
        for s in range(0, len(frames) - config.frames + 1, config.frames - 1):
            latent.append(model.infer_actions(frames[None, s : s + config.frames])[0].numpy())
            true.append(HORIZONTAL[actions[s : s + config.frames - 1]])
    latent, true = np.concatenate(latent), np.concatenate(true)
    information = _mutual_information_bits(latent, true)
    rng = np.random.default_rng(0)
    null = [_mutual_information_bits(rng.permutation(latent), true) for _ in range(300)]
    print(f"\nLAM: I(latent; true horizontal action) = {information:.3f} bits on {len(true)} held-out transitions; "
          f"permutation null 99th percentile {np.percentile(null, 99):.3f} bits")
    assert information > 2 * np.percentile(null, 99) and information >= 0.05


def test_tiny_dynamics_beats_copying_the_last_frame_and_obeys_the_keys(sticky_dataset, tiny_tokenizer):
    """The tiny dynamics (the preset's options), trained in-process on tokens of real CoinRun windows with held
    keys, against copy-last-frame on held-out episodes: teacher-forced next-frame token accuracy paired with
    copying's over frames (above it), and forked futures (RIGHT x4 vs LEFT x4 replayed in the real game; above
    chance)."""
    from rl_agent.coinrun_env import ACTION_NAMES
    from world_model.dynamics import Dynamics
    from world_model.evaluation.config import FORK_ACTIONS
    from world_model.evaluation.episodes import Window
    from world_model.evaluation.forks import real_forks
    from world_model.evaluation.metrics import forked_future_psnr, forked_future_wins
    from world_model.evaluation.rollouts import forked_dreams
    from world_model.generation import WorldModel
    from world_model.scroll import episode_references
    from world_model.steps import DynamicsTrainee, TokenBatch

    torch.set_num_threads(2)
    tokenizer = tiny_tokenizer[0]
    store = EpisodeStore(sticky_dataset)
    held_out = list(range(len(store) - 6, len(store)))
    train = list(range(len(store) - 6))
    tokens = {e: tokenizer.tokenize(store.episode_frames(e)[None])[0] for e in range(len(store))}  # (L, h, w) each
    preset = load_preset("tiny")
    torch.manual_seed(0)
    dynamics = Dynamics(preset.dynamics)
    dynamics.init_token_embeddings(tokenizer.quantizer.normalized_codebook())
    trainee = DynamicsTrainee(dynamics, tokenizer)
    # tiny's scrolled copy path: each frame's registered scroll (L, 2) and its scrolled predecessor (L, h, w),
    # encoded once beside its tokens, as the ablation benchmark does
    scrolls, references = {}, {}
    if dynamics.scrolled():
        for e in range(len(store)):
            scrolls[e], references[e] = episode_references(tokenizer, store.episode_frames(e),
                                                           dynamics.config.max_scroll,
                                                           dynamics.config.camera_locked_box)
    steps, length = STEPS_DYNAMICS, preset.dynamics.frames
    optimization = Optimization(dynamics, dataclasses.replace(preset.optim_for("dynamics"), total_steps=steps))
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(steps):
        episodes = rng.choice(train, size=preset.batch_size)
        starts = [int(rng.integers(0, store.lengths[e] - length + 1)) for e in episodes]
        window = torch.stack([tokens[e][s: s + length] for e, s in zip(episodes, starts)])  # (B, T, h, w)
        actions = np.stack([store.window(e, s, length)[1] for e, s in zip(episodes, starts)])  # (B, T-1)
        if dynamics.scrolled():
            dynamics.train()
            moved = torch.from_numpy(np.stack([scrolls[e][s: s + length] for e, s in zip(episodes, starts)]))
            copied = torch.from_numpy(np.stack([references[e][s: s + length] for e, s in zip(episodes, starts)]))
            optimization.step(dynamics.compute_loss_on_tokens(  # (B, T, 2) scrolls, (B, T, h, w) references
                window, torch.as_tensor(actions.astype(np.int64)), None, copied.long(), moved).loss)
        else:
            train_step(trainee, optimization, TokenBatch(window, actions))
    seconds = time.perf_counter() - start

    # teacher forced: every held-out transition predicted from its real predecessor(s), one pass, argmax
    dynamics.eval()
    model_hits, copy_hits = [], []
    with torch.no_grad():
        for e in held_out:
            ids = tokens[e]  # (L, h, w)
            actions = torch.as_tensor(store.window(e, 0, int(store.lengths[e]))[1].astype(np.int64))  # (L-1,)
            for s in range(0, len(ids) - length + 1, length - 1):
                window, acts = ids[None, s: s + length], actions[None, s: s + length - 1]
                drawn = None  # the scrolled copy path copies by the scroll its head finds most likely, not the real one
                if dynamics.scrolled():
                    frames = store.window(e, s, length)  # (T, H, W, C), (T-1,)
                    moved = torch.from_numpy(scrolls[e][None, s: s + length])  # (1, T, 2)
                    drawn = trainee.drawn_references((frames[0][None], frames[1][None]), window, acts, moved)
                logits = dynamics.teacher_forced_logits(window, acts, drawn)  # (1, T-1, h, w, V)
                model_hits.append((logits.argmax(-1) == window[:, 1:]).float().mean((2, 3))[0])
                copy_hits.append((window[:, :-1] == window[:, 1:]).float().mean((2, 3))[0])
    gain = (torch.cat(model_hits) - torch.cat(copy_hits)).numpy()  # (N,) per held-out frame
    half = 1.96 * gain.std(ddof=1) / np.sqrt(len(gain))

    # forked futures on held-out windows
    world = WorldModel(tokenizer, dynamics)
    contexts, context_actions, forks = [], [], []
    for e in held_out:
        for s in range(0, int(store.lengths[e]) - 6, 7):
            real = real_forks(store,
                              Window(e, store.episodes[e].episode.id, s, int(store.episodes[e].episode.level_seed)),
                              2, 4, FORK_ACTIONS)
            if real.frames is not None:
                frames, acts = store.window(e, s, 2)
                contexts.append(frames), context_actions.append(acts), forks.append(real.frames)
    real = np.stack(forks)  # (N, F, k, H, W, C)
    dreams = forked_dreams(world, np.stack(contexts), torch.as_tensor(np.stack(context_actions).astype(np.int64)), real,
                           [ACTION_NAMES.index(n) for n in FORK_ACTIONS], 4, None, 0)
    score, _ = forked_future_wins(forked_future_psnr(dreams.clamp(0, 1), real).numpy())  # (N,)
    score_half = 1.96 * score.std(ddof=1) / np.sqrt(len(score))
    print(f"\ndynamics ({steps} steps, {seconds:.0f} s): teacher-forced token accuracy "
          f"{float(torch.cat(model_hits).mean()):.3f} vs copy-last-frame {float(torch.cat(copy_hits).mean()):.3f} "
          f"(paired gain {gain.mean():+.3f} ± {half:.3f}, {len(gain)} held-out frames); forked-future score "
          f"{score.mean():.2f} ± {score_half:.2f} over {len(score)} windows (chance 0.5)")
    # The bars (issue 14): above copying and forks above chance (their 95% CI). With tiny's scrolled copy path
    # (2026-12-01): +0.013 ± 0.007 over copying, forks 0.78 over 89 windows with the scroll drawn at temperature 1,
    # 0.60 at the preset's 0.5 (another machine's tokenizer fixture); the plain copy path of before: level with
    # copying (+0.000) and forks at chance (0.49).
    assert gain.mean() > 0, f"teacher-forced token accuracy not above copying: {gain.mean():+.4f} ± {half:.4f}"
    assert len(score) >= 8  # held-out windows replayed and forked in the real game
    assert score.mean() - score_half > 0.5, f"forked-future score {score.mean():.2f} ± {score_half:.2f} (chance 0.5)"


STEPS_DYNAMICS = 400
