"""The data sets of the paper, by name, with disjoint level seeds between training and test.

* `random-train`: random agent, training levels   * `agent-train`: PPO agent, training levels
* `basic-test`:   random agent, test levels       * `diverse-test`: PPO agent, test levels

Training sets draw levels from [0, 10^6) and test sets from [10^6, 2*10^6) (Procgen's
`start_level`/`num_levels`), so no test level is ever seen in training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from genie_common.errors import ConfigError
from rl_agent.coinrun_env import CoinRunConfig
from rl_agent.collection import CollectConfig

LEVEL_RANGE = 1_000_000
TRAIN_START, TEST_START = 0, LEVEL_RANGE


@dataclass(frozen=True)
class NamedDataset:
    name: str
    agent: str
    test: bool
    seed: int
    description: str
    preset_count: str  # the field of the preset's `data:` section that holds its episode count


NAMED_DATASETS = {
    d.name: d
    for d in [
        NamedDataset("random-train", "random", False, 1, "random agent on training levels (pre-training data)",
                     "random_train_episodes"),
        NamedDataset("agent-train", "ppo", False, 2, "PPO agent on training levels (the TA fine-tuning data)",
                     "agent_train_episodes"),
        NamedDataset("basic-test", "random", True, 3, "Basic Test Set: random agent on test levels", "test_episodes"),
        NamedDataset("diverse-test", "ppo", True, 4, "Diverse Test Set: PPO agent on test levels", "test_episodes"),
    ]
}


def named_dataset(name: str) -> NamedDataset:
    if name not in NAMED_DATASETS:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(NAMED_DATASETS)}")
    return NAMED_DATASETS[name]


def dataset_config(name: str, episodes: int, checkpoint: str | None,
                   base: CollectConfig | None = None) -> CollectConfig:
    """The collection settings of a named data set; `base` supplies workers, shard size and env options."""
    spec = named_dataset(name)
    if spec.agent == "ppo" and not checkpoint:
        raise ConfigError(f"{name} is played by the PPO agent: pass --checkpoint (a run folder of `genie agent train`)")
    base = base or CollectConfig()
    return dataclasses.replace(
        base, agent=spec.agent, checkpoint=checkpoint if spec.agent == "ppo" else None, checkpoint_id=None,
        episodes=episodes, seed=spec.seed, split="test" if spec.test else "auto",
        env=env_for_levels(spec.test, base.env),
        val_fraction=0.0 if spec.test else base.val_fraction, test_fraction=0.0,
    )


# The preset's `data:` fields that shape the random agent's training data (random-train only: the Basic Test Set
# stays the paper's uniform random agent, so every model is scored on the same test set whatever it trained on).
RANDOM_TRAIN_HOLD_FIELDS = ("random_train_hold_prob", "random_train_hold_frames")


def dataset_data_fields(name: str, data: dict) -> dict:
    """The preset's `data:` fields that shape data set `name` (its task's key in the pipeline): all of them but
    random-train's held keys, which reach random-train alone and only when set (a null probability is as if the
    fields were not there, so older runs keep their keys)."""
    holds = name == "random-train" and bool(data.get("random_train_hold_prob"))
    return {k: v for k, v in data.items() if k not in RANDOM_TRAIN_HOLD_FIELDS or holds}


def with_preset_holds(name: str, config: CollectConfig, data: dict) -> CollectConfig:
    """`config` with the preset's held keys for random-train (`data.random_train_hold_prob`, `_hold_frames`): the
    random agent then holds a key (one per CoinRun effect) for some frames now and then, so its data shows the agent
    at speed under every key, which a uniform random agent almost never reaches (README, "What the dynamics
    needs"). Other data sets, and presets without the fields, are unchanged."""
    fields = dataset_data_fields(name, data)
    if not fields.get("random_train_hold_prob"):
        return config
    return dataclasses.replace(config, hold_prob=float(fields["random_train_hold_prob"]),
                               hold_frames=int(fields.get("random_train_hold_frames") or config.hold_frames))


def preset_dataset_config(name: str, data: dict, checkpoint: str | None, base: CollectConfig) -> CollectConfig:
    """Data set `name` as the preset's `data:` section sizes and shapes it (`genie pipeline`, `genie datasets
    make`): its episode count (`preset_count`, at least 1) and, for random-train, the held keys."""
    episodes = int(data.get(named_dataset(name).preset_count) or 1)
    return with_preset_holds(name, dataset_config(name, episodes, checkpoint, base), data)


def env_for_levels(test: bool, env: CoinRunConfig | None = None) -> CoinRunConfig:
    """`env` restricted to the training or the test level range."""
    return dataclasses.replace(env or CoinRunConfig(), start_level=TEST_START if test else TRAIN_START,
                               num_levels=LEVEL_RANGE)
