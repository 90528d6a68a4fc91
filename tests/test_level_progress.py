"""Level progress measures how far right the agent got, from frames alone."""

import numpy as np

from rl_agent.coinrun_env import CoinRunConfig, CoinRunVecEnv
from rl_agent.level_progress import ProgressTracker, horizontal_positions, level_progress


def test_registration_tracks_a_known_camera_path():
    rng = np.random.default_rng(0)
    # a wide scene of wall-like blocks; the camera moves right 0-3 px per frame, then back left
    scene = np.zeros((64, 600, 3), np.uint8)
    for x in range(0, 600, 8):
        height = rng.integers(5, 50)
        scene[64 - height :, x : x + 8] = rng.integers(120, 255, 3)
    path = np.concatenate([np.cumsum(rng.integers(0, 4, 120)), np.cumsum(rng.integers(0, 4, 120))[::-1]])
    path = np.concatenate([[0], path])
    frames = np.stack([scene[:, x : x + 64] for x in path])
    # the camera follows the agent: scene content shifts left when the agent moves right
    estimate = horizontal_positions(frames)
    assert np.abs(estimate - path).max() <= 3
    assert abs(level_progress(frames) - path.max() / 64) < 0.05
    # the incremental tracker (agent evaluation, many games at once) walks exactly the same path
    tracker = ProgressTracker(3)
    for slot in range(3):
        tracker.start(slot, frames[0])
    for t in range(1, len(frames)):
        tracker.update(np.array([0, 2]), np.stack([frames[t], frames[t]]))
        assert tracker.position[0] == tracker.position[2] == estimate[t]
    assert tracker.progress(1) == 0.0 and tracker.progress(0) == estimate.max() / 64


def _progress(policy, steps=150, envs=6):
    env = CoinRunVecEnv(envs, CoinRunConfig(max_episode_frames=1000), seed=5)
    rng = np.random.default_rng(0)
    frames, ended = [env.observe()], []
    for _ in range(steps):
        step = env.step(policy(rng, envs))
        frames.append(step.obs)
        ended.append(step.terminated)
    episodes = np.stack(frames, axis=1)  # (E, T+1, H, W, C)
    ended = np.stack(ended, axis=1)  # (E, T)
    # keep each env's first episode only (after an end the frames show a new level)
    lengths = [int(np.argmax(e)) + 1 if e.any() else steps + 1 for e in ended]
    return np.array([level_progress(e[:n]) for e, n in zip(episodes, lengths)])


def test_running_right_makes_more_progress_than_standing_still():
    right_and_jump = _progress(lambda rng, n: np.where(rng.random(n) < 0.5, 7, 8))  # RIGHT / RIGHT+UP
    standing = _progress(lambda rng, n: np.full(n, 4))  # NOOP
    assert standing.max() < 0.1
    assert right_and_jump.mean() > 0.5 and right_and_jump.mean() > 5 * max(standing.mean(), 0.01)
