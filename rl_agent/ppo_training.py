"""`genie agent train`: RLlib PPO on CoinRun with checkpoints, resume, a learning-curve CSV/PNG and wandb.

The run folder holds everything: `checkpoints/iter_NNNNNN/` (RLlib checkpoints, for resuming, each with the
policy alone in `policy/` for collectors and eval; the last few kept), `curve.csv` (one row per training
iteration), `reward_curve.png`, `settings.json`, `random_reference.json` (the random agent's return on the
same kind of levels) and wandb's offline files. Running the same command again into the same folder resumes
from the latest checkpoint; the curve rows after that checkpoint are dropped so they are not counted twice.

The run folder may be a storage URI (s3://..., file://...), so collectors on other nodes can load its checkpoints:
training then runs in a local staging folder (resuming from the URI's latest checkpoint, downloaded), and every
checkpoint is uploaded with its `.complete` marker last, so a reader never takes a half-uploaded one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genie_common.atomic import atomic_path
from genie_common.config import differing_keys
from genie_common.errors import ConfigError, cpu_only_torch_error
from genie_common.storage import RemoteFolder, is_uri
from rl_agent.capacity import ensure_resources, format_resources
from rl_agent.ppo_config import PLACEMENT_SETTINGS, PPOSettings, build_ppo_config, cluster_gpus, learner_bundles
from rl_agent.ppo_learner import BATCH_EXPLAINED_VAR
from rl_agent.ppo_policy import POLICY_SUBDIR, checkpoints_of, save_policy

DEFAULT_MODULE = "default_policy"
CURVE_FIELDS = ["iteration", "env_steps", "episode_return_mean", "episode_len_mean", "episodes", "env_steps_per_s",
                "sample_seconds", "learn_seconds", "wall_seconds", "vf_explained_var", "entropy"]


@dataclass
class TrainSummary:
    out_dir: Path | str  # a URI when trained into one
    checkpoint: Path | str
    iterations: int
    env_steps: int
    wall_seconds: float
    last_return: float | None


def _read_curve(path: Path, up_to_iteration: int) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path) as handle:
        return [row for row in csv.DictReader(handle) if int(row["iteration"]) <= up_to_iteration]


def _write_curve(path: Path, rows: list[dict[str, Any]]) -> None:
    with atomic_path(path) as temp, open(temp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CURVE_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _row(result: dict[str, Any], iteration: int, env_steps: int, seconds: float, wall: float) -> dict[str, Any]:
    runners = result.get("env_runners", {})
    timers = result.get("timers", {})
    sampled = runners.get("num_env_steps_sampled", 0) or 0
    learner = result.get("learners", {}).get(DEFAULT_MODULE, {})
    return {
        "iteration": iteration,
        "env_steps": env_steps,
        "episode_return_mean": runners.get("episode_return_mean", float("nan")),
        "episode_len_mean": runners.get("episode_len_mean", float("nan")),
        "episodes": runners.get("num_episodes", 0),
        "env_steps_per_s": round(sampled / max(seconds, 1e-9), 1),
        "sample_seconds": round(timers.get("env_runner_sampling_timer", float("nan")), 3),
        "learn_seconds": round(timers.get("learner_update_timer", float("nan")), 3),
        "wall_seconds": round(wall, 1),
        # the critic before the iteration's update, on all of its new steps (ppo2's); entropy: the last minibatch's
        "vf_explained_var": round(float(learner.get(BATCH_EXPLAINED_VAR, float("nan"))), 4),
        "entropy": round(float(learner.get("entropy", float("nan"))), 4),
    }


def _save_checkpoint(algo, run_dir: Path, iteration: int, state: dict[str, Any], settings: PPOSettings) -> Path:
    """Save atomically: a checkpoint counts only once its `.complete` marker exists."""
    root = run_dir / "checkpoints"
    path = root / f"iter_{iteration:06d}"
    if path.exists():
        shutil.rmtree(path)
    algo.save_to_path(str(path))
    weights = algo.learner_group.get_weights(module_ids=[DEFAULT_MODULE])[DEFAULT_MODULE]
    save_policy(weights, settings.model_config, path / POLICY_SUBDIR)  # what collectors and eval load
    (path / "genie_state.json").write_text(json.dumps(state))
    (path / ".complete").touch()
    for old in checkpoints_of(run_dir)[:-settings.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _start_wandb(run_dir: Path, settings: PPOSettings, resume: bool, identity: str):
    try:
        import wandb

        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        return wandb.init(project="genie-redux", job_type="agent", dir=str(run_dir), config=settings.to_dict(),
                          name=run_dir.name,
                          id=f"agent-{int(hashlib.sha256(identity.encode()).hexdigest()[:10], 16) % 10**10}",
                          resume="allow" if resume else None, reinit=True)
    except Exception as err:  # noqa: BLE001 - wandb is a convenience: never let it stop training
        print(f"warning: wandb disabled ({err})")
        return None


def train_agent(settings: PPOSettings, run_dir: str | Path, show_progress: bool = True,
                random_reference: float | None = None) -> TrainSummary:
    """Train (or resume) PPO until `settings.total_env_steps` into a folder or storage URI. Ray must be initialised."""
    if not is_uri(run_dir):
        local = Path(run_dir).absolute()  # RLlib reads checkpoint paths as URIs: a relative one has "empty scheme"
        return _train(settings, local, show_progress, random_reference, str(local), None)
    remote = RemoteFolder(str(run_dir))
    staging = Path(tempfile.mkdtemp(prefix="genie-agent-")) / (remote.path.rsplit("/", 1)[-1] or "run")
    try:
        staging.mkdir()
        remote.makedirs()  # fails here, before training, when the URI cannot be written
        _download_run(remote, staging)
        summary = _train(settings, staging, show_progress, random_reference, remote.uri,
                         lambda checkpoint: _upload_run(remote, staging, checkpoint, settings.keep_checkpoints))
        _upload_run(remote, staging, None, settings.keep_checkpoints)
        if (staging / "wandb").is_dir():
            remote.upload_tree(staging / "wandb", "wandb")
        name = Path(summary.checkpoint).name if summary.checkpoint is not None else None
        return TrainSummary(remote.uri, f"{remote.uri}/checkpoints/{name}" if name else None, summary.iterations,
                            summary.env_steps, summary.wall_seconds, summary.last_return)
    finally:
        shutil.rmtree(staging.parent, ignore_errors=True)


RUN_FILES = ("settings.json", "random_reference.json", "curve.csv", "reward_curve.png")


def _download_run(remote: RemoteFolder, staging: Path) -> None:
    """What resuming needs from a run at a URI: its small files and its latest complete checkpoint."""
    for name in RUN_FILES:
        if remote.exists(name):
            remote.download(name, staging)
    complete = [n for n in remote.folders("checkpoints") if remote.exists(f"checkpoints/{n}/.complete")]
    if complete:
        remote.download_tree(f"checkpoints/{complete[-1]}", staging / "checkpoints" / complete[-1])


def _upload_run(remote: RemoteFolder, staging: Path, checkpoint: Path | None, keep: int) -> None:
    """Upload the small files and `checkpoint` (its `.complete` marker last); drop all but `keep` checkpoints there."""
    for name in RUN_FILES:
        if (staging / name).is_file():
            remote.upload(staging / name, name)
    if checkpoint is None:
        return
    target = f"checkpoints/{checkpoint.name}"
    remote.remove_tree(target)  # a half-uploaded one of a crashed run
    remote.upload_tree(checkpoint, target, last=".complete")
    complete = [n for n in remote.folders("checkpoints") if remote.exists(f"checkpoints/{n}/.complete")]
    for old in complete[:-keep]:
        remote.remove_tree(f"checkpoints/{old}")


def _train(settings: PPOSettings, run_dir: Path, show_progress: bool, random_reference: float | None,
           identity: str, on_checkpoint) -> TrainSummary:
    """`train_agent` in a local folder; `on_checkpoint(path)` after each checkpoint (the upload to a URI)."""
    import torch
    from tqdm import tqdm

    run_dir.mkdir(parents=True, exist_ok=True)
    settings_path = run_dir / "settings.json"
    if settings_path.exists():
        previous = json.loads(settings_path.read_text())
        free = ("total_env_steps", *PLACEMENT_SETTINGS)  # may change between a run and its resumption
        current = settings.to_dict()
        changed = differing_keys(previous, {k: current.get(k) for k in previous}, ignore=free)  # a new setting is none
        if changed:
            raise ConfigError(f"{identity} holds a run with different settings ({', '.join(changed)}); "
                              f"use another --out or the same preset (only total_env_steps may grow, and the "
                              f"learner's GPUs may change)")
    settings_path.write_text(json.dumps(settings.to_dict(), indent=1))
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    reference_path = run_dir / "random_reference.json"
    if random_reference is not None:
        reference_path.write_text(json.dumps({"random_return": random_reference}))

    gpus = cluster_gpus()
    bundles = learner_bundles(settings, gpus)
    if bundles:  # a remote learner: a GPU node the autoscaler may have to start first
        ensure_resources(bundles, f"the PPO learner {format_resources(bundles[0])}",
                         "pass --gpus-per-learner 0 to learn on CPUs in the driver")
    try:
        algo = build_ppo_config(settings, gpus_available=gpus).build_algo()
    except Exception as err:  # re-raised unless it is a GPU node with a CPU-only torch
        cpu_only = bundles and cpu_only_torch_error(
            err, f"the PPO learner asked for {bundles[0].get('GPU', 0):g} GPU(s)",
            "pass --gpus-per-learner 0 to learn on CPUs in the driver")
        if cpu_only:
            raise cpu_only from None
        raise
    existing = checkpoints_of(run_dir)
    iteration, env_steps, wall_before = 0, 0, 0.0
    if existing:
        algo.restore_from_path(str(existing[-1]))
        state = json.loads((existing[-1] / "genie_state.json").read_text())
        iteration, env_steps, wall_before = state["iteration"], state["env_steps"], state["wall_seconds"]
        print(f"resuming {run_dir} from {existing[-1].name} ({env_steps:,} env steps)")
    curve_path = run_dir / "curve.csv"
    rows = _read_curve(curve_path, iteration)
    run = _start_wandb(run_dir, settings, resume=bool(existing), identity=identity)
    bar = tqdm(total=settings.total_env_steps, initial=env_steps, unit="step", desc="PPO", disable=not show_progress,
               dynamic_ncols=True)
    start = time.monotonic()
    checkpoint = existing[-1] if existing else None
    try:
        while env_steps < settings.total_env_steps:
            began = time.monotonic()
            result = algo.train()
            iteration += 1
            sampled = int(result.get("env_runners", {}).get("num_env_steps_sampled", settings.train_batch_size) or 0)
            env_steps += sampled
            wall = wall_before + time.monotonic() - start
            row = _row(result, iteration, env_steps, time.monotonic() - began, wall)
            rows.append(row)
            _write_curve(curve_path, rows)
            if run is not None:
                run.log({k: v for k, v in row.items() if k != "iteration"}, step=iteration)
            bar.update(sampled)
            bar.set_postfix(ret=f"{row['episode_return_mean']:.2f}", len=f"{row['episode_len_mean']:.0f}",
                            steps_s=f"{row['env_steps_per_s']:.0f}", refresh=False)
            if iteration % settings.checkpoint_every == 0 or env_steps >= settings.total_env_steps:
                state = {"iteration": iteration, "env_steps": env_steps, "wall_seconds": wall}
                checkpoint = _save_checkpoint(algo, run_dir, iteration, state, settings)
                if on_checkpoint is not None:
                    on_checkpoint(checkpoint)
    finally:
        bar.close()
        algo.stop()
        if run is not None:
            run.finish()
    plot_reward_curve(run_dir)
    last = rows[-1]["episode_return_mean"] if rows else None
    return TrainSummary(run_dir, checkpoint, iteration, env_steps, wall_before + time.monotonic() - start,
                        float(last) if last is not None else None)


def plot_reward_curve(run_dir: Path) -> Path | None:
    """Mean return vs env steps, with the random agent's return as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = _read_curve(run_dir / "curve.csv", 10**12)
    if not rows:
        return None
    steps = [int(r["env_steps"]) for r in rows]
    returns = [float(r["episode_return_mean"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, returns, alpha=0.35, label="PPO: mean return of the episodes ended in each iteration")
    window = min(10, len(returns))
    smooth = np.convolve(np.nan_to_num(returns), np.ones(window) / window, mode="valid")
    ax.plot(steps[window - 1 :], smooth, color="tab:blue", label=f"PPO, moving average of {window} iterations")
    reference = run_dir / "random_reference.json"
    if reference.exists():
        value = json.loads(reference.read_text())["random_return"]
        ax.axhline(value, color="gray", linestyle="--", label=f"random agent ({value:.2f})")
    ax.set(xlabel="env steps", ylabel="episode return", title=f"CoinRun PPO: {run_dir.name}")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = run_dir / "reward_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
