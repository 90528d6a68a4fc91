"""What every pipeline module shares: the `pipeline:` settings, the resources, a task and the run's context.

The plan (`plan`), the task actions (`actions`), the runner (`runner`) and the report (`report`) all read these;
this module imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from genie_common.config import check_known_fields, option
from genie_common.errors import ConfigError

STATE_DIR = "pipeline"  # the pipeline's own records inside the run folder (one per task, and preset.json)
GROUPS = ("agent", "data", "train", "finetune", "eval", "report")
TEST_SETS = ("basic-test", "diverse-test")
REPORT_VERSION = 2  # bump when the report's content changes: finished studies then rebuild only their report
EVAL_VERSION = 2  # bump when evaluation's numbers change (2: LAM ids read from windows of the LAM's length)

# name in the plan -> (stage, conditioning in DynamicsConfig's words): the four world-model components of the paper
MODELS = {"tokenizer": ("tokenizer", None), "lam": ("lam", None), "genie-g": ("dynamics", "ground_truth"),
          "genie": ("dynamics", "latent")}
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
    # components whose TA task trains on the random agent's training data too (replay): the paper's TA uses the
    # agent's data alone, and the fine-tuned dynamics then forgets the random agent's states (the Basic test set)
    ta_replay: tuple[str, ...] = ()
    # the random agent's share of each batch of a replaying TA task; None: in proportion to the two sets' windows
    # (tiny's: the agent's 5.7k frames against the random agent's 41k, so 12% of the windows are the agent's)
    ta_replay_share: float | None = None
    eval: dict[str, Any] = field(default_factory=lambda: {"episodes": 32, "context": 2, "horizon": 10,
                                                           "maskgit_steps": 8, "workers": 2})
    eval_sets: tuple[str, ...] = TEST_SETS
    overrides: tuple[str, ...] = ()  # world_model.* overrides for every training task

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "PipelineSettings":
        values = dict(values or {})
        check_known_fields(cls, values, "pipeline field")
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
        share = settings.ta_replay_share
        if share is not None and (isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1):
            raise ConfigError(f"pipeline.ta_replay_share must be a number between 0 and 1 (the random agent's share of "
                              f"each replaying TA batch) or null (in proportion to the windows), got {share!r}")
        if set(settings.ta_replay) - set(settings.ta):
            raise ConfigError(f"pipeline.ta_replay names {sorted(set(settings.ta_replay) - set(settings.ta))}, which "
                              f"pipeline.ta does not fine-tune; replay applies to TA tasks only")
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
                              "remove it (e.g. `genie pipeline --gpus-per-worker 1` puts each evaluation "
                              "worker on a GPU)")
        if name not in EvalConfig.__dataclass_fields__:
            known = sorted(set(EvalConfig.__dataclass_fields__) - set(EVAL_SET_BY_PIPELINE))
            raise ConfigError(f"unknown pipeline.eval field {name!r}; known: {', '.join(known)}")


@dataclass(frozen=True)
class PipelineResources:
    """Where the tasks run, from `genie pipeline`'s options (its fields are those options); never part of a task's
    key (see the module doc).

    Recorded in each task's record, so a reused task that ran on other resources says so.
    """

    # each world-model training worker and each evaluation worker
    gpus_per_worker: float = option(0.0, help="GPUs of each world-model training worker (pipeline.train_workers of "
                                              "them per training task) and of each evaluation worker, whose model "
                                              "then runs on cuda; fractions share a GPU (0.5). Default 0: CPUs. "
                                              "Refused up front when the Ray cluster can never provide them",
                                    range="non_negative")
    # the PPO learner; None = the preset's, else 1 when the cluster has a GPU
    gpus_per_learner: float | None = option(None, help="GPUs of the PPO learner (agent task); 0 = learn on CPUs in "
                                                       "the driver. Default: the preset's num_gpus_per_learner, else 1 "
                                                       "when the cluster has or can start a GPU",
                                            range="non_negative")

    def __post_init__(self) -> None:
        if self.gpus_per_worker < 0 or (self.gpus_per_learner or 0) < 0:
            raise ConfigError("--gpus-per-worker and --gpus-per-learner must be >= 0")

    def to_json(self) -> dict[str, Any]:
        return {"gpus_per_worker": self.gpus_per_worker, "gpus_per_learner": self.gpus_per_learner}


@dataclass
class Task:
    """One unit of `genie pipeline`'s plan (the agent, a dataset, a model trained or fine-tuned, an evaluation,
    the report): what it needs, makes and is defined by. Not a world-model stage: see docs/design.md, 'Glossary'."""

    name: str
    group: str
    needs: list[str]
    outputs: list[str]  # paths relative to the run folder that must exist for the task to count as done
    config: dict[str, Any]  # what defines the task's result
    action: Callable[["PipelineContext", "Task"], dict[str, Any]]
    key: str = ""
    # the folder the task writes into (relative to the run folder; None: only its outputs), set aside whole when
    # the task must run again under another config (runner.set_aside_superseded)
    workspace: str | None = None


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
        """`relative` below the run folder, as a path or URI the storage layer (and every task) takes."""
        from genie_common import storage

        return storage.join(self.run, relative)
