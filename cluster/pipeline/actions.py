"""What each pipeline stage does: thin calls into the same functions the single commands use.

Each action is itself resumable (PPO resumes from its last checkpoint, collection completes
missing shards, training resumes from Ray Train's latest checkpoint), so a pipeline killed in the
middle of a stage loses at most the work since that stage's last checkpoint.
"""

from __future__ import annotations

import json
from typing import Any

from cluster.pipeline.plan import MODELS, PipelineContext, Stage


def train_agent(context: PipelineContext, stage: Stage) -> dict[str, Any]:
    from rl_agent.agent_eval import evaluate_agent
    from rl_agent.ppo_config import PPOSettings
    from rl_agent.ppo_training import train_agent as train

    settings = PPOSettings.from_dict(dict(context.sections.get("agent", {})))
    reference = evaluate_agent("random", 64, seed=12345, env=settings.env).returns.mean()
    summary = train(settings, context.path("agent"), show_progress=context.show_progress, random_reference=float(reference))
    return {"env_steps": summary.env_steps, "iterations": summary.iterations, "last_return": summary.last_return,
            "random_reference_return": float(reference)}


def make_dataset(context: PipelineContext, stage: Stage) -> dict[str, Any]:
    from rl_agent.collection import CollectConfig, collect_dataset
    from rl_agent.named_datasets import dataset_config, named_dataset
    from rl_agent.store.stats import compute_stats

    name = stage.config["name"]
    data = context.sections.get("data", {})
    spec = named_dataset(name)
    base = CollectConfig(workers=int(data.get("workers", 2)), episodes_per_shard=int(data.get("episodes_per_shard", 128)))
    checkpoint = str(context.path("agent")) if spec.agent == "ppo" else None
    config = dataset_config(name, int(data.get(spec.preset_count) or 1), checkpoint, base)
    out = context.path(f"data/{name}")
    collect_dataset(config, out, show_progress=context.show_progress)
    stats = compute_stats(out, progress_episodes=int(data.get("progress_episodes", 200)))
    return {"episodes": stats.episodes, "frames": stats.frames}


def train_model(context: PipelineContext, stage: Stage) -> dict[str, Any]:
    from world_model.training.job import TrainJob
    from world_model.training.trainer import run_training

    name, ta = stage.name.removesuffix("-ta"), stage.name.endswith("-ta")
    stage_name, conditioning = MODELS[name]
    settings = context.settings
    inputs: dict[str, Any] = {}
    for need in stage.needs:
        if need.startswith("tokenizer") and stage_name == "dynamics":
            inputs["tokenizer"] = str(context.path(f"models/{need}"))
        elif need.startswith("lam") and stage_name == "dynamics":
            inputs["lam"] = str(context.path(f"models/{need}"))
    if ta:
        inputs["init"] = str(context.path(f"models/{name}"))
    job = TrainJob(
        stage=stage_name,
        data=[str(context.path("data/agent-train" if ta else "data/random-train"))],
        out=str(context.path(f"models/{stage.name}")),
        preset=context.preset_name or "tiny",
        preset_file=context.preset_file,
        overrides=[*context.overrides, *settings.overrides],
        workers=settings.train_workers,
        steps=stage.config["steps"],
        actions=conditioning or "true",
        **inputs,
    )
    result = run_training(job, show_progress=context.show_progress)
    print(result.summary())
    return {"first_val": result.first_val, "last_val": result.last_val, "frames_per_s": result.frames_per_s,
            "steps": result.steps}


def evaluate_model(context: PipelineContext, stage: Stage) -> dict[str, Any]:
    from world_model.evaluation.config import EvalConfig
    from world_model.evaluation.runner import copy_last_frame_baseline, evaluate

    _, model, test_set = stage.name.split(":")
    settings = dict(stage.config["eval"])
    config = EvalConfig(model=str(context.path(f"models/{model}")), data=str(context.path(f"data/{test_set}")),
                        show_progress=context.show_progress, **settings)
    out = context.path(f"eval/{model}/{test_set}")
    results = evaluate(config, out)
    baseline = copy_last_frame_baseline(config.data, config.context, config.horizon, config.episodes, config.seed)
    (out / "copy_last_frame.json").write_text(json.dumps(baseline, indent=1))
    return {"results": str(out / "results.json")}


def write_report(context: PipelineContext, stage: Stage) -> dict[str, Any]:
    from cluster.pipeline.report import build_report

    paths = build_report(context)
    return {k: str(v) for k, v in paths.items()}
