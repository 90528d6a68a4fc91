"""`evaluate(config)`: the whole evaluation of one model on one test set, in parallel on Ray.

The driver picks the windows (from the seed), reads their frames and ships fixed batches to
`--workers` Ray actors, each holding its own copy of the model; the per-episode numbers come back
and are averaged here. Embedded locally when Ray is not running, or on the cluster the caller
joined (`genie eval --address`).

Shapes: B batch (windows), T frames of a window (context + horizon), H x W x C pixels, F forks, k frames per fork;
`features` the FID extractor's width.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genie_common import storage
from rl_agent.store.reader import EpisodeStore
from world_model.evaluation.config import CONTROL_ACTIONS, FORK_ACTIONS, EvalConfig
from world_model.evaluation.episodes import Window, read_windows, select_windows
from world_model.evaluation.fid import FID_HOWTO, fid, file_sha256
from world_model.evaluation.forks import held_futures, real_forks
from world_model.evaluation.metrics import PSNR_CAP, copy_last_frame_psnr, mean_ci95, mean_finite
from world_model.evaluation.models import ModelUnderTest, check_level_overlap, dataset_agents, load_model_under_test
from world_model.evaluation.registration import MOTION_CLASSES, motion_class, path_motion
from world_model.evaluation.worker import Batch, EvalWorker, control_action_ids

RESULTS_FORMAT = "genie-redux-eval/1"


@dataclass
class EvaluationOutput:
    results: dict[str, Any]  # JSON-ready
    samples: list[dict[str, Any]] = field(default_factory=list)  # frames for GIFs / strips (numpy)


def open_test_set(data: str, split: str | None) -> EpisodeStore:
    """The test set's episodes (a dataset folder, or a URI mirrored locally once)."""
    return EpisodeStore(storage.local_dataset(data), split=split)


def data_description(store: EpisodeStore, data: str, split: str | None) -> dict[str, Any]:
    """Location, name and kind of the test set: 'basic' (random agent) or 'diverse' (PPO agent)."""
    agents = sorted(set().union(*(dataset_agents(m) for m in store.manifests)))
    kind = "diverse" if agents == ["ppo"] else "basic" if agents == ["random"] else None
    return {"location": data, "name": Path(str(data).rstrip("/")).name, "kind": kind, "agents": agents,
            "split": split, "episodes_available": len(store)}


def batch_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index, 2]).generate_state(1)[0])


def make_batches(store: EpisodeStore, windows: list[Window], config: EvalConfig,
                 forks: dict[int, np.ndarray] | None = None) -> list[Batch]:
    """Fixed batches of windows; `forks`: window index -> its real forks (F, k, H, W, C), for those forked."""
    forks = forks or {}
    batches = []
    for index, lo in enumerate(range(0, len(windows), config.batch_size)):
        part = windows[lo : lo + config.batch_size]
        frames, actions = read_windows(store, part, config.window)  # (B, T, H, W, C), (B, T-1)
        keep = np.array([lo + i < config.samples for i in range(len(part))])  # (B,)
        forked = np.array([lo + i in forks for i in range(len(part))])  # (B,)
        fork_frames = None
        if forked.any():
            shape = next(iter(forks.values())).shape  # (F, k, H, W, C)
            # (B, F, k, ...)
            fork_frames = np.stack([forks.get(lo + i, np.zeros(shape, np.uint8)) for i in range(len(part))])
        batches.append(Batch(index, [w.to_json() for w in part], frames, actions, batch_seed(config.seed, index), keep,
                             fork_frames, forked if forked.any() else None))
    return batches


def replay_forks(store: EpisodeStore, windows: list[Window],
                 config: EvalConfig) -> tuple[dict[int, np.ndarray], list[dict]]:
    """The real forks of the first `config.forks` windows (seed order) that can be replayed, and every skip's reason.

    Bounded: windows are tried in order until `config.forks` have forks, so the cost is `forks` replays
    (~0.1 s each) plus the skipped ones."""
    forks: dict[int, np.ndarray] = {}
    skipped: list[dict] = []
    for index, window in enumerate(windows):
        if len(forks) >= config.forks:
            break
        real = real_forks(store, window, config.context, config.fork_steps, FORK_ACTIONS)
        if real.frames is None:
            skipped.append({"id": window.episode_id, "start": window.start, "level_seed": window.level_seed,
                            "reason": real.reason})
        else:
            forks[index] = real.frames
    return forks, skipped


