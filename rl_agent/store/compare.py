"""`genie data compare`: two datasets side by side, the evidence that a trained agent explores more.

Beside the `stats` numbers: action entropy (bits; uniform over 15 actions = 3.91) and frame
diversity (mean distance between random pairs of frames, downsampled to 16x16, in [0, 1]
units: how different the frames an agent sees are), and distinct levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rl_agent.store.reader import EpisodeStore
from rl_agent.store.stats import DatasetStats, compute_stats


@dataclass
class Diversity:
    action_entropy_bits: float
    frame_diversity: float
    distinct_levels: int


def diversity(root: str | Path, stats: DatasetStats, frames: int = 2000, seed: int = 0, cache_dir=None) -> Diversity:
    counts = np.asarray(stats.action_histogram, dtype=np.float64)
    p = counts[counts > 0] / counts.sum()
    store = EpisodeStore(root, cache_dir=cache_dir)
    rng = np.random.default_rng(seed)
    episodes, starts = store.sample_positions(rng, frames, 1)
    sample = np.stack([store.window(int(e), int(s), 1)[0][0] for e, s in zip(episodes, starts)])  # (N, H, W, C)
    small = sample.reshape(len(sample), 16, 4, 16, 4, 3).mean(axis=(2, 4)) / 255.0  # (N, 16, 16, 3)
    flat = small.reshape(len(small), -1)
    pairs = rng.permutation(len(flat))
    distances = np.sqrt(((flat - flat[pairs]) ** 2).mean(axis=1))
    levels = {ref.episode.level_seed for ref in store.episodes}
    return Diversity(float(-(p * np.log2(p)).sum()), float(distances.mean()), len(levels))


def compare(a: str | Path, b: str | Path, progress_episodes: int = 200) -> tuple[list[tuple[str, str, str]], dict]:
    """Rows (metric, A, B) and the raw numbers of both datasets."""
    results = {}
    for root in (a, b):
        stats = compute_stats(root, progress_episodes=progress_episodes)
        results[str(root)] = (stats, diversity(root, stats))
    (sa, da), (sb, db) = results[str(a)], results[str(b)]
    rows = [
        ("agents", ", ".join(sa.agents), ", ".join(sb.agents)),
        ("episodes", f"{sa.episodes:,}", f"{sb.episodes:,}"),
        ("frames", f"{sa.frames:,}", f"{sb.frames:,}"),
        ("return (mean ± sd)", f"{sa.return_mean:.2f} ± {sa.return_std:.2f}",
         f"{sb.return_mean:.2f} ± {sb.return_std:.2f}"),
        ("success rate", f"{sa.success_rate:.1%}", f"{sb.success_rate:.1%}"),
        ("episode length (mean)", f"{sa.length_mean:.0f}", f"{sb.length_mean:.0f}"),
        ("level progress (screens, mean)", f"{sa.level_progress_mean:.2f}", f"{sb.level_progress_mean:.2f}"),
        ("action entropy (bits)", f"{da.action_entropy_bits:.2f}", f"{db.action_entropy_bits:.2f}"),
        ("frame diversity", f"{da.frame_diversity:.3f}", f"{db.frame_diversity:.3f}"),
        ("distinct levels", f"{da.distinct_levels:,}", f"{db.distinct_levels:,}"),
    ]
    return rows, results


def format_rows(rows: list[tuple[str, str, str]], a: str, b: str) -> str:
    table = [("", str(a), str(b))] + rows
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in table)


def plot_comparison(results: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (name_a, (sa, da)), (name_b, (sb, db)) = results.items()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for stats, name in ((sa, name_a), (sb, name_b)):
        axes[0].hist(stats.level_progress, bins=20, alpha=0.6, label=Path(name).name)
        axes[1].hist(stats.lengths, bins=20, alpha=0.6, label=Path(name).name)
    axes[0].set(title="level progress (screens)", xlabel="furthest right", ylabel="episodes")
    axes[1].set(title="episode length", xlabel="frames")
    metrics = ["success rate", "progress", "entropy/3.91", "frame div. x5"]
    values_a = [sa.success_rate, sa.level_progress_mean, da.action_entropy_bits / 3.91, da.frame_diversity * 5]
    values_b = [sb.success_rate, sb.level_progress_mean, db.action_entropy_bits / 3.91, db.frame_diversity * 5]
    x = np.arange(len(metrics))
    axes[2].bar(x - 0.2, values_a, 0.4, label=Path(name_a).name)
    axes[2].bar(x + 0.2, values_b, 0.4, label=Path(name_b).name)
    axes[2].set_xticks(x, metrics)
    axes[2].set(title="diversity")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
