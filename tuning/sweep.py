"""`genie tune`: a Ray Tune sweep whose trials are Ray Train runs of one world-model stage: config -> Tuner -> results.

The sweep driver only: what each trial runs is `tuning.trainable`, the workarounds for Ray's leaks are
`tuning.ray_workarounds`, the table, best preset and plot are `tuning.results`. Tune does not count the Train
workers of a trial, so the sweep caps the trials running at once (`max_concurrent`) at what the cluster can hold,
else Train workers of extra trials would wait for resources while their Tune slots look busy.

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

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genie_common import storage
from genie_common.config import differing_keys
from genie_common.errors import ConfigError
from tuning.ray_workarounds import (ACTOR_KEY, GROUPS_KEY, ReleaseTrialResources, actor_gone_test,
                                    remove_placement_groups, reported_groups)
from tuning.results import write_results
from tuning.space import TrialSpec
from tuning.trainable import ATTEMPTS_FILE, TRIAL_CPUS, TRIAL_STATE_FILE, run_trial, write_json
from tuning.trials import RUN_KEY, TRIALS_FOLDER, SweepConfig, build_trials, parameter_count, trial_job

__all__ = ["SWEEP_FILE", "TUNE_NAME", "SweepResult", "check_resources", "concurrency", "run_sweep", "sweep_location",
           # re-exported: the names `tuning.sweep` has always offered, now at home in the modules above
           "ACTOR_KEY", "GROUPS_KEY", "ReleaseTrialResources", "actor_gone_test", "remove_placement_groups",
           "reported_groups", "ATTEMPTS_FILE", "TRIAL_CPUS", "TRIAL_STATE_FILE", "run_trial", "RUN_KEY",
           "TRIALS_FOLDER", "SweepConfig", "build_trials", "parameter_count", "trial_job"]

TUNE_NAME = "tune"  # Tune's experiment folder inside the sweep folder
SWEEP_FILE = "sweep.json"


def sweep_location(out: str) -> str:
    """The sweep folder as Tune and the trials get it: a URI as given (no trailing slash), a path made absolute."""
    return str(out).rstrip("/") if storage.is_uri(out) else str(Path(out).resolve())


@dataclass
class SweepResult:
    """What `run_sweep` made and where: the command prints its `summary()` as its last words."""

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
            lines.append(f"  best config: {self.best_preset} (train it with `genie train --preset-file "
                         f"{self.best_preset}`)")
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


def _trial_name(trial) -> str:
    """A trial's folder and display name: its TrialSpec's name."""
    return TrialSpec.from_dict(trial.config["trial"]).name


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
    write_json(storage.join(out, SWEEP_FILE), {"identity": identity, "config": sweep.to_dict()})

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
                                        trial_dirname_creator=_trial_name,
                                        trial_name_creator=_trial_name),
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
        changed = differing_keys(before, identity)
        raise ConfigError(f"{out} holds a different sweep (differs in: {', '.join(changed)}); run the same command "
                          f"to resume it, or pass a new --out")
