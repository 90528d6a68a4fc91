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

# The paper's numbers, exactly as docs/design.md, 'Metrics' quotes them; every other cell of the paper's tables is
# left empty here rather than filled from memory.
PAPER_SOURCE = (
    "GenieRedux (Savov et al., arXiv 2409.06445) result tables as quoted in docs/design.md, 'Metrics': "
    "Diverse Test Set (1000 PPO-agent episodes), 2 context frames, 10 predicted frames, paper-size models"
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
METRICS = ("psnr", "ssim", "fid", "delta_psnr", "delta_psnr_effect", "forked_future_score")
HEADERS = {"psnr": "PSNR", "ssim": "SSIM", "fid": "FID", "delta_psnr": "ΔtPSNR (paper: any other id)",
           "delta_psnr_effect": "ΔtPSNR (other effect)", "forked_future_score": "forked-future score"}
WITH_CI = ("delta_psnr", "delta_psnr_effect", "forked_future_score")  # cells that show ± their 95% CI


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
                raise DatasetError(f"{path}: no results.json in it or below; run `genie eval --out "
                                   f"{path}/<name> ...` first")
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


def headline_entry(results: dict[str, Any], metric: str) -> dict[str, Any] | None:
    """The metrics entry a table cell shows: autoregressive for world models (what a player sees), reconstruction
    otherwise."""
    mode = "autoregressive" if results["model"]["stage"] == "dynamics" else "reconstruction"
    for m in results["metrics"]:
        if m["metric"] == metric and m["mode"] == mode:
            return m
    return None


def headline(results: dict[str, Any], metric: str) -> float | None:
    entry = headline_entry(results, metric)
    return None if entry is None else entry["value"]


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _cell(ours: float | None, paper: float | None, metric: str, ci95: float | None = None) -> str:
    digits = 3 if metric in ("ssim", "forked_future_score") else 2
    text = "—" if _missing(ours) else f"{ours:.{digits}f}"
    if not _missing(ours) and not _missing(ci95):
        text += f" ± {ci95:.{digits}f}"
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
             "docs/design.md, 'Metrics'). World models: autoregressive rollout; tokenizer and LAM: reconstruction. "
             "ΔtPSNR twice: the paper's counterfactual (any other action id) and one of another effect class (8 of "
             "CoinRun's 15 ids do nothing; GenieRedux's latent ids have no known effect: —). Forked-future score: "
             "how often each dream of the real game's RIGHT and LEFT futures from one context is closer to its own "
             "future than the other dream is (chance 0.5). ± : 95% CI over windows.", ""]
    header = "| model | " + " | ".join(f"{s.capitalize()} {HEADERS[m]}" for s in TEST_SETS for m in METRICS) + " |"
    lines += [header, "|---" * (1 + len(TEST_SETS) * len(METRICS)) + "|"]
    for row in ROWS:
        for variant in VARIANTS:
            entries = []
            for test_set in TEST_SETS:
                results = cells.get((row, variant, test_set))
                paper = PAPER_RESULTS.get((row, variant, test_set), {})
                for metric in METRICS:
                    entry = headline_entry(results, metric) if results else None
                    ours = None if entry is None else entry["value"]
                    ci95 = entry.get("ci95") if entry is not None and metric in WITH_CI else None
                    entries.append(_cell(ours, paper.get(metric), metric, ci95))
            name = f"{row}-TA" if variant == "TA" else row
            lines.append(f"| {name} | " + " | ".join(entries) + " |")
    lines += ["", "## Scale", "",
              f"Paper: {PAPER_SOURCE}.", "",
              "| our evaluation | preset | training step | test set | episodes | context | horizon | MaskGIT steps | "
              "seed | file |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for results in all_results:
        model, data, s = results["model"], results["data"], results["settings"]
        label = f"{model['name']}{'-TA' if model.get('variant') == 'TA' else ''}"
        lines.append(f"| {label} | {model['preset']} | {model['step']} | {data['name']} ({data.get('kind') or '?'}) | "
                     f"{len(results['episodes'])} | {s['context']} | {s['horizon']} | "
                     f"{s['maskgit_steps'] if model['stage'] == 'dynamics' else 'n/a'} | {s['seed']} | "
                     f"{results['_path']} |")
    if unknown_variant:
        lines += ["", "Shown as Base because their run.json names no training data (Base or TA unknown): "
                  + ", ".join(r["_path"] for r in unknown_variant)]
    if other_sets:
        lines += ["", "Not placed in the table (test set neither random-agent 'basic' nor PPO-agent 'diverse'): "
                  + ", ".join(r["_path"] for r in other_sets)]
    return "\n".join(lines) + "\n"
