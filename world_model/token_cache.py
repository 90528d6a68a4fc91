"""Token cache: each training episode encoded once by the frozen tokenizer (and frozen LAM), so a
dynamics step pays only for its own transformer.

Why: a dynamics step used to run the frozen tokenizer over every frame of its windows (and, for
GenieRedux, the frozen LAM over them), i.e. two networks besides the one it trains, on frames it
had already seen many times. The ids of a frame do not change while they are frozen, so they are
computed once per run (benchmarks/bench_token_cache.py measures the gain).

What is cached, per frame of every episode of the store, one Arrow record batch per episode (like
the shards) in one uncompressed Arrow IPC file (memory-mapped when read: windows are slices):

    tokens  fixed_size_list<int16>[h*w]  the tokenizer's ids of the frame (int32 when the codebook
                                          exceeds int16)
    action  int8                          the true action after the frame (-1 on the last row)
    latent  int8 (GenieRedux only)        the LAM's latent id of the step to the next frame (-1 on
                                          the last row), read as evaluation reads it:
                                          `LatentActionModel.infer_actions` over the whole episode,
                                          each id from a window of the LAM's training length
                                          ending at the next frame
    scroll  fixed_size_list<float32>[2]   (a `scrolled` copy path only) the scene's registered scroll
                                          [sx, sy] px from the frame before into this one (0 on row 0)
    reference  like tokens                (a `scrolled` copy path only) this frame's copy reference:
                                          the frame before shifted by `scroll` (rounded, clipped to
                                          the dynamics' max_scroll) and tokenized; row 0 has none (the
                                          "masked" id); world_model/scroll.py `scrolled_references`

A window starting at frame s > 0 reads rows s..s+T-1 and, as training from frames does, treats its
first frame as having no predecessor (the trainee sets its reference to "masked" and its scroll to 0).

Only tokenizers that encode every frame alone (`encoder_temporal: false`, `tiny`) can be cached:
a temporal encoder's ids of a frame depend on where its window starts (world_model/tokenizer.py),
so training keeps encoding frames for those (`unsupported_reason`).

Next to it, `manifest.json` holds the key (a digest of the tokenizer's config and weights, of the
LAM's, of each dataset manifest's bytes and of the episode list), the shapes and the file's
size and sha256. It is written last, both files atomically (temp name + rename), and everything
is checked when the cache is opened: a cache of another tokenizer, LAM or dataset is stale, a
truncated or altered file is damaged; `ensure_token_cache` rebuilds either, saying why in one line.

Shapes: E frames of an episode, B windows (a batch), T frames of a window, Tw the LAM's window, h x w token grid,
H x W x C pixels.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple, Protocol, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from genie_common.atomic import temp_name, write_atomic
from rl_agent.store.reader import EpisodeStore
from rl_agent.store.writer import file_sha256
from world_model.frames import to_unit_float
from world_model.lam import LatentActionModel
from world_model.scroll import Box, episode_references
from world_model.tokenizer import Tokenizer

FORMAT = "genie-redux/token-cache"
VERSION = 2  # 2: the scroll and reference columns of a `scrolled` copy path (and `scrolled` in the key)
MANIFEST_FILE = "manifest.json"
TOKENS_FILE = "tokens.arrow"
NO_ID = -1  # the action/latent columns' value on an episode's last row (no step follows it)
ENCODE_FRAMES = 256  # frames per tokenizer pass while building (bounds memory; ids do not depend on it)


class TokenCacheError(RuntimeError):
    """A token cache cannot be used; the message says why (and `ensure_token_cache` rebuilds it)."""


class MissingTokenCache(TokenCacheError):
    """No cache in the folder yet."""


class StaleTokenCache(TokenCacheError):
    """The cache was made from another tokenizer, LAM or dataset than the one asked for."""


class DamagedTokenCache(TokenCacheError):
    """The cache's files are truncated, altered or unreadable."""


class Progress(Protocol):
    def update(self, frames: int) -> None: ...
    def close(self) -> None: ...


RUN_CACHE_FOLDER = "token_cache"  # inside a dynamics run folder on a local path


def run_cache_folder(out: str) -> Path:
    """Where a dynamics run keeps its token cache: in its run folder when that is a local path (deleted
    with the run); node-local, under the genie-redux cache, for a run on a storage URI (read at random)."""
    from genie_common import storage

    if not storage.is_uri(out):
        return Path(out) / RUN_CACHE_FOLDER
    from rl_agent.store.reader import default_cache_dir

    return default_cache_dir().parent / "tokens" / hashlib.sha256(out.encode()).hexdigest()[:16]