def replay_held_keys(store: EpisodeStore, windows: list[Window], config: EvalConfig,
                     model: ModelUnderTest) -> tuple[dict[tuple[str, int], dict[str, list[float]]], list[dict]]:
    """The real game's answer to the controllability check: each window's context replayed, each held key played
    `control_steps` times from it, the agent's motion registered as the dreams' is (from the last context frame).
    Keyed (episode id, start) -> key name -> [dx, dy] px; and every skipped window's reason. Only for a dynamics
    driven by the game's own actions (a latent action has no key to press in the real game)."""
    if model.stage != "dynamics" or model.conditioning == "latent" or config.control_steps <= 0:
        return {}, []
    names = tuple(control_action_ids(model))
    motions: dict[tuple[str, int], dict[str, list[float]]] = {}
    skipped: list[dict] = []
    for window in windows:
        played = held_futures(store, window, config.context, config.control_steps, names)
        if played.frames is None:
            skipped.append({"id": window.episode_id, "start": window.start, "reason": played.reason})
            continue
        last, _ = store.window(window.episode, window.start + config.context - 1, 1)  # (1, H, W, C)
        paths = np.concatenate([np.broadcast_to(last, (len(names), *last.shape)), played.frames], axis=1)
        motion = path_motion(paths)  # (keys, 2): over control_steps frames, from the last context frame
        motions[(window.episode_id, window.start)] = {name: motion[i].tolist() for i, name in enumerate(names)}
    return motions, skipped


def _run_batches(config: EvalConfig, batches: list[Batch]) -> list[dict[str, Any]]:
    """Evaluate the batches on min(workers, batches) Ray actors; results in batch order."""
    import ray
    from ray.util import ActorPool
    from tqdm import tqdm

    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=True)
    try:
        workers = min(config.workers, len(batches))
        # on `ray up`, GPU nodes start at zero: ask the autoscaler, or refuse what none holds
        if config.gpus_per_worker:
            from rl_agent.capacity import ensure_resources, format_resources

            bundle = {"CPU": config.cpus_per_worker, "GPU": config.gpus_per_worker}
            ensure_resources([bundle] * workers, f"{workers} evaluation workers x {format_resources(bundle)}",
                             "drop --gpus-per-worker, or use fewer --workers")
        actor = ray.remote(num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker)(EvalWorker)
        threads = max(1, int(config.cpus_per_worker))
        pool = ActorPool([actor.remote(config, threads) for _ in range(workers)])
        out: dict[int, dict[str, Any]] = {}
        with tqdm(total=sum(len(b.episodes) for b in batches), desc="evaluating episodes", unit="ep",
                  disable=not config.show_progress) as bar:
            for result in pool.map_unordered(lambda a, b: a.evaluate.remote(b), batches):
                out[result["batch"]] = result
                bar.update(len(result["records"]))
        return [out[b.index] for b in batches]
    finally:
        if started:
            ray.shutdown()


def evaluate(config: EvalConfig, out: str | Path | None = None) -> dict[str, Any]:
    """Evaluate `config.model` on `config.data`; with `out`, also write results.json, the table, plots, GIFs.

    Returns the results dict (what results.json holds). The entry point of `genie eval` and the pipeline.
    """
    output = run_evaluation(config)
    if out is not None:
        from world_model.evaluation.outputs import write_outputs

        output.results["outputs"] = write_outputs(output, out)
    return output.results


