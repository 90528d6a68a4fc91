"""genie tune: bad search spaces refused before any trial; a tiny ASHA sweep on CPU writes its table, best preset
and plot and leaves no Train placement group reserved; a sweep into a storage URI keeps everything there, carries what
the driver needs from a trial in the trial's results (not in files on its node), and resumes from the URI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from world_model.config import ConfigError

FAST = ["world_model.train.val_windows=8", "world_model.train.log_every=3", "world_model.train.sample_every=1000"]


def sweep_config(tmp_path: Path, space: str, data: str = "/nonexistent", **kw):
    from tuning.sweep import SweepConfig

    file = tmp_path / "space.yaml"
    file.write_text(space)
    return SweepConfig(stage="tokenizer", data=[data], out=str(tmp_path / "sweep"), space=str(file), overrides=FAST,
                       wandb=False, **kw)


@pytest.mark.parametrize("space, field", [
    ("widht: [16, 32]\n", "widht"),
    ("tokenizer.encoder.dimm: [16]\n", "tokenizer.encoder.dimm"),
    ("width: [16, -32]\n", "width"),
    ("width: {randint: [-8, 64]}\n", "width"),
    ("width: [16, 30]\nheads: 4\n", "width"),
    ("lr: {loguniform: [0, 0.01]}\n", "lr"),
])
def test_bad_search_space_is_refused_naming_the_field(tmp_path, space, field):
    from tuning.sweep import build_trials

    with pytest.raises(ConfigError, match=field):
        build_trials(sweep_config(tmp_path, space))
    assert not (tmp_path / "sweep").exists()  # nothing started


def test_cli_refuses_bad_space_before_starting_ray(tmp_path):
    import subprocess
    import sys

    space = tmp_path / "bad.yaml"
    space.write_text("width: [16, 30]\nheads: 4\n")
    run = subprocess.run([sys.executable, "-m", "cluster.cli", "tune", "tokenizer", "--data", str(tmp_path),
                          "--space", str(space), "--out", str(tmp_path / "sweep")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2
    assert "width" in run.stderr and "heads" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "sweep").exists()


def test_space_grid_times_samples_and_lr_keeps_min_lr_ratio(tmp_path):
    from tuning.sweep import build_trials

    trials = build_trials(sweep_config(tmp_path, "width: [16, 32]\nheads: 2\nlr: {loguniform: [0.0001, 0.01]}\n",
                                       samples=2, seed=3))
    assert len(trials) == 4
    assert {t.values["width"] for t in trials} == {16, 32}
    for t in trials:
        lr = t.values["lr"]
        assert 1e-4 <= lr <= 1e-2
        min_lr = next(o for o in t.overrides if "min_lr" in o).split("=")[1]
        assert float(min_lr) == pytest.approx(lr * 0.1)  # tiny: min_lr / lr = 0.0003 / 0.003
    assert [t.seed for t in trials] == [3, 4, 3, 4]  # sample k trains with seed + k


def test_tiny_asha_sweep_writes_table_best_preset_and_plot(train_data, tmp_path):
    import ray

    from tuning.sweep import ACTOR_KEY, GROUPS_KEY, RUN_KEY, TRIALS_FOLDER, TUNE_NAME, run_sweep
    from world_model.config import load_preset

    # two sizes x two learning rates; lr 1e-5 barely moves in 12 steps, so ASHA should stop it at a rung
    space = "width: [16, 32]\nheads: 2\ndepth: 1\nlr: [0.003, 0.00001]\n"
    sweep = sweep_config(tmp_path, space, data=str(train_data), budget_steps=12, val_every=3, max_concurrent=2)
    before = set(ray.util.placement_group_table())  # train_data started Ray
    result = run_sweep(sweep, verbose=0)
    rows = list(csv.DictReader(open(result.table_csv)))
    assert len(rows) == 4 and all(not r["status"].startswith("error") for r in rows)
    assert any(r["status"].startswith("stopped early") and int(r["steps"]) < 12 for r in rows)
    assert any(r["status"] == "finished" and int(r["steps"]) == 12 for r in rows)
    assert len({int(r["parameters"]) for r in rows}) == 2
    preset = load_preset(None, result.best_preset)
    best = rows[0]
    assert preset.tokenizer.encoder.dim == int(best["config"].split("width=")[1].split()[0])
    assert Path(result.plot).stat().st_size > 10_000
    assert list(Path(tmp_path / "sweep" / "tune").rglob("events.out.tfevents*"))  # TensorBoard per trial
    leftover = reserved_placement_groups(ray, within_s=30, ignore=before)
    reported = {r["trial"]: reported_results(tmp_path / "sweep" / TUNE_NAME / r["trial"]) for r in rows}
    assert not leftover, f"placement groups the sweep left reserved: {leftover}; the trials reported " + str(
        {trial: [line.get(GROUPS_KEY) for line in lines] for trial, lines in reported.items()})
    for row in rows:  # what the driver needs from a trial came in its results: its run folder, actor and groups
        lines = reported[row["trial"]]
        assert lines and all(line[RUN_KEY] == str(tmp_path / "sweep" / TRIALS_FOLDER / row["trial"]) for line in lines)
        assert row["run"] == lines[-1][RUN_KEY]
        assert all(line[ACTOR_KEY] and line[GROUPS_KEY].split() for line in lines), lines


def reported_results(tune_trial_folder: Path) -> list[dict]:
    """Every result a trial reported, as Tune stored it (result.json in the trial's Tune folder on the storage)."""
    import json

    file = tune_trial_folder / "result.json"
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.is_file() else []


def reserved_placement_groups(ray, within_s: float, ignore: set) -> list:
    """Placement groups the sweep created that are still reserved after waiting up to within_s (Ray removes
    a finished trial's groups asynchronously, so one may read CREATED for a moment; a leak stays). Groups
    that existed before the sweep (an earlier test's) are not the sweep's to release."""
    import time

    deadline = time.monotonic() + within_s
    while True:
        leftover = [g for gid, g in ray.util.placement_group_table().items()
                    if g["state"] == "CREATED" and gid not in ignore]
        if not leftover or time.monotonic() > deadline:
            return leftover
        time.sleep(0.5)


def test_killed_sweep_resumes_without_rerunning_finished_trials(ray_cluster, train_data, tmp_path):
    """Kill the `genie tune` driver once its first trial has finished, run the same command again: the sweep
    completes, and the finished trial is neither trained again nor started again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tuning.sweep import ATTEMPTS_FILE, TRIALS_FOLDER

    space = tmp_path / "space.yaml"
    space.write_text("width: [16, 24]\nheads: 2\ndepth: 1\n")
    out = tmp_path / "sweep"
    command = [sys.executable, "-m", "cluster.cli", "tune", "tokenizer", "--data", str(train_data), "--space",
               str(space), "--out", str(out), "--budget-steps", "6", "--val-every", "3", "--scheduler", "none",
               "--max-concurrent", "1", "--no-wandb", "--address", ray_cluster, *[f"--set={o}" for o in FAST]]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)

    def attempts() -> dict[str, list[str]]:
        logs = sorted((out / TRIALS_FOLDER).glob(f"*/{ATTEMPTS_FILE}")) if (out / TRIALS_FOLDER).is_dir() else []
        return {log.parent.name: [line.split()[-1] for line in log.read_text().splitlines()] for log in logs}

    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline:  # first trial done, the second one running
        if sum("trained" in lines for lines in attempts().values()) == 1 and len(attempts()) == 2:
            break
        time.sleep(0.5)
    assert driver.poll() is None, driver.communicate()[0]
    time.sleep(3)  # TUNE_GLOBAL_CHECKPOINT_S=2: the experiment state has recorded the finished trial
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    before = attempts()
    finished = [name for name, lines in before.items() if "trained" in lines]
    assert len(finished) == 1 and len(before) == 2, before

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "(resumed)" in again.stdout, again.stdout[-3000:]
    after = attempts()
    assert len(after) == 2 and all(lines[-1] in ("trained", "done") for lines in after.values()), after
    assert after[finished[0]] == before[finished[0]]  # the finished trial was not started again
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert len(rows) == 2 and all(r["status"] == "finished" and int(r["steps"]) == 6 for r in rows), rows


def test_an_ended_trials_placement_groups_are_released_only_once_it_and_its_actors_are_dead(ray_cluster):
    """Tune calls on_trial_complete before it stops the trial; removing the group then would make the trial's
    live Train controller restart in a new group nobody records. The release waits until the trial's actor
    and the actors it owns (here a detached stand-in for the controller, so it can outlive its owner) are dead.
    Both ids come from the trial's last reported result, as Tune hands it to the driver (no file is read)."""
    import time
    from types import SimpleNamespace

    import ray
    from ray.util.placement_group import placement_group

    from tuning.space import TrialSpec
    from tuning.sweep import ACTOR_KEY, GROUPS_KEY, ReleaseTrialResources

    @ray.remote(num_cpus=0)
    class Controller:
        def ping(self) -> int:
            return 1

    @ray.remote(num_cpus=0)
    class Trial:
        def start(self):
            self.controller = Controller.options(lifetime="detached").remote()
            ray.get(self.controller.ping.remote())
            return ray.get_runtime_context().get_actor_id(), self.controller

    group = placement_group([{"CPU": 0.01}])
    ray.get(group.ready(), timeout=60)
    spec = TrialSpec(index=7, preset="tiny", preset_file=False, values={}, overrides=[], seed=0)
    trial_actor = Trial.remote()
    actor_id, controller = ray.get(trial_actor.start.remote())
    trial = SimpleNamespace(trial_id="t7", config={"trial": spec.to_dict()},
                            last_result={"step": 3, ACTOR_KEY: actor_id, GROUPS_KEY: group.id.hex()})
    release = ReleaseTrialResources()

    def state_after_steps(seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while True:
            release.on_step_begin(iteration=0, trials=[trial])
            state = ray.util.placement_group_table()[group.id.hex()]["state"]
            if state == "REMOVED" or time.monotonic() > deadline:
                return state
            time.sleep(0.2)

    release.on_trial_complete(iteration=1, trials=[trial], trial=trial)
    assert state_after_steps(1) == "CREATED"  # the trial's actor is alive
    ray.kill(trial_actor)
    assert state_after_steps(3) == "CREATED"  # its actor is dead, but an actor it owns is not
    ray.kill(controller)
    assert state_after_steps(30) == "REMOVED"
    assert not release.ended


def test_sweep_into_a_storage_uri_keeps_everything_there_and_resumes_from_it(ray_cluster, train_data, tmp_path):
    """`genie tune --out file://...` (S3's stand-in): Tune's experiment, the trial's run folder, the table, best preset
    and plot are all at the URI; the trial's results carry its run folder (at the URI), its actor and its Train
    placement groups, which are released; the same command again restores the sweep from the URI (Tuner.restore)
    without starting the finished trial again. `--data` is relative to the command's folder (trials run elsewhere)."""
    import json
    import subprocess
    import sys

    import ray

    from tuning.sweep import ACTOR_KEY, ATTEMPTS_FILE, GROUPS_KEY, RUN_KEY, SWEEP_FILE, TRIALS_FOLDER, TUNE_NAME
    from world_model.config import load_preset

    space = tmp_path / "space.yaml"
    space.write_text("width: 16\nheads: 2\ndepth: 1\n")
    bucket = tmp_path / "bucket"
    uri = f"file://{bucket}/sweep"
    command = [sys.executable, "-m", "cluster.cli", "tune", "tokenizer", "--data", train_data.name, "--space",
               str(space), "--out", uri, "--budget-steps", "6", "--val-every", "3", "--scheduler", "none",
               "--max-concurrent", "1", "--no-wandb", "--address", ray_cluster, *[f"--set={o}" for o in FAST]]
    repo = Path(__file__).resolve().parents[1]
    env = {**__import__("os").environ, "PYTHONPATH": str(repo)}
    before = set(ray.util.placement_group_table())
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=train_data.parent, env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    sweep = bucket / "sweep"
    run = f"{uri}/{TRIALS_FOLDER}/trial-000"
    assert {"results.csv", "results.md", "best_preset.yaml", "scaling.png", SWEEP_FILE, TUNE_NAME,
            TRIALS_FOLDER} <= {p.name for p in sweep.iterdir()}
    assert (sweep / TRIALS_FOLDER / "trial-000" / "latest.pt").is_file()  # the Train run went to the URI
    assert (sweep / TUNE_NAME / "tuner.pkl").is_file()
    rows = list(csv.DictReader(open(sweep / "results.csv")))
    assert len(rows) == 1 and rows[0]["status"] == "finished" and int(rows[0]["steps"]) == 6, rows
    assert rows[0]["run"] == run
    reported = reported_results(sweep / TUNE_NAME / "trial-000")
    steps = [line["step"] for line in reported]
    assert steps == sorted(steps) and {3, 6} <= set(steps), steps  # every validation, with its step
    assert all(line[RUN_KEY] == run and line[ACTOR_KEY] and line[GROUPS_KEY].split() for line in reported), reported
    assert load_preset(None, str(sweep / "best_preset.yaml")).tokenizer.encoder.dim == 16
    assert f"{uri}/best_preset.yaml (copy it to this machine" in first.stdout, first.stdout[-2000:]
    leftover = reserved_placement_groups(ray, within_s=30, ignore=before)
    assert not leftover, f"placement groups the sweep left reserved: {leftover}"
    attempts = (sweep / TRIALS_FOLDER / "trial-000" / ATTEMPTS_FILE).read_text()
    assert json.loads((sweep / SWEEP_FILE).read_text())["config"]["data"] == [str(train_data)]

    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=train_data.parent, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "(resumed)" in again.stdout, again.stdout[-3000:]
    assert (sweep / TRIALS_FOLDER / "trial-000" / ATTEMPTS_FILE).read_text() == attempts  # not started again
    assert list(csv.DictReader(open(sweep / "results.csv"))) == rows
