"""The Procgen paper's PPO loss (baselines' ppo2) as an RLlib torch learner.

What differs from RLlib's `PPOTorchLearner`, and why:

* **Value clipping as ppo2 does it**: the *change* of the value prediction against the prediction made when the
  batch was sampled is clipped, and the loss is the larger of the clipped and unclipped squared errors. RLlib's
  `vf_clip_param` clamps the squared error itself, so once |V - target| > sqrt(clip) the critic gets no gradient
  at all (CoinRun's +10 returns are never learnt with ppo2's 0.2).
* **No KL penalty** (ppo2 has none); the learner refuses a config that asks for one.
* **Rewards scaled by a running std of discounted returns** (ppo2's `VecNormalize(ob=False)`), inside the learner
  only: env runners, RLlib's episode returns and every recorded dataset keep the raw reward.
* **Adam eps 1e-5** (ppo2's), instead of torch's 1e-8.

Settings arrive through `config.learner_config_dict`: `vf_clip` (None = no clipping), `reward_norm` (bool),
`adam_eps`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.ppo.ppo import LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY, LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY
from ray.rllib.algorithms.ppo.torch.ppo_torch_learner import PPOTorchLearner
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.connectors.learner import GeneralAdvantageEstimation
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.learner import ENTROPY_KEY, POLICY_LOSS_KEY, VF_LOSS_KEY
from ray.rllib.evaluation.postprocessing import Postprocessing
from ray.rllib.utils.postprocessing.value_predictions import compute_value_targets
from ray.rllib.utils.torch_utils import explained_variance

REWARD_NORM_STATE = "genie_reward_normaliser"
EPISODE_KEYS = "genie_episode_keys"
BATCH_EXPLAINED_VAR = "vf_explained_var_batch"


def _numpy(column: Any, dtype) -> np.ndarray:
    """A batch column (tensor or array) as a numpy array."""
    return np.asarray(column.cpu() if torch.is_tensor(column) else column, dtype=dtype)


def _explained_variance(values: np.ndarray, targets: np.ndarray) -> float:
    """1 - Var[target - V] / Var[target]; nan when the targets do not vary."""
    spread = float(np.var(targets))
    return float("nan") if spread == 0 else 1.0 - float(np.var(targets - values)) / spread


def ppo2_value_loss(values: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor,
                    clip: float | None) -> torch.Tensor:
    """Per-sample 0.5 * max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2), ppo2's value loss (B,)."""
    unclipped = (values - targets) ** 2
    if clip is None:
        return 0.5 * unclipped
    clipped = (old_values + torch.clamp(values - old_values, -clip, clip) - targets) ** 2
    return 0.5 * torch.maximum(unclipped, clipped)


class ReturnNormaliser:
    """Running variance of discounted returns, per env stream (ppo2's `VecNormalize(ob=False)`).

    A stream's discounted return continues across the chunks of one episode (RLlib gives them the same id) and
    restarts at 0 when an episode begins, as ppo2's resets it at `done`.
    """

    def __init__(self, gamma: float, clip: float = 10.0, epsilon: float = 1e-8) -> None:
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon
        self.count, self.mean, self.var = 1e-4, 0.0, 1.0  # ppo2's RunningMeanStd start
        self.open_returns: dict[str, float] = {}  # episode id -> discounted return so far

    def returns_of(self, chunks: list[tuple[str, bool, np.ndarray]]) -> np.ndarray:
        """Discounted returns after each reward of a batch's episode chunks (episode id, done, rewards (T,)),
        concatenated; remembers where each open episode stands (every open episode has a chunk in every batch)."""
        out, still_open = [], {}
        for episode_id, done, rewards in chunks:
            running = self.open_returns.get(episode_id, 0.0)
            returns = np.empty(len(rewards), dtype=np.float64)
            for t, reward in enumerate(rewards):
                running = running * self.gamma + float(reward)
                returns[t] = running
            out.append(returns)
            if not done:
                still_open[episode_id] = running
        self.open_returns = still_open
        return np.concatenate(out) if out else np.zeros(0)

    def update(self, returns: np.ndarray) -> None:
        """Chan et al.'s parallel variance update, as baselines' RunningMeanStd."""
        if len(returns) == 0:
            return
        batch_mean, batch_var, batch_count = float(returns.mean()), float(returns.var()), len(returns)
        delta, total = batch_mean - self.mean, self.count + batch_count
        m2 = self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        self.mean, self.var, self.count = self.mean + delta * batch_count / total, m2 / total, total

    def scale(self, rewards: np.ndarray) -> np.ndarray:
        return np.clip(rewards / np.sqrt(self.var + self.epsilon), -self.clip, self.clip).astype(np.float32)

    def get_state(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "var": self.var, "open_returns": dict(self.open_returns)}

    def set_state(self, state: dict[str, Any]) -> None:
        self.count, self.mean, self.var = state["count"], state["mean"], state["var"]
        self.open_returns = dict(state["open_returns"])


