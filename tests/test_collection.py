"""Collection with real Procgen and real Ray actors: alignment, replay, determinism, resumption."""

import numpy as np
import pyarrow as pa
import pytest

from rl_agent.coinrun_env import CoinRunConfig, make_replay_env
from rl_agent.collection import collect_dataset, plan_shards
from rl_agent.store.errors import DatasetError
from rl_agent.store.manifest import Manifest
from rl_agent.store.reader import EpisodeStore
from rl_agent.store.schema import frames_of
from rl_agent.store.verify import verify_dataset
from tests.conftest import batches_by_id, small_config


def test_replay_rule_reproduces_every_frame_and_the_last_row(small_dataset):
    env_config = CoinRunConfig.from_dict(Manifest.load(small_dataset).collections["random-s7"]["env"])
    ends = set()
    for batch in batches_by_id(small_dataset).values():
        frames = frames_of(batch)  # (L, H, W, C)
        actions = batch.column("action").to_numpy()
        replay = make_replay_env(env_config, batch.column("level_seed")[0].as_py())
        _, obs, _ = replay.observe()
        assert np.array_equal(obs["rgb"][0], frames[0])
        for t in range(len(frames) - 1):
            replay.act(np.array([actions[t]], np.int32))
            reward, obs, first = replay.observe()
            assert not first[0], "the episode ended earlier in replay than in the record"
            assert np.array_equal(obs["rgb"][0], frames[t + 1]), f"frame {t + 1} differs from the replay"
            assert reward[0] == batch.column("reward")[t].as_py()
        assert actions[-1] == -1
        terminated, truncated = batch.column("terminated")[-1].as_py(), batch.column("truncated")[-1].as_py()
        assert terminated != truncated
        if truncated:
            assert len(frames) == env_config.max_episode_frames and batch.column("reward")[-1].as_py() == 0
            ends.add("truncated")
        else:
            # some action from the last frame ends the episode with the recorded final reward
            state = replay.get_state()
            outcomes = set()
            for action in range(15):
                replay.set_state(state)
                replay.act(np.array([action], np.int32))
                reward, _, first = replay.observe()
                if first[0]:
                    outcomes.add(float(reward[0]))
            assert batch.column("reward")[-1].as_py() in outcomes
            ends.add("terminated")
    assert ends == {"terminated", "truncated"}, "the fixture should hold both kinds of episode end"


def test_reader_windows_are_aligned_and_never_cross_episodes(small_dataset):
    store = EpisodeStore(small_dataset)
    rng = np.random.default_rng(0)
    frames, actions = store.sample_windows(rng, batch=64, length=16)
    assert frames.shape == (64, 16, 64, 64, 3) and actions.shape == (64, 15)
    assert (actions >= 0).all(), "a window included an episode's last-row action (-1): it crossed an episode end"
    # each window is a contiguous slice of one episode, and action t leads from frame t to t+1
    episode = int(np.argmax(store.lengths))
    env_config = CoinRunConfig.from_dict(store.manifests[0].collections["random-s7"]["env"])
    start = 5
    window_frames, window_actions = store.window(episode, start, 8)
    ref = store.episodes[episode]
    replay = make_replay_env(env_config, ref.episode.level_seed)
    _, all_actions = store.window(episode, 0, ref.episode.length)
    for t in range(start):
        replay.act(np.array([all_actions[t]], np.int32))
    _, obs, _ = replay.observe()
    assert np.array_equal(obs["rgb"][0], window_frames[0])
    for t in range(7):
        replay.act(np.array([window_actions[t]], np.int32))
        _, obs, _ = replay.observe()
        assert np.array_equal(obs["rgb"][0], window_frames[t + 1])


def test_windows_sample_uniformly_over_valid_windows(small_dataset):
    store = EpisodeStore(small_dataset)
    length = 16
    counts = np.maximum(store.lengths - length + 1, 0)
    episodes, starts = store.sample_positions(np.random.default_rng(1), 20000, length)
    assert (starts >= 0).all() and (starts + length <= store.lengths[episodes]).all()
    share = np.bincount(episodes, minlength=len(store)) / len(episodes)
    assert np.abs(share - counts / counts.sum()).max() < 0.02
    assert store.num_windows(length) == counts.sum()


