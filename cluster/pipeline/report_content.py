"""What the pipeline report says, as Markdown: its quality bars, data, results, controllability, dreams, tasks
and environment, every number with its scale.

The figures are drawn elsewhere (`report_figures`) and handed in with their captions; turning the Markdown into a
self-contained page is `report_html`'s job.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from cluster.pipeline.context import STATE_DIR, TEST_SETS
from cluster.pipeline.report_bars import DELTA_VERSIONS, key_way_percent, load_eval, mean_ci, quality_bars
from genie_common import storage

DATA_SETS = ("random-train", "agent-train", *TEST_SETS)


def report_markdown(preset_label: str, run: Path, shown: str, images: list[tuple[str, Path | None]]) -> str:
    """The report of the run in the local folder `run` as Markdown; `shown`: the run's location as the report names
    it (the URI, for a run mirrored here); `images`: captioned figures, those with no file left out."""
    from world_model.evaluation.report import find_results, load_results, report_table

    data_stats = _data_stats(run)
    bars = quality_bars(run, data_stats)
    md: list[str] = [f"# genie-redux study: preset `{preset_label}`", "",
                     "GenieRedux / GenieRedux-G (arXiv 2409.06445) reproduced on Procgen CoinRun at this run's scale "
                     "(see *Scale* below: our models and data are far smaller than the paper's).", ""]
    md += ["## Quality bars", "", "| bar | result | measured |", "|---|---|---|"]
    for bar in bars:
        mark = "n/a" if bar.passed is None else ("PASS" if bar.passed else "FAIL")
        md.append(f"| {bar.name} | {mark} | {bar.detail} |")
    md += [""]
    md += ["## Data: random agent vs trained agent", ""]
    if data_stats:
        md += ["| data set | episodes | frames | return | success | level progress (screens) | mean length |",
               "|---|---|---|---|---|---|---|"]
        for name, stats in data_stats.items():
            md.append(f"| {name} | {stats['episodes']} | {stats['frames']:,} | {stats['return_mean']:.2f} | "
                      f"{100 * stats['success_rate']:.0f}% | {stats['level_progress_mean']:.2f} | "
                      f"{stats['length_mean']:.0f} |")
        md.append("")
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
    md += ["## Tasks and durations", "", "| task | seconds | finished |", "|---|---|---|"]
    total = 0.0
    for record_file in sorted((run / STATE_DIR).glob("*.json")):
        if record_file.name == "preset.json":
            continue
        record = json.loads(record_file.read_text())
        total += float(record.get("seconds", 0))
        # a record's task name is under 'stage', the key it had before tasks had that name (runner.write_record)
        md.append(f"| {record['stage']} | {record['seconds']:.0f} | {record['finished']} |")
    md += ["", f"Sum of task times: {total / 60:.1f} min.", "", "## Environment", "",
           "| | |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in environment().items()]
    md += ["", f"Preset as run: `{storage.join(shown, STATE_DIR, 'preset.json')}`."]
    return "\n".join(md) + "\n"


def environment() -> dict[str, str]:
    """Versions and hardware the report was made with: its timings mean little without them."""
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
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
            "date": time.strftime("%Y-%m-%d %H:%M")}


def _data_stats(run: Path) -> dict[str, Any] | None:
    """Each data set's summary, or None unless both training sets exist (the data bar compares them)."""
    from rl_agent.store.stats import compute_stats

    stats = {}
    for name in DATA_SETS:
        root = run / "data" / name
        if (root / "manifest.json").is_file():
            stats[name] = compute_stats(root, progress_episodes=100).summary()
    return stats if {"random-train", "agent-train"} <= set(stats) else None


