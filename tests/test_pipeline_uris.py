"""`genie pipeline` on a storage URI (file:// stands in for s3://) and with GPUs, tested by pieces: the full
study takes minutes (tests/test_pipeline.py runs it on a local folder), so here the plan, the records that
make a resumed pipeline skip a finished task, one real task (a collection) and the report go through the
URI, and the GPU options are checked where they land (the training jobs, evaluations and PPO settings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.pipeline.plan import PipelineResources, build_plan
from cluster.pipeline.runner import make_context, read_record, run_pipeline, write_record
from genie_common import storage
from rl_agent.coinrun_env import ConfigError

# the reduced tiny study of tests/test_pipeline.py, with 2 random-agent training episodes of at most 60 frames
OVERRIDES = ["data.random_train_episodes=2", "data.episodes_per_shard=2", "pipeline.train_workers=1",
             "pipeline.models=[tokenizer, genie-g]", "pipeline.ta=[genie-g]",
             "pipeline.eval={episodes: 2, context: 2, horizon: 4, maskgit_steps: 1, workers: 1}"]


def uri_context(folder: Path, resources: PipelineResources | None = None, overrides: list[str] = OVERRIDES):
    return make_context(f"file://{folder}/run", "tiny", None, list(overrides), show_progress=False, resources=resources)


def fake_finished(context, name: str) -> None:
    """Mark a task finished as the runner does: its outputs at the URI, then its record."""
    task = next(s for s in build_plan(context) if s.name == name)
    for output in task.outputs:
        storage.write_bytes_atomic(context.path(output), b"{}")
    write_record(context, task, 1.0, {})


def test_list_plans_a_study_at_a_uri_without_writing_anything(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["pipeline", "--list", "--out", f"file://{tmp_path}/bucket/run", "--gpus-per-worker", "1",
                 *[f"--set={o}" for o in OVERRIDES]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("to do  agent") and lines[-1].startswith("to do  report"), lines
    assert list(tmp_path.iterdir()) == [], "a plan writes nothing, and no local folder named 'file:'"


def test_a_finished_task_at_a_uri_is_found_again_and_reused(tmp_path, monkeypatch, capsys):
    context = uri_context(tmp_path)
    for name in ("data:random-train", "tokenizer"):
        fake_finished(context, name)
    run = tmp_path / "run"
    assert json.loads((run / "pipeline" / "tokenizer.json").read_text())["resources"]["gpus_per_worker"] == 0
    assert not list((run / "pipeline").glob(".*")), "records are written atomically: no temporary file is left"

    def must_not_run(*_):
        raise AssertionError("a finished task ran again")

    monkeypatch.setattr("cluster.pipeline.actions.train_model", must_not_run)
    # resumed on GPUs: the same study (GPUs are no part of a key), reused, and it says where the task ran
    on_gpus = uri_context(tmp_path, PipelineResources(gpus_per_worker=1))
    outcomes = run_pipeline(on_gpus, ["tokenizer"])
    assert [(o.name, o.status) for o in outcomes] == [("tokenizer", "reused")]
    assert "it ran with --gpus-per-worker 0, not 1" in capsys.readouterr().out
    assert json.loads((run / "pipeline" / "preset.json").read_text())["pipeline"]["train_workers"] == 1
    # an output gone at the URI makes the task run again
    (run / "models" / "tokenizer" / "latest.pt").unlink()
    with pytest.raises(AssertionError, match="ran again"):
        run_pipeline(context, ["tokenizer"])


def test_a_task_runs_into_a_uri_resumes_there_and_the_report_is_uploaded(ray_cluster, tmp_path, capsys):
    """A real collection task and the report through file://; nothing of the run lands on local disk but the
    URI's own folder (the report is built in a temporary folder and uploaded)."""
    from cluster.pipeline import actions

    context = uri_context(tmp_path, overrides=OVERRIDES)
    first = run_pipeline(context, ["data:random-train"])
    assert [(o.name, o.status) for o in first] == [("data:random-train", "ran")]
    assert read_record(context.run, "data:random-train")["info"]["episodes"] == 2
    again = run_pipeline(uri_context(tmp_path, overrides=OVERRIDES),
                         ["data:random-train"])
    assert [(o.name, o.status) for o in again] == [("data:random-train", "reused")]

    report = next(s for s in build_plan(context) if s.name == "report")
    paths = actions.write_report(context, report)
    assert paths["html"] == f"{context.run}/report.html"
    run = tmp_path / "run"
    text = (run / "report.md").read_text()
    assert f"`{context.run}/pipeline/preset.json`" in text and "| data:random-train |" in text
    assert "![Example frames" in text and (run / "report_files" / "example_frames.png").is_file()
    assert "data:image/png;base64," in (run / "report.html").read_text()  # the mirror's figure, inlined
    capsys.readouterr()


def test_gpus_reach_training_evaluation_and_the_learner_but_no_task_key(tmp_path):
    from cluster.pipeline.actions import agent_settings, eval_config, train_job

    cpus = uri_context(tmp_path)
    gpus = uri_context(tmp_path, PipelineResources(gpus_per_worker=1, gpus_per_learner=0.5),
                       overrides=[*OVERRIDES,
                                  "agent.num_gpus_per_learner=1"])  # the preset's learner GPUs: no key either
    plan = build_plan(gpus)
    assert {s.name: s.key for s in plan} == {s.name: s.key for s in build_plan(cpus)}
    trained = [s for s in plan if s.group in ("train", "finetune")]
    assert [s.name for s in trained] == ["tokenizer", "genie-g", "genie-g-ta"]
    for task in trained:
        job = train_job(gpus, task)
        assert job.gpus_per_worker == 1 and job.out == f"{gpus.run}/models/{task.name}"
        assert train_job(cpus, task).gpus_per_worker == 0
    genie_g_ta = train_job(gpus, trained[-1])
    assert genie_g_ta.init == f"{gpus.run}/models/genie-g" and genie_g_ta.data == [f"{gpus.run}/data/agent-train",
                                                                                 f"{gpus.run}/data/random-train"]
    evaluations = [s for s in plan if s.group == "eval"]
    assert len(evaluations) == 6
    for task in evaluations:
        config = eval_config(gpus, task)
        assert (config.gpus_per_worker, config.device, config.workers) == (1, "cuda", 1)
        assert config.model.startswith(f"{gpus.run}/models/") and config.data.startswith(f"{gpus.run}/data/")
        assert (eval_config(cpus, task).gpus_per_worker, eval_config(cpus, task).device) == (0, "cpu")
    assert agent_settings(gpus).num_gpus_per_learner == 0.5
    assert agent_settings(cpus).num_gpus_per_learner is None  # RLlib's learner takes a GPU when the cluster has one


def test_gpus_the_cluster_cannot_provide_are_refused_before_anything_runs(ray_cluster, tmp_path):
    context = make_context(tmp_path / "run", "tiny", None, list(OVERRIDES),
                           resources=PipelineResources(gpus_per_worker=1))
    with pytest.raises(ConfigError, match=r"--gpus-per-worker 1: .*has or can start 0.*leave out --gpus-per-worker"):
        run_pipeline(context)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field, message",
                         [("gpus_per_worker", "--gpus-per-worker"), ("maskgits", "unknown pipeline.eval")])
def test_pipeline_eval_refuses_what_the_command_sets_and_typos(tmp_path, field, message):
    with pytest.raises(ConfigError, match=message):
        make_context(tmp_path, "tiny", None, [f"pipeline.eval.{field}=1"])