class RememberEpisodeIds(ConnectorV2):
    """First learner connector piece: notes each episode chunk's id and whether it ended, in batch order, before
    RLlib's `AddOneTsToEpisodesAndTruncate` renames the chunks and marks every one of them truncated."""

    def __call__(self, *, rl_module, episodes, batch, shared_data=None, **kwargs):
        if shared_data is not None:
            shared_data[EPISODE_KEYS] = [(e.id_, e.is_done) for e in
                                         self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False)]
        return batch



def normalise_advantages(advantages: np.ndarray, real: np.ndarray) -> np.ndarray:
    """Advantages (N,) shifted and scaled to mean 0 and std 1 over the `real` rows (N,) bool, as ppo2 does: each
    episode's artificial bootstrap step, masked out of the loss, must not pull the mean and std (it did, by one
    row per episode chunk, ~2% of a tiny batch)."""
    kept = advantages[real] if real.any() else advantages
    return (advantages - kept.mean()) / max(1e-4, float(kept.std()))

class PPO2Advantages(ConnectorV2):
    """Learner connector replacing RLlib's GAE piece: (optionally) scales rewards, computes GAE advantages and value
    targets, and keeps the value predictions it used (`Columns.VF_PREDS`), which ppo2's value clipping needs.

    Runs on episodes elongated by one artificial step (RLlib's `AddOneTsToEpisodesAndTruncate`): the batch holds the
    episodes' steps back to back, each episode's last row being that extra step (reward 0, masked out of the loss).
    """

    def __init__(self, input_observation_space=None, input_action_space=None, *, gamma: float, lambda_: float,
                 normaliser: ReturnNormaliser | None = None) -> None:
        super().__init__(input_observation_space, input_action_space)
        self.gamma, self.lambda_, self.normaliser = gamma, lambda_, normaliser

    def __call__(self, *, rl_module, episodes, batch, shared_data=None, metrics=None, **kwargs):
        episodes = list(self.single_agent_episode_iterator(episodes, agents_that_stepped_only=False))
        if self.normaliser is not None and len(batch) != 1:
            raise RuntimeError("reward normalisation supports one policy (single-agent) only")
        for module_id, module_batch in batch.items():
            module = rl_module[module_id]
            with torch.no_grad():
                values_t = module.compute_values(module_batch)  # (N,) N = sum of elongated episode lengths
            values = values_t.cpu().numpy()
            rewards = _numpy(module_batch[Columns.REWARDS], np.float32)
            if self.normaliser is not None:
                rewards = self._scaled(rewards, episodes, shared_data[EPISODE_KEYS])
            targets = compute_value_targets(values=values, rewards=rewards,
                                            terminateds=_numpy(module_batch[Columns.TERMINATEDS], np.float32),
                                            truncateds=_numpy(module_batch[Columns.TRUNCATEDS], np.float32),
                                            gamma=self.gamma, lambda_=self.lambda_)
            advantages = targets - values
            real = _numpy(module_batch[Columns.LOSS_MASK], bool)  # (N,) False on each episode's artificial step
            if metrics is not None:  # ppo2's explained variance: the critic before this update, on the whole new batch
                metrics.log_value((module_id, BATCH_EXPLAINED_VAR), _explained_variance(values[real], targets[real]),
                                  window=1)
            advantages = normalise_advantages(advantages, real)
            device = values_t.device
            module_batch[Postprocessing.ADVANTAGES] = torch.from_numpy(advantages.astype(np.float32)).to(device)
            module_batch[Postprocessing.VALUE_TARGETS] = torch.from_numpy(targets).to(device)
            module_batch[Columns.VF_PREDS] = values_t.detach()
        return batch

    def _scaled(self, rewards: np.ndarray, episodes: list, keys: list[tuple[str, bool]]) -> np.ndarray:
        """Rewards divided by the running std of discounted returns; each episode's extra last row stays 0."""
        lengths = [len(e) for e in episodes]  # elongated lengths: the batch's row layout
        if sum(lengths) != len(rewards) or len(keys) != len(episodes):
            raise RuntimeError(f"batch rows ({len(rewards)}) do not match the episodes' steps ({sum(lengths)}); "
                               "reward normalisation supports stateless modules only")
        starts = np.cumsum([0] + lengths[:-1])
        chunks = [(key, done, rewards[s:s + n - 1]) for (key, done), s, n in zip(keys, starts, lengths)]
        self.normaliser.update(self.normaliser.returns_of(chunks))
        return self.normaliser.scale(rewards)


