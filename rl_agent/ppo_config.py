"""Typed PPO settings and their translation into an RLlib `PPOConfig` (new API stack).

The loss is ppo2's (rl_agent/ppo_learner.py): value clipping of the change in V, no KL term, rewards scaled by a
running std of discounted returns, Adam eps 1e-5.

The `paper` preset is the Procgen paper's PPO (gamma 0.999, lambda 0.95, lr 5e-4, entropy
0.01, clip 0.2, 64 envs x 256 steps, 3 epochs, 8 minibatches, 25M steps, easy levels);
`tiny`/`small` shrink the budget and the network for CPUs. Presets live in the CLI's preset
files (section `agent:`); this module only knows the typed settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from genie_common.config import dataclass_from_dict, option
from genie_common.errors import ConfigError
from rl_agent.coinrun_env import ACTION_NAMES, NUM_ACTIONS, CoinRunConfig, is_action_subset


# settings that only say where the learner runs, not what it learns: a run may resume with others (on a GPU cluster)
PLACEMENT_SETTINGS = ("num_gpus_per_learner", "num_learners")


@dataclass
class PPOSettings:
    total_env_steps: int = option(25_000_000, help="total env steps", flag="--steps", range="positive")
    # 0 is best on a 2-core laptop
    num_env_runners: int = option(8, help="RLlib env runners (0 = sample in the driver)", flag="--env-runners",
                                  range="non_negative")
    envs_per_runner: int = option(8, help="CoinRun games stepped together in each env runner", range="positive")
    rollout_length: int = 256  # steps per env per training batch
    epochs: int = 3
    minibatches: int = 8
    lr: float = 5e-4
    gamma: float = 0.999
    lam: float = 0.95
    entropy_coeff: float = 0.01
    clip: float = 0.2
    vf_coeff: float = 0.5
    vf_clip: float | None = 0.2  # ppo2's: clips the change of V against the sampled prediction; None = no clipping
    grad_clip: float = 0.5
    reward_norm: bool = True  # ppo2's: rewards / running std of discounted returns, in the learner only
    adam_eps: float = 1e-5  # ppo2's
    # Procgen action ids the policy may choose; empty = all 15 (the Procgen paper's). CoinRun reads only the nine
    # direction combos, ids 0-8: ids 9-14 are keys of other Procgen games, in CoinRun six more NOOPs
    allowed_actions: tuple[int, ...] = ()
    channels: tuple[int, ...] = (16, 32, 32)
    hidden: int = 256
    blocks: int = 2
    checkpoint_every: int = 10  # training iterations between checkpoints
    keep_checkpoints: int = 3
    num_gpus_per_learner: float | None = option(
        None, help="GPUs of the PPO learner, a remote actor then (it lands on a GPU node, which the autoscaler "
                   "starts); 0 = learn on CPUs in the driver; unset (null): 1 when the cluster has or can start a GPU, "
                   "else 0", flag="--gpus-per-learner", range="non_negative")
    num_learners: int | None = None  # None = 1 remote learner (on a GPU node) when it has GPUs, else 0 (in the driver)
    cpus_per_env_runner: float = 1.0
    torch_threads: int | None = None  # learner threads in the driver; None = torch's default
    seed: int = 0
    env: CoinRunConfig = field(default_factory=CoinRunConfig)

    def __post_init__(self) -> None:
        if isinstance(self.env, dict):
            self.env = CoinRunConfig.from_dict(self.env)
        self.channels = tuple(self.channels)
        self.allowed_actions = tuple(int(a) for a in self.allowed_actions or ())
        if self.allowed_actions and not is_action_subset(self.allowed_actions):
            raise ConfigError(f"agent setting allowed_actions must list at least two distinct Procgen action ids in "
                              f"0..{NUM_ACTIONS - 1} ({', '.join(f'{i} {n}' for i, n in enumerate(ACTION_NAMES))}), "
                              f"or be empty for all; got {list(self.allowed_actions)}")
        for name in ("total_env_steps", "envs_per_runner", "rollout_length", "epochs", "minibatches", "hidden",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"agent setting {name} must be at least 1, got {getattr(self, name)}")
        if self.num_env_runners < 0:
            raise ConfigError("agent setting num_env_runners must be >= 0")
        if (self.num_learners is not None and self.num_learners < 0) or (self.num_gpus_per_learner or 0) < 0:
            raise ConfigError("agent settings num_learners and num_gpus_per_learner (--gpus-per-learner) must be >= 0")
        if (self.vf_clip is not None and self.vf_clip <= 0) or self.adam_eps <= 0:
            raise ConfigError("agent settings vf_clip (null for none) and adam_eps must be > 0")
        if self.train_batch_size % self.minibatches:
            raise ConfigError(f"train batch {self.train_batch_size} is not divisible by minibatches={self.minibatches}")

    @property
    def train_batch_size(self) -> int:
        return max(1, self.num_env_runners) * self.envs_per_runner * self.rollout_length

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "PPOSettings":
        return dataclass_from_dict(cls, values, "agent setting")

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["channels"] = list(self.channels)
        values["allowed_actions"] = list(self.allowed_actions)
        return values

    @property
    def model_config(self) -> dict[str, Any]:
        return {"channels": list(self.channels), "hidden": self.hidden, "blocks": self.blocks,
                "allowed_actions": list(self.allowed_actions)}


ENV_NAME = "genie-coinrun-vector"


def make_vector_env(env_context) -> Any:
    """RLlib env creator: a CoinRun vector env of `num_envs` games.

    RLlib seeds each env runner's first `reset(seed=...)` from the config seed and the runner index.
    """
    from rl_agent.coinrun_vector_env import CoinRunGymVectorEnv

    settings = dict(env_context)
    num_envs = int(settings.pop("num_envs", 1))
    return CoinRunGymVectorEnv(num_envs, CoinRunConfig.from_dict(settings))


def learner_layout(settings: PPOSettings, cluster_gpus: float) -> tuple[int, float]:
    """(num_learners, GPUs per learner). With GPUs the learner is a remote actor, so it lands on a GPU node and
    not on the CPU head that runs `genie submit`'s driver; without, it stays in the driver (0 learners), which
    the tiny preset's speed on a laptop depends on. `cluster_gpus`: GPUs the cluster has or can start."""
    gpus = settings.num_gpus_per_learner
    if gpus is None:
        gpus = 1.0 if cluster_gpus >= 1 else 0.0
    learners = settings.num_learners if settings.num_learners is not None else (1 if gpus > 0 else 0)
    return learners, float(gpus)


