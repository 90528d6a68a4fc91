"""What the run's evaluations say: reading them back, and the `tiny` study's quality bars judged pass/fail.

Kept apart from the report's wording (`report_content`) and figures (`report_figures`): a bar is a claim with a
threshold, and each one states the number it was judged on whether it passes or not.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cluster.pipeline.context import TEST_SETS
from world_model.evaluation.metrics import mean_ci95

TOKENIZER_BAR_DB = 26.0
FORKED_FUTURE_BAR = 0.75  # issue 14: each dream closer to its own real future in 3 of 4 comparisons (chance 0.5)
DELTA_VERSIONS = {"delta_psnr": "paper's counterfactual, any other id",
                  "delta_psnr_effect": "counterfactual of another effect"}
WORLD_MODELS = {"genie-g": "GenieRedux-G", "genie-g-ta": "GenieRedux-G-TA", "genie": "GenieRedux"}
HELD_KEYS = ("RIGHT", "LEFT")  # issue 14: the keys that scroll CoinRun, acted out in most windows


@dataclass
class Bar:
    """One quality bar as the report's table shows it: the claim, its verdict and the number behind it."""

    name: str
    passed: bool | None  # None: could not be measured (a task did not run)
    detail: str


# ---- reading results ---------------------------------------------------------------------------
def load_eval(run: Path, model: str, test_set: str) -> dict[str, Any] | None:
    """The results.json of `model` on `test_set`, or None where that evaluation did not run."""
    path = run / "eval" / model / test_set / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def metric(results: dict[str, Any] | None, name: str, mode: str) -> float | None:
    """One metric of an evaluation (None where it is missing): results.json keeps a list, not a mapping."""
    if not results:
        return None
    for entry in results["metrics"]:
        if entry["metric"] == name and entry["mode"] == mode:
            return float(entry["value"])
    return None


def headline_psnr(results: dict[str, Any] | None) -> float | None:
    """The PSNR a model is judged on: a world model's dream (autoregressive), else its reconstruction."""
    if not results:
        return None
    mode = "autoregressive" if results["model"]["stage"] == "dynamics" else "reconstruction"
    return metric(results, "psnr", mode)


mean_ci = mean_ci95  # mean and 95% half-width over episodes (evaluation's own helper)


# ---- quality bars -----------------------------------------------------------------------------
def quality_bars(run: Path, data_stats: dict[str, Any] | None) -> list[Bar]:
    """Every bar of the study, in the report's order; a task that did not run leaves its bars n/a, not missing."""
    bars = []
    if data_stats:
        random_p = data_stats["random-train"]["level_progress_mean"]
        agent_p = data_stats["agent-train"]["level_progress_mean"]
        bars.append(Bar("agent's data beats the random agent's on level progress", agent_p > random_p,
                        f"agent-train {agent_p:.2f} vs random-train {random_p:.2f} screens"))
    else:
        bars.append(Bar("agent's data beats the random agent's on level progress", None, "data tasks did not run"))
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
                            f"ΔtPSNR (t={results['settings']['delta_t']}) = {mean:.2f} ± {half:.2f} dB over "
                            f"{len(deltas)} episodes ({model})" if deltas else "not measured (an evaluation from "
                                                                               "before issue 14?)"))
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
                        f"frame {results['settings']['horizon']}: {ours:.2f} dB vs copy-last-frame {baseline:.2f} "
                        f"dB ({model})"))
    else:
        for version in DELTA_VERSIONS.values():
            bars.append(Bar(f"GenieRedux-G: ΔtPSNR ({version}) > 0 with its 95% CI above zero", None, "not evaluated"))
        bars.append(Bar(f"GenieRedux-G: forked-future score >= {FORKED_FUTURE_BAR} (chance 0.5)", None,
                        "not evaluated"))
        bars.append(Bar("GenieRedux-G: prediction PSNR above copy-last-frame at the horizon", None, "not evaluated"))
    bars += first_frame_bars(run) + key_way_bars(run)
    base_results, ta_results = load_eval(run, "genie-g", "diverse-test"), load_eval(run, "genie-g-ta", "diverse-test")
    base, ta = headline_psnr(base_results), headline_psnr(ta_results)
    name = "TA fine-tuning improves GenieRedux-G's Diverse Test Set PSNR (paired 95% CI above zero)"
    if base is None or ta is None:
        bars.append(Bar(name, None, "not evaluated"))
    else:
        gains = paired_gains(base_results, ta_results)
        gain, half = mean_ci(gains)
        bars.append(Bar(name, bool(gain - half > 0),
                        f"TA {ta:.2f} dB vs Base {base:.2f} dB: {gain:+.2f} ± {half:.2f} dB "
                        f"per episode over {len(gains)} episodes"))
    return bars


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


def key_way_percent(key_way: dict[str, float] | None) -> str:
    """A held key's `key_way` (runner.key_way_share) as the report prints it: "88% ± 17"; blank for a key without
    a direction."""
    return "" if not key_way else f"{100 * key_way['share']:.0f}% ± {100 * key_way['ci95']:.0f}"


def key_way_bars(run: Path) -> list[Bar]:
    """GenieRedux-G(-TA) moves the agent the way of RIGHT and of LEFT (held from one context, relative to holding
    NOOP) in most windows of the controllability table, 95% CI above one half, on the Diverse Test Set.

    Why not "enacted" (the dominant motion beyond 0.5 px a frame), the bar as issue 14 first put it: the real game
    itself does not pass that one. CoinRun's agent keeps its momentum; replayed from the same contexts, RIGHT and
    LEFT held for the table's 3 frames were enacted in 0% and 6% of the Diverse windows (12 frames: 23% and 41%),
    while they moved the agent their own way in 100% and 95%. A dream that met the old bar would be wrong about
    the game; this one a faithful dream meets. The detail keeps the enact rates, the dream's and the game's.
    """
    bars = []
    for model in ("genie-g-ta", "genie-g"):
        results = load_eval(run, model, "diverse-test")
        rows = ((results or {}).get("controllability") or {}).get("actions", {})
        shares = {key: rows[key]["key_way"] for key in HELD_KEYS if (rows.get(key) or {}).get("key_way")}
        if len(shares) < len(HELD_KEYS):
            continue
        detail = ", ".join(f"{key} {key_way_percent(s)}" for key, s in shares.items())
        game = {key: rows[key]["real_game"] for key in HELD_KEYS if rows[key].get("real_game")}
        if len(game) == len(HELD_KEYS):  # what a faithful dream would score: the real game from the same contexts
            detail += " (the real game, same contexts: " + ", ".join(
                f"{key} {100 * g['key_way']['share']:.0f}%" for key, g in game.items() if g.get("key_way")) + ")"
        detail += "; enacted beyond 0.5 px a frame: " + ", ".join(
            f"{key} {100 * rows[key]['enacted']:.0f}%" for key in HELD_KEYS)
        if len(game) == len(HELD_KEYS):
            detail += " (the game: " + ", ".join(f"{key} {100 * g['enacted']:.0f}%" for key, g in game.items()) + ")"
        passed = all(math.isfinite(s["ci95"]) and s["share"] - s["ci95"] > 0.5 for s in shares.values())
        bars.append(Bar(f"{WORLD_MODELS[model]}: {' and '.join(HELD_KEYS)} move the agent their way in most windows "
                        "(vs NOOP, 95% CI above half; Diverse)", passed, detail))
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
