"""genie play end to end: the Ray Serve app over HTTP (sessions, isolation, batching, errors) and in a real
headless chromium driven by Playwright (keys -> frames, counter, GIF recording)."""

from __future__ import annotations

import base64
import http.client
import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from PIL import Image

from cluster.play.media import frame_from_b64, frame_to_png
from cluster.play.session import PlayConfig
from cluster.ray_session import free_port
from world_model.runs import export_world_model

CHROMIUM = os.environ.get("GENIE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CONFIG = PlayConfig(steps=2, model_cpus=0.5, torch_threads=1, max_sessions=64, max_upload_kb=64)
TOKEN = "test-token-0123456789"
# as `genie play --host 0.0.0.0` configures it (any Host name, a token), with small limits to test them, and batches
# that close only when full (2 steps) or after 60 s, so that concurrent steps of two sessions are batched
# deterministically (its tests step two sessions at once)
GUARDED = replace(CONFIG, token=TOKEN, allowed_hosts=None, rate_per_s=1e-4, rate_burst=4, max_gif_frames=3,
                  max_batch_size=2, batch_wait_s=60.0)


@pytest.fixture(scope="module")
def server(ray_cluster, small_dataset, tmp_path_factory):
    """One Serve instance with three apps: GenieRedux-G at / (with a data set), GenieRedux at /latent, and GenieRedux-G
    behind a token, with batches held open until full, at /guarded."""
    from ray import serve

    from cluster.play.server import build_app
    from test_play import tiny_model

    runs = {}
    for name, latent in (("g", False), ("latent", True)):
        model = tiny_model(latent)
        runs[name] = export_world_model(tmp_path_factory.mktemp(name) / "run", model.tokenizer, model.dynamics,
                                        model.lam)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run_many([  # deployed together: their replicas start side by side
        serve.RunTarget(build_app(str(runs["g"]), CONFIG, small_dataset, seed=0), name="genie-play", route_prefix="/"),
        serve.RunTarget(build_app(str(runs["latent"]), CONFIG), name="genie-play-latent", route_prefix="/latent"),
        serve.RunTarget(build_app(str(runs["g"]), GUARDED), name="genie-play-guarded", route_prefix="/guarded"),
    ])
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()


def post(url, **kwargs):
    if "data" not in kwargs and "json" not in kwargs:
        kwargs["json"] = {}  # the server takes JSON POSTs only
    return requests.post(url, timeout=60, **kwargs)


def guarded(server, method, path, **kwargs):
    """A request to the /guarded app with its token."""
    if method == "post" and "json" not in kwargs and "data" not in kwargs:
        kwargs["json"] = {}
    return requests.request(method, f"{server}/guarded{path}", headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=120, **kwargs)


def raw_request(base, method, path, headers=None, body=None):
    """One request exactly as written (http.client neither normalises the path nor adds a Content-Length to a
    chunked body): (status, body text)."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request(method, path, body=body, headers=headers or {}, encode_chunked=body is not None and
                           not isinstance(body, (bytes, str)))
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    finally:
        connection.close()


def new_session(base, **body):
    response = post(f"{base}/api/sessions", json={"start": "fresh", **body})
    assert response.status_code == 200, response.text
    return response.json()


# ---- HTTP API --------------------------------------------------------------------------------
def test_info_and_page(server):
    info = requests.get(f"{server}/api/info", timeout=30).json()
    assert info["name"] == "GenieRedux-G" and info["num_actions"] == 15 and info["action_labels"][7] == "RIGHT"
    assert set(info["starts"]) == {"fresh", "test", "episode"} and info["episodes"]
    page = requests.get(server, timeout=30)
    assert page.status_code == 200 and "<canvas id=\"dream\"" in page.text
    assert "http" not in page.text.split("<script>")[1][:200]
    latent = requests.get(f"{server}/latent/api/info", timeout=30).json()
    assert latent["name"] == "GenieRedux" and latent["num_actions"] == 7 and latent["action_labels"][0] == "latent 0"


def test_session_steps_back_reset_and_real_game(server):
    state = new_session(server, seed=11)
    sid = state["session"]
    start = frame_from_b64(state["frame"])
    assert state["generated"] == 0 and state["source"] == "fresh level 11" and not state["can_back"]
    assert np.array_equal(start, frame_from_b64(state["real_frame"])), "both screens start on the real level"
    stepped = post(f"{server}/api/sessions/{sid}/step", json={"action": 7, "count": 2}).json()
    assert stepped["generated"] == 2 and stepped["last_actions"] == [7, 7] and stepped["can_back"]
    assert not np.array_equal(frame_from_b64(stepped["frame"]), start)
    real_after = frame_from_b64(stepped["real_frame"])
    assert not np.array_equal(real_after, start), "the real game moved right"
    third = post(f"{server}/api/sessions/{sid}/step", json={"action": 5}).json()
    back = post(f"{server}/api/sessions/{sid}/back").json()
    assert back["generated"] == 2 and back["frame"] == stepped["frame"] and back["real_frame"] == stepped["real_frame"]
    assert third["generated"] == 3
    reset = post(f"{server}/api/sessions/{sid}/reset").json()
    assert reset["generated"] == 0 and np.array_equal(frame_from_b64(reset["frame"]), start)
    assert requests.delete(f"{server}/api/sessions/{sid}", timeout=30).status_code == 200
    assert requests.get(f"{server}/api/sessions/{sid}", timeout=30).status_code == 404


def test_start_from_data_set_episode(server):
    info = requests.get(f"{server}/api/info", timeout=30).json()
    episode = info["episodes"][0]
    state = new_session(server, start="episode", episode=episode, step=5)
    assert state["source"] == f"episode {episode} step 5"
    # the real game was rebuilt by the replay rule and stands on the recorded frame
    assert state["real_frame"] == state["frame"]
    assert new_session(server, start="test")["source"].startswith("episode ")
    missing = post(f"{server}/api/sessions", json={"start": "episode", "episode": "no-such-episode"})
    assert missing.status_code == 404 and "no episode 'no-such-episode'" in missing.json()["error"]
    beyond = post(f"{server}/api/sessions", json={"start": "episode", "episode": episode, "step": 10**6})
    assert beyond.status_code == 404 and "has steps 0.." in beyond.json()["error"]


def test_two_sessions_are_isolated_and_batched(server):
    """Two players pressing keys at once: each keeps its own frames and actions, and every step of one is computed
    in one forward pass with a step of the other (the /guarded app closes a batch only when it holds 2 steps)."""
    a, b = (guarded(server, "post", "/api/sessions", json={"seed": seed}).json() for seed in (1, 2))
    assert a["session"] != b["session"] and a["frame"] != b["frame"]
    before = guarded(server, "get", "/api/stats").json()["batch_sizes"]

    def play(sid, action, n):
        return [guarded(server, "post", f"/api/sessions/{sid}/step", json={"action": action}).json() for _ in range(n)]

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(play, s["session"], action, 3) for s, action in ((a, 7), (b, 1))]
        results = [f.result() for f in futures]
    for states, action in zip(results, (7, 1)):
        assert [s["generated"] for s in states] == [1, 2, 3]
        assert states[-1]["last_actions"] == [action] * 3
    final_a = guarded(server, "get", f"/api/sessions/{a['session']}").json()
    final_b = guarded(server, "get", f"/api/sessions/{b['session']}").json()
    assert final_a["frame"] == results[0][-1]["frame"] and final_b["frame"] == results[1][-1]["frame"]
    assert final_a["real_frame"] != final_b["real_frame"]
    sizes = guarded(server, "get", "/api/stats").json()["batch_sizes"]
    assert sizes[len(before):] == [2, 2, 2], \
        f"each step of one session should share its batch with the other's: {sizes}"


def test_recording_gives_a_gif(server):
    sid = new_session(server, seed=5)["session"]
    post(f"{server}/api/sessions/{sid}/step", json={"action": 7})
    assert post(f"{server}/api/sessions/{sid}/record", json={"on": True}).json()["recording"]
    post(f"{server}/api/sessions/{sid}/step", json={"action": 8, "count": 3})
    stopped = post(f"{server}/api/sessions/{sid}/record", json={"on": False}).json()
    assert not stopped["recording"] and stopped["recorded_frames"] == 4  # the frame at the start + 3 new
    post(f"{server}/api/sessions/{sid}/step", json={"action": 1})  # after the stop: not recorded
    gif = requests.get(f"{server}/api/sessions/{sid}/recording.gif", timeout=60)
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
    with Image.open(io.BytesIO(gif.content)) as image:
        assert image.format == "GIF" and image.n_frames == 4
        assert image.size == (4 * (64 + 2 + 64), 4 * 64)  # dream | real, scaled 4x


def test_upload_a_frame(server):
    frame = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    response = post(f"{server}/api/sessions/upload", data=frame_to_png(frame), headers={"Content-Type": "image/png"})
    assert response.status_code == 200, response.text
    state = response.json()
    assert state["source"] == "uploaded frame" and state["real_frame"] is None
    assert np.array_equal(frame_from_b64(state["frame"]), frame)
    assert post(f"{server}/api/sessions/{state['session']}/step", json={"action": 4}).json()["generated"] == 1


@pytest.mark.parametrize("method,path,kwargs,status,message", [
    ("post", "/api/sessions/nope/step", {"json": {"action": 1}}, 404, "unknown or expired session"),
    ("get", "/api/sessions/nope/recording.gif", {}, 404, "unknown or expired session"),
    ("post", "/api/sessions", {"json": {"start": "moon"}}, 422, "start"),
    ("post", "/api/sessions", {"json": {"seed": -3}}, 422, "seed"),
    ("post", "/api/sessions", {"json": {"steps": 1000}}, 400, "MaskGIT steps must lie in 1..64"),
    ("post", "/api/sessions", {"data": "{not json", "headers": {"Content-Type": "application/json"}}, 422,
     "bad request"),
    ("post", "/api/sessions/upload", {"data": b"\x89PNG\r\n\x1a\n" + b"x" * 70_000,
                                      "headers": {"Content-Type": "image/png"}}, 413, "upload of 70008 bytes exceeds"),
    ("post", "/api/sessions/upload?temperature=1e9", {"data": b"x", "headers": {"Content-Type": "image/png"}}, 422,
     "temperature"),
    ("post", "/api/sessions/upload?temperature=nan", {"data": b"x", "headers": {"Content-Type": "image/png"}}, 422,
     "temperature"),
    ("post", "/api/sessions/upload?steps=0", {"data": b"x", "headers": {"Content-Type": "image/png"}}, 422, "steps"),
    ("post", "/api/sessions/upload", {"data": b"GIF89a", "headers": {"Content-Type": "image/gif"}}, 415, "PNG"),
    ("post", "/api/sessions/upload", {"data": b"not a png", "headers": {"Content-Type": "image/png"}}, 415,
     "not a PNG"),
])
def test_bad_requests_get_clear_4xx(server, method, path, kwargs, status, message):
    response = getattr(requests, method)(f"{server}{path}", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    if message:
        assert message in response.json()["error"]


@pytest.mark.parametrize("path", ["/api/../../etc/passwd", "/static/../../etc/passwd", "/../../../etc/passwd",
                                  "/api/sessions/..%2F..%2Fetc%2Fpasswd", "/%2e%2e/%2e%2e/etc/passwd"])
def test_path_traversal_reads_no_file(server, path):
    status, text = raw_request(server, "GET", path)  # sent as written: no client strips the dots
    assert status == 404 and "root:" not in text


def test_streamed_upload_is_cut_at_the_limit(server):
    """A chunked upload has no Content-Length: the server counts while reading and stops at the limit."""
    def chunks():
        yield b"\x89PNG\r\n\x1a\n"
        for _ in range(40):
            yield b"x" * 4096  # 160 KB in all, over the 64 KB limit

    status, text = raw_request(server, "POST", "/api/sessions/upload", {"Content-Type": "image/png"}, chunks())
    assert status == 413 and "upload exceeds the 65536-byte limit" in text, text


def test_bad_step_requests(server):
    sid = new_session(server, seed=6)["session"]
    unknown = post(f"{server}/api/sessions/{sid}/step", json={"action": 15})
    error = unknown.json()["error"]
    assert unknown.status_code == 400 and "unknown action 15" in error and "RIGHT+UP" in error
    assert post(f"{server}/api/sessions/{sid}/step", json={"action": "right"}).status_code == 422
    assert post(f"{server}/api/sessions/{sid}/step", json={"action": 7, "count": 99}).status_code == 400
    assert post(f"{server}/api/sessions/{sid}/step", json={"action": 7, "steps": 0}).status_code == 422
    assert post(f"{server}/api/sessions/{sid}/back").status_code == 409
    assert post(f"{server}/api/sessions/{sid}/record", json={"on": False}).status_code == 409
    latent = new_session(f"{server}/latent", seed=6)
    assert latent["real_frame"] is None  # no real game for latent actions
    wrong = post(f"{server}/latent/api/sessions/{latent['session']}/step", json={"action": 7})
    assert wrong.status_code == 400 and "0..6" in wrong.json()["error"]
    assert post(f"{server}/latent/api/sessions/{latent['session']}/step", json={"action": 6}).json()["generated"] == 1
    # the server is still healthy after all of that
    assert post(f"{server}/api/sessions/{sid}/step", json={"action": 7}).json()["generated"] == 1


# ---- who may talk to the server (cluster/play/access.py) ---------------------------------------
def test_loopback_server_answers_only_loopback_names(server):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 reaches the server with its own Host name."""
    port = urlsplit(server).port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost"):
        assert raw_request(server, "GET", "/api/info", {"Host": host})[0] == 200, host
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
        status, text = raw_request(server, "GET", "/api/info", {"Host": host})
        assert status == 403 and "answers only to 127.0.0.1" in text, (host, text)
    status, _ = raw_request(server, "POST", "/api/sessions", {"Host": f"evil.example:{port}",
                                                              "Content-Type": "application/json"}, b"{}")
    assert status == 403


@pytest.mark.parametrize("headers,body", [
    ({"Content-Type": "text/plain"}, b'{"start": "fresh"}'),  # what a cross-site form or no-cors fetch can send
    ({"Content-Type": "application/x-www-form-urlencoded"}, b"start=fresh"),
    ({}, b'{"start": "fresh"}'),
])
def test_posts_must_be_json(server, headers, body):
    sessions = requests.get(f"{server}/api/info", timeout=30).json()["sessions"]
    status, text = raw_request(server, "POST", "/api/sessions", headers, body)
    assert status == 415 and "application/json" in text
    sid = new_session(server, seed=3)["session"]
    status, _ = raw_request(server, "POST", f"/api/sessions/{sid}/reset", headers)  # a body-less POST too
    assert status == 415
    assert requests.get(f"{server}/api/info", timeout=30).json()["sessions"] == sessions + 1, "nothing was created"


def test_token_is_required_off_loopback(server):
    guarded = f"{server}/guarded"
    for path in ("/", "/api/info", "/api/stats"):
        response = requests.get(f"{guarded}{path}", timeout=30)
        assert response.status_code == 401 and "token" in response.json()["error"], path
    assert requests.get(f"{guarded}/api/info", params={"token": "wrong-token-000"}, timeout=30).status_code == 401
    assert requests.get(f"{guarded}/api/info", headers={"Authorization": "Bearer wrong"}, timeout=30).status_code == 401
    refused = post(f"{guarded}/api/sessions", json={"start": "fresh"})
    assert refused.status_code == 401
    # any Host name is answered there (it is reached by the machine's network name), with the token
    status, _ = raw_request(server, "GET", "/guarded/api/info", {"Host": "genie.example:80",
                                                                 "Authorization": f"Bearer {TOKEN}"})
    assert status == 200
    # the printed URL carries the token; the page keeps it as a same-site, HTTP-only cookie for the API calls
    browser = requests.Session()
    page = browser.get(f"{guarded}/", params={"token": TOKEN}, timeout=30)
    assert page.status_code == 200 and "<canvas" in page.text
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN in cookie
    state = browser.post(f"{guarded}/api/sessions", json={"seed": 4}, timeout=60)
    assert state.status_code == 200, state.text
    bearer = requests.get(f"{guarded}/api/sessions/{state.json()['session']}", timeout=30,
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200


def test_session_rate_limit_and_gif_cap(server):
    """/guarded: 4 requests per session at once (1e-4 more per second) and 3 frames per GIF; two players record at once
    (their steps share batches there)."""
    sids = [guarded(server, "post", "/api/sessions", json={"seed": seed}).json()["session"] for seed in (8, 9)]

    def record(sid):
        assert guarded(server, "post", f"/api/sessions/{sid}/record", json={"on": True}).json()["recording"]
        return guarded(server, "post", f"/api/sessions/{sid}/step", json={"action": 7, "count": 5}).json()

    with ThreadPoolExecutor(2) as pool:
        for stepped in pool.map(record, sids):
            assert stepped["generated"] == 5 and not stepped["recording"] and stepped["recorded_frames"] == 3, \
                "a full recording stops itself"
    gif = guarded(server, "get", f"/api/sessions/{sids[0]}/recording.gif")
    with Image.open(io.BytesIO(gif.content)) as image:
        assert image.n_frames == 3
    assert guarded(server, "get", f"/api/sessions/{sids[0]}").status_code == 200  # its fourth request
    limited = guarded(server, "get", f"/api/sessions/{sids[0]}")  # the fifth
    assert limited.status_code == 429 and "too many requests" in limited.json()["error"]
    assert guarded(server, "get", f"/api/sessions/{sids[1]}").status_code == 200, "limits are per session"


# ---- a real browser --------------------------------------------------------------------------
def _canvas(page) -> bytes:
    return base64.b64decode(page.eval_on_selector("#dream", "c => c.toDataURL('image/png')").split(",", 1)[1])


def test_play_in_headless_chromium(server):
    # skipped only on a developer's machine without chromium; in CI and under scripts/test.sh it must run
    required = bool(os.environ.get("CI") or os.environ.get("GENIE_REQUIRE_BROWSER"))
    missing = None if os.path.exists(CHROMIUM) else (
        f"no chromium at {CHROMIUM}: install it with `apt-get install -y chromium` "
        f"(scripts/test.sh does so) or set GENIE_CHROMIUM")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -e '.[dev]')"
    if missing:
        (pytest.fail if required else pytest.skip)(missing)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server, wait_until="load")
            page.wait_for_selector("body[data-ready='1']", timeout=60_000)
            assert page.inner_text("#counter") == "0" and "GenieRedux-G" in page.inner_text("#model")
            assert not page.is_hidden("#realfig"), "the real game is shown beside the dream"
            before = _canvas(page)
            page.keyboard.press("ArrowRight")
            page.wait_for_function("document.getElementById('counter').textContent === '1'", timeout=60_000)
            after = _canvas(page)
            assert after != before, "the dream canvas did not change after a key press"
            assert page.inner_text("#lastaction") == "RIGHT"
            # held keys combine: Right (one step) then, still held, + Up (jump right)
            page.keyboard.down("ArrowRight")
            page.keyboard.press("ArrowUp")
            page.keyboard.up("ArrowRight")
            page.wait_for_function("document.getElementById('counter').textContent === '3'", timeout=60_000)
            assert page.inner_text("#lastaction") == "RIGHT+UP"
            assert float(page.inner_text("#fps")) > 0
            # record two key presses as a GIF
            page.click("#record")
            page.wait_for_function("document.getElementById('record').textContent.startsWith('Stop')", timeout=30_000)
            for key in ("d", " "):
                expected = int(page.inner_text("#counter")) + 1
                page.keyboard.press(key)
                page.wait_for_function(f"document.getElementById('counter').textContent === '{expected}'",
                                       timeout=60_000)
            page.click("#record")
            page.wait_for_selector("#download:not([hidden])", timeout=60_000)
            href = page.get_attribute("#download", "href")
            gif_bytes = bytes(page.evaluate("async (u) => Array.from(new Uint8Array(await (await "
                                            "fetch(u)).arrayBuffer()))", href))
            with Image.open(io.BytesIO(gif_bytes)) as gif:
                assert gif.format == "GIF" and gif.n_frames == 3  # the frame at the start of the recording + 2
            # step back with Backspace, then the MaskGIT control is honoured by the next step
            page.keyboard.press("Backspace")
            page.wait_for_function("document.getElementById('counter').textContent === '4'", timeout=60_000)
            page.fill("#steps", "1")
            page.keyboard.press("ArrowLeft")
            page.wait_for_function("document.getElementById('counter').textContent === '5'", timeout=60_000)
            assert page.inner_text("#lastaction") == "LEFT"
            sid = page.evaluate("session.session")
            assert requests.get(f"{server}/api/sessions/{sid}", timeout=30).json()["steps"] == 1
            assert errors == [] and page.inner_text("#status") == ""
        finally:
            browser.close()
