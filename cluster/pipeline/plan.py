"""The GenieRedux study as a plan of stages, each with its inputs, outputs and the config that defines it.

    agent ─┬─ data:agent-train ──┬─ tokenizer-ta ── genie-g-ta / genie-ta ─┐
           └─ data:diverse-test  │   lam-ta                                 ├─ eval:* ── report
    data:random-train ─ tokenizer, lam ── genie-g, genie ──────────────────┘
    data:basic-test

A stage's key is a hash of its own config and the keys of the stages it needs, so changing the
agent's settings re-runs the agent, the data it played and everything trained on that data,
while the random-agent branch is reused. Stages are plain functions over a `PipelineContext`.

Where a stage runs (GPUs per training/evaluation worker, the PPO learner's GPUs: `PipelineResources`) is
not part of any key: the same study on GPUs is the same study, so a run started on a laptop may be
continued on a GPU cluster. The run folder may be a storage URI (s3://, gs://, file://...): every stage
reads and writes through `genie_common.storage`, and so do the pipeline's own records.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from genie_common.errors import ConfigError
from rl_agent.ppo_config import PLACEMENT_SETTINGS  # where the PPO learner runs: left out of the agent's key

GROUPS = ("agent", "data", "train", "finetune", "eval", "report")
TEST_SETS = ("basic-test", "diverse-test")
REPORT_VERSION = 2  # bump when the report's content changes: finished studies then rebuild only their report
EVAL_VERSION = 2  # bump when evaluation's numbers change (2: LAM ids read from windows of the LAM's length)

# name in the plan -> (stage, conditioning): the four world-model components of the paper
MODELS = {"tokenizer": ("tokenizer", None), "lam": ("lam", None), "genie-g": ("dynamics", "true"), "genie": ("dynamics", "latent")}
# EvalConfig fields the pipeline sets itself: pipeline.eval may set the others
EVAL_SET_BY_PIPELINE = {"model": "the pipeline", "data": "the pipeline", "show_progress": "--no-progress",
                        "gpus_per_worker": "--gpus-per-worker", "device": "--gpus-per-worker"}


@dataclass(frozen=True)
class PipelineSettings:
    """The `pipeline:` section of a preset file."""

    train_workers: int = 2
    steps: dict[str, int] = field(default_factory=lambda: {"tokenizer": 500, "lam": 300, "dynamics": 500})
    ta_steps: dict[str, int] = field(default_factory=lambda: {"tokenizer": 150, "lam": 100, "dynamics": 200})
    ta: tuple[str, ...] = ("tokenizer", "lam", "genie-g", "genie")  # components fine-tuned on the agent's data
    models: tuple[str, ...] = ("tokenizer", "lam", "genie-g", "genie")  # components trained at all
    # components whose TA stage trains on the random agent's training data too (replay): the paper's TA uses the
    # agent's data alone, and the fine-tuned dynamics then forgets the random agent's states (the Basic test set)
    ta_replay: tuple[str, ...] = ()
    eval: dict[str, Any] = field(default_factory=lambda: {"episodes": 32, "context": 2, "horizon": 10,
                                                           "maskgit_steps": 8, "workers": 2})
    eval_sets: tuple[str, ...] = TEST_SETS
    overrides: tuple[str, ...] = ()  # world_model.* overrides for every training stage

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "PipelineSettings":
        values = dict(values or {})
        known = set(cls.__dataclass_fields__)
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown pipeline field(s) {sorted(unknown)}; known: {sorted(known)}")
        for name in ("ta", "models", "ta_replay", "eval_sets", "overrides"):
            if name in values:
                values[name] = tuple(values[name] or ())
        defaults = cls()
        for name in ("steps", "ta_steps", "eval"):  # tables merge over the defaults: `--set pipeline.eval.workers=1`
            if name in values:                      # changes one field, not the whole table
                if not isinstance(values[name], dict):
                    raise ConfigError(f"pipeline.{name} must be a table of fields, got {values[name]!r}")
                values[name] = {**getattr(defaults, name), **values[name]}
        settings = cls(**values)
        for model in (*settings.models, *settings.ta, *settings.ta_replay):
            if model not in MODELS:
                raise ConfigError(f"unknown pipeline model {model!r}; known: {', '.join(MODELS)}")
        if set(settings.ta_replay) - set(settings.ta):
            raise ConfigError(f"pipeline.ta_replay names {sorted(set(settings.ta_replay) - set(settings.ta))}, which "
                              f"pipeline.ta does not fine-tune; replay applies to TA stages only")
        for test_set in settings.eval_sets:
            if test_set not in TEST_SETS:
                raise ConfigError(f"unknown test set {test_set!r}; known: {', '.join(TEST_SETS)}")
        for name, table in (("steps", settings.steps), ("ta_steps", settings.ta_steps)):
            unknown = set(table) - {"tokenizer", "lam", "dynamics", *MODELS}
            if unknown:
                raise ConfigError(f"pipeline.{name} names {sorted(unknown)}; use a stage (tokenizer, lam, dynamics) "
                                  f"or a model ({', '.join(MODELS)})")
        if "genie" in settings.models and "lam" not in settings.models:
            raise ConfigError("the GenieRedux model ('genie') needs the LAM ('lam') in pipeline.models")
        _check_eval_fields(settings.eval)
        return settings


def _check_eval_fields(values: dict[str, Any]) -> None:
    """pipeline.eval holds EvalConfig fields; refused here, not as a TypeError hours later in the first evaluation."""
    from world_model.evaluation.config import EvalConfig

    for name in values:
        if name in EVAL_SET_BY_PIPELINE:
            raise ConfigError(f"pipeline.eval.{name} is set by {EVAL_SET_BY_PIPELINE[name]}, not in the preset; "
                              f"remove it (e.g. `genie pipeline --gpus-per-worker 1` puts each evaluation worker on a GPU)")
        if name not in EvalConfig.__dataclass_fields__:
            known = sorted(set(EvalConfig.__dataclass_fields__) - set(EVAL_SET_BY_PIPELINE))
            raise ConfigError(f"unknown pipeline.eval field {name!r}; known: {', '.join(known)}")


@dataclass(frozen=True)
class PipelineResources:
    """Where the stages run, from `genie pipeline`'s options; never part of a stage's key (see the module doc).

    Recorded in each stage's record, so a reused stage that ran on other resources says so.
    """

    gpus_per_worker: float = 0.0  # each world-model training worker and each evaluation worker
    gpus_per_learner: float | None = None  # the PPO learner; None = the preset's, else 1 when the cluster has a GPU

    def __post_init__(self) -> None:
        if self.gpus_per_worker < 0 or (self.gpus_per_learner or 0) < 0:
            raise ConfigError("--gpus-per-worker and --gpus-per-learner must be >= 0")

    def to_json(self) -> dict[str, Any]:
        return {"gpus_per_worker": self.gpus_per_worker, "gpus_per_learner": self.gpus_per_learner}


@dataclass
class Stage:
    name: str
    group: str
    needs: list[str]
    outputs: list[str]  # paths relative to the run folder that must exist for the stage to count as done
    config: dict[str, Any]  # what defines the stage's result
    action: Callable[["PipelineContext", "Stage"], dict[str, Any]]
    key: str = ""


@dataclass
class PipelineContext:
    run: str  # the run folder: an absolute local path or a storage URI (s3://..., file://...)
    sections: dict[str, Any]  # the whole preset (agent, data, world_model, pipeline)
    preset_label: str
    preset_name: str | None
    preset_file: str | None
    overrides: list[str]
    settings: PipelineSettings
    show_progress: bool = True
    resources: PipelineResources = field(default_factory=PipelineResources)

    def path(self, relative: str) -> str:
        """`relative` below the run folder, as a path or URI the storage layer (and every stage) takes."""
        from genie_common import storage

        return storage.join(self.run, relative)


def stage_key(config: dict[str, Any], upstream: list[str]) -> str:
    text = json.dumps({"config": config, "upstream": upstream}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def ta_datasets(name: str, settings: PipelineSettings) -> list[str]:
    """The data stages a component's TA stage trains on: the agent's, plus the random agent's with replay."""
    return ["data:agent-train", *(["data:random-train"] if name in settings.ta_replay else [])]