def run_evaluation(config: EvalConfig) -> EvaluationOutput:
    start = time.monotonic()
    model = load_model_under_test(config.model, "cpu", config.prefer)  # in the driver: clear errors before Ray starts
    if model.world is not None:
        model.world.use_guidance(config.guidance)  # a scale the model cannot take is refused here, before Ray starts
        model.world.use_scroll(config.scroll_temperature, config.scroll_draw)
    store = open_test_set(config.data, config.split)
    overlap = check_level_overlap(model.run_info, store.manifests[0], config.split)
    for manifest in store.manifests[1:]:
        check_level_overlap(model.run_info, manifest, config.split)
    windows = select_windows(store, config.window, config.episodes, config.seed)
    forks, skipped = replay_forks(store, windows, config) if model.stage == "dynamics" else ({}, [])
    real_control = replay_held_keys(store, windows, config, model)
    batches = make_batches(store, windows, config, forks)
    results_of_batches = _run_batches(config, batches)
    records = [r for res in results_of_batches for r in res["records"]]
    samples = [s for res in results_of_batches for s in res["samples"]]
    seconds = time.monotonic() - start
    results = summarize(config, model, data_description(store, config.data, config.split), overlap.to_json(),
                        records, results_of_batches, skipped, real_control)
    results["timing"] = {"seconds": seconds, "episodes_per_second": len(records) / seconds if seconds > 0 else math.nan}
    return EvaluationOutput(results, samples)


# ---- summaries ---------------------------------------------------------------------------------
def _per_step(records: list[dict[str, Any]], key: str, metric: str) -> list[float]:
    values = np.array([r[key][metric] for r in records], dtype=np.float64)  # (episodes, steps)
    return values.mean(axis=0).tolist()


def summarize(config: EvalConfig, model: ModelUnderTest, data: dict[str, Any], overlap: dict[str, Any],
              records: list[dict[str, Any]], batch_results: list[dict[str, Any]],
              fork_skips: list[dict[str, Any]] | None = None,
              real_control: tuple[dict, list[dict]] | None = None) -> dict[str, Any]:
    """Averages over episodes, each metric tagged with what it was measured on (docs/design.md, 'Metrics')."""
    is_world = model.stage == "dynamics"
    tag = {
        "model": model.name, "checkpoint": model.checkpoint, "data": data["location"], "data_name": data["name"],
        "context": config.context, "horizon": config.horizon,
        "maskgit_steps": config.maskgit_steps if is_world else None,
        "guidance": model.world.dynamics.config.guidance if is_world and model.world is not None else None,
        "scroll_temperature": (model.world.dynamics.config.scroll_temperature
                               if is_world and model.world is not None and model.world.dynamics.scrolled() else None),
        "scroll_draw": (model.world.dynamics.config.scroll_draw
                        if is_world and model.world is not None and model.world.dynamics.scrolled() else None),
        "seed": config.seed, "episodes": len(records),
    }
    modes = list(config.modes) if is_world else ["reconstruction"]
    metrics: list[dict[str, Any]] = []
    per_step: dict[str, dict[str, list[float]]] = {}
    for mode in modes:
        per_step[mode] = {m: _per_step(records, mode, m) for m in ("psnr", "ssim")}
        for metric in ("psnr", "ssim"):
            values = [v for r in records for v in r[mode][metric]]
            metrics.append({**tag, "metric": metric, "mode": mode, "value": mean_finite(values)})
    if "copy_last_frame_psnr" in records[0]:
        per_step["copy_last_frame"] = {"psnr": _per_step_list(records, "copy_last_frame_psnr")}
        metrics.append({**tag, "metric": "psnr", "mode": "copy_last_frame",
                        "value": mean_finite([v for r in records for v in r["copy_last_frame_psnr"]])})
    capped = sum(1 for r in records for mode in modes for v in r[mode]["psnr"] if v >= PSNR_CAP)
    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "model": model.describe(),
        "data": data,
        "settings": {**config.to_json(), "window_frames": config.window, "psnr_cap_db": PSNR_CAP},
        "level_overlap": overlap,
        "metrics": metrics,
        "per_step": per_step,
        "psnr_capped_frames": capped,
    }
    if is_world and "delta_psnr" in records[0]:
        for key, counterfactual in DELTA_VERSIONS.items():
            if key not in records[0]:
                continue
            mean, half = mean_ci95([r[key]["delta"] for r in records])
            metrics.append({**tag, "metric": key, "mode": "autoregressive", "t": config.delta_t, "value": mean,
                            "ci95": half, "counterfactual": counterfactual})
        if "delta_psnr_effect" not in records[0]:
            results["delta_psnr_effect_skipped"] = ("latent actions have no known effect: GenieRedux's counterfactual "
                                                    "is any other latent id (delta_psnr)")
    elif is_world:
        results["delta_psnr_skipped"] = f"--horizon {config.horizon} is shorter than delta t = {config.delta_t}"
    if is_world:
        results["forked_futures"] = forked_futures_summary(config, model, records, fork_skips or [], tag, metrics)
    results["fid"] = _fid(config, batch_results, modes, tag, metrics)
    if is_world and config.control_steps > 0:
        results["controllability"] = controllability_summary(model, records, config.control_steps,
                                                             *(real_control or ({}, [])))
    results["episodes"] = [_slim(r) for r in records]
    return results


