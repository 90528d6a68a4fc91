"""`RUN/report.md` and a self-contained `RUN/report.html` (images inlined) for a pipeline run.

The report states every number with its scale (preset, steps, episodes, context, horizon, MaskGIT
steps), the quality bars of the `tiny` study with pass/fail, and where each figure came from.

Everything here reads and writes a local folder (matplotlib, PIL and the dataset readers need one). For a
run at a storage URI, `build_report` first mirrors what the report reads into a temporary folder (records,
evaluations, training curves; datasets through their per-node mirror), builds the report there and uploads
it: the figures first, report.md and report.html last, each file atomically.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cluster.pipeline.context import STATE_DIR, TEST_SETS, PipelineContext
from genie_common import storage
from world_model.evaluation.metrics import mean_ci95

DATA_SETS = ("random-train", "agent-train", *TEST_SETS)
REPORT_FIGURES = "report_files"

TOKENIZER_BAR_DB = 26.0
FORKED_FUTURE_BAR = 0.75  # issue 14: each dream closer to its own real future in 3 of 4 comparisons (chance 0.5)
DELTA_VERSIONS = {"delta_psnr": "paper's counterfactual, any other id", "delta_psnr_effect": "counterfactual of another effect"}


@dataclass
class Bar:
    name: str
    passed: bool | None  # None: could not be measured (a stage did not run)
    detail: str


# ---- reading results ---------------------------------------------------------------------------
def load_eval(run: Path, model: str, test_set: str) -> dict[str, Any] | None:
    path = run / "eval" / model / test_set / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def metric(results: dict[str, Any] | None, name: str, mode: str) -> float | None:
    if not results:
        return None
    for entry in results["metrics"]:
        if entry["metric"] == name and entry["mode"] == mode:
            return float(entry["value"])
    return None


def headline_psnr(results: dict[str, Any] | None) -> float | None:
    if not results:
        return None
    mode = "autoregressive" if results["model"]["stage"] == "dynamics" else "reconstruction"
    return metric(results, "psnr", mode)


mean_ci = mean_ci95  # mean and 95% half-width over episodes (evaluation's own helper)


# ---- quality bars -----------------------------------------------------------------------------
def quality_bars(run: Path, data_stats: dict[str, Any] | None) -> list[Bar]:
    bars = []
    if data_stats:
        random_p, agent_p = data_stats["random-train"]["level_progress_mean"], data_stats["agent-train"]["level_progress_mean"]
        bars.append(Bar("agent's data beats the random agent's on level progress", agent_p > random_p,
                        f"agent-train {agent_p:.2f} vs random-train {random_p:.2f} screens"))
    else:
        bars.append(Bar("agent's data beats the random agent's on level progress", None, "data stages did not run"))
    tokenizer = load_eval(run, "tokenizer-ta", "diverse-test") or load_eval(run, "tokenizer", "diverse-test")
    value = headline_psnr(tokenizer)
    bars.append(Bar(f"tokenizer reconstruction PSNR on the Diverse Test Set >= {TOKENIZER_BAR_DB:.0f} dB",
                    None if value is None else value >= TOKENIZER_BAR_DB,
                    "not evaluated" if value is None else f"{value:.2f} dB ({tokenizer['model']['name']}"
                    f"{'-TA' if tokenizer['model'].get('variant') == 'TA' else ''})"))
    for model in ("genie-g-ta", "genie-g"):
        results = load_eval(run, model, "diverse-test")
        if results:
            break
    if results:
        for key, version in DELTA_VERSIONS.items():
            deltas = [e[key]["delta"] for e in results["episodes"] if key in e]
            mean, half = mean_ci(deltas)
            bars.append(Bar(f"GenieRedux-G: ΔtPSNR ({version}) > 0 with its 95% CI above zero",
                            bool(mean - half > 0) if deltas else None,
                            f"ΔtPSNR (t={results['settings']['delta_t']}) = {mean:.2f} ± {half:.2f} dB over {len(deltas)} "
                            f"episodes ({model})" if deltas else "not measured (an evaluation from before issue 14?)"))
        forked = results.get("forked_futures") or {}
        name = f"GenieRedux-G: forked-future score >= {FORKED_FUTURE_BAR} (chance 0.5)"
        if "score" in forked:
            bars.append(Bar(name, bool(forked["score"] >= FORKED_FUTURE_BAR),
                            f"{forked['score']:.2f} ± {forked['ci95']:.2f} over {forked['windows']} windows, "
                            f"{' vs '.join(forked['forks'])} x{forked['k']} ({model})"))
        else:
            bars.append(Bar(name, None, forked.get("skipped_reason", "not measured")))
        ours = results["per_step"]["autoregressive"]["psnr"][-1]
        baseline = results["per_step"].get("copy_last_frame", {}).get("psnr", [math.nan])[-1]
        bars.append(Bar("GenieRedux-G: prediction PSNR above copy-last-frame at the horizon", bool(ours > baseline),
                        f"frame {results['settings']['horizon']}: {ours:.2f} dB vs copy-last-frame {baseline:.2f} dB ({model})"))
    else:
        for version in DELTA_VERSIONS.values():
            bars.append(Bar(f"GenieRedux-G: ΔtPSNR ({version}) > 0 with its 95% CI above zero", None, "not evaluated"))
        bars.append(Bar(f"GenieRedux-G: forked-future score >= {FORKED_FUTURE_BAR} (chance 0.5)", None, "not evaluated"))
        bars.append(Bar("GenieRedux-G: prediction PSNR above copy-last-frame at the horizon", None, "not evaluated"))
    bars += first_frame_bars(run) + enacted_bars(run)
    base_results, ta_results = load_eval(run, "genie-g", "diverse-test"), load_eval(run, "genie-g-ta", "diverse-test")
    base, ta = headline_psnr(base_results), headline_psnr(ta_results)
    name = "TA fine-tuning improves GenieRedux-G's Diverse Test Set PSNR (paired 95% CI above zero)"
    if base is None or ta is None:
        bars.append(Bar(name, None, "not evaluated"))
    else:
        gains = paired_gains(base_results, ta_results)
        gain, half = mean_ci(gains)
        bars.append(Bar(name, bool(gain - half > 0), f"TA {ta:.2f} dB vs Base {base:.2f} dB: {gain:+.2f} ± {half:.2f} dB "
                                                      f"per episode over {len(gains)} episodes"))
    return bars


WORLD_MODELS = {"genie-g": "GenieRedux-G", "genie-g-ta": "GenieRedux-G-TA", "genie": "GenieRedux"}
HELD_KEYS = ("RIGHT", "LEFT")  # issue 14: the keys that scroll CoinRun, enacted in most windows


def first_frame_bars(run: Path) -> list[Bar]:
    """Each world model's first dreamed frame (autoregressive) above copying the last real frame, on every test set
    it was evaluated on: the dream starts from the game, not from a blur of it."""
    bars = []
    for model, name in WORLD_MODELS.items():
        sets = {s: load_eval(run, model, s) for s in TEST_SETS}
        sets = {s: r for s, r in sets.items() if r}
        if not sets:
            continue
        parts, passed = [], True
        for test_set, results in sets.items():
            ours = results["per_step"]["autoregressive"]["psnr"][0]
            copy = results["per_step"].get("copy_last_frame", {}).get("psnr", [math.nan])[0]
            passed = passed and bool(ours > copy)
            parts.append(f"{test_set.split('-')[0]} {ours:.2f} vs {copy:.2f} dB")
        bars.append(Bar(f"{name}: frame 1 above copy-last-frame on every test set", passed, "; ".join(parts)))
    return bars


def enacted_bars(run: Path) -> list[Bar]:
    """GenieRedux-G(-TA) acts out RIGHT and LEFT (held from one context) in most windows of the controllability
    table, on the Diverse Test Set."""
    bars = []
    for model in ("genie-g-ta", "genie-g"):
        results = load_eval(run, model, "diverse-test")
        rows = ((results or {}).get("controllability") or {}).get("actions", {})
        shares = {key: rows[key]["enacted"] for key in HELD_KEYS if rows.get(key, {}).get("enacted") is not None}
        if len(shares) < len(HELD_KEYS):
            continue
        bars.append(Bar(f"{WORLD_MODELS[model]}: {' and '.join(HELD_KEYS)} enacted in most windows (Diverse)",
                        all(share > 0.5 for share in shares.values()),
                        ", ".join(f"{key} {100 * share:.0f}%" for key, share in shares.items())))
    return bars


def paired_gains(base: dict[str, Any], other: dict[str, Any]) -> list[float]:
    """Per-episode PSNR gain of `other` over `base` (mean over the horizon), on the episodes both evaluated.

    Why paired: both models roll out the same episodes from the same contexts with the same seed, so the
    episode-to-episode spread (a hard level is hard for both) cancels; a mean-vs-mean comparison would call a
    0.02 dB difference an improvement.
    """
    def by_window(results: dict[str, Any]) -> dict[tuple, float]:
        return {(e["id"], e["start"]): float(np.mean(e["autoregressive"]["psnr"]))
                for e in results["episodes"] if "autoregressive" in e}

    before, after = by_window(base), by_window(other)
    return [after[key] - before[key] for key in before if key in after]


# ---- figures ------------------------------------------------------------------------------------
def plot_training_curves(run: Path, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted(p.parent for p in (run / "models").glob("*/metrics.csv"))
    if not runs:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for model_run in runs:
        with open(model_run / "metrics.csv") as handle:
            rows = [r for r in csv.DictReader(handle) if r["kind"] == "val"]
        if not rows:
            continue
        steps = [float(r["step"]) for r in rows]
        axes[0].plot(steps, [float(r["val_loss"]) for r in rows], marker=".", label=model_run.name)
        key = "val_psnr" if rows[0].get("val_psnr") else "val_teacher_forced_psnr"
        if rows[0].get(key):
            axes[1].plot(steps, [float(r[key]) for r in rows], marker=".", label=model_run.name)
    axes[0].set(title="validation loss", xlabel="step", yscale="log")
    axes[1].set(title="validation PSNR (dB; dynamics: teacher-forced)", xlabel="step")
    for axis in axes:
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_horizon(run: Path, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    drawn = False
    for axis, test_set in zip(axes, ("basic-test", "diverse-test")):
        baseline = None
        for model in ("genie-g", "genie-g-ta", "genie", "genie-ta"):
            results = load_eval(run, model, test_set)
            if not results:
                continue
            series = results["per_step"]["autoregressive"]["psnr"]
            axis.plot(range(1, len(series) + 1), series, marker="o", label=model)
            baseline = results["per_step"].get("copy_last_frame", {}).get("psnr", baseline)
            drawn = True
        if baseline:
            axis.plot(range(1, len(baseline) + 1), baseline, "k--", label="copy last frame")
        axis.set(title=f"PSNR over the horizon, {test_set}", xlabel="predicted frame")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    axes[0].set_ylabel("PSNR (dB)")
    fig.tight_layout()
    if drawn:
        fig.savefig(out, dpi=110)
    plt.close(fig)
    return out if drawn else None


def example_frames(run: Path, out: Path) -> Path | None:
    """One episode of each training set, 8 frames evenly spaced: what random vs trained play looks like."""
    from PIL import Image

    from rl_agent.store.reader import EpisodeStore

    rows = []
    for name in ("random-train", "agent-train"):
        root = run / "data" / name
        if not (root / "manifest.json").is_file():
            continue
        store = EpisodeStore(root)
        episode = int(np.argmax(store.lengths))
        frames = store.episode_frames(episode)
        picks = np.linspace(0, len(frames) - 1, 8).astype(int)
        rows.append(np.concatenate(list(frames[picks]), axis=1))
    if not rows:
        return None
    grid = np.concatenate(rows, axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out)
    return out


# ---- assembly ------------------------------------------------------------------------------------
def environment() -> dict[str, str]:
    import ray
    import torch

    try:
        import procgen  # noqa: F401
        from importlib.metadata import version

        procgen_version = version("procgen-mirror")
    except Exception:  # noqa: BLE001
        procgen_version = "?"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "procgen": procgen_version, "cpu": cpu, "cpus": str(os.cpu_count()),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none", "date": time.strftime("%Y-%m-%d %H:%M")}


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
    the stage records, every evaluation (results, samples), each model's metrics.csv, the agent's reward
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
    from world_model.evaluation.report import find_results, load_results, report_table

    figures = run / REPORT_FIGURES
    figures.mkdir(parents=True, exist_ok=True)
    data_stats = _data_stats(run)
    bars = quality_bars(run, data_stats)
    md: list[str] = [f"# genie-redux study: preset `{context.preset_label}`", "",
                     "GenieRedux / GenieRedux-G (arXiv 2409.06445) reproduced on Procgen CoinRun at this run's scale "
                     "(see *Scale* below: our models and data are far smaller than the paper's).", ""]
    md += ["## Quality bars", "", "| bar | result | measured |", "|---|---|---|"]
    for bar in bars:
        mark = "n/a" if bar.passed is None else ("PASS" if bar.passed else "FAIL")
        md.append(f"| {bar.name} | {mark} | {bar.detail} |")
    md += [""]
    images: list[tuple[str, Path | None]] = []
    md += ["## Data: random agent vs trained agent", ""]
    if data_stats:
        md += ["| data set | episodes | frames | return | success | level progress (screens) | mean length |",
               "|---|---|---|---|---|---|---|"]
        for name, stats in data_stats.items():
            md.append(f"| {name} | {stats['episodes']} | {stats['frames']:,} | {stats['return_mean']:.2f} | "
                      f"{100 * stats['success_rate']:.0f}% | {stats['level_progress_mean']:.2f} | {stats['length_mean']:.0f} |")
        md.append("")
    images.append(("Example frames (top: random agent, bottom: PPO agent; 8 frames of each one's longest episode)",
                   example_frames(run, figures / "example_frames.png")))
    images.append(("The PPO agent's learning curve", run / "agent" / "reward_curve.png"))
    images.append(("Training curves of each stage (validation)", plot_training_curves(run, figures / "training_curves.png")))
    images.append(("PSNR over the horizon (autoregressive; dashed: copy the last context frame)",
                   plot_horizon(run, figures / "psnr_horizon.png")))
    for caption, path in images:
        if path is not None and Path(path).is_file():
            md += [f"### {caption}", "", f"![{caption}]({Path(path).relative_to(run)})", ""]
    results = load_results(find_results([run / "eval"])) if (run / "eval").exists() else []
    for entry in results:  # the table names each results.json where it is, not where this report read it
        entry["_path"] = storage.join(shown, Path(entry["_path"]).relative_to(run).as_posix())
    if results:
        md += [report_table(results).replace("# Results in the paper's layout", "## Results in the paper's layout"), ""]
    md += _controllability(run)
    md += _forked_futures(run)
    md += _dreams(run)
    md += ["## Stages and durations", "", "| stage | seconds | finished |", "|---|---|---|"]
    total = 0.0
    for record_file in sorted((run / STATE_DIR).glob("*.json")):
        if record_file.name == "preset.json":
            continue
        record = json.loads(record_file.read_text())
        total += float(record.get("seconds", 0))
        md.append(f"| {record['stage']} | {record['seconds']:.0f} | {record['finished']} |")
    md += ["", f"Sum of stage times: {total / 60:.1f} min.", "", "## Environment", "",
           "| | |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in environment().items()]
    md += ["", f"Preset as run: `{storage.join(shown, STATE_DIR, 'preset.json')}`."]
    text = "\n".join(md) + "\n"
    (run / "report.md").write_text(text)
    (run / "report.html").write_text(markdown_to_html(text, run))
    return {"markdown": run / "report.md", "html": run / "report.html"}


def _data_stats(run: Path) -> dict[str, Any] | None:
    from rl_agent.store.stats import compute_stats

    stats = {}
    for name in DATA_SETS:
        root = run / "data" / name
        if (root / "manifest.json").is_file():
            stats[name] = compute_stats(root, progress_episodes=100).summary()
    return stats if {"random-train", "agent-train"} <= set(stats) else None


def _controllability(run: Path) -> list[str]:
    lines = []
    for model in ("genie-g-ta", "genie-g"):
        results = load_eval(run, model, "diverse-test") or load_eval(run, model, "basic-test")
        if results and results.get("controllability"):
            control = results["controllability"]
            lines += [f"## Controllability per action ({model}, {results['data']['name']})", "",
                      f"Each action held for {control['steps']} frames from the same context; motion of the agent "
                      f"estimated by frame registration, relative to holding NOOP ({control['convention']}).", "",
                      "| action | expected | enacted | dominant | motion vs NOOP (dx, dy px) |", "|---|---|---|---|---|"]
            for name, row in control["actions"].items():
                moved = row.get("mean_motion_vs_noop_px")
                enacted = "" if row["enacted"] is None else f"{100 * row['enacted']:.0f}%"
                lines.append(f"| {name} | {row['expected'] or ''} | {enacted} | {row['dominant']} | "
                             f"{'' if moved is None else f'{moved[0]:+.1f}, {moved[1]:+.1f}'} |")
            lines.append("")
            break
    return lines


def _forked_futures(run: Path) -> list[str]:
    """Every world model's forked-future score and ΔtPSNR (both counterfactuals) on each test set, with 95% CIs."""
    rows = []
    for model in ("genie-g-ta", "genie-g", "genie-ta", "genie"):
        for test_set in ("basic-test", "diverse-test"):
            results = load_eval(run, model, test_set)
            if not results:
                continue
            forked = results.get("forked_futures") or {}
            score = (f"{forked['score']:.2f} ± {forked['ci95']:.2f} ({forked['windows']} windows)" if "score" in forked
                     else forked.get("skipped_reason", "not measured"))
            deltas = []
            for key in DELTA_VERSIONS:
                values = [e[key]["delta"] for e in results["episodes"] if key in e]
                mean, half = mean_ci(values)
                deltas.append(f"{mean:+.2f} ± {half:.2f}" if values else "—")
            rows.append(f"| {model} | {test_set} | {score} | {deltas[0]} | {deltas[1]} |")
            for skip in forked.get("skipped", [])[:2]:
                rows.append(f"| | | skipped {skip['id']} @ {skip['start']}: {skip['reason']} | | |")
    if not rows:
        return []
    return ["## Does the dream obey the keys?", "",
            "Forked futures: from one real context the real game is replayed and played RIGHT and LEFT; the model dreams "
            "both (GenieRedux-G from the true actions, GenieRedux from the latent actions its LAM infers from each real "
            "fork); the score is how often each dream is closer to its own real future than the other dream is "
            "(chance 0.5). ΔtPSNR (dB, 95% CI): the paper's counterfactual (any other action id) and one of another "
            "effect class (GenieRedux: latent ids have no known effect, —). The sample sheets show both forks, real "
            "and dreamt.", "",
            "| model | test set | forked-future score | ΔtPSNR, paper | ΔtPSNR, other effect |", "|---|---|---|---|---|",
            *rows, ""]