# ---- the key ----------------------------------------------------------------------------------
def model_digest(model: nn.Module) -> str:
    """sha256 of a model's config and weights (state dict, in order): the same frozen model gives the
    same key wherever its checkpoint lies, and any retrained weight changes it."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        from world_model.config import config_to_dict

        digest.update(json.dumps(config_to_dict(config), sort_keys=True).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode() + str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_key(tokenizer: Tokenizer, lam: LatentActionModel | None, store: EpisodeStore,
              max_scroll: int | None = None, locked: Box | None = None) -> dict[str, Any]:
    """What the cache's content is a function of: the frozen models, the datasets' manifests, the episodes,
    and for a `scrolled` copy path the largest scroll its references are shifted by (`max_scroll`; None: no
    scroll and reference columns) and the box they do not shift (`locked`; only in the key when there is one,
    so caches made before the box existed keep their key)."""
    ids = "\n".join(ref.episode.id for ref in store.episodes)
    key = {
        "version": VERSION,
        "tokenizer": model_digest(tokenizer),
        "lam": model_digest(lam) if lam is not None else None,
        "scrolled": None if max_scroll is None else int(max_scroll),
        "manifests": [file_sha256(Path(m.root) / "manifest.json") for m in store.manifests],
        "episodes": hashlib.sha256(ids.encode()).hexdigest(),
    }
    if max_scroll is not None and locked is not None:
        key["locked_box"] = [int(v) for v in locked]
    return key


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def stale_reason(found: dict[str, Any], wanted: dict[str, Any]) -> str | None:
    """Why a cache made with key `found` is not the one for `wanted` (None when they agree)."""
    if found == wanted:
        return None
    if found.get("version") != wanted["version"]:
        return f"it has format version {found.get('version')}, this code writes {wanted['version']}"
    if found.get("tokenizer") != wanted["tokenizer"]:
        return (f"it was made by another tokenizer (weights {str(found.get('tokenizer'))[:12]}, "
                f"this run's {wanted['tokenizer'][:12]})")
    if found.get("lam") != wanted["lam"]:
        if wanted["lam"] is None:
            return "it holds a LAM's latent ids, this run trains on true actions"
        if found.get("lam") is None:
            return "it has no LAM latent ids, this run (GenieRedux) needs them"
        return f"it was made with another LAM (weights {str(found.get('lam'))[:12]}, this run's {wanted['lam'][:12]})"
    if found.get("scrolled") != wanted["scrolled"]:
        if wanted["scrolled"] is None:
            return "it holds a scrolled copy path's references, this run's dynamics copies the previous frame"
        if found.get("scrolled") is None:
            return "it has no scrolled copy references, this run's dynamics (copy_reference 'scrolled') needs them"
        return (f"its copy references are shifted by at most {found.get('scrolled')} px, this run's dynamics by "
                f"{wanted['scrolled']} (max_scroll)")
    if found.get("locked_box") != wanted.get("locked_box"):
        def kept(box) -> str:
            return f"the box {box} unshifted" if box else "nothing unshifted"
        return (f"its copy references keep {kept(found.get('locked_box'))}, this run's dynamics keeps "
                f"{kept(wanted.get('locked_box'))} (camera_locked_box)")
    if found.get("manifests") != wanted["manifests"]:
        return "the dataset changed (a manifest checksum differs from the one the cache was made from)"
    return "it holds other episodes (another split or held-out set)"


def unsupported_reason(tokenizer: Tokenizer) -> str | None:
    """Why this tokenizer's ids cannot be cached per frame (None when they can)."""
    if tokenizer.config.encoder_temporal:
        return ("the tokenizer encodes frames in time (encoder_temporal), so a frame's ids depend on where its "
                "window starts; training encodes each window's frames instead")
    return None


def id_type(vocab_size: int) -> pa.DataType:
    """int16 holds every id of a codebook up to 32767 codes (1024 at every preset); int32 beyond."""
    return pa.int16() if vocab_size <= np.iinfo(np.int16).max else pa.int32()


# ---- reading ------------------------------------------------------------------------------------
class CachedWindows(NamedTuple):
    """Windows read from the cache: ids (B, T, h, w), action ids (B, T-1) int8 and, from a cache with a scrolled
    copy path's columns, each frame's copy reference (B, T, h, w) and registered scroll (B, T, 2) float32 as the
    episode holds them (frame 0's are from the frame before the window: the trainee sets them aside)."""

    tokens: np.ndarray
    actions: np.ndarray
    references: np.ndarray | None = None
    scrolls: np.ndarray | None = None


