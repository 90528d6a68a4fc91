"""The PPO learner's loss is ppo2's: the critic learns large returns, no KL term, rewards scaled in the learner only."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.evaluation.postprocessing import Postprocessing

from rl_agent.coinrun_env import CoinRunConfig
from rl_agent.ppo_config import PPOSettings, build_ppo_config
from rl_agent.ppo_learner import ReturnNormaliser, normalise_advantages, ppo2_value_loss

TINY = dict(num_env_runners=0, envs_per_runner=4, rollout_length=64, epochs=1, minibatches=2, channels=(8, 16, 16),
            hidden=64, blocks=1, env=CoinRunConfig(max_episode_frames=120))
# the critic test's run: 12 iterations of 8 envs x 64 steps; on a 2-core CPU its explained variance went
# -0.00, 0.86, 0.83, 0.35, -0.15, 0.83, 0.45, 0.77, 0.82, 0.84, 0.39, ... (a coin in a batch drops it for an iteration)
EV_STEPS, EV_THRESHOLD = 6144, 0.4
SPACES = {"default_policy": (gym.spaces.Box(0, 255, (64, 64, 3), np.uint8), gym.spaces.Discrete(15))}


def _learner(**values):
    config = build_ppo_config(PPOSettings(**(TINY | values)), gpus_available=0)
    return config, config.build_learner(spaces=SPACES)


def _batch(size: int = 8, seed: int = 0, old_logits: torch.Tensor | None = None) -> dict:
    """Frames of noise whose value target is CoinRun's coin (+10), sampled when V was 0."""
    gen = torch.Generator().manual_seed(seed)
    return {
        Columns.OBS: torch.randint(0, 256, (size, 64, 64, 3), dtype=torch.uint8, generator=gen),
        Columns.ACTIONS: torch.randint(0, 15, (size,), generator=gen),
        Columns.ACTION_LOGP: torch.full((size,), float(np.log(1 / 15))),
        Columns.ACTION_DIST_INPUTS: torch.zeros(size, 15) if old_logits is None else old_logits,
        Postprocessing.ADVANTAGES: torch.zeros(size),
        Postprocessing.VALUE_TARGETS: torch.full((size,), 10.0),
        Columns.VF_PREDS: torch.zeros(size),
    }


def _loss(learner, config, batch):
    module = learner.module["default_policy"]
    fwd_out = module.forward_train(batch)
    return learner.compute_loss_for_module(module_id="default_policy",
                                           config=config.get_config_for_module("default_policy"),
                                           batch=batch, fwd_out=fwd_out)


def test_the_critic_gets_a_gradient_for_a_return_of_10():
    """RLlib's vf_clip_param clamps the squared error (100 > 0.2: no gradient); ppo2 clips the change of V."""
    config, learner = _learner(vf_clip=0.2)
    module = learner.module["default_policy"]
    module.zero_grad()
    _loss(learner, config, _batch()).backward()
    grad = module.vf.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    # descending it moves V towards 10
    with torch.no_grad():
        before = module.compute_values(_batch()).mean()
        for param in module.vf.parameters():
            param -= 0.01 * param.grad
        assert module.compute_values(_batch()).mean() > before


def test_ppo2_value_loss_clips_the_change_not_the_error():
    targets, old = torch.tensor([10.0, 10.0, 0.0]), torch.tensor([0.0, 0.0, 0.0])
    values = torch.tensor([0.1, 1.0, 1.0], requires_grad=True)
    loss = ppo2_value_loss(values, old, targets, clip=0.2)
    # inside the clip range both terms agree; outside it the clipped V (0.2) is further from 10 than 1.0 is
    assert torch.allclose(loss, torch.tensor([0.5 * 9.9**2, 0.5 * 9.8**2, 0.5 * 1.0]))
    loss.sum().backward()
    # the clipped term (constant in V) wins for the second: no gradient there, as in ppo2; the third is unclipped
    assert torch.allclose(values.grad, torch.tensor([-9.9, 0.0, 1.0]))
    assert torch.allclose(ppo2_value_loss(values, old, targets, clip=None), 0.5 * (values - targets) ** 2)


