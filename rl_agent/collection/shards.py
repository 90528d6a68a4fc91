"""One shard: play its episodes deterministically from (seed, shard index) and stream them into its file,
or describe a complete shard file that a killed run left unlisted."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from rl_agent.agents import make_agent, with_held_keys
from rl_agent.coinrun_env import CoinRunVecEnv, derive_seed
from rl_agent.collection.config import CollectConfig, ShardPlan, assign_split, shard_file_name
from rl_agent.recorder import Episode, EpisodeRecorder
from rl_agent.store.manifest import ShardInfo
from rl_agent.store.schema import episode_batch
from rl_agent.store.verify import check_shard_file
from rl_agent.store.writer import ShardWriter, episode_info


def play_episodes(
    config: CollectConfig, shard_index: int, count: int, on_step: Callable[[int, int], None] | None = None,
    policy=None,
) -> Iterator[tuple[int, Episode]]:
    """Play `count` whole episodes for one shard, deterministically from (seed, shard index).

    Yields (episode index, Episode) as episodes end; index = order in which episodes started.
    The Episode's arrays are views into reusable buffers: consume them before asking for more.
    """
    num_envs = min(config.envs_per_shard, count)
    env = CoinRunVecEnv(num_envs, config.env, seed=derive_seed(config.seed, shard_index))
    agent = with_held_keys(policy or make_agent(config.agent, num_envs, config.sticky_prob, config.checkpoint),
                           num_envs, config.hold_prob, config.hold_frames)
    rng = np.random.default_rng([config.seed, shard_index, 0xC011EC7])
    obs = env.observe()  # (E, H, W, C)
    recorder = EpisodeRecorder(obs, env.level_seeds, capacity=config.env.max_episode_frames)
    episode_of_slot = list(range(num_envs))  # episode index each slot is playing, -1 when idle
    started, finished = num_envs, 0
    while finished < count:
        output = agent.act(obs, rng)
        step = env.step(output.actions)
        obs = step.obs
        closed = recorder.record(output, step)
        for slot, episode in closed:
            if episode_of_slot[slot] >= 0:
                finished += 1
                yield episode_of_slot[slot], episode
            episode_of_slot[slot] = started if started < count else -1
            started += started < count
        if closed:
            recorder.restart(np.array([slot for slot, _ in closed]), obs, env.level_seeds)
        if on_step is not None:
            on_step(num_envs, len(closed))


def collect_shard(config: CollectConfig, out_dir: Path, plan: ShardPlan, on_step=None, policy=None) -> ShardInfo:
    """Record one shard's episodes, streaming each into the shard file, and commit it atomically.

    `policy`: an already loaded stateless agent (a PPO policy) to reuse across shards.
    """
    with ShardWriter(out_dir, shard_file_name(config.collection, plan.index), config.collection, plan.index) as writer:
        for k, e in play_episodes(config, plan.index, plan.episodes, on_step, policy):
            episode_id = f"{config.collection}-{plan.index:05d}-{k:04d}"
            batch = episode_batch(episode_id, e.frames, e.actions, e.rewards, e.terminated, e.truncated,
                                  e.level_seed, config.agent_name, e.logp, e.value)
            writer.write_episode(batch, assign_split(episode_id, config))
        return writer.commit()


def adopt_shard(path: Path, config: CollectConfig) -> ShardInfo:
    """Describe a complete shard file that a killed run committed but did not list."""
    batches, sha = check_shard_file(path)
    index = int(path.stem.rsplit("-", 1)[1])
    episodes = [episode_info(b, i, assign_split(b.column("episode_id")[0].as_py(), config))
                for i, b in enumerate(batches)]
    return ShardInfo(
        file=path.name,
        collection=config.collection,
        index=index,
        sha256=sha,
        bytes=path.stat().st_size,
        rows=sum(b.num_rows for b in batches),
        agent=config.agent_name,
        episodes=episodes,
    )
