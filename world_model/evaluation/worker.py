"""Evaluation of one batch of test windows, and the Ray actor that does it next to its own model copy.

A batch is fixed by the seed (its episodes, windows and its sampling seed), never by which worker
runs it, so the results do not depend on `--workers`.

Shapes: B batch (windows, `forked` of them with replayed forks), T frames (context + horizon), H x W x C pixels,
h x w token grid, F forks, k frames per fork.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rl_agent.coinrun_env import ACTION_NAMES
from world_model.evaluation import rollouts
from world_model.evaluation.config import ACTION_EFFECTS, CONTROL_ACTIONS, FORK_ACTIONS, EvalConfig
from world_model.evaluation.fid import InceptionFeatures
from world_model.evaluation.metrics import (
    copy_last_frame_psnr, forked_direction, forked_future_psnr, forked_future_wins, psnr_per_frame, ssim_per_frame,
)
from world_model.evaluation.models import ModelUnderTest, load_model_under_test
from world_model.evaluation.registration import agent_motion, path_motion
from world_model.frames import to_uint8
from world_model.precision import inference_precision


@dataclass
class Batch:
    index: int
    episodes: list[dict[str, Any]]  # per window: episode index, id, start, level_seed
    frames: np.ndarray  # (B, T, H, W, C) uint8, T = context + horizon
    actions: np.ndarray  # (B, T-1) int8, the recorded actions
    seed: int  # sampling seed of this batch
    keep_frames: np.ndarray  # (B,) bool: return this window's frames for GIFs / strips
    # (B, F, k, H, W, C) uint8: the real game's FORK_ACTIONS futures (zeros if not forked)
    forks: np.ndarray | None = None
    forked: np.ndarray | None = None  # (B,) bool: this window's forks were replayed and are scored


def _u8(frames: torch.Tensor) -> np.ndarray:
    return to_uint8(frames.float()).cpu().numpy()


def _scores(prediction: torch.Tensor, target: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame PSNR and SSIM: (B, frames, H, W, C) pairs -> {'psnr': (B, frames), 'ssim': (B, frames)}."""
    target_t = torch.as_tensor(target, device=prediction.device)
    return {
        "psnr": psnr_per_frame(prediction.clamp(0, 1), target_t).cpu().numpy(),
        "ssim": ssim_per_frame(prediction.clamp(0, 1), target_t).cpu().numpy(),
    }


def control_action_ids(model: ModelUnderTest) -> dict[str, int]:
    """Action name -> id held in the controllability check (CoinRun actions, or every latent action)."""
    if model.conditioning == "latent":
        return {f"latent {i}": i for i in range(int(model.lam.config.num_actions))}
    return {name: ACTION_NAMES.index(name) for name in CONTROL_ACTIONS}


def evaluate_batch(model: ModelUnderTest, batch: Batch, config: EvalConfig,
                   inception: InceptionFeatures | None) -> dict[str, Any]:
    """Every per-episode number of one batch (lists, JSON-ready), FID features and sample frames."""
    with torch.no_grad():
        if model.stage == "tokenizer":
            return _evaluate_tokenizer(model, batch, inception)
        if model.stage == "lam":
            return _evaluate_lam(model, batch, inception)
        return _evaluate_world_model(model, batch, config, inception)


def _records(batch: Batch) -> list[dict[str, Any]]:
    return [dict(e) for e in batch.episodes]


def _put(records: list[dict[str, Any]], key: str, values: dict[str, np.ndarray]) -> None:
    for i, record in enumerate(records):
        record[key] = {name: array[i].tolist() for name, array in values.items()}