def test_windows_drawn_by_folder_shares_keep_each_folders_part_of_the_batch(small_dataset, sticky_dataset):
    """`shares` (one per dataset folder): each folder supplies its share of the windows whatever its size, uniform
    within it; without shares the draw is the uniform one, unchanged; a folder given a share but holding no window
    of the length is refused, naming it."""
    store = EpisodeStore([small_dataset, sticky_dataset])  # 10 and 30 episodes
    length = 16
    counts = np.maximum(store.lengths - length + 1, 0)
    episodes, starts = store.sample_positions(np.random.default_rng(1), 20000, length, shares=(0.5, 0.5))
    assert (starts >= 0).all() and (starts + length <= store.lengths[episodes]).all()
    from_first = store.sources[episodes] == 0
    assert abs(from_first.mean() - 0.5) < 0.02  # against its share of the windows without shares:
    assert counts[store.sources == 0].sum() / counts.sum() < 0.4
    first = np.bincount(episodes[from_first], minlength=len(store))[store.sources == 0] / from_first.sum()
    assert np.abs(first - counts[store.sources == 0] / counts[store.sources == 0].sum()).max() < 0.03
    assert store.sources[store.sample_positions(np.random.default_rng(2), 500, length, (1.0, 0.0))[0]].max() == 0
    plain = store.sample_positions(np.random.default_rng(3), 64, length)
    again = EpisodeStore([small_dataset, sticky_dataset]).sample_positions(np.random.default_rng(3), 64, length, None)
    assert all(np.array_equal(a, b) for a, b in zip(plain, again))
    held = store.subset([i for i in range(len(store)) if store.sources[i] == 1])  # the second folder's alone
    assert (held.sources == 1).all()
    with pytest.raises(DatasetError, match=f"{small_dataset}.*share of each batch is 0.5"):
        held.sample_positions(np.random.default_rng(4), 8, length, (0.5, 0.5))


def test_same_seed_gives_identical_data_for_any_worker_count(ray_cluster, small_dataset, tmp_path):
    collect_dataset(small_config(workers=1), tmp_path / "again", show_progress=False)
    first, second = batches_by_id(small_dataset), batches_by_id(tmp_path / "again")
    assert first.keys() == second.keys() and len(first) == 10
    for episode_id, batch in first.items():
        assert batch.equals(second[episode_id]), f"episode {episode_id} differs between runs"
    # even the files are byte-identical, so a shard remade by a re-run can safely replace an orphan's copy
    shas = lambda root: {s.file: s.sha256 for s in Manifest.load(root).shards}  # noqa: E731
    assert shas(small_dataset) == shas(tmp_path / "again")


def test_rerun_is_a_no_op_and_larger_episode_count_extends(ray_cluster, tmp_path):
    out = tmp_path / "grow"
    collect_dataset(small_config(episodes=5), out, show_progress=False)
    shas = {s.file: s.sha256 for s in Manifest.load(out).shards}
    collect_dataset(small_config(episodes=5), out, show_progress=False)
    assert {s.file: s.sha256 for s in Manifest.load(out).shards} == shas
    collect_dataset(small_config(episodes=9), out, show_progress=False)
    manifest = Manifest.load(out)
    assert manifest.num_episodes == 9
    assert all(shas[f] == s.sha256 for s in manifest.shards for f in [s.file] if f in shas), \
        "existing shards were rewritten"
    assert verify_dataset(out).episodes == 9


def test_plan_fills_missing_shards_first():
    assert [(p.index, p.episodes) for p in plan_shards({}, 10, 4)] == [(0, 4), (1, 4), (2, 2)]
    assert [(p.index, p.episodes) for p in plan_shards({0: 4, 2: 2}, 10, 4)] == [(1, 4)]
    assert [(p.index, p.episodes) for p in plan_shards({0: 4, 1: 2}, 10, 4)] == [(2, 4)]
    assert plan_shards({0: 4, 1: 4}, 6, 4) == []


def test_splits_are_by_episode(small_dataset):
    manifest = Manifest.load(small_dataset)
    splits = {e.id: e.split for _, e in manifest.episodes()}
    assert set(splits.values()) <= {"train", "val", "test"}
    train = EpisodeStore(small_dataset, split="train")
    assert all(ref.episode.split == "train" for ref in train.episodes)
    assert len(train) == sum(1 for s in splits.values() if s == "train")


def test_shards_are_compressed_arrow_ipc(small_dataset):
    manifest = Manifest.load(small_dataset)
    shard = manifest.shards[0]
    with pa.OSFile(str(small_dataset / shard.file), "rb") as source:
        reader = pa.ipc.open_file(source)
        assert reader.num_record_batches == len(shard.episodes)
    assert shard.bytes / shard.rows < 3000, "frames should be stored compressed (~1 KB/frame)"