def learner_bundles(settings: PPOSettings, cluster_gpus: float) -> list[dict[str, float]]:
    """What the remote learners ask Ray for (RLlib's "auto" CPUs: 0 beside a GPU, else 1); none in the driver."""
    learners, gpus = learner_layout(settings, cluster_gpus)
    return [{"GPU": gpus} if gpus else {"CPU": 1.0}] * learners


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has or its autoscaler can start; this machine's CUDA without Ray."""
    import ray

    if ray.is_initialized():
        from rl_agent.capacity import gpus_possible

        return gpus_possible()
    import torch

    return float(torch.cuda.device_count())


def build_ppo_config(settings: PPOSettings, gpus_available: float | None = None):
    """The RLlib config; `gpus_available` (default: asked from the cluster) decides where the learner runs."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec
    from ray.tune.registry import register_env

    from rl_agent.impala_module import ImpalaCNNModule
    from rl_agent.ppo_learner import PPO2TorchLearner

    learners, gpus = learner_layout(settings, cluster_gpus() if gpus_available is None else gpus_available)
    register_env(ENV_NAME, make_vector_env)
    return (
        PPOConfig()
        .environment(env=ENV_NAME, env_config=settings.env.to_dict())
        .env_runners(
            num_env_runners=settings.num_env_runners,
            num_envs_per_env_runner=settings.envs_per_runner,
            gym_env_vectorize_mode="vector_entry_point",
            rollout_fragment_length=settings.rollout_length,
            num_cpus_per_env_runner=settings.cpus_per_env_runner,
        )
        .learners(num_learners=learners, num_gpus_per_learner=gpus, learner_class=PPO2TorchLearner,
                  learner_config_dict={"vf_clip": settings.vf_clip, "reward_norm": settings.reward_norm,
                                       "adam_eps": settings.adam_eps})
        .training(
            lr=settings.lr,
            gamma=settings.gamma,
            lambda_=settings.lam,
            entropy_coeff=settings.entropy_coeff,
            clip_param=settings.clip,
            vf_loss_coeff=settings.vf_coeff,
            use_kl_loss=False,  # ppo2 has no KL penalty
            grad_clip=settings.grad_clip,
            train_batch_size_per_learner=settings.train_batch_size,
            minibatch_size=settings.train_batch_size // settings.minibatches,
            num_epochs=settings.epochs,
        )
        .rl_module(rl_module_spec=RLModuleSpec(module_class=ImpalaCNNModule, model_config=settings.model_config))
        .debugging(seed=settings.seed)
        .reporting(metrics_num_episodes_for_smoothing=100)
    )