def reconstruct_windowed(tokenizer, frames: np.ndarray) -> torch.Tensor:
    """Every frame of (B, T, H, W, C) uint8 reconstructed as the world model sees it: (B, T, H, W, C) in [0, 1].

    Why windowed: the tokenizer is causal in time and trained on windows of `config.frames`; the world
    model decodes each frame as the last of a window of at most that length (WorldModel.decode_windows)
    and tokenizes windows no longer either. Tokenizing and decoding a longer test window at once would
    score the tokenizer on inputs the world model never gives it. Frame k's tokens come from frames
    k-window+1..k (all at once when the encoder sees each frame alone), and it is decoded from tokens k-window+1..k.
    """
    window = max(1, int(tokenizer.config.frames))
    length = frames.shape[1]
    if getattr(tokenizer.config, "encoder_temporal", True):
        tokens = torch.cat([tokenizer.tokenize(frames[:, max(0, k + 1 - window) : k + 1])[:, -1:]
                            for k in range(length)], dim=1)  # (B, T, h, w)
    else:
        tokens = tokenizer.tokenize(frames)  # (B, T, h, w): each frame's tokens from that frame alone
    decoded = [tokenizer.detokenize(tokens[:, max(0, k + 1 - window) : k + 1])[:, -1] for k in range(length)]
    return torch.stack(decoded, dim=1)  # (B, T, H, W, C)


def _evaluate_tokenizer(model: ModelUnderTest, batch: Batch, inception) -> dict[str, Any]:
    reconstruction = reconstruct_windowed(model.tokenizer, batch.frames)  # (B, T, H, W, C)
    records = _records(batch)
    _put(records, "reconstruction", _scores(reconstruction, batch.frames))
    out: dict[str, Any] = {"records": records, "features": {}, "samples": []}
    if inception is not None:
        out["features"] = {"real": inception(batch.frames), "reconstruction": inception(reconstruction)}
    for i in np.flatnonzero(batch.keep_frames):
        out["samples"].append({"episode": batch.episodes[i], "ground_truth": batch.frames[i],
                               "rows": {"reconstruction": _u8(reconstruction[i])}})
    return out


def _evaluate_lam(model: ModelUnderTest, batch: Batch, inception) -> dict[str, Any]:
    lam = model.lam
    frames = torch.as_tensor(batch.frames, device=lam.device).float() / 255.0  # (B, T, H, W, C)
    # frame t+1 from frame t and its latent action, each read from a window of the LAM's training length
    predicted, ids = lam.predict_next(frames)  # (B, T-1, H, W, C), (B, T-1)
    predicted = predicted.clamp(0, 1)
    records = _records(batch)
    _put(records, "reconstruction", _scores(predicted, batch.frames[:, 1:]))
    copy = psnr_per_frame(batch.frames[:, :-1], batch.frames[:, 1:]).cpu().numpy()  # (B, T-1): "nothing moves"
    ids = ids.cpu().numpy()  # (B, T-1)
    for i, record in enumerate(records):
        record["copy_last_frame_psnr"] = copy[i].tolist()
        record["latent_actions"] = ids[i].tolist()
        record["true_actions"] = batch.actions[i].astype(int).tolist()
    out: dict[str, Any] = {"records": records, "features": {}, "samples": []}
    if inception is not None:
        out["features"] = {"real": inception(batch.frames[:, 1:]), "reconstruction": inception(predicted)}
    for i in np.flatnonzero(batch.keep_frames):
        out["samples"].append({"episode": batch.episodes[i], "ground_truth": batch.frames[i],
                               "rows": {"reconstruction": np.concatenate([batch.frames[i, :1], _u8(predicted[i])])}})
    return out


