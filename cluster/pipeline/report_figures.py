"""The report's figures: training curves, PSNR over the horizon and example frames, drawn as PNGs for the report.

Kept apart from what the report says (`report_content`): these read a local run folder and draw with matplotlib
and PIL, and `draw_figures` hands back each figure with its caption, in the report's order.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cluster.pipeline.report_bars import load_eval


def draw_figures(run: Path, folder: Path) -> list[tuple[str, Path | None]]:
    """Each figure of the run (drawn into `folder`, or already in the run) with its caption; None where it has none."""
    return [("Example frames (top: random agent, bottom: PPO agent; 8 frames of each one's longest episode)",
             example_frames(run, folder / "example_frames.png")),
            ("The PPO agent's learning curve", run / "agent" / "reward_curve.png"),
            ("Training curves of each model (validation)", plot_training_curves(run, folder / "training_curves.png")),
            ("PSNR over the horizon (autoregressive; dashed: copy the last context frame)",
             plot_horizon(run, folder / "psnr_horizon.png"))]


def plot_training_curves(run: Path, out: Path) -> Path | None:
    """Each model's validation loss and PSNR over its steps (None before any model trained)."""
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
    """Each world model's PSNR per predicted frame against copying the last frame (None before any evaluation)."""
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