@dataclass
class TokenCache:
    """A verified token cache: per episode, ids (E, h, w) memory-mapped, true actions and latent ids (E,), and for
    a scrolled copy path each frame's copy reference (E, h, w) and registered scroll (E, 2)."""

    folder: Path
    key: dict[str, Any]
    episode_ids: list[str]
    tokens: list[np.ndarray]  # per episode (E, h, w) int16, views into the memory-mapped file
    actions: list[np.ndarray]  # per episode (E,) int8, -1 on the last row
    latents: list[np.ndarray] | None  # per episode (E,) int8, -1 on the last row; None without a LAM
    references: list[np.ndarray] | None = None  # per episode (E, h, w) like tokens; None without scroll columns
    scrolls: list[np.ndarray] | None = None  # per episode (E, 2) float32 px; None without scroll columns

    @classmethod
    def open(cls, folder: str | os.PathLike, key: dict[str, Any]) -> "TokenCache":
        """Open and verify the cache in `folder` against the key it must have been made with.

        Raises MissingTokenCache, StaleTokenCache or DamagedTokenCache (each saying why).
        """
        folder = Path(folder)
        manifest_path = folder / MANIFEST_FILE
        if not manifest_path.is_file():
            raise MissingTokenCache(f"{folder}: no token cache yet")
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
            found_key, size, sha = manifest["key"], int(manifest["bytes"]), str(manifest["sha256"])
            grid, lengths = tuple(manifest["grid"]), [int(e["length"]) for e in manifest["episodes"]]
            ids, has_latent = [str(e["id"]) for e in manifest["episodes"]], bool(manifest["latent"])
        except (ValueError, KeyError, TypeError) as err:
            raise DamagedTokenCache(f"{manifest_path} is unreadable ({err})") from err
        reason = stale_reason(found_key, key)
        if reason is not None:
            raise StaleTokenCache(reason)
        path = folder / TOKENS_FILE
        if not path.is_file():
            raise DamagedTokenCache(f"{path} is missing")
        if path.stat().st_size != size:
            raise DamagedTokenCache(f"{path} has {path.stat().st_size} bytes, its manifest says {size} (truncated)")
        if file_sha256(path) != sha:
            raise DamagedTokenCache(f"{path}: checksum differs from its manifest (the file was altered)")
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
            batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        except (pa.ArrowInvalid, OSError) as err:
            raise DamagedTokenCache(f"{path} is not a readable Arrow file ({err})") from err
        scrolled = found_key.get("scrolled") is not None
        wanted = ["tokens", "action"] + ["latent"] * has_latent + ["scroll", "reference"] * scrolled
        if [b.num_rows for b in batches] != lengths or not set(wanted) <= set(reader.schema.names):
            raise DamagedTokenCache(f"{path}: its episodes do not match its manifest")
        h, w = grid

        def grids(batch: pa.RecordBatch, column: str) -> np.ndarray:  # (E, h, w) ids, zero copy
            return batch.column(column).flatten().to_numpy(zero_copy_only=True).reshape(batch.num_rows, h, w)

        tokens = [grids(b, "tokens") for b in batches]
        actions = [b.column("action").to_numpy() for b in batches]
        latents = [b.column("latent").to_numpy() for b in batches] if has_latent else None
        references = [grids(b, "reference") for b in batches] if scrolled else None
        scrolls = ([b.column("scroll").flatten().to_numpy(zero_copy_only=True).reshape(b.num_rows, 2) for b in batches]
                   if scrolled else None)
        return cls(folder, found_key, ids, tokens, actions, latents, references, scrolls)

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(t) for t in self.tokens], dtype=np.int64)

    @property
    def scrolled(self) -> bool:
        """Whether it holds a scrolled copy path's references and scrolls."""
        return self.references is not None

    def windows(self, episodes: Sequence[int], starts: Sequence[int], length: int,
                latent: bool = False) -> CachedWindows:
        """The windows (episodes[i], starts[i]) of the store the cache was made from: ids (B, T, h, w), action ids
        (B, T-1) int8 (true actions, or with `latent` the LAM's latent ids) and, when the cache has them, the copy
        references (B, T, h, w) and registered scrolls (B, T, 2)."""
        if latent and self.latents is None:
            raise TokenCacheError(f"{self.folder}: this cache holds no LAM latent ids (made for true actions)")
        columns = self.latents if latent else self.actions
        h, w = self.tokens[0].shape[1:]
        tokens = np.empty((len(episodes), length, h, w), dtype=self.tokens[0].dtype)  # (B, T, h, w)
        actions = np.empty((len(episodes), length - 1), dtype=np.int8)  # (B, T-1)
        references = np.empty_like(tokens) if self.scrolled else None  # (B, T, h, w)
        scrolls = np.empty((len(episodes), length, 2), dtype=np.float32) if self.scrolled else None  # (B, T, 2)
        for i, (episode, start) in enumerate(zip(episodes, starts)):
            episode, start = int(episode), int(start)
            if start < 0 or start + length > len(self.tokens[episode]):
                raise IndexError(f"window {start}..{start + length - 1} outside episode {self.episode_ids[episode]} "
                                 f"of {len(self.tokens[episode])} frames")
            rows = slice(start, start + length)
            tokens[i] = self.tokens[episode][rows]
            actions[i] = columns[episode][start : start + length - 1]
            if self.scrolled:
                references[i], scrolls[i] = self.references[episode][rows], self.scrolls[episode][rows]
        return CachedWindows(tokens, actions, references, scrolls)