def _evaluate_world_model(model: ModelUnderTest, batch: Batch, config: EvalConfig, inception) -> dict[str, Any]:
    world, c, h = model.world, config.context, config.horizon
    steps, temperature = config.maskgit_steps, config.temperature
    target = batch.frames[:, c:]  # (B, horizon, H, W, C)
    ids = rollouts.conditioning_actions(world, batch.frames, batch.actions)  # (B, T-1)
    records = _records(batch)
    predictions: dict[str, torch.Tensor] = {}
    # ΔtPSNR at t: same context, same noise, only the action into frame t changed. Two versions: "delta_psnr",
    # the paper's counterfactual (any different id), and "delta_psnr_effect" (GenieRedux-G): an action of another
    # effect class, since 8 ids do nothing and DOWN's twins act alike (config.ACTION_EFFECTS)
    versions = {"delta_psnr": (False, 1)}
    if model.conditioning != "latent":
        versions["delta_psnr_effect"] = (True, 3)
    index = c - 2 + config.delta_t
    changed = {key: rollouts.counterfactual_ids(world, ids, index,
                                                np.random.default_rng([config.seed, batch.index, stream]), by_effect)
               for key, (by_effect, stream) in versions.items()} if config.delta_t <= h else {}  # key -> (B, T-1)
    others: list[torch.Tensor] = []
    if changed:  # the counterfactuals branch off the factual rollout at frame t
        predictions["autoregressive"], others = rollouts.autoregressive_with_counterfactuals(
            world, batch.frames, ids, list(changed.values()), c, h, config.delta_t, steps, temperature, batch.seed)
    elif "autoregressive" in config.modes:
        predictions["autoregressive"] = rollouts.autoregressive(world, batch.frames, ids, c, h, steps, temperature,
                                                                batch.seed)
    if "teacher_forced" in config.modes:
        predictions["teacher_forced"] = rollouts.teacher_forced(world, batch.frames, ids, c, h)
    for mode in config.modes:
        _put(records, mode, _scores(predictions[mode], target))
    copy = copy_last_frame_psnr(batch.frames, c).cpu().numpy()  # (B, horizon)
    for i, record in enumerate(records):
        record["copy_last_frame_psnr"] = copy[i].tolist()
        record["action_ids"] = ids[i].cpu().tolist()

    if changed:
        truth = target[:, config.delta_t - 1]  # (B, H, W, C)
        # metrics run where the prediction is (the GPU in `genie eval --gpus-per-worker`): .cpu() before .numpy()
        # (B,)
        factual = psnr_per_frame(predictions["autoregressive"][:, config.delta_t - 1].clamp(0, 1),
                                 torch.as_tensor(truth)).cpu().numpy()
        for (key, other_ids), other in zip(changed.items(), others):
            counter = psnr_per_frame(other.clamp(0, 1), torch.as_tensor(truth)).cpu().numpy()  # (B,)
            for i, record in enumerate(records):
                record[key] = {"t": config.delta_t, "psnr": float(factual[i]), "psnr_other_action": float(counter[i]),
                               "delta": float(factual[i] - counter[i]), "action": int(ids[i, index]),
                               "other_action": int(other_ids[i, index])}
                if versions[key][0]:
                    record[key].update(effect=ACTION_EFFECTS[ACTION_NAMES[int(ids[i, index])]],
                                       other_effect=ACTION_EFFECTS[ACTION_NAMES[int(other_ids[i, index])]])

    dreams = _forked_futures(model, batch, ids, records, config)  # (forked, F, k, H, W, C) or None

    held: dict[str, torch.Tensor] = {}
    if config.control_steps > 0:
        last = batch.frames[:, c - 1 : c]  # (B, 1, H, W, C): motion is measured from the last real frame
        named = control_action_ids(model)
        # (len(named), B, control_steps, H, W, C)
        rollout = rollouts.held_action_rollouts(world, batch.frames, ids, c, list(named.values()), config.control_steps,
                                                steps, temperature, batch.seed)
        for name, frames in zip(named, rollout):
            held[name] = frames  # (B, control_steps, H, W, C)
            motion = path_motion(np.concatenate([last, _u8(frames)], axis=1))  # (B, 2)
            for i, record in enumerate(records):
                record.setdefault("control", {})[name] = motion[i].tolist()
        # the real environment's response to each recorded action in these windows (one step), a reference:
        # (B, T-1, 2)
        real = agent_motion(batch.frames[:, :-1].reshape(-1, *batch.frames.shape[2:]),
                            batch.frames[:, 1:].reshape(-1, *batch.frames.shape[2:])).reshape(len(records), -1, 2)
        for i, record in enumerate(records):
            record["real_motion"] = {"actions": batch.actions[i].astype(int).tolist(), "motion": real[i].tolist()}

    out: dict[str, Any] = {"records": records, "features": {}, "samples": []}
    if inception is not None:
        out["features"] = {"real": inception(target), **{m: inception(predictions[m]) for m in config.modes}}
    forked = np.flatnonzero(batch.forked) if batch.forked is not None else np.array([], dtype=int)
    for i in np.flatnonzero(batch.keep_frames):
        rows = {mode: np.concatenate([batch.frames[i, :c], _u8(predictions[mode][i])]) for mode in config.modes}
        rows.update({f"hold {name}": np.concatenate([batch.frames[i, :c], _u8(frames[i])])
                     for name, frames in held.items()})
        if dreams is not None and i in forked:  # the forks: real game and dream side by side
            j = int(np.flatnonzero(forked == i)[0])
            for f, name in enumerate(FORK_ACTIONS):
                rows[f"{name} x{config.fork_steps} real"] = np.concatenate([batch.frames[i, :c], batch.forks[i, f]])
                rows[f"{name} x{config.fork_steps} dream"] = np.concatenate([batch.frames[i, :c], _u8(dreams[j, f])])
        out["samples"].append({"episode": batch.episodes[i], "ground_truth": batch.frames[i], "rows": rows})
    return out


