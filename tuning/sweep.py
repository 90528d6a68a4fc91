"""`genie tune`: a Ray Tune sweep whose trials are Ray Train runs of one world-model stage.

Why a function trainable: in Ray 2.60 (Train V2) `Tuner(TorchTrainer)` is refused, so each trial
is a small Tune function (a fraction of a CPU, `TRIAL_CPUS`) that calls the same
`run_training` as `genie train`, into its own run folder `OUT/trials/trial-NNN`; the Train
workers it starts hold the CPUs/GPUs. Tune does not count those workers, so the sweep caps the
trials running at once (`max_concurrent`) at what the cluster can hold, else Train workers of
extra trials would wait for resources while their Tune slots look busy.

Every validation of a trial is forwarded to Tune (`run_training(on_record=...)` ->
`ray.tune.report`) with `step` as the time axis, so ASHA compares trials at equal optimiser steps,
and with `params`, `frames_seen` and `compute` (= params x frames seen) for the scaling plot.

Shared storage: OUT is a folder or a storage URI (s3://, file://, ...); on a cluster it must be one every
node sees, because a trial and its Train workers run on any node. Tune's experiment lives at `OUT/tune`
(`RunConfig(storage_path=OUT)`), the trials' run folders at `OUT/trials/`, and every file a trial or the
driver reads or writes goes through `genie_common.storage`. What the driver needs from a running trial
(its Tune actor, its Train placement groups, its run folder) travels in the trial's reported results
(`tune.report` -> `trial.last_result`), never in files, so nothing depends on which node wrote what.

Resume: the sweep folder keeps Tune's experiment (`OUT/tune`) and `sweep.json`; the same command
again restores it (`Tuner.restore`, also from a URI): finished and early-stopped trials are not run
again, an interrupted trial resumes from its run folder's latest Train checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

from genie_common import storage
from genie_common.errors import ConfigError
from tuning.results import write_results
from tuning.space import TrialSpec
from tuning.trials import RUN_KEY, TRIALS_FOLDER, SweepConfig, build_trials, parameter_count, trial_job

TRIAL_CPUS = 0.1  # the Tune function itself: it only waits on its Train run and forwards metrics
TUNE_NAME = "tune"  # Tune's experiment folder inside the sweep folder
SWEEP_FILE = "sweep.json"
TRIAL_STATE_FILE = "tune_trial.json"  # inside a trial's run folder: wall time of its earlier attempts
ATTEMPTS_FILE = "attempts.log"  # inside a trial's run folder: one line per start of its Tune function
# carried in every result a trial reports (what the driver needs from it, whichever node it runs on)
ACTOR_KEY = "trial_actor_id"  # the Tune actor running the trial (its groups are released once it is dead)
GROUPS_KEY = "placement_groups"  # the Train placement groups of this attempt, space-separated hex ids


# ---- the Tune function -----------------------------------------------------------------------------
def run_trial(config: dict[str, Any], sweep: dict[str, Any]) -> None:
    """One trial: train its stage into its run folder, reporting each validation to Tune.

    Runs on any node: it reads and writes its run folder only through `genie_common.storage` (the sweep's
    shared storage), and keeps what the driver must know (its actor, its placement groups, its run folder)
    in each result it reports.
    """
    import ray
    from ray import tune

    from world_model.training.trainer import METRICS_FILE, run_training

    settings = SweepConfig.from_dict(sweep)
    spec = TrialSpec.from_dict(config["trial"])
    job = trial_job(settings, spec)
    preset = job.load_preset()
    params = spec.params
    frames_per_step = job.global_batch(preset) * job.window_length(preset)
    storage.makedirs(job.out)
    actor = ray.get_runtime_context().get_actor_id() or ""
    groups: list[str] = []  # this attempt's Train placement groups, in the order its worker groups started
    wall = _previous_wall(job.out)
    began = time.monotonic()
    state = {"frames_per_s": 0.0}

    def report(record: dict[str, Any]) -> None:
        step = int(record["step"])
        metrics = {k: float(v) for k, v in record.items() if k.startswith("val_")}
        seen = step * frames_per_step
        wall_s = wall + time.monotonic() - began
        tune.report({"step": step, **metrics, "params": params, "frames_seen": seen, "compute": float(params) * seen,
                     "frames_per_s": state["frames_per_s"], "wall_s": wall_s,
                     RUN_KEY: job.out, ACTOR_KEY: actor, GROUPS_KEY: " ".join(groups)})
        _write_json(storage.join(job.out, TRIAL_STATE_FILE), {"wall_s": wall_s, "step": step, "finished": False})

    def forward(record: dict[str, Any]) -> None:
        if record.get("kind") == "start" and record.get("placement_group"):
            if record["placement_group"] not in groups:
                groups.append(str(record["placement_group"]))
        elif record.get("kind") == "train":
            state["frames_per_s"] = float(record.get("frames_per_s", 0.0))
        elif record.get("kind") == "val":
            report(record)

    _append_line(storage.join(job.out, ATTEMPTS_FILE), f"{time.strftime('%H:%M:%S')} start")
    try:
        result = run_training(job, show_progress=False, on_record=forward)
    finally:
        remove_placement_groups(groups)
    _append_line(storage.join(job.out, ATTEMPTS_FILE),
                 f"{time.strftime('%H:%M:%S')} {'already done' if result.already_done else 'trained'}")
    if result.already_done:  # finished before an interruption Tune had not recorded yet: report its validations
        text = storage.read_bytes(storage.join(job.out, METRICS_FILE)).decode()
        rows = list(csv.DictReader(io.StringIO(text)))
        fps = [float(r["frames_per_s"]) for r in rows if r.get("kind") == "train" and r.get("frames_per_s")]
        state["frames_per_s"] = sorted(fps)[len(fps) // 2] if fps else 0.0
        for row in rows:
            if row.get("kind") == "val":
                report({k: v for k, v in row.items() if k == "step" or (k.startswith("val_") and v not in ("", None))})
    else:
        state["frames_per_s"] = result.frames_per_s
    _write_json(storage.join(job.out, TRIAL_STATE_FILE),
                {"wall_s": wall + time.monotonic() - began, "step": result.steps, "finished": True,
                 "frames_per_s": state["frames_per_s"]})


def reported_groups(result: dict[str, Any] | None) -> list[str]:
    """The Train placement groups a trial's result carries (hex ids)."""
    return str((result or {}).get(GROUPS_KEY) or "").split()