# ---- building -----------------------------------------------------------------------------------
@torch.no_grad()
def episode_ids(tokenizer: Tokenizer, frames: np.ndarray, chunk: int = ENCODE_FRAMES) -> np.ndarray:
    """uint8 frames (E, H, W, C) of a per-frame tokenizer -> ids (E, h, w), `chunk` frames per pass."""
    parts = []
    for begin in range(0, len(frames), chunk):
        video = to_unit_float(frames[begin : begin + chunk], tokenizer.device)[None]  # (1, chunk, H, W, C)
        parts.append(tokenizer.encode(video).ids[0].cpu().numpy())  # (chunk, h, w)
    return np.concatenate(parts)


@torch.no_grad()
def episode_latents(lam: LatentActionModel, frames: np.ndarray, chunk: int = ENCODE_FRAMES) -> np.ndarray:
    """uint8 frames (E, H, W, C) -> latent ids (E-1,) exactly as `lam.infer_actions(frames[None])[0]`,
    in pieces of about `chunk` transitions (a 500-frame episode is ~500 LAM windows).

    infer_actions reads transition t from frames max(0, t+2-Tw)..t+1 (Tw = the LAM's window); so the
    transitions a..b-1 (a >= Tw-2) are the last b-a ids of infer_actions over frames a+2-Tw..b.
    """
    span, transitions = lam.config.frames, len(frames) - 1
    if transitions < 1:
        return np.zeros(0, dtype=np.int64)  # a one-frame episode has no step
    first = max(chunk, span - 1)  # the first piece starts at frame 0 and must reach transition Tw-2
    parts = [lam.infer_actions(frames[None, : min(first, transitions) + 1])[0].cpu().numpy()]  # (min(first, E-1),)
    for a in range(first, transitions, chunk):
        b = min(a + chunk, transitions)
        ids = lam.infer_actions(frames[None, a + 2 - span : b + 1])[0]  # (b-a+Tw-2,)
        parts.append(ids[span - 2 :].cpu().numpy())  # (b-a,): transitions a..b-1
    return np.concatenate(parts)


