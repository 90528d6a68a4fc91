"""The CoinRun environment: Gymnasium compliance, episode ends, truncation and level seeds."""

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rl_agent.coinrun_env import CoinRunConfig, CoinRunEnv, CoinRunVecEnv, ConfigError, make_replay_env


def test_gymnasium_env_passes_check_env():
    env = CoinRunEnv(CoinRunConfig(max_episode_frames=50))
    check_env(env, skip_render_check=True)


def test_gym_env_truncates_at_cap_and_starts_a_new_level():
    env = CoinRunEnv({"max_episode_frames": 8})
    obs, info = env.reset(seed=3)
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    frames = 1
    while True:
        obs, reward, terminated, truncated, info = env.step(4)  # NOOP: never ends the level by itself
        frames += 1
        if terminated or truncated:
            break
    assert truncated and not terminated and frames == 8
    _, info2 = env.reset()
    assert "level_seed" in info2


def test_vec_env_truncation_returns_final_frame_and_fresh_level():
    env = CoinRunVecEnv(3, CoinRunConfig(max_episode_frames=5), seed=1)
    first_seeds = env.level_seeds.copy()
    for _ in range(3):
        step = env.step(np.full(3, 4))
        assert not step.truncated.any()
    step = env.step(np.full(3, 4))
    assert step.truncated.all() and set(step.final_obs) == {0, 1, 2}
    assert not np.array_equal(env.level_seeds, first_seeds)
    # the returned obs is the first frame of the new level: a replay env of that level starts there
    replay = make_replay_env(env.config, int(env.level_seeds[0]))
    _, obs, _ = replay.observe()
    assert np.array_equal(obs["rgb"][0], step.obs[0])


def test_same_seed_same_levels_and_frames():
    a, b = CoinRunVecEnv(2, seed=11), CoinRunVecEnv(2, seed=11)
    assert np.array_equal(a.level_seeds, b.level_seeds)
    rng = np.random.default_rng(0)
    for _ in range(20):
        actions = rng.integers(0, 15, 2)
        assert np.array_equal(a.step(actions).obs, b.step(actions).obs)


@pytest.mark.parametrize(
    "options, message",
    [({"distribution_mode": "medium"}, "distribution_mode"), ({"max_episode_frames": 1}, "max_episode_frames"),
     ({"levels": 3}, "unknown CoinRun option")],
)
def test_bad_env_options_are_refused_with_a_clear_message(options, message):
    with pytest.raises(ConfigError, match=message):
        CoinRunConfig.from_dict(options)
