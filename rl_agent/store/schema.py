"""The episode record (docs/design.md, 'The episode record'), defined once for the writer, the reader and `verify`.

One row per step; an episode is one Arrow record batch, whole inside one shard.
Alignment rule: o_{t+1} = env.step(a_t); the last row's action is -1. Procgen never shows the
frame that follows a terminating action, so on the last row of a terminated episode `reward`
holds the reward of that final, unrecorded step: the column always sums to the episode return.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rl_agent.coinrun_env import FRAME_SHAPE, NUM_ACTIONS

FORMAT_NAME = "genie-redux/episodes"
FORMAT_VERSION = 1
FRAME_BYTES = int(np.prod(FRAME_SHAPE))  # 12288 = 64 * 64 * 3, HWC uint8, lossless
NO_ACTION = -1  # the action column's value on an episode's last row

EPISODE_SCHEMA = pa.schema(
    [
        pa.field("episode_id", pa.string(), nullable=False),
        pa.field("step", pa.int32(), nullable=False),
        pa.field("frame", pa.binary(FRAME_BYTES), nullable=False),
        pa.field("action", pa.int8(), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
        pa.field("level_seed", pa.int64(), nullable=False),
        pa.field("agent", pa.dictionary(pa.int8(), pa.string()), nullable=False),
        pa.field("logp", pa.float32(), nullable=True),
        pa.field("value", pa.float32(), nullable=True),
    ],
    metadata={"format": FORMAT_NAME, "version": str(FORMAT_VERSION)},
)


def episode_batch(
    episode_id: str,
    frames: np.ndarray,  # (L, H, W, C) uint8
    actions: np.ndarray,  # (L,) int: action after each frame, last = -1
    rewards: np.ndarray,  # (L,) float32
    terminated: bool,
    truncated: bool,
    level_seed: int,
    agent: str,
    logp: np.ndarray | None = None,  # (L,) float32 or None
    value: np.ndarray | None = None,  # (L,) float32 or None
) -> pa.RecordBatch:
    """Build one episode's record batch, checking the invariants the reader relies on."""
    length = len(frames)
    if frames.shape[1:] != FRAME_SHAPE or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (L, {FRAME_SHAPE}) uint8, got {frames.shape} {frames.dtype}")
    if length < 1 or len(actions) != length or len(rewards) != length:
        raise ValueError(f"episode {episode_id}: {length} frames, {len(actions)} actions, {len(rewards)} rewards")
    if actions[-1] != NO_ACTION or (length > 1 and (actions[:-1].min() < 0 or actions[:-1].max() >= NUM_ACTIONS)):
        raise ValueError(f"episode {episode_id}: actions must be in [0, {NUM_ACTIONS}) and -1 on the last row")
    if terminated == truncated:
        raise ValueError(f"episode {episode_id}: exactly one of terminated/truncated must be set")
    last = np.zeros(length, dtype=bool)
    last[-1] = True
    flat = np.ascontiguousarray(frames).reshape(length * FRAME_BYTES)
    frame_array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(FRAME_BYTES), length, [None, pa.py_buffer(flat)])

    def optional(xs):
        return pa.nulls(length, pa.float32()) if xs is None else pa.array(np.asarray(xs, np.float32))

    columns = [
        pa.array([episode_id] * length, pa.string()),
        pa.array(np.arange(length, dtype=np.int32)),
        frame_array,
        pa.array(np.asarray(actions, dtype=np.int8)),
        pa.array(np.asarray(rewards, dtype=np.float32)),
        pa.array(last & terminated),
        pa.array(last & truncated),
        pa.array(np.full(length, int(level_seed), dtype=np.int64)),
        pa.DictionaryArray.from_arrays(pa.array(np.zeros(length, np.int8)), pa.array([agent], pa.string())),
        optional(logp),
        optional(value),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=EPISODE_SCHEMA)


def frames_of(batch: pa.RecordBatch) -> np.ndarray:
    """Zero-copy (L, H, W, C) uint8 view of an episode batch's frames."""
    column = batch.column("frame")
    buffer = column.buffers()[1]
    start = column.offset * FRAME_BYTES
    return np.frombuffer(buffer, dtype=np.uint8, count=len(column) * FRAME_BYTES, offset=start).reshape(
        (len(column),) + FRAME_SHAPE
    )
