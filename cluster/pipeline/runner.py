"""Run a plan: skip tasks whose outputs exist with the same key, run the rest in order, record each.

The record of a finished task is `RUN/pipeline/<task>.json` (its name, key, seconds, what it returned, the
resources it ran on), written after the task succeeds; a killed pipeline therefore re-runs only the
unfinished task (which itself resumes) and everything after it. RUN may be a storage URI: records,
outputs and preset.json are read and written through `genie_common.storage` (each write atomic).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.pipeline.context import STATE_DIR, PipelineContext, PipelineResources, PipelineSettings, Task
from cluster.pipeline.plan import build_plan, select
from genie_common import storage
from genie_common.errors import ConfigError

GPU_GROUPS = ("train", "finetune", "eval")  # the tasks --gpus-per-worker places


@dataclass
class TaskOutcome:
    name: str
    status: str  # "ran", "reused"
    seconds: float


def record_path(run: str, name: str) -> str:
    return storage.join(run, STATE_DIR, f"{name.replace(':', '__')}.json")


def read_record(run: str, name: str) -> dict[str, Any] | None:
    """A finished task's record; None when there is none or it is unreadable (the task then runs again)."""
    path = record_path(run, name)
    if not storage.is_file(path):
        return None
    try:
        return json.loads(storage.read_bytes(path))
    except (json.JSONDecodeError, UnicodeDecodeError, storage.StorageError):
        return None


def is_done(context: PipelineContext, task: Task) -> bool:
    record = read_record(context.run, task.name)
    return bool(record and record.get("key") == task.key
                and all(storage.exists(context.path(o)) for o in task.outputs))