def remove_placement_groups(group_ids) -> None:
    """Remove the given Train worker groups' placement groups (hex ids) that still exist.

    Why: under Tune, Ray 2.60's Train V2 leaves a finished or stopped run's placement group reserved
    (ray-project/ray#54305), so each trial would keep its workers' CPUs/GPUs and later trials wait for
    ever. Only a trial's own groups (reported by its rank 0) are touched, never another trial's.
    """
    import ray
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    ids = sorted(set(group_ids))
    if not ids:
        return
    table = ray.util.placement_group_table()
    for hex_id in ids:
        if table.get(hex_id, {}).get("state") not in (None, "REMOVED"):
            try:
                remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(hex_id))))
            except Exception as err:  # noqa: BLE001 - best effort; the sweep goes on
                print(f"warning: could not remove placement group {hex_id}: {err}")


class ReleaseTrialResources(Callback):
    """Tune callback (driver side): once an ended trial (finished, stopped by ASHA, errored) is really gone,
    release its Train placement groups; a trial stopped by the scheduler is killed before it can do so itself.

    "Really gone" means its Tune actor and every actor that actor owns (the Train controller) are dead.
    Why wait: Tune calls `on_trial_complete` *before* it stops the trial, and it forgets the trial's actor
    when it *asks* it to stop. Removing the group of a live Train controller makes it restart its workers
    (FailureConfig) in a fresh group that the dying trial never records, which then stays reserved for the
    rest of the driver's life (seen on a loaded 2-core CI machine). A dead controller creates nothing more.

    The trial's actor and groups come from its last reported result (`ACTOR_KEY`, `GROUPS_KEY`), which Tune
    hands the driver whichever node the trial ran on. A trial that never reported has no groups to release
    here: one that ends by itself removes its own groups, and Tune stops a trial early only on a result.
    """

    def __init__(self, settle_s: float = 10.0) -> None:
        self.settle_s = settle_s  # at the end of the sweep: how long to wait for the last trials to be gone
        self.ended: dict[str, Any] = {}  # trial id -> ended trial whose actors may still be alive

    def _release_gone(self) -> None:
        if not self.ended:
            return
        gone = actor_gone_test()
        for trial_id, trial in list(self.ended.items()):
            result = trial.last_result or {}
            if gone(str(result.get(ACTOR_KEY) or "")):
                remove_placement_groups(reported_groups(result))
                del self.ended[trial_id]

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id] = trial

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id] = trial

    def on_step_begin(self, iteration, trials, **info) -> None:
        self._release_gone()

    def on_experiment_end(self, trials, **info) -> None:
        deadline = time.monotonic() + self.settle_s  # Tune has stopped (or killed) every trial actor by now
        self._release_gone()
        while self.ended and time.monotonic() < deadline:
            time.sleep(0.2)
            self._release_gone()
        for trial in self.ended.values():  # still not gone: release anyway, the sweep is over
            remove_placement_groups(reported_groups(trial.last_result))
        self.ended.clear()