def model_dir(name: str, ta: bool) -> str:
    return f"models/{name}{'-ta' if ta else ''}"


def build_plan(context: PipelineContext) -> list[Stage]:
    """Every stage of the study in dependency order, keys filled in."""
    from cluster.pipeline import actions

    s, sections = context.settings, context.sections
    data = sections.get("data", {})
    agent = {k: v for k, v in sections.get("agent", {}).items() if k not in PLACEMENT_SETTINGS}
    stages: list[Stage] = [Stage("agent", "agent", [], ["agent/curve.csv"], {"agent": agent}, actions.train_agent)]
    for name, needs_agent in (("random-train", False), ("basic-test", False), ("agent-train", True), ("diverse-test", True)):
        stages.append(Stage(f"data:{name}", "data", ["agent"] if needs_agent else [], [f"data/{name}/manifest.json"],
                            {"data": data, "name": name}, actions.make_dataset))
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
            config = {"world_model": world, "stage": stage, "conditioning": conditioning, "steps": steps,
                      "overrides": list(s.overrides), "workers": s.train_workers}
            stages.append(Stage(model_dir(name, ta).split("/")[1], "finetune" if ta else "train", needs,
                                [f"{model_dir(name, ta)}/latest.pt"], config, actions.train_model))
    trained = [st.name for st in stages if st.group in ("train", "finetune")]
    for model in trained:
        for test_set in s.eval_sets:
            stages.append(Stage(f"eval:{model}:{test_set}", "eval", [model, f"data:{test_set}"],
                                [f"eval/{model}/{test_set}/results.json"], {"eval": s.eval, "version": EVAL_VERSION},
                                actions.evaluate_model))
    evals = [st.name for st in stages if st.group == "eval"]
    stages.append(Stage("report", "report", [*[st.name for st in stages if st.group in ("agent", "data")], *trained, *evals],
                        ["report.md", "report.html"], {"version": REPORT_VERSION}, actions.write_report))
    keys: dict[str, str] = {}
    for stage in stages:
        stage.key = stage_key(stage.config, [keys[n] for n in stage.needs])
        keys[stage.name] = stage.key
    return stages


def select(stages: list[Stage], wanted: list[str] | None) -> list[Stage]:
    """The stages named (by name, name prefix such as 'eval', or group) in plan order; all when None."""
    if not wanted:
        return stages
    chosen = []
    for stage in stages:
        if any(w == stage.name or w == stage.group or stage.name.startswith(f"{w}:") for w in wanted):
            chosen.append(stage)
    unknown = [w for w in wanted if not any(w == st.name or w == st.group or st.name.startswith(f"{w}:") for st in stages)]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; stages: {', '.join(st.name for st in stages)}; "
                          f"groups: {', '.join(GROUPS)}")
    return chosen
