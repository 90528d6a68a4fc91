"""The per-worker training loop that Ray Train runs on every worker (`TorchTrainer`).

One optimiser step = the global batch of windows of that step (`WindowPlan`), each worker taking
its share, forward/backward in micro batches with DDP's all-reduce only on the last one
(`no_sync` before), loss divided by the number of micro batches: the gradient is the mean over
the global batch whatever the worker count or accumulation, so the result equals one process
with the whole batch (tested). That step is `world_model.steps.accumulated_step`, the one the
tests and benchmarks run through `train_step`; this loop adds the data, the codebook sync between
workers, and logging, validation (`validate`) and checkpoints (`_report_checkpoint`) by step count.
Everything random in a step is seeded from (seed, step, rank), so a run resumed from a checkpoint
at step s continues exactly as it would have.

The dynamics reads its windows from the run's token cache (world_model/token_cache.py: the
frozen tokenizer's ids and the frozen LAM's latent ids, and for a scrolled copy path each frame's
registered scroll and shifted-predecessor ids, encoded once before the first step), the same
windows as from frames; `train.token_cache` says when (true, false, or auto: when it is
already there or the run is long enough for it to pay). Validation and sample images always use
frames: they are few.

Shapes: B the global batch (B/workers windows per worker), T frames of a window, H x W x C pixels, h x w token grid.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from genie_common import storage
from genie_common.errors import ConfigError
from rl_agent.store.reader import EpisodeStore
from world_model.checkpoint import save_checkpoint
from world_model.optim import Optimization
from world_model.outputs import Metric, mean_metrics
from world_model.precision import use_fast_float32
from world_model.runs import BEST, LATEST
from world_model.steps import DynamicsTrainee, TraineeLoss, accumulated_step, cached_scrolls, eval_step
from world_model.token_cache import (
    TokenCache, TokenCacheError, cache_key, ensure_token_cache, run_cache_folder, unsupported_reason,
)
from world_model.training.job import TrainJob
from world_model.training.samples import sample_png
from world_model.training.trainee import build_trainee
from world_model.training.windows import StepPrefetcher, WindowPlan, open_stores, validation_positions
from world_model.vq import VectorQuantizer

STATE_FILE = "state.pt"  # inside each Ray Train checkpoint: model, optimiser, step, best validation loss
MODEL_FILE = "model.pt"  # inside each Ray Train checkpoint: the stage model alone (loadable by load_model)
FAILURE_MARKER = ".injected_failure"


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + (step + 1) * 7919 + rank * 104_729) % (2**63 - 1)


class MetricChannel:
    """Rank 0's line to the driver (progress bar, metrics.csv, wandb); a gone driver is ignored."""

    def __init__(self, queue: Any, rank: int) -> None:
        self.queue = queue if rank == 0 else None

    def send(self, record: dict[str, Any]) -> None:
        if self.queue is None:
            return
        try:
            self.queue.put_nowait(record)
        except Exception:  # noqa: BLE001 - the driver may have been killed; training goes on
            self.queue = None

    def note(self, text: str) -> None:
        """One line for the person running `genie train` (printed by the driver)."""
        self.send({"kind": "note", "text": text})


class ChannelProgress:
    """The token cache's encoding progress, sent to the driver's progress bar (at most twice a second)."""

    def __init__(self, channel: MetricChannel, total: int) -> None:
        self.channel, self.total, self.done, self.sent_at = channel, total, 0, 0.0

    def update(self, frames: int) -> None:
        self.done += frames
        if time.monotonic() - self.sent_at > 0.5:
            self.sent_at = time.monotonic()
            self.channel.send({"kind": "cache", "done": self.done, "total": self.total})

    def close(self) -> None:
        self.channel.send({"kind": "cache", "done": self.done, "total": self.total, "closed": True})


