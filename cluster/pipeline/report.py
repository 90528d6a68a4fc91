"""`RUN/report.md` and a self-contained `RUN/report.html` (images inlined) for a pipeline run.

The report states every number with its scale (preset, steps, episodes, context, horizon, MaskGIT
steps), the quality bars of the `tiny` study with pass/fail, and where each figure came from: what it says is
`report_content` (its bars `report_bars`), its figures `report_figures`, the HTML page `report_html`. This module
puts them together where the run is.

Everything here reads and writes a local folder (matplotlib, PIL and the dataset readers need one). For a
run at a storage URI, `build_report` first mirrors what the report reads into a temporary folder (records,
evaluations, training curves; datasets through their per-node mirror), builds the report there and uploads
it: the figures first, report.md and report.html last, each file atomically.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from cluster.pipeline.context import STATE_DIR, PipelineContext
from cluster.pipeline.report_bars import (DELTA_VERSIONS, FORKED_FUTURE_BAR, HELD_KEYS, TOKENIZER_BAR_DB, WORLD_MODELS,
                                          Bar, first_frame_bars, headline_psnr, key_way_bars, load_eval, mean_ci,
                                          metric, paired_gains, quality_bars)
from cluster.pipeline.report_content import DATA_SETS, environment, report_markdown
from cluster.pipeline.report_figures import draw_figures, example_frames, plot_horizon, plot_training_curves
from cluster.pipeline.report_html import markdown_to_html
from genie_common import storage

__all__ = ["REPORT_FIGURES", "build_report", "mirror_for_report", "upload_report", "write_report",
           # re-exported: the names `cluster.pipeline.report` has always offered, now at home in the modules above
           "DELTA_VERSIONS", "FORKED_FUTURE_BAR", "HELD_KEYS", "TOKENIZER_BAR_DB", "WORLD_MODELS", "Bar",
           "first_frame_bars", "headline_psnr", "key_way_bars", "load_eval", "mean_ci", "metric", "paired_gains",
           "quality_bars", "DATA_SETS", "environment", "example_frames", "plot_horizon", "plot_training_curves",
           "markdown_to_html"]

REPORT_FIGURES = "report_files"


def build_report(context: PipelineContext) -> dict[str, str]:
    """RUN/report.md and RUN/report.html; returns their locations (paths, or URIs for a run at a URI)."""
    if not storage.is_uri(context.run):
        write_report(context, Path(context.run), context.run)
    else:
        with tempfile.TemporaryDirectory(prefix="genie-report-") as temp:
            local = mirror_for_report(context.run, Path(temp) / "run")
            write_report(context, local, context.run)
            upload_report(local, context.run)
    return {"markdown": storage.join(context.run, "report.md"), "html": storage.join(context.run, "report.html")}


def mirror_for_report(run: str, local: Path) -> Path:
    """What the report reads of the run at the URI `run`, in the local folder `local` (in the run's layout):
    the task records, every evaluation (results, samples), each model's metrics.csv, the agent's reward
    curve, and each data set as a link to its mirror on this node (`storage.local_dataset`)."""
    import pyarrow.fs as pafs

    from genie_common.storage import RemoteFolder

    def fetch(relative: str) -> None:
        target = local / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(storage.join(run, relative)))

    local.mkdir(parents=True, exist_ok=True)
    for name in RemoteFolder(storage.join(run, STATE_DIR)).names():
        if name.endswith(".json") and not name.startswith("."):  # not a write's temporary file
            fetch(f"{STATE_DIR}/{name}")
    remote = RemoteFolder(run)
    if remote.kind("eval") == pafs.FileType.Directory:
        remote.download_tree("eval", local / "eval")
    for model in remote.folders("models"):
        if remote.exists(f"models/{model}/metrics.csv"):
            fetch(f"models/{model}/metrics.csv")
    if remote.exists("agent/reward_curve.png"):
        fetch("agent/reward_curve.png")
    for name in DATA_SETS:
        if remote.exists(f"data/{name}/manifest.json"):
            (local / "data").mkdir(exist_ok=True)
            (local / "data" / name).symlink_to(storage.local_dataset(storage.join(run, "data", name)))
    return local


def upload_report(local: Path, run: str) -> None:
    """The report built in `local` to the run at `run`: its figures first, then report.md and report.html, so a
    reader of the report never finds an image it links missing."""
    for figure in sorted((local / REPORT_FIGURES).glob("*")):
        storage.upload_file(figure, storage.join(run, REPORT_FIGURES, figure.name))
    for name in ("report.md", "report.html"):
        storage.upload_file(local / name, storage.join(run, name))


def write_report(context: PipelineContext, run: Path, shown: str) -> dict[str, Path]:
    """The report of the run in the local folder `run`; `shown`: the run's location as the report names it
    (the URI, for a run mirrored here)."""
    figures = run / REPORT_FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    text = report_markdown(context.preset_label, run, shown, draw_figures(run, figures))
    (run / "report.md").write_text(text)
    (run / "report.html").write_text(markdown_to_html(text, run))
    return {"markdown": run / "report.md", "html": run / "report.html"}