DELTA_VERSIONS = {
    "delta_psnr": "the paper's: the action into frame t replaced by a random different id",
    "delta_psnr_effect": "the action into frame t replaced by a random action of another effect class "
                         "(config.ACTION_EFFECTS)",
}


def forked_futures_summary(config: EvalConfig, model: ModelUnderTest, records: list[dict[str, Any]],
                           skips: list[dict[str, Any]], tag: dict[str, Any],
                           metrics: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean forked-future score with its 95% CI over the forked windows, what drove the dreams, and every skip."""
    scores = [r["forked_future"]["score"] for r in records if "forked_future" in r]
    info: dict[str, Any] = {
        "forks": list(FORK_ACTIONS), "k": config.fork_steps, "context": config.context, "chance": 0.5,
        "rule": ("per window, for each real fork, whether its own dream is closer (PSNR averaged over the "
                 f"{config.fork_steps} frames) to that real future than the other fork's dream is; ties count 0.5"),
        "dream_actions": ("latent actions inferred by the LAM from the context and each real fork (the paper's "
                          "latent-action protocol)" if model.conditioning == "latent" else "the true action ids, held"),
        "real_forks": "replayed from the recorded level and actions (docs/design.md, 'The episode record'), checked "
                      "byte for byte, then forked",
        "requested": config.forks, "windows": len(scores), "skipped": skips,
    }
    if not scores:
        info["skipped_reason"] = ("--forks 0" if config.forks == 0 else
                                  "no window could be replayed and forked (see skipped)" if skips else
                                  "no window evaluated")
        return info
    mean, half = mean_ci95(scores)
    forked = [r["forked_future"] for r in records if "forked_future" in r]
    per_frame = np.array([f["per_frame"] for f in forked]).mean(axis=0)
    info.update(score=mean, ci95=half, per_frame_score=per_frame.tolist())
    metrics.append({**tag, "metric": "forked_future_score", "mode": "autoregressive", "k": config.fork_steps,
                    "value": mean, "ci95": half, "windows": len(scores)})
    cosine = np.array([f["direction_cosine"] for f in forked])  # (windows, k)
    size = np.array([f["difference_size"] for f in forked], dtype=np.float64)  # (windows, k), NaN for null
    cos_mean, cos_half = mean_ci95(cosine.mean(axis=1).tolist())
    info["direction"] = {
        "rule": "cosine between the dreams' RIGHT - LEFT difference and the real futures' (0: unrelated or identical "
                "dreams, 1: the key moves the dream as it moves the game), averaged over the frames; size: the "
                "dreams' difference over the real one's (0: the dreams ignore the key)",
        "cosine": cos_mean, "ci95": cos_half,
        "cosine_per_frame": [mean_ci95(cosine[:, j].tolist()) for j in range(cosine.shape[1])],
        "size_median_per_frame": [finite_median(size[:, j]) for j in range(size.shape[1])],
    }
    metrics.append({**tag, "metric": "forked_direction_cosine", "mode": "autoregressive", "k": config.fork_steps,
                    "value": cos_mean, "ci95": cos_half, "windows": len(scores)})
    return info


def finite_median(values: np.ndarray) -> float | None:
    """Median of the finite values; None (JSON null) when there are none."""
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if len(finite) else None


def _per_step_list(records: list[dict[str, Any]], key: str) -> list[float]:
    return np.array([r[key] for r in records], dtype=np.float64).mean(axis=0).tolist()


def _slim(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != "real_motion"}


def _fid(config: EvalConfig, batch_results, modes, tag, metrics) -> dict[str, Any]:
    if not config.inception_weights:
        return {"skipped": f"FID skipped: no Inception weights given; {FID_HOWTO}"}
    real = np.concatenate([b["features"]["real"] for b in batch_results])  # (frames, features)
    info: dict[str, Any] = {"weights": str(config.inception_weights),
                            "weights_sha256": file_sha256(config.inception_weights), "frames": int(real.shape[0])}
    if real.shape[0] < 2:
        info["skipped"] = "FID needs at least 2 frames; evaluate more episodes"
        return info
    for mode in modes:
        generated = np.concatenate([b["features"][mode] for b in batch_results])
        value = fid(real, generated)
        info[mode] = value
        metrics.append({**tag, "metric": "fid", "mode": mode, "value": value,
                        "inception": Path(config.inception_weights).name})
    return info


# the axis and sign along which a held key moves the agent (dx > 0 right, dy > 0 up; registration's convention)
KEY_DIRECTIONS = {"right": (0, 1.0), "left": (0, -1.0), "up": (1, 1.0), "down": (1, -1.0)}


def key_way_share(relative: np.ndarray, expected: str | None) -> dict[str, float] | None:
    """How often a held key moved the agent its own way relative to holding NOOP from the same context: motions
    (W, 2) px -> the share of windows whose motion along the key's axis has the key's sign (any size), with its 95%
    CI over windows; None for a key without a direction (NOOP, latent ids).

    Why beside `enacted`: CoinRun's agent keeps its momentum, so the real game itself seldom moves it past the
    "still" threshold within a few held frames (RIGHT x3 vs NOOP: 0.5 px on the Diverse Test Set, RIGHT enacted in
    0% of windows), yet nearly always a little the key's way (RIGHT: 100% of those windows). A dream that ignores
    the key scores about half (its RIGHT and NOOP dreams differ by sampling alone; an exact 0 is not counted),
    so a bar on it asks for the CI above one half.
    """
    if expected not in KEY_DIRECTIONS or len(relative) == 0:
        return None
    axis, sign = KEY_DIRECTIONS[expected]
    share, half = mean_ci95((sign * np.asarray(relative, dtype=np.float64)[:, axis] > 0).astype(float).tolist())
    return {"share": share, "ci95": half}


def controllability_summary(model: ModelUnderTest, records: list[dict[str, Any]], steps: int,
                            real_motion: dict[tuple[str, int], dict[str, list[float]]] | None = None,
                            real_skipped: list[dict] | None = None) -> dict[str, Any]:
    """Per held action: mean agent motion (px over `steps` frames), observed direction counts, enact rate.

    GenieRedux-G: motion is taken relative to holding NOOP from the same context (momentum and gravity
    cancel), and the expected direction is CONTROL_ACTIONS'. GenieRedux: latent actions have no
    preset meaning, so each latent id's motion and dominant direction are reported as found.
    Beside each, the real one-step motion after that action in the test windows (registration sanity), and, where
    `real_motion` holds the real game's own held keys from the same contexts (`replay_held_keys`), the real game's
    enact rate and how often the dream's direction is the real game's: CoinRun's agent keeps its momentum, so a
    key held for a few frames often changes its path by less than the "still" threshold in the real game too.
    """
    names = list(control_action_ids(model))
    ids = control_action_ids(model)
    latent = model.conditioning == "latent"
    motion = {n: np.array([r["control"][n] for r in records]) for n in names}  # name -> (episodes, 2)
    noop = motion.get("NOOP")
    real: dict[int, list] = defaultdict(list)
    for r in records:
        keys = r["action_ids"]  # true actions (G) or inferred latent ids (GenieRedux): what drove the model
        for action, step in zip(keys, r["real_motion"]["motion"]):
            real[int(action)].append(step)
    # the real game's held keys, on the records it could replay: (replayed,) record indices, name -> (replayed, 2)
    replayed = [i for i, r in enumerate(records) if (r["id"], r["start"]) in (real_motion or {})]
    game = {n: np.array([real_motion[(records[i]["id"], records[i]["start"])][n] for i in replayed]).reshape(-1, 2)
            for n in names} if replayed else {}
    rows = {}
    for name in names:
        relative = motion[name] - noop if (noop is not None and name != "NOOP") else motion[name]
        classes = motion_class(relative, steps)
        counts = Counter(classes)
        expected = None if latent else CONTROL_ACTIONS[name]
        real_steps = np.array(real.get(ids[name], []), dtype=np.float64).reshape(-1, 2)
        rows[name] = {
            "action_id": ids[name],
            "mean_motion_px": motion[name].mean(axis=0).tolist(),
            "mean_motion_vs_noop_px": relative.mean(axis=0).tolist() if not latent and name != "NOOP" else None,
            "observed": {c: counts.get(c, 0) for c in MOTION_CLASSES},
            "expected": expected,
            "enacted": (counts.get(expected, 0) / len(classes)) if expected else None,
            "key_way": key_way_share(relative, expected),  # None for NOOP and latent ids
            "dominant": counts.most_common(1)[0][0],
            "real_one_step_motion_px": real_steps.mean(axis=0).tolist() if len(real_steps) else None,
            "real_transitions": int(len(real_steps)),
        }
        if game:
            game_relative = game[name] - game["NOOP"] if name != "NOOP" else game[name]  # (replayed, 2)
            game_classes = motion_class(game_relative, steps)
            game_counts = Counter(game_classes)
            rows[name]["real_game"] = {
                "mean_motion_vs_noop_px": game_relative.mean(axis=0).tolist() if name != "NOOP" else None,
                "mean_motion_px": game[name].mean(axis=0).tolist(),
                "observed": {c: game_counts.get(c, 0) for c in MOTION_CLASSES},
                "enacted": game_counts.get(expected, 0) / len(game_classes),
                "key_way": key_way_share(game_relative, expected),
                # the dream's direction (relative to its NOOP dream) is the real game's, window by window
                "agreement": float(np.mean([classes[i] == c for i, c in zip(replayed, game_classes)])),
                # the baseline beside it: a dream that never moves (every class "still") agrees this often
                "agreement_if_still": game_counts.get("still", 0) / len(game_classes),
            }
    enacted = [row["enacted"] for row in rows.values() if row["enacted"] is not None]
    summary = {"steps": steps, "convention": "dx > 0: agent moved right; dy > 0: agent moved up",
               "relative_to": None if latent else "NOOP", "actions": rows,
               "mean_enacted": float(np.mean(enacted)) if enacted else None}
    if not latent:
        summary["real_game"] = {
            "windows": len(replayed), "skipped": real_skipped or [],
            "mean_enacted": (float(np.mean([rows[n]["real_game"]["enacted"] for n in names])) if game else None),
            "mean_agreement": (float(np.mean([rows[n]["real_game"]["agreement"] for n in names])) if game else None),
            "mean_agreement_if_still": (float(np.mean([rows[n]["real_game"]["agreement_if_still"] for n in names]))
                                        if game else None),
            "rule": ("each key held for the same frames in the real game, replayed to each window's context; "
                     "classified as the dreams are"),
        }
    return summary


# ---- the copy-last-frame baseline (for the pipeline, issue 10) ---------------------------------
def copy_last_frame_baseline(data: str, context: int = 2, horizon: int = 10, episodes: int | None = None,
                             seed: int = 0, split: str | None = None) -> dict[str, Any]:
    """PSNR of predicting every future frame as the last context frame, at each horizon step.

    The same windows `evaluate` scores with the same data, context, horizon, episodes and seed, so the
    two are directly comparable. Returns {"per_step": [horizon floats], "mean", "episodes", ...}.
    """
    # validates
    EvalConfig(model="", data=data, context=context, horizon=horizon, episodes=episodes, seed=seed, split=split)
    store = open_test_set(data, split)
    windows = select_windows(store, context + horizon, episodes, seed)
    per_step = np.zeros(horizon)  # (horizon,)
    for lo in range(0, len(windows), 64):
        frames, _ = read_windows(store, windows[lo : lo + 64], context + horizon)  # (B, T, H, W, C)
        per_step += copy_last_frame_psnr(frames, context).cpu().numpy().sum(axis=0)
    per_step /= len(windows)
    return {"per_step": per_step.tolist(), "mean": float(per_step.mean()), "episodes": len(windows),
            "data": data, "context": context, "horizon": horizon, "seed": seed}