def train_loop_per_worker(config: dict[str, Any]) -> None:
    import ray
    import ray.train
    import ray.train.torch

    job = TrainJob.from_dict(config["job"])
    quiet_ray_train_logs()
    quiet_ddp_stride_warning()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(job.threads_per_worker)
    device = ray.train.torch.get_device()
    check_worker_device(job.gpus_per_worker, device)
    use_fast_float32(device)  # TF32 for what runs in float32 (all of it with --no-bf16), as eval and play do
    channel = MetricChannel(config.get("queue"), rank)

    preset = job.load_preset()
    optim_config = job.optim(preset)
    total = optim_config.total_steps
    train_store, val_store = _open_stores_once_per_node(job, context.get_local_rank(), world)
    length = job.window_length(preset)
    plan = WindowPlan(job.global_batch(preset), length, world, job.seed,
                      tuple(job.data_shares) if job.data_shares is not None else None)
    micro, accumulation = job.micro(preset), job.accumulation(preset)

    torch.manual_seed(step_seed(job.seed, -1, 0))  # identical initial weights on every rank
    trainee, export_model = build_trainee(job, preset, device)
    optimization = Optimization(trainee, optim_config)
    start, best = 0, math.inf
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location=device, weights_only=True)
        trainee.load_state_dict(state["model"])
        optimization.load_state_dict(state["optimization"])
        start, best = int(state["step"]), float(state["best_val_loss"])
    # static_graph: every step uses every parameter the same way (find_unused_parameters is off, so one that
    # is not would already fail), which lets DDP settle its buckets after the first step and skip its per-step
    # bookkeeping. On the tiny study's data, 2 workers on 2 cores, the same gradients (tests/test_training.py):
    # benchmarks/bench_ddp.py 1.06-1.13x the steps/s of GenieRedux-G from frames, 1.10x the tokenizer's. Not with
    # gradient accumulation (torch 2.13's reducer fails an internal assert on a static graph's no_sync passes), nor
    # under --compile (dynamo's DDPOptimizer and a static graph have a history of not working together: untested).
    model = ray.train.torch.prepare_model(TraineeLoss(trainee), parallel_strategy_kwargs={
        "find_unused_parameters": False, "static_graph": accumulation == 1 and not job.compile})
    if job.compile:  # the DDP-wrapped module: dynamo then splits the graph at DDP's gradient buckets
        model = torch.compile(model)
    frames_to_encode = (total - start) * plan.batch * length
    cache = _token_cache(job, preset.train.token_cache, trainee, train_store, frames_to_encode, device,
                         context, rank, world, channel)
    latent = job.conditioning == "latent"

    val_episodes, val_starts = validation_positions(val_store, max(preset.train.val_windows, world), length, job.seed)
    val_mine = (val_episodes[rank::world], val_starts[rank::world])
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and job.bf16)
    channel.send({"kind": "start", "step": start, "total": total, "workers": world, "batch": plan.batch,
                  "micro_batch": micro, "accumulation": accumulation, "train_windows": train_store.num_windows(length),
                  "token_cache": cache is not None,
                  # the worker group's placement group: a Tune trial removes it
                  # (Train V2 leaks it under Tune, ray#54305)
                  "placement_group": ray.get_runtime_context().get_placement_group_id()})
    if start == 0:
        first = validate(trainee, val_store, val_mine, length, micro, job.seed, world, autocast)
        channel.send({"kind": "val", "step": 0, **first})

    if cache is not None:
        def fetch(step: int) -> tuple[np.ndarray, np.ndarray]:  # (B/workers, T, h, w) ids, (B/workers, T-1) actions
            return plan.worker_tokens(cache, train_store, step, rank, latent)
    else:
        def fetch(step: int) -> tuple[np.ndarray, np.ndarray]:  # (B/workers, T, H, W, C), (B/workers, T-1) actions
            return plan.worker_batch(train_store, step, rank)
    prefetcher = StepPrefetcher(fetch, pin_memory=device.type == "cuda")
    window_metrics: dict[str, list[Metric]] = defaultdict(list)  # unread tensors until the next log step
    interval_start, interval_frames = time.perf_counter(), 0
    for step in range(start, total):
        if job.inject_failure_at == step and rank == world - 1:
            _fail_once(job)
        torch.manual_seed(step_seed(job.seed, step, rank))
        batch = prefetcher.get(step, step + 1 if step + 1 < total else None)  # step+1 read meanwhile
        metrics = accumulated_step(model, optimization, batch[0], batch[1], accumulation=accumulation,
                                   tokens=cache is not None, scrolled=cached_scrolls(batch), autocast=autocast)
        _sync_quantizers(trainee, world)
        done = step + 1
        for key, value in metrics.items():
            window_metrics[key].append(value)
        interval_frames += plan.batch * length

        if done % preset.train.log_every == 0 or done == total:
            elapsed = time.perf_counter() - interval_start
            record = mean_metrics(window_metrics)  # the one read of this interval's metrics from the device
            frames_per_s = interval_frames / max(elapsed, 1e-9)
            channel.send({"kind": "train", "step": done, **record, "frames_per_s": frames_per_s})
            window_metrics.clear()
            interval_start, interval_frames = time.perf_counter(), 0
        val_record = None
        if done % preset.train.val_every == 0 or done == total:
            val_record = validate(trainee, val_store, val_mine, length, micro, job.seed, world, autocast)
            channel.send({"kind": "val", "step": done, **val_record})
            if rank == 0 and val_record["val_loss"] < best:
                best = val_record["val_loss"]
                _export(export_model, preset.name, done, storage.join(job.out, BEST), {"val": val_record})
        if rank == 0 and (done % preset.train.sample_every == 0 or done == total):
            png = sample_png(trainee, *val_store.windows(val_episodes[:4], val_starts[:4], length))
            storage.write_bytes_atomic(storage.join(job.out, "samples", f"step_{done:07d}.png"), png)
            channel.send({"kind": "sample", "step": done})
        if done % preset.train.checkpoint_every == 0 or done == total:
            _report_checkpoint(job, preset.name, trainee, export_model, optimization, done, best, rank, val_record)
            channel.send({"kind": "checkpoint", "step": done})
    prefetcher.close()
    channel.send({"kind": "done", "step": total})