def write_record(context: PipelineContext, task: Task, seconds: float, info: dict[str, Any]) -> None:
    # the name's key stays "stage", as before the pipeline's units were called tasks: records already on disk say
    # "stage", and the report reads that key from old and new records alike
    record = {"stage": task.name, "key": task.key, "seconds": seconds, "info": info,
              "resources": context.resources.to_json(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    storage.write_bytes_atomic(record_path(context.run, task.name), json.dumps(record, indent=1, default=str).encode())


def run_location(run: str | Path) -> str:
    """The run folder as every task and worker takes it: a URI as given, a local path made absolute
    (RLlib reads checkpoint paths as URIs, and workers run in other folders)."""
    text = str(run)
    return text.rstrip("/") if storage.is_uri(text) else str(Path(text).expanduser().absolute())


def make_context(run: str | Path, preset: str | None, preset_file: str | None, overrides: list[str],
                 show_progress: bool = True, resources: PipelineResources | None = None) -> PipelineContext:
    from cluster.presets import load_preset

    sections = load_preset(preset, preset_file, overrides)
    settings = PipelineSettings.from_dict(sections.get("pipeline"))
    label = preset_file or preset or "tiny"
    return PipelineContext(run=run_location(run), sections=sections, preset_label=label,
                           preset_name=None if preset_file else (preset or "tiny"), preset_file=preset_file,
                           overrides=[o for o in overrides if o.startswith("world_model.")], settings=settings,
                           show_progress=show_progress, resources=resources or PipelineResources())


def run_pipeline(context: PipelineContext, wanted: list[str] | None = None) -> list[TaskOutcome]:
    """Run (or reuse) the selected tasks; tasks they need must be done already or selected too."""
    plan = build_plan(context)
    chosen = select(plan, wanted)
    chosen_names = {s.name for s in chosen}
    by_name = {s.name: s for s in plan}
    for task in chosen:
        missing = [n for n in task.needs if n not in chosen_names and not is_done(context, by_name[n])]
        if missing:
            raise ConfigError(f"task {task.name} needs {', '.join(missing)}, which have not run with this config; "
                              f"add them to --tasks (or run without --tasks)")
    to_run = [s for s in chosen if not is_done(context, s)]
    check_gpus(context, to_run)
    storage.makedirs(context.path(STATE_DIR))  # fails here, before any task, when RUN cannot be written
    storage.write_bytes_atomic(context.path(f"{STATE_DIR}/preset.json"),
                               json.dumps(context.sections, indent=1, default=str).encode())
    outcomes: list[TaskOutcome] = []
    for task in chosen:
        if is_done(context, task):
            record = read_record(context.run, task.name) or {}
            outcomes.append(TaskOutcome(task.name, "reused", float(record.get("seconds", 0.0))))
            print(f"[pipeline] {task.name}: reused (done earlier with the same "
                  f"config){placement_note(context, task, record)}")
            continue
        set_aside_superseded(context, task)
        print(f"[pipeline] {task.name}: running", flush=True)
        began = time.monotonic()
        info = task.action(context, task)
        seconds = time.monotonic() - began
        write_record(context, task, seconds, info)
        outcomes.append(TaskOutcome(task.name, "ran", seconds))
        print(f"[pipeline] {task.name}: done in {seconds:.0f} s", flush=True)
    return outcomes


def set_aside_superseded(context: PipelineContext, task: Task) -> None:
    """A task that finished under another config (its record's key differs) runs again from scratch: its folder
    (or outputs) is moved to RUN/pipeline/superseded/<task>-<old key>/ first, kept, not deleted, because a training
    task would otherwise find the old run in its folder and refuse to mix the two. An unfinished task (no record)
    keeps its outputs: it resumes, and a trainer refuses one of another config itself, saying what to do."""
    record = read_record(context.run, task.name)
    if not record or record.get("key") == task.key:
        return
    aside = f"{STATE_DIR}/superseded/{task.name.replace(':', '__')}-{record.get('key')}"
    moved = []
    for output in ([task.workspace] if task.workspace else task.outputs):
        if storage.exists(context.path(output)):
            try:
                storage.move(context.path(output), context.path(f"{aside}/{output}"))
            except storage.StorageError as err:
                raise ConfigError(f"task {task.name} ran before with another config and must run again, but its "
                                  f"old output could not be set aside ({err}); remove {context.path(output)} and "
                                  "run the pipeline again") from err
            moved.append(output)
    if moved:
        print(f"[pipeline] {task.name}: its config changed since it ran; its old outputs ({', '.join(moved)}) "
              f"are kept in {context.path(aside)}", flush=True)


def placement_note(context: PipelineContext, task: Task, record: dict[str, Any]) -> str:
    """Why a reused task is not re-run on the GPUs asked for now: said, not silent."""
    before = record.get("resources") or PipelineResources().to_json()  # records from before --gpus-per-worker: CPUs
    now = context.resources.to_json()
    option = "gpus_per_learner" if task.group == "agent" else "gpus_per_worker" if task.group in GPU_GROUPS else None
    if option is None or before.get(option) == now[option]:
        return ""
    flag = "--" + option.replace("_", "-")
    return (f"; it ran with {flag} {_shown(before.get(option))}, not {_shown(now[option])}: "
            f"GPUs change where a task runs, not what it computes")


def _shown(gpus: float | None) -> str:
    return "auto" if gpus is None else f"{gpus:g}"


def check_gpus(context: PipelineContext, tasks: list[Task]) -> None:
    """--gpus-per-worker that the Ray cluster can never provide is refused before the first task, not hours
    later when the first training task asks for it. Only checks: the GPU nodes start when a task asks."""
    gpus = context.resources.gpus_per_worker
    groups = {s.group for s in tasks}
    if not gpus or not groups & set(GPU_GROUPS):
        return
    from rl_agent.capacity import cluster_capacity, format_resources

    workers = max([context.settings.train_workers if groups & {"train", "finetune"} else 0,
                   int(context.settings.eval.get("workers", 2)) if "eval" in groups else 0])
    worker = {"CPU": 1.0, "GPU": float(gpus)}
    capacity = cluster_capacity()
    most = capacity.most().get("GPU", 0.0)
    if not capacity.fits_one_node(worker) or most < gpus * workers:
        raise ConfigError(f"--gpus-per-worker {gpus:g}: {workers} workers x {format_resources(worker)} need "
                          f"{gpus * workers:g} GPUs, and this Ray cluster has or can start {most:g} "
                          f"({capacity.describe_types()}); run on a GPU cluster (`genie submit pipeline ...`, or "
                          f"--address), use fewer workers (pipeline.train_workers, the workers of pipeline.eval), or "
                          f"leave out --gpus-per-worker to run on CPUs")


def format_outcomes(outcomes: list[TaskOutcome]) -> str:
    lines = [f"{'task':32s} {'status':8s} {'seconds':>8s}"]
    for outcome in outcomes:
        lines.append(f"{outcome.name:32s} {outcome.status:8s} {outcome.seconds:8.0f}")
    ran = sum(o.seconds for o in outcomes if o.status == "ran")
    lines.append(f"{len([o for o in outcomes if o.status == 'ran'])} ran ({ran / 60:.1f} min), "
                 f"{len([o for o in outcomes if o.status == 'reused'])} reused")
    return "\n".join(lines)