def _controllability(run: Path) -> list[str]:
    """The controllability table of the fine-tuned GenieRedux-G (else the base), Diverse Test Set first."""
    lines = []
    for model in ("genie-g-ta", "genie-g"):
        results = load_eval(run, model, "diverse-test") or load_eval(run, model, "basic-test")
        if results and results.get("controllability"):
            control = results["controllability"]
            lines += [f"## Controllability per action ({model}, {results['data']['name']})", "",
                      f"Each action held for {control['steps']} frames from the same context; motion of the agent "
                      f"estimated by frame registration, relative to holding NOOP ({control['convention']}).", "",
                      "| action | expected | enacted | moves its way | dominant | motion vs NOOP (dx, dy px) | "
                      "real game: enacted | real game: moves its way | dream agrees with the game (a still dream) |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for name, row in control["actions"].items():
                moved = row.get("mean_motion_vs_noop_px")
                enacted = "" if row["enacted"] is None else f"{100 * row['enacted']:.0f}%"
                game = row.get("real_game") or {}
                real = "" if game.get("enacted") is None else f"{100 * game['enacted']:.0f}%"
                agrees = ("" if game.get("agreement") is None else
                          f"{100 * game['agreement']:.0f}% ({100 * game['agreement_if_still']:.0f}%)")
                way, game_way = key_way_percent(row.get("key_way")), key_way_percent(game.get("key_way"))
                lines.append(f"| {name} | {row['expected'] or ''} | {enacted} | {way} | "
                             f"{row['dominant']} | {'' if moved is None else f'{moved[0]:+.1f}, {moved[1]:+.1f}'} | "
                             f"{real} | {game_way} | {agrees} |")
            windows = (control.get("real_game") or {}).get("windows")
            lines += ["", "Enacted: the dream's motion relative to its NOOP dream is mostly the key's way, by more "
                          "than 0.5 px a frame. Moves its way: that motion has the key's sign along the key's axis at "
                          "any size (± its 95% CI over windows): the quality bar, since CoinRun's agent keeps its "
                          "momentum and a key held for a few frames seldom moves it past 0.5 px a frame in the real "
                          "game either."]
            if windows:
                lines += ["", f"Real game: the same keys held for the same frames from the same contexts in the real "
                              f"game ({windows} windows replayed): what a faithful dream would score."]
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
            direction = forked.get("direction")
            cosine = f"{direction['cosine']:+.3f} ± {direction['ci95']:.3f}" if direction else "—"
            rows.append(f"| {model} | {test_set} | {score} | {cosine} | {deltas[0]} | {deltas[1]} |")
            for skip in forked.get("skipped", [])[:2]:
                rows.append(f"| | | skipped {skip['id']} @ {skip['start']}: {skip['reason']} | | | |")
    if not rows:
        return []
    return ["## Does the dream obey the keys?", "",
            "Forked futures: from one real context the real game is replayed and played RIGHT and LEFT; the "
            "model dreams both (GenieRedux-G from the true actions, GenieRedux from the latent actions its LAM infers "
            "from each real fork); the score is how often each dream is closer to its own real future than the "
            "other dream is (chance 0.5); its direction, the cosine between the two dreams' difference and the two "
            "real futures' (0: unrelated, 1: the key moves the dream as it moves the game). "
            "ΔtPSNR (dB, 95% CI): the paper's counterfactual (any other action id) and "
            "one of another effect class (GenieRedux: latent ids have no known effect, —). The sample sheets show both "
            "forks, real and dreamt.", "",
            "| model | test set | forked-future score | direction (cosine) | ΔtPSNR, paper | ΔtPSNR, other effect |",
            "|---|---|---|---|---|---|", *rows, ""]


def _dreams(run: Path) -> list[str]:
    """Two sample GIFs per world model on the Diverse Test Set: what the numbers look like."""
    lines = []
    for model in ("genie-g-ta", "genie-g", "genie-ta", "genie"):
        folder = run / "eval" / model / "diverse-test"
        gifs = sorted(folder.rglob("*.gif"))[:2]
        if gifs:
            if not lines:
                lines += ["## Dreams vs reality (Diverse Test Set)", ""]
            lines += [f"### {model}", ""] + [f"![{model} {g.stem}]({g.relative_to(run)})" for g in gifs] + [""]
    return lines