def quiet_ray_train_logs() -> None:
    """Per-report INFO lines ("Reporting training result 3: TrainingReport(...) from rank 1", one per worker per
    checkpoint) would bury the progress bar. Most come from loggers under "ray.train"; Ray 2.60's reporting
    context names its logger by its file path (`logging.getLogger(__file__)`), outside that tree."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context as train_context
    except ImportError:  # another Ray version: nothing named by that path
        return
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def quiet_ddp_stride_warning() -> None:
    """DDP warns "Grad strides do not match bucket view strides" once per run for the PEG's depthwise Conv3d weight
    (C, 1, 3, 3, 3): its gradient comes back with stride 1 on the size-1 input-channel axis where the bucket's view
    has 27. An axis of size 1 places no element differently, so nothing is wrong; DDP copies those 1.7k values into
    the bucket instead of writing them in place. The warning's 6 lines would tell every user of `genie train` of a
    problem they do not have."""
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")


def check_worker_device(gpus_per_worker: float, device: torch.device) -> None:
    """Refuse a GPU worker that would train on its CPU: Ray hands out GPUs as a resource (a node's `GPU` count,
    CUDA_VISIBLE_DEVICES), whatever torch can use, and Ray Train's `get_device()` quietly falls back to the CPU, so a
    node with a CPU-only torch or a broken driver would train hours slower with nothing said."""
    if gpus_per_worker <= 0 or device.type == "cuda":
        return
    build = f"torch {torch.__version__}" + ("" if torch.version.cuda else ", a CPU-only build")
    raise ConfigError(
        f"Ray gave this training worker {gpus_per_worker:g} GPU(s) (CUDA_VISIBLE_DEVICES="
        f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}) but {build} sees no CUDA device: install torch's CUDA build "
        f"and an NVIDIA driver on the GPU nodes (cluster.yaml's setup_commands), "
        f"or train on CPUs without --gpus-per-worker")


def _open_stores_once_per_node(job: TrainJob, local_rank: int, world: int) -> tuple[EpisodeStore, EpisodeStore]:
    """The training and validation stores, prepared by one worker per node: local rank 0 mirrors datasets at
    storage URIs and, for a stage that reads frames at every step (tokenizer, LAM), decodes every shard into the
    node's cache; the node's other workers wait and then find both done, instead of each downloading the data
    and decoding the same shards inside their first steps. A dynamics run trains on its token cache, whose
    builder decodes what it encodes."""
    if local_rank == 0:
        train_store, val_store, _ = open_stores(job.data)
        if job.stage != "dynamics":
            train_store.decode_all()
            val_store.decode_all()
    if world > 1 and dist.is_initialized():
        dist.barrier()  # every node's preparer is done
    if local_rank == 0:
        return train_store, val_store
    train_store, val_store, _ = open_stores(job.data)
    return train_store, val_store


def _token_cache(job: TrainJob, mode: bool | str, trainee: nn.Module, store, frames_to_encode: int,
                 device: torch.device, context: Any, rank: int, world: int,
                 channel: MetricChannel) -> TokenCache | None:
    """The run's verified token cache of the training store, or None: not a dynamics run, turned off, a
    tokenizer whose ids cannot be cached, or (`auto`) no cache yet and a run too short for one to pay:
    building encodes every training frame once, training from frames encodes `frames_to_encode`.

    One worker per copy builds it, with the threads of the workers that wait meanwhile: rank 0 for a run
    folder on a local path (one folder, seen by every worker), local rank 0 of each node for a run on a
    storage URI (the cache is node-local).
    """
    if not isinstance(trainee, DynamicsTrainee) or mode is False:
        return None
    why_not = unsupported_reason(trainee.tokenizer)
    if why_not is not None:
        channel.note(f"token cache off: {why_not}")
        return None
    folder = run_cache_folder(job.out)
    references = trainee.dynamics.cached_references()  # a scrolled copy path's shifted predecessors too
    key = cache_key(trainee.tokenizer, trainee.lam, store, **references)
    if mode == "auto" and frames_to_encode < store.num_frames:
        try:
            cache = TokenCache.open(folder, key)
        except TokenCacheError:
            cache = None
        everyone = torch.tensor([cache is not None], dtype=torch.int32, device=device)
        if world > 1 and dist.is_initialized():
            dist.all_reduce(everyone, op=dist.ReduceOp.MIN)  # all workers read the same way
        if bool(everyone.item()):
            channel.note(f"token cache {folder}: verified, reused")
            return cache
        channel.note(f"token cache off (auto): training from frames encodes {frames_to_encode:,} frames in this run's "
                     f"steps, fewer than the {store.num_frames:,} a cache would encode first; "
                     f"train.token_cache=true builds one anyway")
        return None
    builder = rank == 0 if not storage.is_uri(job.out) else context.get_local_rank() == 0
    cache = None
    if builder:
        note = channel.note if rank == 0 else (lambda text: print(text, flush=True))
        progress = (lambda total: ChannelProgress(channel, total)) if rank == 0 else False
        threads = torch.get_num_threads()
        torch.set_num_threads(threads * max(1, context.get_local_world_size()))  # this node's other workers wait
        try:
            cache = ensure_token_cache(folder, trainee.tokenizer, trainee.lam, store, note=note, progress=progress,
                                       **references)
        finally:
            torch.set_num_threads(threads)
    if world > 1 and dist.is_initialized():
        dist.barrier()  # the others wait for the builder
    if cache is None:
        cache = TokenCache.open(folder, key)
    return cache


@torch.no_grad()
def validate(trainee: nn.Module, store, positions, length: int, micro: int, seed: int, world: int,
             autocast) -> dict[str, float]:
    """Mean validation metrics over the fixed windows, all workers together (each its own part)."""
    rng_state = torch.get_rng_state()
    torch.manual_seed(step_seed(seed, -2, 0))  # the same dynamics masks at every validation
    episodes, starts = positions
    sums: dict[str, float] = defaultdict(float)
    count = 0
    for begin in range(0, len(episodes), micro):
        # (micro, T, H, W, C), (micro, T-1)
        frames, actions = store.windows(episodes[begin:begin + micro], starts[begin:begin + micro], length)
        with autocast:
            metrics = eval_step(trainee, (frames, actions), decode=True)  # dynamics: one teacher-forced pass for both
        for key, value in metrics.items():
            sums[key] += value * len(frames)
        count += len(frames)
    torch.set_rng_state(rng_state)
    keys = sorted(sums)
    # on the model's device: NCCL, Ray Train's backend on GPUs, reduces no CPU tensors (gloo takes either)
    device = next(trainee.parameters()).device
    totals = torch.tensor([count] + [sums[k] for k in keys], dtype=torch.float64, device=device)
    if world > 1 and dist.is_initialized():
        dist.all_reduce(totals)
    return {f"val_{key}": float(totals[i + 1] / max(totals[0], 1)) for i, key in enumerate(keys)}


@torch.no_grad()
def _sync_quantizers(trainee: nn.Module, world: int) -> None:
    """Codebook seeding and dead-code restarts use each worker's own data; rank 0's result wins,
    so the replicas never drift apart (DDP keeps only gradients in sync)."""
    if world == 1 or not dist.is_initialized():
        return
    for module in trainee.modules():
        if isinstance(module, VectorQuantizer) and module.codebook.requires_grad:
            dist.broadcast(module.codebook.data, src=0)
            dist.broadcast(module.steps_unused, src=0)
            dist.broadcast(module.initialized, src=0)


def _export(model: nn.Module, preset: str, step: int, location: str, extra: dict | None = None) -> None:
    """A weights-only model checkpoint at `location` (path or URI), written atomically."""
    if not storage.is_uri(location):
        save_checkpoint(location, model, preset, step=step, extra=extra)
        return
    with tempfile.TemporaryDirectory() as folder:
        local = save_checkpoint(Path(folder) / "model.pt", model, preset, step=step, extra=extra)
        storage.upload_file(local, location)


def _report_checkpoint(job: TrainJob, preset: str, trainee: nn.Module, export_model: nn.Module,
                       optimization: Optimization, step: int, best: float, rank: int, val_record: dict | None) -> None:
    import ray.train

    metrics = {"step": step, **(val_record or {})}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    folder = tempfile.mkdtemp(prefix="genie-ckpt-")
    try:
        state = {"model": trainee.state_dict(), "optimization": optimization.state_dict(), "step": step,
                 "best_val_loss": best, "job": job.identity()}
        torch.save(state, Path(folder) / STATE_FILE)
        save_checkpoint(Path(folder) / MODEL_FILE, export_model, preset, step=step)
        _export(export_model, preset, step, storage.join(job.out, LATEST))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fail_once(job: TrainJob) -> None:
    """Fault-tolerance tests: this worker process dies once at the chosen step (a marker remembers)."""
    marker = storage.join(job.out, FAILURE_MARKER)
    if storage.exists(marker):
        return
    storage.write_bytes_atomic(marker, b"failed once\n")
    os._exit(1)
