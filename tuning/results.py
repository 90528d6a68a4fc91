"""What a sweep leaves behind: the trial table (CSV + Markdown), the best config as a preset file,
and a scaling plot (validation metric vs parameters and vs compute), as in Genie's scaling study.

Everything is read back from Tune's results (each trial's reported validations, with its run folder),
so a resumed sweep's table covers the trials of every run of the command, not only the last one, and
nothing is read from a trial's node. The files are made in a local temporary folder and then written
to the sweep folder through `genie_common.storage`, so the sweep folder may be a storage URI.
"""

from __future__ import annotations

import csv
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from genie_common import storage
from genie_common.atomic import atomic_path
from tuning.space import TrialSpec
from tuning.trials import RUN_KEY, SweepConfig, trial_job
from world_model.config import load_preset, load_preset_sections

TABLE_CSV = "results.csv"
TABLE_MD = "results.md"
BEST_PRESET = "best_preset.yaml"
PLOT = "scaling.png"
COLUMNS = ["trial", "preset", "config", "parameters", "steps", "best_metric", "best_step", "final_metric",
           "frames_per_s", "wall_s", "compute_at_best", "status", "run"]


def trial_rows(sweep: SweepConfig, trials: list[TrialSpec], grid) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """One row per trial (sorted best first) and each trial's reported history (a DataFrame or None)."""
    by_index = {spec.index: spec for spec in trials}
    key, better = sweep.metric_key, (min if sweep.mode == "min" else max)
    rows, histories = [], {}
    seen = set()
    for result in grid:
        spec = by_index.get(int(result.config["trial"]["index"]))
        if spec is None:
            continue
        seen.add(spec.index)
        history = result.metrics_dataframe
        histories[spec.index] = history if history is not None and key in getattr(history, "columns", []) else None
        job = trial_job(sweep, spec)
        total = job.total_steps()
        last = result.metrics or {}
        row = _base_row(spec, job)
        if histories[spec.index] is not None:
            frame = histories[spec.index].dropna(subset=[key])
            values = frame[key].tolist()
            best_at = values.index(better(values))
            best_row = frame.iloc[best_at]
            row.update(best_metric=float(best_row[key]), best_step=int(best_row["step"]),
                       compute_at_best=float(best_row["compute"]), final_metric=float(values[-1]),
                       steps=int(frame["step"].max()))
        row["run"] = last.get(RUN_KEY) or row["run"]  # where the trial trained, as it reported it
        row["frames_per_s"] = round(float(last.get("frames_per_s", 0.0)), 1)
        row["wall_s"] = round(float(last.get("wall_s", 0.0)), 1)
        if result.error is not None:
            row["status"] = f"error: {trial_error_message(result.error)[:300]}"
        elif row["steps"] == "":
            row["status"] = "no result"
        elif int(row["steps"]) < total:
            row["status"] = f"stopped early ({sweep.scheduler})"
        else:
            row["status"] = "finished"
        rows.append(row)
    for spec in trials:
        if spec.index not in seen:
            rows.append({**_base_row(spec, trial_job(sweep, spec)), "status": "not run"})
    ranked = [r for r in rows if r["best_metric"] != ""]
    ranked.sort(key=lambda r: r["best_metric"], reverse=sweep.mode == "max")
    return ranked + [r for r in rows if r["best_metric"] == ""], histories


def trial_error_message(error: BaseException) -> str:
    """What went wrong in a trial, in one line: the trial's own exception, not Ray's wrapper around it (whose first
    line is only `ray::ImplicitFunc.train() (pid=...)`)."""
    cause = error
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:  # RayTaskError wraps the real one
        cause = cause.cause
    text = str(cause.args[0]) if isinstance(cause, BaseException) and cause.args and isinstance(cause.args[0], str) \
        else str(cause)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return type(cause).__name__
    return lines[0] if cause is not error else lines[-1]  # a wrapper's text ends with the cause's "Type: message"


def _base_row(spec: TrialSpec, job) -> dict[str, Any]:
    row = {column: "" for column in COLUMNS}
    config = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec.values.items())
    row.update(trial=spec.name, preset=Path(spec.preset).stem if spec.preset_file else spec.preset,
               config=config or "-", parameters=spec.params, run=job.out)
    return row


