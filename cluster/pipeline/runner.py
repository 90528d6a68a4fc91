"""Run a plan: skip stages whose outputs exist with the same key, run the rest in order, record each.

The record of a finished stage is `RUN/pipeline/<stage>.json` (its key, seconds, what it returned),
written after the stage succeeds; a killed pipeline therefore re-runs only the unfinished stage
(which itself resumes) and everything after it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rl_agent.coinrun_env import ConfigError
from cluster.pipeline.plan import PipelineContext, PipelineSettings, Stage, build_plan, select

STATE_DIR = "pipeline"


@dataclass
class StageOutcome:
    name: str
    status: str  # "ran", "reused"
    seconds: float


def record_path(run: Path, name: str) -> Path:
    return run / STATE_DIR / f"{name.replace(':', '__')}.json"


def read_record(run: Path, name: str) -> dict[str, Any] | None:
    path = record_path(run, name)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def is_done(context: PipelineContext, stage: Stage) -> bool:
    record = read_record(context.run, stage.name)
    return bool(record and record.get("key") == stage.key and all(context.path(o).exists() for o in stage.outputs))


def write_record(context: PipelineContext, stage: Stage, seconds: float, info: dict[str, Any]) -> None:
    path = record_path(context.run, stage.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps({"stage": stage.name, "key": stage.key, "seconds": seconds, "info": info,
                                "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1, default=str))
    os.replace(temp, path)


def make_context(run: Path, preset: str | None, preset_file: str | None, overrides: list[str],
                 show_progress: bool = True) -> PipelineContext:
    from cluster.presets import load_preset

    sections = load_preset(preset, preset_file, overrides)
    settings = PipelineSettings.from_dict(sections.get("pipeline"))
    label = preset_file or preset or "tiny"
    return PipelineContext(run=Path(run).absolute(), sections=sections, preset_label=label, preset_name=None if preset_file else (preset or "tiny"),
                           preset_file=preset_file, overrides=[o for o in overrides if o.startswith("world_model.")],
                           settings=settings, show_progress=show_progress)


def run_pipeline(context: PipelineContext, wanted: list[str] | None = None) -> list[StageOutcome]:
    """Run (or reuse) the selected stages; stages they need must be done already or selected too."""
    plan = build_plan(context)
    chosen = select(plan, wanted)
    chosen_names = {s.name for s in chosen}
    by_name = {s.name: s for s in plan}
    context.run.mkdir(parents=True, exist_ok=True)
    (context.run / STATE_DIR).mkdir(exist_ok=True)
    (context.run / STATE_DIR / "preset.json").write_text(json.dumps(context.sections, indent=1, default=str))
    outcomes: list[StageOutcome] = []
    for stage in chosen:
        missing = [n for n in stage.needs if n not in chosen_names and not is_done(context, by_name[n])]
        if missing:
            raise ConfigError(f"stage {stage.name} needs {', '.join(missing)}, which have not run with this config; "
                              f"add them to --stages (or run without --stages)")
        if is_done(context, stage):
            record = read_record(context.run, stage.name)
            outcomes.append(StageOutcome(stage.name, "reused", float(record.get("seconds", 0.0))))
            print(f"[pipeline] {stage.name}: reused (done earlier with the same config)")
            continue
        print(f"[pipeline] {stage.name}: running", flush=True)
        began = time.monotonic()
        info = stage.action(context, stage)
        seconds = time.monotonic() - began
        write_record(context, stage, seconds, info)
        outcomes.append(StageOutcome(stage.name, "ran", seconds))
        print(f"[pipeline] {stage.name}: done in {seconds:.0f} s", flush=True)
    return outcomes


def format_outcomes(outcomes: list[StageOutcome]) -> str:
    lines = [f"{'stage':32s} {'status':8s} {'seconds':>8s}"]
    for outcome in outcomes:
        lines.append(f"{outcome.name:32s} {outcome.status:8s} {outcome.seconds:8.0f}")
    ran = sum(o.seconds for o in outcomes if o.status == "ran")
    lines.append(f"{len([o for o in outcomes if o.status == 'ran'])} ran ({ran / 60:.1f} min), "
                 f"{len([o for o in outcomes if o.status == 'reused'])} reused")
    return "\n".join(lines)