def build_token_cache(folder: str | os.PathLike, key: dict[str, Any], tokenizer: Tokenizer,
                      lam: LatentActionModel | None, store: EpisodeStore, progress: Progress | None = None) -> None:
    """Encode every episode of `store` into `folder` (tokens file, then manifest; both atomically); with
    `key["scrolled"]` (a max_scroll) each frame's registered scroll and shifted-predecessor ids as well."""
    reason = unsupported_reason(tokenizer)
    if reason is not None:
        raise TokenCacheError(f"cannot cache this tokenizer's ids: {reason}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_FILE).unlink(missing_ok=True)  # from here until the new manifest lands there is no cache
    grid, max_scroll = tokenizer.config.grid, key.get("scrolled")
    locked = tuple(key["locked_box"]) if key.get("locked_box") else None  # a box the references do not shift
    ids_type = pa.list_(id_type(tokenizer.config.quantizer.codebook_size), grid * grid)
    fields = [pa.field("tokens", ids_type, nullable=False), pa.field("action", pa.int8(), nullable=False)]
    if lam is not None:
        fields.append(pa.field("latent", pa.int8(), nullable=False))
    if max_scroll is not None:
        fields += [pa.field("scroll", pa.list_(pa.float32(), 2), nullable=False),
                   pa.field("reference", ids_type, nullable=False)]

    def id_grids(ids: np.ndarray) -> pa.FixedSizeListArray:  # (E, h, w) -> one list of h*w ids per row
        return pa.FixedSizeListArray.from_arrays(pa.array(ids.reshape(-1).astype(np.int32), ids_type.value_type),
                                                 grid * grid)

    schema = pa.schema(fields, metadata={"format": FORMAT, "version": str(VERSION)})
    was_training = [(m, m.training) for m in (tokenizer, lam) if m is not None]
    for model, _ in was_training:
        model.eval()  # the frozen models: no codebook restarts
    temp = folder / temp_name(TOKENS_FILE)
    episodes = []
    try:
        with pa.OSFile(str(temp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for index, ref in enumerate(store.episodes):
                frames, actions = store.window(index, 0, int(store.lengths[index]))  # (E, H, W, C), (E-1,)
                columns = [id_grids(episode_ids(tokenizer, frames)),
                           pa.array(np.append(actions, NO_ID).astype(np.int8))]
                if lam is not None:
                    columns.append(pa.array(np.append(episode_latents(lam, frames), NO_ID).astype(np.int8)))
                if max_scroll is not None:
                    # (E, 2): frame t's scroll from frame t-1 (row 0: none); (E, h, w) frame t-1 shifted by it
                    scrolls, references = episode_references(tokenizer, frames, max_scroll, locked)
                    columns += [pa.FixedSizeListArray.from_arrays(pa.array(scrolls.reshape(-1), pa.float32()), 2),
                                id_grids(references)]
                writer.write_batch(pa.record_batch(columns, schema=schema))
                episodes.append({"id": ref.episode.id, "length": len(frames)})
                if progress is not None:
                    progress.update(len(frames))
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        sha, size = file_sha256(temp), temp.stat().st_size
        os.replace(temp, folder / TOKENS_FILE)
    finally:
        temp.unlink(missing_ok=True)
        for model, mode in was_training:
            model.train(mode)
    manifest = {"format": FORMAT, "version": VERSION, "key": key, "digest": key_digest(key),
                "file": TOKENS_FILE, "bytes": size, "sha256": sha, "grid": [grid, grid],
                "vocab_size": tokenizer.config.quantizer.codebook_size, "latent": lam is not None,
                "scrolled": max_scroll,
                "frames": sum(e["length"] for e in episodes), "episodes": episodes,
                "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_atomic(folder / MANIFEST_FILE, json.dumps(manifest, indent=1))


def ensure_token_cache(folder: str | os.PathLike, tokenizer: Tokenizer, lam: LatentActionModel | None,
                       store: EpisodeStore, note: Callable[[str], None] = print,
                       progress: Callable[[int], Progress] | bool = True,
                       max_scroll: int | None = None, locked: Box | None = None) -> TokenCache:
    """The verified cache of `store` under these frozen models in `folder`, built (or rebuilt) if needed; with
    `max_scroll`, for a dynamics whose copy path is `scrolled` (its references shifted by at most that, the box
    `locked` not shifted).

    `note` gets one line saying what happened and why (built, rebuilt because stale, refused as
    damaged and rebuilt, or reused). `progress`: True for a tqdm bar, False for none, or a factory
    taking the total number of frames.
    """
    key = cache_key(tokenizer, lam, store, max_scroll, locked)
    try:
        cache = TokenCache.open(folder, key)
        note(f"token cache {folder}: verified, reused ({len(cache.tokens)} episodes, key {key_digest(key)})")
        return cache
    except MissingTokenCache:
        why = "no cache yet"
    except StaleTokenCache as err:
        why = f"stale, rebuilt: {err}"
    except DamagedTokenCache as err:
        why = f"refused and rebuilt: {err}"
    note(f"token cache {folder}: {why}; encoding {len(store)} episodes ({store.num_frames:,} frames)")
    if progress is True:
        from tqdm import tqdm

        bar: Progress | None = tqdm(total=store.num_frames, desc="token cache", unit="frame", dynamic_ncols=True)
    else:
        bar = progress(store.num_frames) if callable(progress) else None
    try:
        build_token_cache(folder, key, tokenizer, lam, store, bar)
    finally:
        if bar is not None:
            bar.close()
    return TokenCache.open(folder, key)
