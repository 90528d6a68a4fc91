"""What each pipeline task does: thin calls into the same functions the single commands use.

Each action is itself resumable (PPO resumes from its last checkpoint, collection completes
missing shards, training resumes from Ray Train's latest checkpoint), so a pipeline killed in the
middle of a task loses at most the work since that task's last checkpoint.

Every location is `context.path(...)`: a local path or a storage URI, which each of these functions
takes as the single commands do. The GPUs come from `context.resources`, never from a task's config.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from cluster.pipeline.context import MODELS, PipelineContext, Task

if TYPE_CHECKING:  # imported where used: `genie --help` stays free of torch
    from rl_agent.ppo_config import PPOSettings
    from world_model.evaluation.config import EvalConfig
    from world_model.training.job import TrainJob


def train_agent(context: PipelineContext, task: Task) -> dict[str, Any]:
    from rl_agent.agent_eval import evaluate_agent
    from rl_agent.ppo_training import train_agent as train

    settings = agent_settings(context)
    reference = evaluate_agent("random", 64, seed=12345, env=settings.env).returns.mean()
    summary = train(settings, context.path("agent"), show_progress=context.show_progress,
                    random_reference=float(reference))
    return {"env_steps": summary.env_steps, "iterations": summary.iterations, "last_return": summary.last_return,
            "random_reference_return": float(reference)}


def agent_settings(context: PipelineContext) -> "PPOSettings":
    """The preset's PPO settings, the learner on --gpus-per-learner GPUs when given (else the preset's choice,
    else RLlib's learner on a GPU when the cluster has or can start one)."""
    from rl_agent.ppo_config import PPOSettings

    values = dict(context.sections.get("agent", {}))
    if context.resources.gpus_per_learner is not None:
        values["num_gpus_per_learner"] = context.resources.gpus_per_learner
    return PPOSettings.from_dict(values)


def make_dataset(context: PipelineContext, task: Task) -> dict[str, Any]:
    from genie_common import storage
    from rl_agent.collection import CollectConfig, collect_dataset
    from rl_agent.named_datasets import named_dataset, preset_dataset_config
    from rl_agent.store.stats import compute_stats

    name = task.config["name"]
    data = context.sections.get("data", {})
    spec = named_dataset(name)
    base = CollectConfig(workers=int(data.get("workers", 2)),
                         episodes_per_shard=int(data.get("episodes_per_shard", 128)))
    checkpoint = context.path("agent") if spec.agent == "ppo" else None
    config = preset_dataset_config(name, data, checkpoint, base)
    out = context.path(f"data/{name}")
    collect_dataset(config, out, show_progress=context.show_progress)
    stats = compute_stats(storage.local_dataset(out), progress_episodes=int(data.get("progress_episodes", 200)))
    return {"episodes": stats.episodes, "frames": stats.frames}


def train_model(context: PipelineContext, task: Task) -> dict[str, Any]:
    from world_model.training.trainer import run_training

    result = run_training(train_job(context, task), show_progress=context.show_progress)
    print(result.summary())
    return {"first_val": result.first_val, "last_val": result.last_val, "frames_per_s": result.frames_per_s,
            "steps": result.steps}


def train_job(context: PipelineContext, task: Task) -> "TrainJob":
    """The `genie train` run of a train/finetune task: inputs from the tasks it needs, each worker on
    --gpus-per-worker GPUs."""
    from world_model.training.job import TrainJob

    name, ta = task.name.removesuffix("-ta"), task.name.endswith("-ta")
    stage, conditioning = MODELS[name]
    settings = context.settings
    inputs: dict[str, Any] = {}
    for need in task.needs:
        if need.startswith("tokenizer") and stage == "dynamics":
            inputs["tokenizer"] = context.path(f"models/{need}")
        elif need.startswith("lam") and stage == "dynamics":
            inputs["lam"] = context.path(f"models/{need}")
    if ta:
        inputs["init"] = context.path(f"models/{name}")
    data = [need.removeprefix("data:") for need in task.needs if need.startswith("data:")]
    share = task.config.get("replay_share")  # a replaying TA task's: the random agent's part of each batch
    if share is not None:
        inputs["data_shares"] = [share if folder == "random-train" else 1.0 - share for folder in data]
    return TrainJob(
        stage=stage,
        data=[context.path(f"data/{folder}") for folder in data],
        out=context.path(f"models/{task.name}"),
        preset=context.preset_name or "tiny",
        preset_file=context.preset_file,
        overrides=[*context.overrides, *settings.overrides],
        workers=settings.train_workers,
        gpus_per_worker=context.resources.gpus_per_worker,
        steps=task.config["steps"],
        actions=conditioning or "ground_truth",  # the tokenizer and the LAM have none: TrainJob's default
        **inputs,
    )


def evaluate_model(context: PipelineContext, task: Task) -> dict[str, Any]:
    from genie_common import storage
    from world_model.evaluation.runner import copy_last_frame_baseline, evaluate

    _, model, test_set = task.name.split(":")
    config = eval_config(context, task)
    out = context.path(f"eval/{model}/{test_set}")
    evaluate(config, out)
    baseline = copy_last_frame_baseline(config.data, config.context, config.horizon, config.episodes, config.seed)
    storage.write_bytes_atomic(storage.join(out, "copy_last_frame.json"), json.dumps(baseline, indent=1).encode())
    return {"results": storage.join(out, "results.json")}


def eval_config(context: PipelineContext, task: Task) -> "EvalConfig":
    """The evaluation of an `eval:MODEL:TEST_SET` task: the preset's settings, each worker on
    --gpus-per-worker GPUs (then its model on cuda)."""
    from world_model.evaluation.config import EvalConfig

    _, model, test_set = task.name.split(":")
    gpus = context.resources.gpus_per_worker
    return EvalConfig(model=context.path(f"models/{model}"), data=context.path(f"data/{test_set}"),
                      show_progress=context.show_progress, gpus_per_worker=gpus, device="cuda" if gpus > 0 else "cpu",
                      **dict(task.config["eval"]))


def write_report(context: PipelineContext, task: Task) -> dict[str, Any]:
    from cluster.pipeline.report import build_report

    paths = build_report(context)
    return {k: str(v) for k, v in paths.items()}
