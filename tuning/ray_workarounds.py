"""Workarounds for Ray 2.60 Tune + Train V2 that a sweep needs; each says why, and the Ray issue where one is known.

Kept apart from the sweep (`tuning.sweep`) and the trial (`tuning.trainable`) because they lean on Ray's private
APIs (`ray._raylet.PlacementGroupID`, `ray._private.state`) and on Tune's callback order: when Ray fixes or changes
these, this module is the one to revisit. Nothing here imports the rest of the project.
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

# carried in every result a trial reports (what the driver needs from it, whichever node it runs on)
ACTOR_KEY = "trial_actor_id"  # the Tune actor running the trial (its groups are released once it is dead)
GROUPS_KEY = "placement_groups"  # the Train placement groups of this attempt, space-separated hex ids


def reported_groups(result: dict[str, Any] | None) -> list[str]:
    """The Train placement groups a trial's result carries (hex ids)."""
    return str((result or {}).get(GROUPS_KEY) or "").split()


def remove_placement_groups(group_ids) -> None:
    """Remove the given Train worker groups' placement groups (hex ids) that still exist.

    Why: under Tune, Ray 2.60's Train V2 leaves a finished or stopped run's placement group reserved
    (ray-project/ray#54305), so each trial would keep its workers' CPUs/GPUs and later trials wait for
    ever. Only a trial's own groups (reported by its rank 0) are touched, never another trial's.
    Private API: a group is rebuilt from its hex id with `ray._raylet.PlacementGroupID` (no public way).
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
    release its Train placement groups; a trial stopped by the scheduler is killed before it can do so itself
    (the leak is ray-project/ray#54305, see `remove_placement_groups`).

    "Really gone" means its Tune actor and every actor that actor owns (the Train controller) are dead.
    Why wait: Tune calls `on_trial_complete` *before* it stops the trial, and it forgets the trial's actor
    when it *asks* it to stop (Tune's callback order; no Ray issue known). Removing the group of a live Train
    controller makes it restart its workers (FailureConfig) in a fresh group that the dying trial never records,
    which then stays reserved for the rest of the driver's life (seen on a loaded 2-core CI machine). A dead
    controller creates nothing more.

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
    read once from the GCS actor table (no dashboard needed). An unknown id counts as gone.

    Private API: `ray._private.state.actors()` reads the GCS directly; the public `ray.util.state` goes through
    the dashboard, which a cluster may not run."""
    from ray._private import state

    table = state.actors()  # actor id -> info
    owners = {(a["OwnerAddress"]["IPAddress"], a["OwnerAddress"]["Port"])
              for a in table.values() if a["State"] != "DEAD"}

    def gone(actor_id: str) -> bool:
        info = table.get(actor_id)
        if info is None:
            return True
        # a worker's address can be reused by a later worker: then this waits for that one's actors too
        return info["State"] == "DEAD" and (info["Address"]["IPAddress"], info["Address"]["Port"]) not in owners

    return gone
