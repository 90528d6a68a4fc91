"""genie play/dream without a server: actions, sessions, the real game, the play step vs the model's rollout, dreams."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from cluster.play.actions import ActionError, parse_dream_actions
from cluster.play.media import MediaError, encode_gif, frame_from_png, frame_to_png
from cluster.play.session import PlayConfig, Session, SessionError, SessionStore
from cluster.play.starts import RealGames, fresh_level
from cluster.play.stepper import Stepper, StepInput
from rl_agent.coinrun_env import ACTION_NAMES, CoinRunConfig, make_replay_env
from world_model.config import load_preset
from world_model.dynamics import Dynamics
from world_model.generation import WorldModel
from world_model.lam import LatentActionModel
from world_model.runs import export_world_model
from world_model.tokenizer import Tokenizer

torch.set_num_threads(1)


def tiny_model(latent: bool = False) -> WorldModel:
    torch.manual_seed(0)
    preset = load_preset("tiny")
    if latent:
        from dataclasses import replace

        dynamics = Dynamics(replace(preset.dynamics, conditioning="latent"))
        return WorldModel(Tokenizer(preset.tokenizer), dynamics, LatentActionModel(preset.lam)).eval()
    return WorldModel(Tokenizer(preset.tokenizer), Dynamics(preset.dynamics)).eval()


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    runs = {}
    for kind, latent in (("ground_truth", False), ("latent", True)):
        model = tiny_model(latent)
        runs[kind] = export_world_model(tmp_path_factory.mktemp(kind) / "run", model.tokenizer, model.dynamics,
                                        model.lam)
    return runs


# ---- actions ---------------------------------------------------------------------------------
def test_action_names_match_procgen():
    from procgen.env import BaseProcgenEnv

    combos = ["+".join(c) if c else "NOOP" for c in BaseProcgenEnv.get_combos(None)]
    assert list(ACTION_NAMES) == combos


def test_dream_letters():
    assert parse_dream_actions("RRJ.eq", "ground_truth", 15) == [7, 7, 5, 4, 8, 2]
    assert parse_dream_actions("7, 8,14", "ground_truth", 15) == [7, 8, 14]
    assert parse_dream_actions("0126", "latent", 7) == [0, 1, 2, 6]
    with pytest.raises(ActionError, match="unknown letter 'X' at position 2"):
        parse_dream_actions("RRX", "ground_truth", 15)
    with pytest.raises(ActionError, match=r"outside 0..6"):
        parse_dream_actions("0127", "latent", 7)
    with pytest.raises(ActionError, match="latent action digits"):
        parse_dream_actions("RR", "latent", 7)
    with pytest.raises(ActionError, match="empty"):
        parse_dream_actions("  ", "ground_truth", 15)


# ---- media -----------------------------------------------------------------------------------
def test_png_upload_checks():
    frame = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert np.array_equal(frame_from_png(frame_to_png(frame)), frame)
    with pytest.raises(MediaError, match="not a PNG"):
        frame_from_png(b"GIF89a....")
    with pytest.raises(MediaError, match="32x32"):
        frame_from_png(frame_to_png(frame[:32, :32]))
    with pytest.raises(MediaError, match="not a readable PNG"):
        frame_from_png(frame_to_png(frame)[:60])


def test_gif_holds_every_frame():
    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(5)]
    with Image.open(io.BytesIO(encode_gif(frames, fps=10, scale=2))) as gif:
        assert gif.format == "GIF" and gif.n_frames == 5 and gif.size == (128, 128)
        gif.seek(3)
        assert abs(int(np.asarray(gif.convert("RGB"))[0, 0, 0]) - 120) <= 4


# ---- sessions --------------------------------------------------------------------------------
def _session(sid: str) -> Session:
    start = fresh_level(3)
    tokens = np.zeros((1, 16, 16), np.int16)
    session = Session(sid, start, tokens, np.zeros(0, np.int64), steps=2, temperature=1.0)
    session.restart(start.frames)
    return session


def test_session_store_limits_and_expiry():
    now = [0.0]
    store = SessionStore(PlayConfig(max_sessions=2, ttl_s=10.0), clock=lambda: now[0])
    store.add(_session(store.new_id()))
    b = store.new_id()
    store.add(_session(b))
    with pytest.raises(SessionError) as full:
        store.new_id()
    assert full.value.status == 429
    now[0] = 8.0
    store.get(b)  # touching b keeps it alive
    now[0] = 15.0
    assert store.expire() == 1 and len(store) == 1
    store.get(b)
    with pytest.raises(SessionError) as gone:
        store.get("nope")
    assert gone.value.status == 404


def test_session_request_rate_is_a_token_bucket():
    now = [0.0]
    store = SessionStore(PlayConfig(rate_per_s=2.0, rate_burst=3), clock=lambda: now[0])
    sid = store.new_id()
    store.add(_session(sid))
    for _ in range(3):  # a burst
        store.get(sid)
    with pytest.raises(SessionError) as limited:
        store.get(sid)
    assert limited.value.status == 429 and "at most 3 at once and 2 per second" in str(limited.value)
    now[0] = 0.5  # one request earned back
    store.get(sid)
    with pytest.raises(SessionError):
        store.get(sid)
    now[0] = 100.0  # idle: a full burst again, never more
    for _ in range(3):
        store.get(sid)
    with pytest.raises(SessionError):
        store.get(sid)


def test_session_history_back_and_recording():
    session = _session("s")
    frame = lambda v: np.full((64, 64, 3), v, np.uint8)  # noqa: E731
    for i in range(1, 6):
        session.push(np.full((16, 16), i, np.int16), frame(i), 7, None, max_history=4)
        if i == 2:
            session.recording_from = session.generated
    assert session.generated == 5 and len(session.frames) == 4  # the oldest frames were dropped
    tokens, actions = session.context(3, action=5)
    assert tokens[:, 0, 0].tolist() == [3, 4, 5] and actions.tolist() == [7, 7, 5]
    assert [int(f[0, 0, 0]) for f in session.recorded_frames()] == [2, 3, 4, 5]
    assert session.pop() and session.generated == 4
    session.recording_to = session.generated
    assert [int(f[0, 0, 0]) for f in session.recorded_frames()] == [2, 3, 4]
    assert session.pop() and session.pop() and not session.pop()  # the oldest kept frame stops step back


# ---- the real game ---------------------------------------------------------------------------
def test_real_games_share_one_env_and_replay_exactly():
    games = RealGames()
    a, b = games.start(fresh_level(1234)), games.start(fresh_level(77))
    reference = make_replay_env(CoinRunConfig(), 1234)
    for action in [7, 7, 8, 7, 7, 5, 7, 7, 7, 7, 7, 8]:
        games.step(a, action)
        games.step(b, 1)  # interleaved with another session
        reference.act(np.array([action], np.int32))
        _, obs, first = reference.observe()
        if not first[0]:
            assert np.array_equal(a.frame, obs["rgb"][0])
    before = a.frame.copy()
    games.step(a, 7)
    games.back(a)
    assert np.array_equal(a.frame, before)
    games.reset(a)
    assert np.array_equal(a.frame, fresh_level(1234).frames[0])


# ---- the play step is the model's own rollout ------------------------------------------------
@pytest.mark.parametrize("latent", [False, True])
def test_step_equals_world_model_generate(latent):
    model = tiny_model(latent)
    stepper = Stepper(model)
    frames = np.stack([fresh_level(s).frames[0] for s in (5, 6, 7)])  # (3, H, W, C)
    actions = np.array([1, 2, 3])  # into frames 1, 2 and the new frame
    expected = model.generate(frames[None], actions[None], horizon=1, steps=3,
                              generator=torch.Generator().manual_seed(4))  # (1, 1, H, W, C)
    out = stepper.step([StepInput(stepper.encode(frames), actions, 3, model.dynamics.config.temperature,
                                  # the frame shown last: play composes on it as generate does
                                  previous_frame=frames[-1])],
                       torch.Generator().manual_seed(4))[0]
    assert out.frame.shape == (64, 64, 3) and out.frame.dtype == np.uint8
    assert np.abs(out.frame.astype(int) - (expected[0, 0].numpy() * 255).round()).max() <= 1
    with pytest.raises(ValueError, match="actions must lie"):
        stepper.step([StepInput(stepper.encode(frames), np.array([1, 2, 99]), 3, 1.0)])


def test_batched_step_matches_single_steps():
    model = tiny_model()
    stepper = Stepper(model)
    tokens = stepper.encode(np.stack([fresh_level(s).frames[0] for s in (1, 2)]))  # (2, h, w)
    a = StepInput(tokens[:1], np.array([7]), 2, 0.0)  # temperature 0: greedy, so batching cannot change samples
    b = StepInput(tokens[1:], np.array([1]), 2, 0.0)
    c = StepInput(tokens, np.array([3, 4]), 2, 0.0)  # another context length: its own group
    together = stepper.step([a, b, c])
    alone = [stepper.step([x])[0] for x in (a, b, c)]
    for x, y in zip(together, alone):
        assert np.array_equal(x.tokens, y.tokens)
        assert np.abs(x.frame.astype(int) - y.frame.astype(int)).max() <= 1


# ---- genie dream -----------------------------------------------------------------------------
def test_genie_dream_writes_the_gif(run_dirs, tmp_path, capsys):
    from cluster.cli import main

    out = tmp_path / "dream.gif"
    code = main(["dream", "--model", str(run_dirs["ground_truth"]), "--actions", "RRJE", "--steps", "2",
                 "--level-seed", "9", "--out", str(out), "--side-by-side", "--scale", "2"])
    assert code == 0 and "dream: 4 frames from fresh level 9" in capsys.readouterr().out
    with Image.open(out) as gif:
        assert gif.n_frames == 5 and gif.size == (2 * (64 * 2 + 2), 2 * 64)  # dream | real, start + 4 frames
        first = np.asarray(gif.convert("RGB"))
    real_start = fresh_level(9).frames[0]
    assert np.abs(first[::2, 2 * 66::2].astype(int) - real_start.astype(int)).mean() < 8  # GIF palette error only

    again = tmp_path / "again.gif"
    assert main(["dream", "--model", str(run_dirs["ground_truth"]), "--actions", "RRJE", "--steps", "2",
                 "--level-seed", "9", "--out", str(again), "--side-by-side", "--scale", "2"]) == 0
    assert again.read_bytes() == out.read_bytes(), "same seed, same dream"
    assert main(["dream", "--model", str(run_dirs["latent"]), "--actions", "0162", "--steps", "1",
                 "--out", str(tmp_path / "latent.gif")]) == 0


def test_genie_dream_errors(run_dirs, tmp_path, capsys):
    from cluster.cli import main

    gif = str(tmp_path / "x.gif")
    assert main(["dream", "--model", str(run_dirs["ground_truth"]), "--actions", "RZX", "--out", gif]) == 2
    assert "unknown letter 'X'" in capsys.readouterr().err
    assert main(["dream", "--model", str(tmp_path / "missing"), "--actions", "R", "--out", gif]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    assert main(["dream", "--model", str(run_dirs["ground_truth"]), "--actions", "R", "--start", "test",
                 "--out", str(tmp_path / "x.gif")]) == 2
    assert "needs --data" in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists()


def test_genie_play_help_and_early_errors(tmp_path, capsys):
    from cluster.cli import main

    with pytest.raises(SystemExit):
        main(["play", "--help"])
    text = capsys.readouterr().out
    assert "127.0.0.1" in text and "WASD" in text and "--data" in text and "--address" in text
    # a missing model is reported before Ray or Serve start
    assert main(["play", "--model", str(tmp_path / "missing")]) == 1
    assert "no such checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["play", "--model", str(tmp_path / "missing"), "--steps", "0"])
    assert exit_info.value.code == 2 and "argument --steps: must be a whole number >= 1" in capsys.readouterr().err
    assert main(["play", "--model", str(tmp_path / "missing"), "--steps", "65"]) == 2
    assert "steps must lie in 1..64" in capsys.readouterr().err


def test_genie_play_off_loopback_needs_the_token_it_prints(ray_cluster, run_dirs, capsys):
    """`genie play --host 0.0.0.0`: a warning, a URL with this machine's address and a fresh token, and 401 for
    requests without the token."""
    import os
    import queue
    import subprocess
    import sys
    import threading
    import time
    from urllib.parse import parse_qs, urlsplit

    import requests

    from cluster.ray_session import free_port

    port = free_port()
    command = [sys.executable, "-m", "cluster.cli", "play", "--model", str(run_dirs["ground_truth"]),
               "--host", "0.0.0.0", "--port", str(port), "--model-cpus", "0.5", "--torch-threads", "1", "--steps", "1",
               "--address", ray_cluster]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        printed = []
        def served(line):
            return line.startswith("genie play: ") and " at http://" in line

        deadline = time.monotonic() + 300  # Serve and the model start
        while not any(served(line) for line in printed):
            try:
                printed.append(lines.get(timeout=1))
            except queue.Empty:
                assert process.poll() is None, "genie play exited:\n" + "".join(printed)
                assert time.monotonic() < deadline, "genie play never printed its URL:\n" + "".join(printed)
        text = "".join(printed)
        assert "reachable from the network" in text and "token (made now)" in text, text
        url = next(line for line in printed if served(line)).split(" at ", 1)[1].split()[0]
        parts = urlsplit(url)
        assert parts.hostname != "127.0.0.1" and parts.port == port, url
        token = parse_qs(parts.query)["token"][0]
        assert len(token) >= 24
        local = f"http://127.0.0.1:{port}"
        assert requests.get(f"{local}/api/info", timeout=60).status_code == 401
        assert requests.get(f"{local}/", timeout=60).status_code == 401
        assert requests.get(f"{local}/", params={"token": token}, timeout=60).status_code == 200
        info = requests.get(f"{local}/api/info", headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert info.status_code == 200 and info.json()["name"] == "GenieRedux-G"
        # Serve keeps its address while it runs: a second `genie play` on this cluster asking for another one would
        # print a URL nothing listens on (and its access rules would not match the bind), so it is refused
        from cluster.cli import main

        other = str(run_dirs["latent"])
        assert main(["play", "--model", other, "--port", str(port + 1), "--address", ray_cluster]) == 2
        assert f"already runs on this cluster at 0.0.0.0:{port}" in capsys.readouterr().err
        assert requests.get(f"{local}/api/info", headers={"Authorization": f"Bearer {token}"},
                            timeout=60).json()["name"] == "GenieRedux-G", "the running game was left alone"
    finally:
        process.kill()  # the app outlives its driver on a shared cluster: shut Serve down from here (quicker)
        process.wait()
        from ray import serve

        serve.shutdown()  # the next Serve test starts its own, on its own port


def test_genie_play_gpu_replicas_no_node_can_hold_are_refused_before_serve_starts(ray_cluster, run_dirs, capsys):
    """`genie play --gpus 1` asks the autoscaler for its replicas (ensure_resources): on a cluster without one and
    without GPUs it is refused at once with what to do, instead of a replica that waits forever for a GPU."""
    from ray import serve

    from cluster.cli import main

    before = dict(serve.status().applications)
    assert main(["play", "--model", str(run_dirs["ground_truth"]), "--gpus", "1", "--address", ray_cluster]) == 2
    err = capsys.readouterr().err
    assert "1 model replica(s) x {CPU: 1, GPU: 1}" in err and "drop --gpus" in err, err
    assert dict(serve.status().applications).keys() == before.keys(), "nothing was deployed"