class PPO2TorchLearner(PPOTorchLearner):
    """RLlib's PPO torch learner with ppo2's value loss, reward scaling and Adam eps (see the module docstring)."""

    def build(self) -> None:
        super().build()  # appends RLlib's GAE piece to the learner connector: swapped for ours
        settings = self.config.learner_config_dict
        self.vf_clip = settings.get("vf_clip")
        self.reward_normaliser = ReturnNormaliser(self.config.gamma) if settings.get("reward_norm", False) else None
        if self._learner_connector is not None and self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.remove(GeneralAdvantageEstimation)
            self._learner_connector.prepend(RememberEpisodeIds())
            self._learner_connector.append(PPO2Advantages(gamma=self.config.gamma, lambda_=self.config.lambda_,
                                                          normaliser=self.reward_normaliser))

    def configure_optimizers_for_module(self, module_id, config=None) -> None:
        module = self._module[module_id]
        params = self.get_parameters(module)
        optimizer = torch.optim.Adam(params, eps=float(self.config.learner_config_dict.get("adam_eps", 1e-8)))
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=config.lr)

    def compute_loss_for_module(self, *, module_id, config, batch: dict[str, Any], fwd_out: dict[str, Any]):
        if config.use_kl_loss:
            raise ValueError("PPO2TorchLearner has no KL penalty (ppo2 has none): build the config with "
                             "use_kl_loss=False")
        module = self.module[module_id].unwrapped()
        if Columns.LOSS_MASK in batch:  # RLlib's artificial bootstrap step of each episode is masked out
            mask = batch[Columns.LOSS_MASK]
            valid = torch.sum(mask)

            def mean(data):
                return torch.sum(data[mask]) / valid
        else:
            mean = torch.mean
        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        ratio = torch.exp(dist.logp(batch[Columns.ACTIONS]) - batch[Columns.ACTION_LOGP])  # (B,)
        advantages = batch[Postprocessing.ADVANTAGES]
        surrogate = torch.min(advantages * ratio,
                              advantages * torch.clamp(ratio, 1 - config.clip_param, 1 + config.clip_param))
        entropy = dist.entropy()
        values = module.compute_values(batch, embeddings=fwd_out.get(Columns.EMBEDDINGS))  # (B,)
        targets = batch[Postprocessing.VALUE_TARGETS]
        vf_loss = ppo2_value_loss(values, batch[Columns.VF_PREDS], targets, self.vf_clip)
        entropy_coeff = self.entropy_coeff_schedulers_per_module[module_id].get_current_value()
        total = mean(-surrogate + config.vf_loss_coeff * vf_loss - entropy_coeff * entropy)
        self.metrics.log_dict(
            {
                POLICY_LOSS_KEY: -mean(surrogate),
                VF_LOSS_KEY: mean(vf_loss),
                LEARNER_RESULTS_VF_LOSS_UNCLIPPED_KEY: mean(0.5 * (values - targets) ** 2),
                LEARNER_RESULTS_VF_EXPLAINED_VAR_KEY: explained_variance(targets, values),
                ENTROPY_KEY: mean(entropy),
            },
            key=module_id,
            window=1,
        )
        return total

    def get_state(self, components=None, *, not_components=None, **kwargs):
        state = super().get_state(components, not_components=not_components, **kwargs)
        if self.reward_normaliser is not None and components is None:
            state[REWARD_NORM_STATE] = self.reward_normaliser.get_state()
        return state

    def set_state(self, state) -> None:
        super().set_state(state)
        if self.reward_normaliser is not None and REWARD_NORM_STATE in state:
            self.reward_normaliser.set_state(state[REWARD_NORM_STATE])