def _forked_futures(model: ModelUnderTest, batch: Batch, ids: torch.Tensor, records: list[dict[str, Any]],
                    config: EvalConfig) -> torch.Tensor | None:
    """Dream the real forks of the forked windows from their real context and score them (records["forked_future"]).

    Returns the dreams (forked, F, k, H, W, C) in [0, 1] of the batch's forked windows, in batch order (None if
    none).
    """
    if batch.forked is None or not batch.forked.any():
        return None
    c, world = config.context, model.world
    index = np.flatnonzero(batch.forked)  # (forked,)
    real = batch.forks[index]  # (forked, F, k, H, W, C) uint8
    fork_ids = [ACTION_NAMES.index(name) for name in FORK_ACTIONS]
    dreams = rollouts.forked_dreams(world, batch.frames[index, :c], ids[index, : c - 1], real, fork_ids,
                                    config.maskgit_steps, config.temperature, batch.seed)  # (forked, F, k, H, W, C)
    shown = dreams.clamp(0, 1)  # (forked, F, k, H, W, C)
    psnr = forked_future_psnr(shown, real).cpu().numpy()  # (forked, F dream, F real, k)
    score, per_frame = forked_future_wins(psnr)  # (forked,), (forked, k)
    cosine, size = forked_direction(shown, real)  # (forked, k) each
    for j, i in enumerate(index):
        records[i]["forked_future"] = {
            "score": float(score[j]), "per_frame": per_frame[j].tolist(), "k": int(real.shape[2]),
            "direction_cosine": cosine[j].tolist(),  # size: null where the real futures are identical
            "difference_size": [float(v) if np.isfinite(v) else None for v in size[j]],
            # PSNR against this fork's real future: of its own dream, of the other fork's dream (F = 2)
            "psnr": {name: {"own_dream": psnr[j, f, f].tolist(), "other_dream": psnr[j, 1 - f, f].tolist()}
                     for f, name in enumerate(FORK_ACTIONS)},
        }
    return dreams


class EvalWorker:
    """Holds one copy of the model (and the Inception extractor) and evaluates batches; run as a Ray actor."""

    def __init__(self, config: EvalConfig, torch_threads: int = 1) -> None:
        torch.set_num_threads(max(1, torch_threads))
        self.config = config
        self.model = load_model_under_test(config.model, config.device, config.prefer)
        if self.model.world is not None:
            self.model.world.use_guidance(config.guidance)
            self.model.world.use_scroll(config.scroll_temperature, config.scroll_draw)
        self.inception = (InceptionFeatures(config.inception_weights, config.device) if config.inception_weights
                          else None)

    def evaluate(self, batch: Batch) -> dict[str, Any]:
        # arrays from Ray's object store are read-only views; torch wants writable memory
        batch = dataclasses.replace(batch, frames=np.array(batch.frames), actions=np.array(batch.actions),
                                    forks=None if batch.forks is None else np.array(batch.forks))
        with inference_precision(self.config.device, self.config.bf16):
            result = evaluate_batch(self.model, batch, self.config, self.inception)
        result["batch"] = batch.index  # results come back out of order
        return result
