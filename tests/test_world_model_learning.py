"""Learning on real CoinRun frames (the `small_dataset` fixture): the `tiny` tokenizer and LAM on CPU.

Bar: tokenizer reconstruction PSNR >= 25 dB on held-out episodes (printed beside the mean-frame
baseline). (The LAM's bar, latent actions carrying information about the true actions, is not
met yet; see the issue notes.)
"""

import dataclasses
import time

import numpy as np
import torch

from rl_agent.store import EpisodeStore
from world_model.config import load_preset
from world_model.frames import psnr, to_unit_float
from world_model.optim import Optimization
from world_model.steps import train_step
from world_model.tokenizer import Tokenizer

HELD_OUT_EPISODES = 2


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


def test_tiny_tokenizer_reconstructs_held_out_coinrun_frames_above_25_db(small_dataset):
    torch.set_num_threads(2)
    store = EpisodeStore(small_dataset)
    train, held_out = _split(store)
    model = Tokenizer(load_preset("tiny").tokenizer)
    start = time.perf_counter()
    steps = load_preset("tiny").optim.total_steps
    last = _train(model, _Subset(store, train), steps=steps, batch=8, length=2)
    seconds = time.perf_counter() - start
    model.eval()
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