def _dreams(run: Path) -> list[str]:
    lines = []
    for model in ("genie-g-ta", "genie-g", "genie-ta", "genie"):
        folder = run / "eval" / model / "diverse-test"
        gifs = sorted(folder.rglob("*.gif"))[:2]
        if gifs:
            if not lines:
                lines += ["## Dreams vs reality (Diverse Test Set)", ""]
            lines += [f"### {model}", ""] + [f"![{model} {g.stem}]({g.relative_to(run)})" for g in gifs] + [""]
    return lines


def markdown_to_html(text: str, run: Path) -> str:
    """A small Markdown subset (headings, tables, images, paragraphs) to HTML with images inlined."""
    out = ["<!doctype html><html><head><meta charset='utf-8'><title>genie-redux report</title><style>",
           "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}",
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:14px}",
           "th{background:#f3f3f3}img{max-width:100%;image-rendering:pixelated}code{background:#f3f3f3;padding:1px 4px}",
           "</style></head><body>"]
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("|"):
            table = []
            while i < len(lines) and lines[i].startswith("|"):
                table.append(lines[i])
                i += 1
            out.append(_table(table))
            continue
        elif line.startswith("!["):
            caption, path = line[2:].split("](", 1)
            target = run / path.rstrip(")")
            if target.is_file():
                kind = "image/gif" if target.suffix == ".gif" else "image/png"
                data = base64.b64encode(target.read_bytes()).decode()
                out.append(f"<figure><img alt='{html.escape(caption)}' src='data:{kind};base64,{data}'></figure>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    out.append("</body></html>")
    return "\n".join(out)


def _inline(text: str) -> str:
    import re

    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", re.sub(r"(?<!\*)\*([^*]+)\*(?!\*)", r"<i>\1</i>", escaped))


def _table(rows: list[str]) -> str:
    cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in rows]
    body = [r for r in cells[1:] if not all(set(c) <= set("-: ") for c in r)]
    head = "".join(f"<th>{_inline(c)}</th>" for c in cells[0])
    rows_html = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>"