def test_there_is_no_kl_term():
    config, learner = _learner()
    assert config.use_kl_loss is False
    batch = _batch()
    same = _loss(learner, config, batch)
    # the sampling policy's logits far from the current ones: a KL penalty would change the loss
    far = _loss(learner, config, batch | {Columns.ACTION_DIST_INPUTS: 5 * torch.randn(8, 15)})
    assert torch.equal(same, far)
    with pytest.raises(ValueError, match="no KL penalty"):
        config.use_kl_loss = True
        _loss(learner, config, batch)


def test_adam_eps_is_ppo2s():
    _, learner = _learner(adam_eps=1e-5)
    (optimizer,) = learner._named_optimizers.values()
    assert optimizer.param_groups[0]["eps"] == 1e-5


def test_rewards_are_scaled_by_the_std_of_discounted_returns():
    norm = ReturnNormaliser(gamma=0.5)
    # one episode across two chunks: its discounted return continues; a new episode starts from 0
    first = norm.returns_of([("a", False, np.array([1.0, 0.0])), ("b", True, np.array([2.0]))])
    assert np.allclose(first, [1.0, 0.5, 2.0]) and norm.open_returns == {"a": 0.5}
    assert np.allclose(norm.returns_of([("a", True, np.array([1.0]))]), [1.25]) and norm.open_returns == {}
    returns = np.random.default_rng(0).normal(3.0, 2.0, 10_000)
    norm.update(returns)
    assert norm.var == pytest.approx(returns.var(), rel=1e-3)
    assert np.allclose(norm.scale(np.array([2.0, 1e6])), [2.0 / returns.std(), 10.0], rtol=1e-3)  # clipped at 10


def test_advantages_are_normalised_over_the_rows_the_loss_sees():
    """Each episode's artificial bootstrap row (masked out of the loss) must not pull the advantages' mean and std."""
    rng = np.random.default_rng(0)
    advantages = rng.normal(2.0, 3.0, 100)
    real = np.ones(100, dtype=bool)
    real[[9, 49, 99]] = False  # three episode chunks, each ending in its artificial step
    advantages[~real] = 50.0  # whatever the artificial rows hold
    scaled = normalise_advantages(advantages, real)
    assert scaled[real].mean() == pytest.approx(0.0, abs=1e-9) and scaled[real].std() == pytest.approx(1.0)
    assert np.allclose(scaled[real], (advantages[real] - advantages[real].mean()) / advantages[real].std())


def test_the_critic_learns_real_coinrun(ray_cluster, tmp_path):
    """A short real run (seeded): the critic's explained variance of the GAE targets, measured on each new batch before
    it is learnt from (ppo2's), starts near 0 and climbs well above it."""
    import csv

    from rl_agent.ppo_training import train_agent

    settings = PPOSettings(**(TINY | dict(envs_per_runner=8, rollout_length=64, epochs=3, total_env_steps=EV_STEPS,
                                          checkpoint_every=1000, seed=0)))
    train_agent(settings, tmp_path / "run", show_progress=False)
    with open(tmp_path / "run" / "curve.csv") as handle:
        explained = [float(row["vf_explained_var"]) for row in csv.DictReader(handle)]
    assert len(explained) == 12 and abs(explained[0]) < 0.2, explained  # the untrained critic explains nothing
    assert np.mean(explained[-6:]) > EV_THRESHOLD, explained


def test_the_reward_scale_survives_a_resume(ray_cluster, tmp_path):
    """The running return statistics are part of the learner's checkpoint, so a resumed run scales rewards alike."""
    settings = PPOSettings(**(TINY | dict(env=CoinRunConfig(max_episode_frames=60))))
    algo = build_ppo_config(settings, gpus_available=0).build_algo()
    algo.train(), algo.train()
    saved = algo.learner_group._learner.reward_normaliser.get_state()
    algo.save_to_path(str(tmp_path / "ckpt"))
    algo.stop()
    again = build_ppo_config(settings, gpus_available=0).build_algo()
    again.restore_from_path(str(tmp_path / "ckpt"))
    restored = again.learner_group._learner.reward_normaliser.get_state()
    again.stop()
    assert saved["count"] > 1 and restored == saved
