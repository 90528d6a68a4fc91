"""`genie agent eval`: how well an agent plays, on exactly the same levels as the random agent.

Each evaluated episode is the *first* episode on a fresh level (counting every finished
episode would over-weight short successful ones). Levels come from seeded vector envs, so
two agents evaluated with the same seed meet the same levels. Level progress is tracked
online (no frames kept), with the measure of `genie data stats`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rl_agent.agents import BlindAgent, RandomAgent
from rl_agent.coinrun_env import CoinRunConfig, CoinRunVecEnv, derive_seed
from rl_agent.level_progress import ProgressTracker


@dataclass
class EvalResult:
    agent: str
    returns: np.ndarray  # (N,)
    lengths: np.ndarray  # (N,) frames
    successes: np.ndarray  # (N,) bool: the coin was reached
    progress: np.ndarray  # (N,) screens
    level_seeds: np.ndarray  # (N,)

    def summary(self) -> dict[str, tuple[float, float]]:
        """metric -> (mean, 95% CI half-width), normal approximation."""
        out = {}
        for name, values in [("return", self.returns), ("success", self.successes.astype(float)),
                             ("length", self.lengths.astype(float)), ("level progress", self.progress)]:
            half = 1.96 * values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
            out[name] = (float(values.mean()), float(half))
        return out


def evaluate_agent(agent, episodes: int, seed: int = 0, env: CoinRunConfig | None = None, batch: int = 64,
                   show_progress: bool = False) -> EvalResult:
    """Play the first episode of `episodes` levels; `agent` is an agent object, 'random' or 'blind'."""
    from tqdm import tqdm

    env_config = env or CoinRunConfig()
    returns, lengths, successes, progress, seeds = [], [], [], [], []
    references = {"random": RandomAgent, "blind": lambda count: BlindAgent()}
    name = agent if isinstance(agent, str) else agent.name
    if isinstance(agent, str) and agent not in references:
        raise ValueError(f"unknown reference agent {agent!r}; known: {', '.join(references)}")
    bar = tqdm(total=episodes, unit="ep", desc=f"eval {name}", disable=not show_progress, dynamic_ncols=True)
    for round_index in range(math.ceil(episodes / batch)):
        count = min(batch, episodes - round_index * batch)
        vec = CoinRunVecEnv(count, env_config, seed=derive_seed(seed, round_index, 0xE7A1))
        player = references[agent](count) if isinstance(agent, str) else agent
        rng = np.random.default_rng([seed, round_index, 0xE7A1])
        seeds.extend(vec.level_seeds.tolist())
        obs = vec.observe()  # (E, H, W, C)
        tracker = ProgressTracker(count)
        for slot in range(count):
            tracker.start(slot, obs[slot])
        done = np.zeros(count, dtype=bool)
        ret = np.zeros(count)
        length = np.ones(count, dtype=np.int64)
        success = np.zeros(count, dtype=bool)
        while not done.all():
            step = vec.step(player.act(obs, rng).actions)
            playing = ~done
            ret[playing] += step.reward[playing]
            ended = playing & step.terminated  # the end frame of a terminated episode is never shown
            success[ended] = step.level_complete[ended]
            going = np.flatnonzero(playing & ~step.terminated)
            frames = step.obs[going]
            for i, slot in enumerate(going):
                if slot in step.final_obs:
                    frames[i] = step.final_obs[int(slot)]
            tracker.update(going, frames)
            length[going] += 1
            newly_done = ended | (playing & step.truncated)
            done |= newly_done
            bar.update(int(newly_done.sum()))
            obs = step.obs
        returns.extend(ret.tolist())
        lengths.extend(length.tolist())
        successes.extend(success.tolist())
        progress.extend(tracker.progress(s) for s in range(count))
    bar.close()
    return EvalResult(name, np.array(returns), np.array(lengths), np.array(successes), np.array(progress),
                      np.array(seeds))


def paired_return_difference(first: EvalResult, other: EvalResult) -> tuple[float, float]:
    """Mean of (first - other) return per level and its 95% CI half-width (normal approximation). Both played the
    same levels (evaluate_agent with one seed), so each level's difficulty cancels: a CI several times narrower
    than the two unpaired ones, what tells a 0.3 gain from the spread of levels."""
    if not np.array_equal(first.level_seeds, other.level_seeds):
        raise ValueError(f"{first.agent} and {other.agent} played different levels: evaluate both with one seed "
                         f"and one episode count")
    difference = first.returns - other.returns  # (N,)
    half = 1.96 * difference.std(ddof=1) / math.sqrt(len(difference)) if len(difference) > 1 else float("nan")
    return float(difference.mean()), float(half)


def paired_returns(results: list[EvalResult]) -> dict[str, tuple[float, float]]:
    """'first - other' -> (mean, 95% CI half-width) of the first agent's return minus each other agent's, per level."""
    first = results[0]
    return {f"{first.agent} - {other.agent}": paired_return_difference(first, other) for other in results[1:]}


def format_paired(paired: dict[str, tuple[float, float]], levels: int) -> str:
    """One line of `paired_returns`."""
    parts = [f"{pair} {mean:+.2f} ± {half:.2f}" for pair, (mean, half) in paired.items()]
    return f"return, paired per level ({levels} levels): " + "; ".join(parts)


def format_comparison(results: list[EvalResult]) -> str:
    """A table: one row per metric, one column per agent, 'mean ± 95% CI'."""
    summaries = [r.summary() for r in results]
    header = ["metric"] + [f"{r.agent} ({len(r.returns)} levels)" for r in results]
    rows = [header]
    for metric in summaries[0]:
        cells = []
        for summary in summaries:
            mean, half = summary[metric]
            cells.append(f"{mean:.1%} ± {half:.1%}" if metric == "success" else f"{mean:.2f} ± {half:.2f}")
        rows.append([metric] + cells)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)
