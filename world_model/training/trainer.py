"""The driver side of `genie train`: check inputs, set up the run folder, run Ray Train, show progress.

Ray Train (V2) runs `train_loop_per_worker` on `workers` workers with DDP; `FailureConfig`
restarts a failed worker group from the latest reported checkpoint, and running the same
command again with the same run folder resumes (Ray Train finds its run under `RUN/ray/`).
Rank 0 streams metric records through a small Ray queue to this driver, which draws the
progress bar and writes `metrics.csv` and wandb: the only process that logs (V2 does not honour
`setup_wandb(rank_zero_only=True)`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from genie_common import storage
from genie_common.config import differing_keys
from genie_common.errors import ConfigError, cpu_only_torch_error
from rl_agent.store.errors import DatasetError
from rl_agent.store.lock import folder_lock
from world_model.checkpoint import CheckpointError, load_checkpoint
from world_model.runs import FROZEN_LAM, FROZEN_TOKENIZER, LATEST, read_run_info, resolve_checkpoint, write_run_info
from world_model.training.job import TrainJob

METRICS_FILE = "metrics.csv"
RAY_FOLDER = "ray"
RAY_RUN_NAME = "train"


@dataclass
class TrainResult:
    out: str
    stage: str
    steps: int
    resumed_from: int
    already_done: bool
    last_val: dict[str, float] = field(default_factory=dict)
    first_val: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0
    frames_per_s: float = 0.0

    def summary(self) -> str:
        if self.already_done:
            return (f"{self.stage}: {self.out} already finished {self.steps} steps; nothing to do "
                    f"(best.pt, latest.pt are there)")
        parts = [f"{self.stage}: {self.steps} steps in {self.wall_s:.0f} s ({self.frames_per_s:,.0f} frames/s)"]
        if self.resumed_from:
            parts.append(f"resumed from step {self.resumed_from}")
        if self.last_val:
            key = "val_psnr" if "val_psnr" in self.last_val else "val_teacher_forced_psnr"
            if key in self.last_val:
                first = f"{self.first_val[key]:.2f} -> " if key in self.first_val else ""
                parts.append(f"{key} {first}{self.last_val[key]:.2f} dB")
            first_loss = f"{self.first_val['val_loss']:.4f} -> " if "val_loss" in self.first_val else ""
            parts.append(f"val_loss {first_loss}{self.last_val['val_loss']:.4f}")
        return "; ".join(parts) + f". Run folder: {self.out}"


def prepare_run(job: TrainJob) -> tuple[int, bool]:
    """Validate inputs and the run folder; write run.json and the dynamics' frozen inputs.

    Returns (step of the latest checkpoint or 0, whether the run already finished).
    """
    from rl_agent.store.verify import require_listed_shards

    for location in job.data:
        if not storage.exists(storage.join(location, "manifest.json")):
            raise ConfigError(f"--data {location}: not a dataset (no manifest.json); make one with `genie collect` "
                              f"or `genie datasets make`")
        require_listed_shards(location)  # readable manifest; every shard there with its size, before any worker starts
    if job.init:
        resolve_checkpoint(job.init, job.stage)  # right stage, exists
    identity = job.identity()
    info = read_run_info(job.out)
    if info is not None:
        if info.get("identity") != identity:
            changed = differing_keys(info.get("identity", {}), identity)
            raise ConfigError(
                f"{job.out} holds a different {info.get('stage')} run (differs in: {', '.join(changed)}); "
                f"run the same command to resume it, or pass a new --out (use --init {job.out} to fine-tune from it)"
            )
        step = _resume_step(job)
        return step, step >= job.total_steps()
    storage.makedirs(job.out)
    if job.stage == "dynamics":
        _copy_frozen(job.tokenizer, "tokenizer", storage.join(job.out, FROZEN_TOKENIZER))
        if job.actions == "latent":
            _copy_frozen(job.lam, "lam", storage.join(job.out, FROZEN_LAM))
    run_info = {"stage": job.stage, "preset": job.preset if job.preset_file is None else job.preset_file,
                "data": list(job.data), "identity": identity, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    if job.stage == "dynamics":
        run_info.update(conditioning=job.conditioning, tokenizer=job.tokenizer, lam=job.lam,
                        model="GenieRedux" if job.actions == "latent" else "GenieRedux-G")
    write_run_info(job.out, run_info)
    return 0, False


def _resume_step(job: TrainJob) -> int:
    """The step the run resumes from: latest.pt's, or, when latest.pt is unreadable, that of Ray Train's newest
    readable checkpoint (what Ray resumes from anyway), whose model then replaces latest.pt."""
    latest = storage.join(job.out, LATEST)
    if not storage.is_file(latest):
        return 0
    try:
        return load_checkpoint(storage.local_copy(latest, refresh=True), job.stage).step
    except CheckpointError as err:
        found = _newest_ray_checkpoint(job)
        if found is None:
            raise CheckpointError(f"{err}; and {ray_storage_path(job.out)} holds no readable checkpoint of Ray Train "
                                  f"to resume from: pass a new --out (or --init another run)") from err
        step, model_file = found
        storage.upload_file(model_file, latest)
        print(f"note: {latest} was unreadable; resuming from Ray Train's checkpoint at step {step} "
              f"(latest.pt rewritten from it)", flush=True)
        return step


def _newest_ray_checkpoint(job: TrainJob) -> tuple[int, Path] | None:
    """(step, local model file) of the newest Ray Train checkpoint of the run whose model file loads."""
    from world_model.training.loop import MODEL_FILE

    folder = storage.join(ray_storage_path(job.out), RAY_RUN_NAME)
    if not storage.exists(folder):
        return None
    local = storage.local_copy(folder, refresh=True)
    found = []
    for candidate in local.glob(f"checkpoint_*/{MODEL_FILE}"):
        try:
            found.append((load_checkpoint(candidate, job.stage).step, candidate))
        except CheckpointError:
            continue  # a checkpoint cut short: an older one will do
    return max(found, key=lambda f: f[0]) if found else None


def _copy_frozen(source: str, stage: str, target: str) -> None:
    path = resolve_checkpoint(source, stage)
    load_checkpoint(path, stage)  # refuses a wrong stage with the command that makes the right one
    storage.upload_file(path, target)


class ProgressSink:
    """Consumes rank 0's records: progress bar, metrics.csv (rewritten whole, atomically), wandb."""

    def __init__(self, job: TrainJob, start: int, show_progress: bool) -> None:
        from tqdm import tqdm

        self.job = job
        self.rows: list[dict[str, Any]] = _read_metrics(job.out, start)
        self.first_val: dict[str, float] = {}
        self.last_val: dict[str, float] = {}
        self.frames_per_s: list[float] = []
        self.bar = tqdm(total=job.total_steps(), initial=start, unit="step", desc=f"train {job.stage}",
                        disable=not show_progress, dynamic_ncols=True)
        self.wandb = _start_wandb(job) if job.wandb else None
        self.postfix: dict[str, str] = {}
        self.show_progress = show_progress
        self.cache_bar = None  # the token cache's encoding progress (dynamics, before the first step)

    def handle(self, record: dict[str, Any]) -> None:
        kind, step = record.pop("kind"), int(record.get("step", 0))
        if kind == "start":  # a (re)started worker group continues from `step`: later rows are trained again
            self.rows = [row for row in self.rows if int(row.get("step", 0)) <= step]
            self.bar.n = step
            self.bar.refresh()
        elif kind == "train":
            self.bar.update(max(0, step - self.bar.n))
            self.frames_per_s.append(record["frames_per_s"])
            self.postfix.update(loss=f"{record.get('loss', float('nan')):.4f}", fps=f"{record['frames_per_s']:.0f}")
            self._row("train", record)
        elif kind == "val":
            if not self.first_val:
                self.first_val = dict(record)
            self.last_val = dict(record)
            psnr = record.get("val_psnr", record.get("val_teacher_forced_psnr"))
            if psnr is not None:
                self.postfix["val_psnr"] = f"{psnr:.2f}"
            self._row("val", record)
            self.flush()
        elif kind in ("checkpoint", "done"):
            self.flush()
        elif kind == "note":  # one line a worker wants the person to read (e.g. why the token cache was rebuilt)
            self.bar.write(record["text"])
        elif kind == "cache":
            self._cache_progress(record)
            return
        self.bar.set_postfix(self.postfix, refresh=False)

    def _cache_progress(self, record: dict[str, Any]) -> None:
        from tqdm import tqdm

        if self.cache_bar is None:
            self.cache_bar = tqdm(total=record["total"], desc="token cache", unit="frame", leave=False,
                                  disable=not self.show_progress, dynamic_ncols=True)
        self.cache_bar.update(max(0, record["done"] - self.cache_bar.n))
        if record.get("closed"):
            self.cache_bar.close()
            self.cache_bar = None

    def _row(self, kind: str, record: dict[str, Any]) -> None:
        row = {"kind": kind, "time": round(time.time(), 3), **record}
        self.rows.append(row)
        if self.wandb is not None:
            prefix = "" if kind == "val" else "train/"
            self.wandb.log({f"{prefix}{k}": v for k, v in record.items() if k != "step"}, step=int(record["step"]))

    def flush(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys.extend(k for k in row if k not in keys)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(self.rows)
        storage.write_bytes_atomic(storage.join(self.job.out, METRICS_FILE), buffer.getvalue().encode())

    def close(self) -> None:
        self.flush()
        if self.cache_bar is not None:
            self.cache_bar.close()
        self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def _read_metrics(out: str, start: int) -> list[dict[str, Any]]:
    """Rows of an earlier attempt up to its checkpoint (rows after it are trained again)."""
    location = storage.join(out, METRICS_FILE)
    if not storage.exists(location):
        return []
    rows = list(csv.DictReader(io.StringIO(storage.read_bytes(location).decode())))
    kept = []
    for row in rows:
        values = {k: (float(v) if k not in ("kind",) and v not in ("", None) else v) for k, v in row.items() if v != ""}
        if int(values.get("step", 0)) <= start:
            kept.append(values)
    return kept


def _start_wandb(job: TrainJob):
    try:
        import wandb

        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        folder = Path(job.out) if not storage.is_uri(job.out) else Path.cwd()
        return wandb.init(project="genie-redux", job_type=f"train-{job.stage}", dir=str(folder), config=job.to_dict(),
                          name=Path(job.out.rstrip("/")).name, resume="allow", reinit=True, id=wandb_run_id(job))
    except Exception as err:  # noqa: BLE001 - wandb is a convenience: never let it stop training
        print(f"warning: wandb disabled ({err})")
        return None


def wandb_run_id(job: TrainJob) -> str:
    """The same id for the same stage and run folder in every process, so a resumed run rejoins its wandb run
    (Python's `hash` of a string is salted per process)."""
    return f"{job.stage}-{hashlib.sha256(job.out.encode()).hexdigest()[:16]}"


def ray_storage_path(out: str) -> str:
    location = storage.join(out, RAY_FOLDER)
    return location if storage.is_uri(location) else str(Path(location).resolve())


def run_training(job: TrainJob, show_progress: bool = True,
                 on_record: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train (or resume) one stage to its last step on the Ray cluster this process is connected to.

    `on_record`, when given, sees a copy of every record rank 0 sends ({"kind": "train"|"val"|..., "step",
    metrics...}) in this thread, before the progress sink: a Tune trial forwards validations to
    `ray.tune.report` with it (every validation, not only those at checkpoints as TuneReportCallback would).
    Refused with `FolderInUse` while another process trains into the same run folder.
    """
    with folder_lock(job.out, "genie train"):
        return _train_holding_lock(job, show_progress, on_record)


def _train_holding_lock(job: TrainJob, show_progress: bool, on_record) -> TrainResult:
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Empty, Queue

    from world_model.training.loop import train_loop_per_worker

    start, done = prepare_run(job)
    if done:
        return TrainResult(job.out, job.stage, job.total_steps(), start, already_done=True)
    _check_resources(job)
    queue = Queue(actor_options={"num_cpus": 0})
    sink = ProgressSink(job, start, show_progress)
    preset = job.load_preset()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"job": job.to_dict(), "queue": queue},
        scaling_config=ScalingConfig(
            num_workers=job.workers,
            use_gpu=job.gpus_per_worker > 0,
            resources_per_worker={"CPU": job.cpus_per_worker,
                                  **({"GPU": job.gpus_per_worker} if job.gpus_per_worker else {})},
        ),
        run_config=RunConfig(
            name=RAY_RUN_NAME,
            storage_path=ray_storage_path(job.out),
            failure_config=FailureConfig(max_failures=job.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=preset.train.keep_checkpoints),
        ),
    )
    began = time.monotonic()
    failure: list[BaseException] = []

    def fit() -> None:
        try:
            trainer.fit()
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
            failure.append(err)

    thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive() or not queue.empty():
            try:
                record = queue.get(timeout=0.5)
                if on_record is not None:
                    on_record(dict(record))
                sink.handle(record)
            except Empty:
                pass
    finally:
        sink.close()
    thread.join()
    ray.kill(queue.actor)
    if failure:
        user_error = _user_error_of(failure[0]) or _gpu_setup_error_of(failure[0], job)
        if user_error is not None:
            raise user_error from None
        raise RuntimeError(f"training failed: {failure[0]}; run the same command again to resume from the latest "
                           f"checkpoint") from failure[0]
    fps = sorted(sink.frames_per_s)[len(sink.frames_per_s) // 2] if sink.frames_per_s else 0.0
    return TrainResult(job.out, job.stage, job.total_steps(), start, False, sink.last_val, sink.first_val,
                       time.monotonic() - began, fps)


USER_ERRORS = (DatasetError, CheckpointError, ConfigError, storage.StorageError)  # input, not a crash: no resume advice


def _user_error_of(failure: BaseException) -> Exception | None:
    """A worker's error about its input (data, checkpoint, config, storage), as its own one-line error."""
    for error in getattr(failure, "worker_failures", {}).values():
        for kind in USER_ERRORS:
            if isinstance(error, kind):
                message = str(error.args[0]) if error.args else str(error)
                return kind(message.strip().splitlines()[0] if message.strip() else type(error).__name__)
    return None


def _gpu_setup_error_of(failure: BaseException, job: TrainJob) -> ConfigError | None:
    """GPU workers whose torch cannot run NCCL, as what to do rather than a traceback with resume advice (Ray Train
    sets up NCCL before the loop's own device check, `check_worker_device`, runs)."""
    if job.gpus_per_worker <= 0:
        return None
    return cpu_only_torch_error(failure, f"the training workers asked for {job.gpus_per_worker:g} GPU(s) each",
                                "train on CPUs without --gpus-per-worker")


def _check_resources(job: TrainJob) -> None:
    """Refuse up front what no node can ever provide; wait for the autoscaler to start what one can (GPU nodes)."""
    from rl_agent.capacity import ensure_resources, format_resources

    worker = {"CPU": job.cpus_per_worker, **({"GPU": job.gpus_per_worker} if job.gpus_per_worker else {})}
    ensure_resources([worker] * job.workers, f"{job.workers} training workers x {format_resources(worker)}",
                     "use fewer --workers, a smaller --cpus-per-worker, or drop --gpus-per-worker to train on CPUs")