def actor_gone_test():
    """A test `gone(actor_id)`: the actor is dead and so is every actor it owns (a trial's Train controller),
    read once from the GCS actor table (no dashboard needed). An unknown id counts as gone."""
    from ray._private import state

    table = state.actors()  # actor id -> info
    owners = {(a["OwnerAddress"]["IPAddress"], a["OwnerAddress"]["Port"]) for a in table.values() if a["State"] != "DEAD"}

    def gone(actor_id: str) -> bool:
        info = table.get(actor_id)
        if info is None:
            return True
        # a worker's address can be reused by a later worker: then this waits for that one's actors too
        return info["State"] == "DEAD" and (info["Address"]["IPAddress"], info["Address"]["Port"]) not in owners

    return gone


def _previous_wall(out: str) -> float:
    """Wall time earlier attempts of this trial spent (an interrupted sweep adds up across its runs)."""
    location = storage.join(out, TRIAL_STATE_FILE)
    try:
        if not storage.is_file(location):
            return 0.0
        return float(json.loads(storage.read_bytes(location))["wall_s"])
    except (OSError, ValueError, KeyError, storage.StorageError):
        return 0.0


def _write_json(location: str, values: dict[str, Any]) -> None:
    storage.write_bytes_atomic(location, json.dumps(values, indent=1).encode())


def _append_line(location: str, line: str) -> None:
    """Add a line to a small log on storage (read and rewritten whole: object stores cannot append).
    Only the trial's one running attempt writes its log."""
    before = storage.read_bytes(location) if storage.is_file(location) else b""
    storage.write_bytes_atomic(location, before + f"{line}\n".encode())


def sweep_location(out: str) -> str:
    """The sweep folder as Tune and the trials get it: a URI as given (no trailing slash), a path made absolute."""
    return str(out).rstrip("/") if storage.is_uri(out) else str(Path(out).resolve())


# ---- the sweep ---------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    out: str
    trials: int
    resumed: bool
    wall_s: float
    table_csv: str
    table_md: str
    best_preset: str | None
    plot: str | None
    best: dict[str, Any] | None
    errors: list[str] = field(default_factory=list)  # "trial-NNN: what went wrong", one per failed trial

    def summary(self) -> str:
        lines = [f"sweep: {self.trials} trials in {self.wall_s:.0f} s" + (" (resumed)" if self.resumed else ""),
                 f"  table: {self.table_csv}, {self.table_md}"]
        if self.best:
            lines.append(f"  best: {self.best['trial']} ({self.best['config']}) {self.best['metric']} "
                         f"{self.best['value']:.4f} at step {self.best['step']}")
        if self.best_preset and storage.is_uri(self.best_preset):
            lines.append(f"  best config: {self.best_preset} (copy it to this machine, then train it with "
                         f"`genie train --preset-file {Path(self.best_preset).name}`)")
        elif self.best_preset:
            lines.append(f"  best config: {self.best_preset} (train it with `genie train --preset-file {self.best_preset}`)")
        if self.plot:
            lines.append(f"  scaling plot: {self.plot}")
        lines.append(f"  trial runs: {storage.join(self.out, TRIALS_FOLDER)}; Tune logs (TensorBoard): "
                     f"tensorboard --logdir {storage.join(self.out, TUNE_NAME)}")
        if self.errors:
            lines.append(f"  {len(self.errors)} of {self.trials} trials failed (the same command again retries them):")
            lines.extend(f"    {error}" for error in self.errors)
        return "\n".join(lines)