def write_results(sweep: SweepConfig, trials: list[TrialSpec], grid) -> dict[str, Any]:
    """Write the table, best preset and plot into the sweep folder (a path or a storage URI); their locations."""
    out = sweep.out
    rows, histories = trial_rows(sweep, trials, grid)
    with tempfile.TemporaryDirectory(prefix="genie-sweep-") as folder:
        local = Path(folder)
        with open(local / TABLE_CSV, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        (local / TABLE_MD).write_text(markdown_table(sweep, rows))
        best = next((r for r in rows if r["best_metric"] != "" and not str(r["status"]).startswith("error")), None)
        summary = None
        written = [TABLE_CSV, TABLE_MD]
        if best is not None:
            spec = next(s for s in trials if s.name == best["trial"])
            write_best_preset(sweep, spec, best, local / BEST_PRESET, storage.join(out, BEST_PRESET))
            written.append(BEST_PRESET)
            summary = {"trial": best["trial"], "config": f"preset={best['preset']} {best['config']}",
                       "metric": sweep.metric_key, "value": best["best_metric"], "step": best["best_step"]}
        if scaling_plot(sweep, trials, rows, histories, local / PLOT) is not None:
            written.append(PLOT)
        for name in written:  # each one atomically under its final name (a reader never sees half a table)
            storage.upload_file(local / name, storage.join(out, name))
    errors = [f"{r['trial']}: {str(r['status'])[len('error: '):]}"
              for r in rows if str(r["status"]).startswith("error")]
    return {"table_csv": storage.join(out, TABLE_CSV), "table_md": storage.join(out, TABLE_MD), "errors": errors,
            "best_preset": storage.join(out, BEST_PRESET) if BEST_PRESET in written else None,
            "plot": storage.join(out, PLOT) if PLOT in written else None, "best": summary}


def markdown_table(sweep: SweepConfig, rows: list[dict[str, Any]]) -> str:
    metric = sweep.metric_key
    header = ["trial", "preset", "config", "parameters", "steps", f"best {metric}", "at step", "frames/s", "wall s",
              "status"]
    lines = [f"# Sweep of {sweep.stage} ({len(rows)} trials, scheduler {sweep.scheduler}, best {metric} "
             f"{'lowest' if sweep.mode == 'min' else 'highest'} first)", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        value = f"{r['best_metric']:.4f}" if r["best_metric"] != "" else "-"
        lines.append("| " + " | ".join(str(x) for x in (
            r["trial"], r["preset"], r["config"], f"{int(r['parameters']):,}", r["steps"] or "-", value,
            r["best_step"] if r["best_step"] != "" else "-", r["frames_per_s"] or "-", r["wall_s"] or "-",
            r["status"])) + " |")
    return "\n".join(lines) + "\n"


def write_best_preset(sweep: SweepConfig, spec: TrialSpec, row: dict[str, Any], path: Path,
                      final: str | None = None) -> Path:
    """The winning trial's full preset (base file + --set + its values) as a file `genie train --preset-file` takes,
    written at the local `path`; `final` is where it will be uploaded (named in its header), default `path`."""
    name, file = (None, spec.preset) if spec.preset_file else (spec.preset, None)
    sections = load_preset_sections(name, file, [*sweep.overrides, *spec.overrides])
    final = final or str(path)
    train_with = Path(final).name if storage.is_uri(final) else final  # --preset-file reads a local copy
    header = (f"# Best trial of the {sweep.stage} sweep in {sweep.out} ({time.strftime('%Y-%m-%d %H:%M')}):\n"
              f"#   {spec.name}: preset {row['preset']}, {row['config']}\n"
              f"#   best {sweep.metric_key} {row['best_metric']:.4f} at step {row['best_step']} of a "
              f"{row['steps']}-step trial; {int(row['parameters']):,} parameters.\n"
              f"# optim.total_steps is the base preset's: the trials ran --budget-steps. Train it with\n"
              f"#   genie train {sweep.stage} --preset-file {train_with} --data ... --out ...\n"
              + (f"# after copying {final} to this machine.\n" if train_with != final else ""))
    with atomic_path(path) as tmp:
        tmp.write_text(header + yaml.safe_dump(sections, sort_keys=False, default_flow_style=None))
        load_preset(None, str(tmp))  # what we write must load
    return path


def scaling_plot(sweep: SweepConfig, trials: list[TrialSpec], rows: list[dict[str, Any]], histories: dict[int, Any],
                 path: Path) -> str | None:
    """Best validation metric vs parameters, and validation curves vs compute (params x frames seen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = sweep.metric_key
    plotted = [r for r in rows if r["best_metric"] != ""]
    if not plotted:
        return None
    presets = sorted({r["preset"] for r in rows})
    colours = {p: plt.cm.tab10(i % 10) for i, p in enumerate(presets)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for r in plotted:
        marker = "o" if r["status"] == "finished" else "x"
        left.scatter(r["parameters"], r["best_metric"], color=colours[r["preset"]], marker=marker, s=50)
        left.annotate(r["trial"].replace("trial-", "#"), (r["parameters"], r["best_metric"]), fontsize=7,
                      xytext=(3, 3), textcoords="offset points")
    by_name = {s.name: s for s in trials}
    for r in plotted:
        history = histories.get(by_name[r["trial"]].index)
        if history is None:
            continue
        frame = history.dropna(subset=[key])
        frame = frame[frame["compute"] > 0]
        if len(frame):
            right.plot(frame["compute"], frame[key], color=colours[r["preset"]], alpha=0.6, lw=1)
            right.scatter([r["compute_at_best"]], [r["best_metric"]], color=colours[r["preset"]], s=20)
    for axis, label in ((left, "parameters"), (right, "compute = parameters x frames seen")):
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel(f"{key} ({'best' if axis is left else 'per validation'})")
        axis.grid(alpha=0.3, which="both")
    if key.endswith("loss") and all(r["best_metric"] > 0 for r in plotted):
        left.set_yscale("log")
        right.set_yscale("log")
    handles = [plt.Line2D([], [], color=colours[p], marker="o", ls="", label=p) for p in presets]
    handles.append(plt.Line2D([], [], color="grey", marker="x", ls="", label=f"stopped early ({sweep.scheduler})"))
    left.legend(handles=handles, fontsize=8)
    left.set_title(f"{sweep.stage}: best {key} vs model size")
    right.set_title(f"{sweep.stage}: {key} vs compute")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


