"""The paper-style table (`genie report`): rows Tokenizer, LAM, GenieRedux, GenieRedux-G (Base and TA),
columns the Basic and Diverse test sets, our numbers beside the paper's, and the scale of our run.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rl_agent.store.errors import DatasetError

# The paper's numbers, exactly as DESIGN §4 quotes them; every other cell of the paper's tables is
# left empty here rather than filled from memory.
PAPER_SOURCE = (
    "GenieRedux (Savov et al., arXiv 2409.06445) result tables as quoted in DESIGN §4: Diverse Test Set "
    "(1000 PPO-agent episodes), 2 context frames, 10 predicted frames, paper-size models"
)
PAPER_RESULTS: dict[tuple[str, str, str], dict[str, float]] = {
    # (model, variant, test set) -> metric -> value
    ("GenieRedux-G", "TA", "diverse"): {"psnr": 34.44, "ssim": 0.92, "fid": 12.40, "delta_psnr": 1.89},
    ("Tokenizer", "TA", "diverse"): {"psnr": 40.62},
}
PAPER_SCALE = {"preset": "paper", "test_episodes": 1000, "context": 2, "horizon": 10, "maskgit_steps": 25}

ROWS = ("Tokenizer", "LAM", "GenieRedux", "GenieRedux-G")
VARIANTS = ("Base", "TA")
TEST_SETS = ("basic", "diverse")
METRICS = ("psnr", "ssim", "fid", "delta_psnr")
HEADERS = {"psnr": "PSNR", "ssim": "SSIM", "fid": "FID", "delta_psnr": "ΔtPSNR"}


def find_results(locations: list[str | os.PathLike]) -> list[Path]:
    """results.json files: each location is an eval folder, a results.json, or a folder holding eval folders."""
    found: list[Path] = []
    for location in locations:
        path = Path(location)
        if path.is_file() and path.name == "results.json":
            found.append(path)
        elif (path / "results.json").is_file():
            found.append(path / "results.json")
        elif path.is_dir():
            inner = sorted(path.rglob("results.json"))
            if not inner:
                raise DatasetError(f"{path}: no results.json in it or below; run `genie eval --out {path}/<name> ...` first")
            found += inner
        else:
            raise DatasetError(f"{path}: no such evaluation folder or results.json")
    return found


def load_results(paths: list[Path]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        try:
            results = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DatasetError(f"{path}: not a readable results.json ({err})") from err
        if not str(results.get("format", "")).startswith("genie-redux-eval/"):
            raise DatasetError(f"{path}: not a `genie eval` results.json")
        results["_path"] = str(path)
        out.append(results)
    return out


def headline(results: dict[str, Any], metric: str) -> float | None:
    """The number a table cell shows: autoregressive for world models (what a player sees), reconstruction otherwise."""
    mode = "autoregressive" if results["model"]["stage"] == "dynamics" else "reconstruction"
    for m in results["metrics"]:
        if m["metric"] == metric and m["mode"] == mode:
            return m["value"]
    return None


def _cell(ours: float | None, paper: float | None, metric: str) -> str:
    digits = 3 if metric == "ssim" else 2
    text = "—" if ours is None or (isinstance(ours, float) and math.isnan(ours)) else f"{ours:.{digits}f}"
    return f"{text} ({paper:.{digits}f})" if paper is not None else text


def report_table(all_results: list[dict[str, Any]]) -> str:
    """Markdown: one row per model and variant, Basic and Diverse columns, 'ours (paper)' in each cell."""
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    other_sets, unknown_variant = [], []
    for results in all_results:
        kind = results["data"].get("kind")
        if kind not in TEST_SETS:
            other_sets.append(results)
            continue
        variant = results["model"].get("variant")
        if variant is None:  # run.json names no training data: cannot tell Base from TA
            unknown_variant.append(results)
            variant = "Base"
        cells[(results["model"]["name"], variant, kind)] = results  # a later evaluation of the same cell wins
    lines = ["# Results in the paper's layout", "",
             "Each cell: our number (the paper's number in parentheses where the paper's table is quoted in "
             "DESIGN §4). World models: autoregressive rollout; tokenizer and LAM: reconstruction.", ""]
    header = "| model | " + " | ".join(f"{s.capitalize()} {HEADERS[m]}" for s in TEST_SETS for m in METRICS) + " |"
    lines += [header, "|---" * (1 + len(TEST_SETS) * len(METRICS)) + "|"]
    for row in ROWS:
        for variant in VARIANTS:
            entries = []
            for test_set in TEST_SETS:
                results = cells.get((row, variant, test_set))
                paper = PAPER_RESULTS.get((row, variant, test_set), {})
                for metric in METRICS:
                    ours = headline(results, metric) if results else None
                    entries.append(_cell(ours, paper.get(metric), metric))
            name = f"{row}-TA" if variant == "TA" else row
            lines.append(f"| {name} | " + " | ".join(entries) + " |")
    lines += ["", "## Scale", "",
              f"Paper: {PAPER_SOURCE}.", "",
              "| our evaluation | preset | training step | test set | episodes | context | horizon | MaskGIT steps | seed | file |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for results in all_results:
        model, data, s = results["model"], results["data"], results["settings"]
        label = f"{model['name']}{'-TA' if model.get('variant') == 'TA' else ''}"
        lines.append(f"| {label} | {model['preset']} | {model['step']} | {data['name']} ({data.get('kind') or '?'}) | "
                     f"{len(results['episodes'])} | {s['context']} | {s['horizon']} | "
                     f"{s['maskgit_steps'] if model['stage'] == 'dynamics' else 'n/a'} | {s['seed']} | {results['_path']} |")
    if unknown_variant:
        lines += ["", "Shown as Base because their run.json names no training data (Base or TA unknown): "
                  + ", ".join(r["_path"] for r in unknown_variant)]
    if other_sets:
        lines += ["", "Not placed in the table (test set neither random-agent 'basic' nor PPO-agent 'diverse'): "
                  + ", ".join(r["_path"] for r in other_sets)]
    return "\n".join(lines) + "\n"