def concurrency(sweep: SweepConfig) -> int:
    """Trials at once: as many as the cluster's CPUs (and GPUs) hold, counting the Train workers Tune does not,
    and the nodes its autoscaler may add (so a sweep on stopped GPU nodes still runs trials side by side)."""
    from rl_agent.capacity import cluster_capacity

    if sweep.max_concurrent:
        return sweep.max_concurrent
    total = cluster_capacity().most()
    per_trial_cpu = sweep.workers * sweep.cpus_per_worker + TRIAL_CPUS
    count = int(total.get("CPU", 0) // per_trial_cpu)
    if sweep.gpus_per_trial:
        count = min(count, int(total.get("GPU", 0) // sweep.gpus_per_trial))
    return max(1, count)


def check_resources(sweep: SweepConfig) -> None:
    """Refuse a trial no node can ever hold; wait for the autoscaler to start the nodes one trial needs."""
    from rl_agent.capacity import ensure_resources, format_resources

    gpus = {"GPU": sweep.gpus_per_trial / sweep.workers} if sweep.gpus_per_trial else {}
    worker = {"CPU": sweep.cpus_per_worker, **gpus}
    ensure_resources([{"CPU": TRIAL_CPUS}] + [worker] * sweep.workers,
                     f"one trial ({sweep.workers} workers x {format_resources(worker)} + {TRIAL_CPUS} CPU)",
                     "use fewer --workers, a smaller --cpus-per-worker, or --gpus-per-trial 0 to sweep on CPUs")


def run_sweep(sweep: SweepConfig, verbose: int = 1) -> SweepResult:
    """Run (or resume) the sweep on the Ray cluster this process is connected to; write table, preset, plot."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # save the experiment state often: resume loses little
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "1")
    began = time.monotonic()
    out = sweep_location(sweep.out)
    sweep = dataclasses.replace(sweep, out=out)
    trials = [dataclasses.replace(spec, params=parameter_count(trial_job(sweep, spec))) for spec in build_trials(sweep)]
    identity = sweep.identity(trials)
    _check_same_sweep(out, identity)
    check_resources(sweep)
    _warn_if_node_local(out)
    storage.makedirs(out)
    _write_json(storage.join(out, SWEEP_FILE), {"identity": identity, "config": sweep.to_dict()})

    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=sweep.to_dict()), {"CPU": TRIAL_CPUS})
    experiment = storage.join(out, TUNE_NAME)
    resumed = tune.Tuner.can_restore(experiment)
    if resumed:  # a local folder or a URI: Tune reads its experiment state through pyarrow either way
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        steps = {spec.index: trial_job(sweep, spec).total_steps() for spec in trials}
        if sweep.scheduler == "asha":
            first_val = min(trial_job(sweep, s).load_preset().train.val_every for s in trials)
            # max_t one past the budget: ASHA stops a trial that reaches max_t at once, which would kill it
            # between its last validation and its final checkpoint; trials end by returning instead
            scheduler = ASHAScheduler(time_attr="step", max_t=max(steps.values()) + 1,
                                      grace_period=sweep.grace_steps or first_val,
                                      reduction_factor=sweep.reduction_factor)
        else:
            scheduler = FIFOScheduler()
        space = {"trial": tune.grid_search([s.to_dict() for s in trials])}
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(metric=sweep.metric_key, mode=sweep.mode, scheduler=scheduler, num_samples=1,
                                        max_concurrent_trials=concurrency(sweep),
                                        trial_dirname_creator=lambda trial: TrialSpec.from_dict(trial.config["trial"]).name,
                                        trial_name_creator=lambda trial: TrialSpec.from_dict(trial.config["trial"]).name),
            run_config=tune.RunConfig(name=TUNE_NAME, storage_path=out, verbose=verbose,
                                      failure_config=tune.FailureConfig(max_failures=0),
                                      callbacks=[ReleaseTrialResources()]),
        )
    grid = tuner.fit()
    files = write_results(sweep, trials, grid)
    return SweepResult(out, len(trials), resumed, time.monotonic() - began, **files)


def _warn_if_node_local(out: str) -> None:
    """A local sweep folder on a cluster of several nodes works only if every node mounts it: say so once."""
    import ray

    if storage.is_uri(out):
        return
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    if nodes > 1:
        print(f"warning: --out {out} is a local folder and the cluster has {nodes} nodes: trials on other nodes "
              f"write their run folders there on their own disks unless every node mounts it; give a folder every "
              f"node mounts or a storage URI (s3://bucket/sweeps/...)", flush=True)


def _check_same_sweep(out: str, identity: dict[str, Any]) -> None:
    file = storage.join(out, SWEEP_FILE)
    if not storage.is_file(file):
        return
    before = json.loads(storage.read_bytes(file)).get("identity", {})
    if before != identity:
        changed = sorted(k for k in identity if before.get(k) != identity[k])
        raise ConfigError(f"{out} holds a different sweep (differs in: {', '.join(changed)}); run the same command "
                          f"to resume it, or pass a new --out")
