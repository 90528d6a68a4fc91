"""The GenieRedux study as a plan of tasks, each with its inputs, outputs and the config that defines it.

    agent ─┬─ data:agent-train ──┬─ tokenizer-ta ── genie-g-ta / genie-ta ─┐
           └─ data:diverse-test  │   lam-ta                                 ├─ eval:* ── report
    data:random-train ─ tokenizer, lam ── genie-g, genie ──────────────────┘
    data:basic-test

A task's key is a hash of its own config and the keys of the tasks it needs, so changing the
agent's settings re-runs the agent, the data it played and everything trained on that data,
while the random-agent branch is reused. Tasks run plain functions over a `PipelineContext` (`actions`).

Where a task runs (GPUs per training/evaluation worker, the PPO learner's GPUs: `PipelineResources`) is
not part of any key: the same study on GPUs is the same study, so a run started on a laptop may be
continued on a GPU cluster. The run folder may be a storage URI (s3://, gs://, file://...): every task
reads and writes through `genie_common.storage`, and so do the pipeline's own records.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cluster.pipeline import actions
from cluster.pipeline.context import (EVAL_SET_BY_PIPELINE, EVAL_VERSION, GROUPS, MODELS, REPORT_VERSION, TEST_SETS,
                                      PipelineContext, PipelineResources, PipelineSettings, Task)
from genie_common.errors import ConfigError
from rl_agent.named_datasets import dataset_data_fields
from rl_agent.ppo_config import PLACEMENT_SETTINGS  # where the PPO learner runs: left out of the agent's key
from world_model.training.job import recorded_actions

__all__ = ["EVAL_SET_BY_PIPELINE", "EVAL_VERSION", "GROUPS", "MODELS", "REPORT_VERSION", "TEST_SETS",  # re-exported
           "PipelineContext", "PipelineResources", "PipelineSettings", "Task", "build_plan", "model_dir", "select",
           "task_key", "ta_datasets"]


def task_key(config: dict[str, Any], upstream: list[str]) -> str:
    text = json.dumps({"config": config, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ta_datasets(name: str, settings: PipelineSettings) -> list[str]:
    """The data tasks a component's TA task trains on: the agent's, plus the random agent's with replay."""
    return ["data:agent-train", *(["data:random-train"] if name in settings.ta_replay else [])]


def model_dir(name: str, ta: bool) -> str:
    return f"models/{name}{'-ta' if ta else ''}"


def build_plan(context: PipelineContext) -> list[Task]:
    """Every task of the study in dependency order, keys filled in."""
    s, sections = context.settings, context.sections
    data = sections.get("data", {})
    agent = {k: v for k, v in sections.get("agent", {}).items() if k not in PLACEMENT_SETTINGS}
    tasks: list[Task] = [Task("agent", "agent", [], ["agent/curve.csv"], {"agent": agent}, actions.train_agent,
                               workspace="agent")]
    for name, needs_agent in (("random-train", False), ("basic-test", False), ("agent-train", True),
                              ("diverse-test", True)):
        tasks.append(Task(f"data:{name}", "data", ["agent"] if needs_agent else [], [f"data/{name}/manifest.json"],
                          {"data": dataset_data_fields(name, data), "name": name}, actions.make_dataset,
                          workspace=f"data/{name}"))
    world = {k: v for k, v in sections.get("world_model", {}).items()}
    for ta in (False, True):
        for name in s.models:
            if ta and name not in s.ta:
                continue
            stage, conditioning = MODELS[name]
            needs = ta_datasets(name, s) if ta else ["data:random-train"]
            if ta:
                needs.append(model_dir(name, False).split("/")[1])
            if stage == "dynamics":
                needs.append("tokenizer-ta" if ta and "tokenizer" in s.ta else "tokenizer")
                if conditioning == "latent":
                    needs.append("lam-ta" if ta and "lam" in s.ta else "lam")
            table = s.ta_steps if ta else s.steps
            steps = table.get(name, table[stage])  # a model's own entry (e.g. genie) over its stage's
            # the conditioning as records say it ('true' for ground_truth): the keys of recorded tasks stay the same
            config = {"world_model": world, "stage": stage, "conditioning": recorded_actions(conditioning),
                      "steps": steps, "overrides": list(s.overrides), "workers": s.train_workers}
            if ta and name in s.ta_replay and s.ta_replay_share is not None:  # absent when unset: older keys stay
                config["replay_share"] = s.ta_replay_share
            tasks.append(Task(model_dir(name, ta).split("/")[1], "finetune" if ta else "train", needs,
                              [f"{model_dir(name, ta)}/latest.pt"], config, actions.train_model,
                              workspace=model_dir(name, ta)))
    trained = [t.name for t in tasks if t.group in ("train", "finetune")]
    for model in trained:
        for test_set in s.eval_sets:
            tasks.append(Task(f"eval:{model}:{test_set}", "eval", [model, f"data:{test_set}"],
                              [f"eval/{model}/{test_set}/results.json"], {"eval": s.eval, "version": EVAL_VERSION},
                              actions.evaluate_model, workspace=f"eval/{model}/{test_set}"))
    evals = [t.name for t in tasks if t.group == "eval"]
    tasks.append(Task("report", "report",
                      [*[t.name for t in tasks if t.group in ("agent", "data")], *trained, *evals],
                      ["report.md", "report.html"], {"version": REPORT_VERSION}, actions.write_report))
    keys: dict[str, str] = {}
    for task in tasks:
        task.key = task_key(task.config, [keys[n] for n in task.needs])
        keys[task.name] = task.key
    return tasks


def select(tasks: list[Task], wanted: list[str] | None) -> list[Task]:
    """The tasks named (by name, name prefix such as 'eval', or group) in plan order; all when None."""
    if not wanted:
        return tasks
    chosen = []
    for task in tasks:
        if any(w == task.name or w == task.group or task.name.startswith(f"{w}:") for w in wanted):
            chosen.append(task)
    unknown = [w for w in wanted
               if not any(w == t.name or w == t.group or t.name.startswith(f"{w}:") for t in tasks)]
    if unknown:
        raise ConfigError(f"unknown task(s) {unknown}; tasks: {', '.join(t.name for t in tasks)}; "
                          f"groups: {', '.join(GROUPS)}")
    return chosen
