"""`genie data stats`: what a dataset holds, as a table and a PNG figure.

Level progress (see `rl_agent.level_progress`) is what shows a trained agent exploring more
of each level than a random one; it reads frames, so it is computed on a sample of episodes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rl_agent.coinrun_env import ACTION_NAMES, NUM_ACTIONS
from rl_agent.level_progress import level_progress
from rl_agent.store.manifest import Manifest
from rl_agent.store.reader import EpisodeStore
from rl_agent.store.writer import read_shard_batches


@dataclass
class DatasetStats:
    episodes: int
    frames: int
    bytes_on_disk: int
    bytes_per_frame: float
    length_mean: float
    length_median: float
    length_p10: float
    length_p90: float
    truncated_fraction: float
    return_mean: float
    return_std: float
    success_rate: float
    level_progress_mean: float
    level_progress_median: float
    level_progress_episodes: int
    splits: dict[str, int]
    agents: dict[str, int]
    action_histogram: list[int]
    lengths: list[int]
    returns: list[float]
    level_progress: list[float]

    def summary(self) -> dict:
        values = asdict(self)
        for key in ("lengths", "returns", "level_progress"):
            values.pop(key)
        return values


def compute_stats(root: str | Path, progress_episodes: int = 200, seed: int = 0, cache_dir=None) -> DatasetStats:
    manifest = Manifest.load(root)
    episodes = [e for _, e in manifest.episodes()]
    lengths = np.array([e.length for e in episodes])
    returns = np.array([e.ret for e in episodes])
    histogram = np.zeros(NUM_ACTIONS, dtype=np.int64)
    for shard in manifest.shards:
        for batch in read_shard_batches(manifest.root / shard.file, columns=["action"]):
            actions = batch.column("action").to_numpy()
            histogram += np.bincount(actions[actions >= 0], minlength=NUM_ACTIONS)
    store = EpisodeStore(root, cache_dir=cache_dir)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(store), size=min(progress_episodes, len(store)), replace=False)
    progress = np.array([level_progress(store.episode_frames(int(i))) for i in np.sort(sample)])
    splits: dict[str, int] = {}
    for e in episodes:
        splits[e.split] = splits.get(e.split, 0) + 1
    agents: dict[str, int] = {}
    for shard in manifest.shards:
        agents[shard.agent] = agents.get(shard.agent, 0) + len(shard.episodes)
    size = sum(s.bytes for s in manifest.shards)
    return DatasetStats(
        episodes=len(episodes),
        frames=int(lengths.sum()),
        bytes_on_disk=size,
        bytes_per_frame=size / max(1, int(lengths.sum())),
        length_mean=float(lengths.mean()),
        length_median=float(np.median(lengths)),
        length_p10=float(np.percentile(lengths, 10)),
        length_p90=float(np.percentile(lengths, 90)),
        truncated_fraction=float(np.mean([e.truncated for e in episodes])),
        return_mean=float(returns.mean()),
        return_std=float(returns.std()),
        success_rate=float(np.mean([e.success for e in episodes])),
        level_progress_mean=float(progress.mean()),
        level_progress_median=float(np.median(progress)),
        level_progress_episodes=len(progress),
        splits=splits,
        agents=agents,
        action_histogram=histogram.tolist(),
        lengths=lengths.tolist(),
        returns=returns.tolist(),
        level_progress=progress.tolist(),
    )


def format_table(stats: DatasetStats) -> str:
    rows = [
        ("episodes", f"{stats.episodes:,}  ({', '.join(f'{k} {v}' for k, v in sorted(stats.splits.items()))})"),
        ("agents", ", ".join(f"{k} ({v})" for k, v in stats.agents.items())),
        ("frames", f"{stats.frames:,}"),
        ("bytes on disk / frame", f"{stats.bytes_per_frame:,.0f} B  ({stats.bytes_on_disk / 2**20:,.1f} MiB in all)"),
        ("episode length",
         f"mean {stats.length_mean:.0f}, median {stats.length_median:.0f}, p10-p90 "
         f"{stats.length_p10:.0f}-{stats.length_p90:.0f}"),
        ("truncated at the cap", f"{stats.truncated_fraction:.1%}"),
        ("return", f"mean {stats.return_mean:.2f} ± {stats.return_std:.2f}"),
        ("success rate", f"{stats.success_rate:.1%}"),
        ("level progress (screens)",
         f"mean {stats.level_progress_mean:.2f}, median {stats.level_progress_median:.2f}  (over "
         f"{stats.level_progress_episodes} episodes)"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{k.ljust(width)}  {v}" for k, v in rows]
    total = max(1, sum(stats.action_histogram))
    lines.append("actions".ljust(width) + "  " + "  ".join(
        f"{name} {count / total:.0%}" for name, count in zip(ACTION_NAMES, stats.action_histogram)))
    return "\n".join(lines)


def plot_stats(stats: DatasetStats, path: str | Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    axes[0, 0].hist(stats.lengths, bins=30, color="tab:blue")
    axes[0, 0].set(title="episode length (frames)", xlabel="frames", ylabel="episodes")
    axes[0, 1].hist(stats.returns, bins=20, color="tab:green")
    axes[0, 1].set(title=f"return (success {stats.success_rate:.0%})", xlabel="return", ylabel="episodes")
    axes[1, 0].bar(range(NUM_ACTIONS), stats.action_histogram, color="tab:orange")
    axes[1, 0].set_xticks(range(NUM_ACTIONS), ACTION_NAMES, rotation=60, fontsize=7)
    axes[1, 0].set(title="action histogram", ylabel="steps")
    axes[1, 1].hist(stats.level_progress, bins=20, color="tab:purple")
    axes[1, 1].set(title=f"level progress (mean {stats.level_progress_mean:.2f} screens)",
                   xlabel="furthest right, 64-px screens", ylabel="episodes")
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
