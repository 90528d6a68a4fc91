"""The play page: one self-contained HTML file (no external scripts, fonts or styles).

Kept as a Python string so it ships inside the package with no package-data rules. It talks only
to the JSON API of `cluster.play.server` (same origin).

Keys (GenieRedux-G): arrows or WASD move, Up/W/Space jump; held keys combine (Right + Up = RIGHT+UP).
GenieRedux: keys 1..K are the latent actions. Backspace steps back. Each key press generates
`frames per key` frames; with "continuous" on, the page keeps stepping with the held keys (NOOP
when none) as fast as the model allows, capped by the target fps.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>genie play</title>
<style>
  body { font-family: system-ui, sans-serif; background: #15171c; color: #e6e6e6; margin: 0; padding: 16px; }
  h1 { font-size: 18px; margin: 0 0 8px; }
  .row { display: flex; gap: 12px; flex-wrap: wrap; align-items: center; margin: 6px 0; }
  .screens { display: flex; gap: 16px; margin: 10px 0; }
  figure { margin: 0; } figcaption { font-size: 12px; color: #aaa; text-align: center; }
  canvas { image-rendering: pixelated; background: #000; border: 1px solid #333; }
  button { background: #2c3140; color: #eee; border: 1px solid #4a5268; padding: 5px 10px; border-radius: 4px;
           cursor: pointer; }
  button:disabled { opacity: .4; cursor: default; } button.on { background: #a33; }
  .stat { font-variant-numeric: tabular-nums; } .muted { color: #999; font-size: 12px; }
  #status { min-height: 1.2em; color: #f88; } #actions button { font-size: 11px; padding: 3px 6px; }
  input[type=number] { width: 7em; } select { max-width: 22em; }
</style>
</head>
<body>
<h1>genie play &mdash; <span id="model">loading&hellip;</span></h1>
<div class="row">
  <label>start <select id="start"></select></label>
  <label id="seedbox">level seed <input id="seed" type="number" min="0" placeholder="random"></label>
  <label id="episodebox" hidden>episode <select id="episode"></select>
    step <input id="epstep" type="number" min="0" value="0"></label>
  <label id="realbox"><input id="real" type="checkbox" checked> real game beside the dream</label>
  <button id="new">New game</button>
  <label class="muted">or upload a 64x64 PNG <input id="upload" type="file" accept="image/png"></label>
</div>
<div class="screens">
  <figure><canvas id="dream" width="384" height="384"></canvas><figcaption>dream (world model)</figcaption></figure>
  <figure id="realfig" hidden><canvas id="realcanvas" width="384" height="384"></canvas>
    <figcaption id="realcap">real game (same actions)</figcaption></figure>
</div>
<div class="row">
  frame <b class="stat" id="counter">0</b>
  &middot; <span class="stat" id="fps">0.0</span> frames/s
  &middot; last step <span class="stat" id="latency">-</span> ms
  &middot; action <span class="stat" id="lastaction">-</span>
</div>
<div class="row">
  <label>MaskGIT steps <input id="steps" type="range" min="1" max="64" value="25">
    <b class="stat" id="stepsval">25</b></label>
  <label>frames per key <input id="count" type="number" min="1" max="16" value="1"></label>
  <label><input id="continuous" type="checkbox"> continuous</label>
  <label>target fps <input id="targetfps" type="number" min="1" max="60" value="15"></label>
</div>
<div class="row">
  <button id="reset">Reset</button>
  <button id="back">Step back (Backspace)</button>
  <button id="record">Record GIF</button>
  <a id="download" hidden download="dream.gif">download GIF</a>
  <span class="muted" id="source"></span>
</div>
<div class="row" id="actions"></div>
<div class="muted" id="help"></div>
<div id="status" role="status"></div>
<div><img id="gif" hidden alt="recorded GIF" style="image-rendering: pixelated"></div>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
let info = null, session = null, busy = false, pending = null, stepTimes = [], held = new Set();

function status(text) { $("status").textContent = text || ""; }

async function api(method, path, body, raw) {
  const options = { method, headers: {} };
  if (raw) { options.body = raw; options.headers["Content-Type"] = "image/png"; }
  else if (body !== undefined || method === "POST") {  // the server takes JSON POSTs only (no cross-site forms)
    options.body = JSON.stringify(body === undefined ? {} : body); options.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) {}
    throw new Error(message);
  }
  return response;
}

function draw(canvas, b64) {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const size = Math.round(Math.sqrt(bytes.length / 3));
  const image = new ImageData(size, size);
  for (let i = 0, j = 0; i < bytes.length; i += 3, j += 4) {
    image.data[j] = bytes[i]; image.data[j + 1] = bytes[i + 1]; image.data[j + 2] = bytes[i + 2];
    image.data[j + 3] = 255;
  }
  const small = document.createElement("canvas"); small.width = size; small.height = size;
  small.getContext("2d").putImageData(image, 0, 0);
  const ctx = canvas.getContext("2d"); ctx.imageSmoothingEnabled = false;
  ctx.drawImage(small, 0, 0, canvas.width, canvas.height);
}

function show(state) {
  session = state;
  draw($("dream"), state.frame);
  $("realfig").hidden = !state.real_frame;
  if (state.real_frame) {
    draw($("realcanvas"), state.real_frame);
    $("realcap").textContent = state.real_ended ? "real game (level over)" : "real game (same actions)";
  }
  $("counter").textContent = state.generated;
  $("back").disabled = !state.can_back;
  $("record").textContent = state.recording ? "Stop recording (" + state.recorded_frames + ")" : "Record GIF";
  $("record").classList.toggle("on", state.recording);
  $("source").textContent = state.source;
  if (state.elapsed_ms != null) $("latency").textContent = state.elapsed_ms.toFixed(0);
}

function currentAction() {
  if (info.conditioning === "latent") return null;
  const left = held.has("ArrowLeft") || held.has("a"), right = held.has("ArrowRight") || held.has("d");
  const up = held.has("ArrowUp") || held.has("w") || held.has(" "), down = held.has("ArrowDown") || held.has("s");
  const h = right && !left ? "RIGHT" : left && !right ? "LEFT" : "";
  const v = up ? "UP" : down ? "DOWN" : "";
  const name = h && v ? h + "+" + v : (h || v || "NOOP");
  return info.action_labels.indexOf(name);
}

async function step(action) {
  if (!session) return;
  if (busy) { pending = action; return; }
  busy = true;
  try {
    const count = Math.max(1, Math.min(info.limits.max_frames_per_request, parseInt($("count").value) || 1));
    const began = performance.now();
    const state = await (await api("POST", "/api/sessions/" + session.session + "/step",
      { action, count, steps: parseInt($("steps").value) })).json();
    const now = performance.now();
    stepTimes.push([now, count]);
    stepTimes = stepTimes.filter(([t]) => now - t < 5000);
    const frames = stepTimes.reduce((n, [, c]) => n + c, 0);
    const span = stepTimes.length > 1 ? (now - stepTimes[0][0]) / 1000 : (now - began) / 1000;
    const counted = stepTimes.length > 1 ? frames - stepTimes[0][1] : count;
    $("fps").textContent = (counted / Math.max(span, 1e-3)).toFixed(1);
    $("lastaction").textContent = info.action_labels[action];
    show(state); status("");
  } catch (e) { status(e.message); }
  busy = false;
  if (pending !== null) { const next = pending; pending = null; step(next); }
}

async function newGame() {
  status("starting…");
  const start = $("start").value;
  const body = { start, real: $("real").checked, steps: parseInt($("steps").value) };
  if (start === "fresh" && $("seed").value !== "") body.seed = parseInt($("seed").value);
  if (start === "episode") { body.episode = $("episode").value; body.step = parseInt($("epstep").value) || 0; }
  try {
    if (session) api("DELETE", "/api/sessions/" + session.session).catch(() => {});
    show(await (await api("POST", "/api/sessions", body)).json());
    stepTimes = []; $("gif").hidden = true; $("download").hidden = true; status("");
  } catch (e) { status(e.message); }
}

async function upload(file) {
  try {
    const data = await file.arrayBuffer();
    show(await (await api("POST", "/api/sessions/upload?steps=" + $("steps").value, undefined, data)).json());
    status("");
  } catch (e) { status(e.message); }
}

async function sessionCall(path, body) {
  if (!session) return;
  try { show(await (await api("POST", "/api/sessions/" + session.session + path, body)).json()); status(""); }
  catch (e) { status(e.message); }
}

async function toggleRecord() {
  if (!session) return;
  const wasRecording = session.recording;
  await sessionCall("/record", { on: !wasRecording });
  if (wasRecording) {
    try {
      const blob = await (await api("GET", "/api/sessions/" + session.session + "/recording.gif")).blob();
      const url = URL.createObjectURL(blob);
      $("gif").src = url; $("gif").hidden = false;
      $("download").href = url; $("download").hidden = false;
      $("download").dataset.bytes = blob.size;
    } catch (e) { status(e.message); }
  }
}

function continuousLoop() {
  if ($("continuous").checked && session && !busy) {
    const action = info.conditioning === "latent" ? lastLatent : currentAction();
    step(action);
  }
  const fps = Math.max(1, parseInt($("targetfps").value) || 15);
  setTimeout(continuousLoop, 1000 / fps);
}
let lastLatent = 0;

const GAME_KEYS = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", " ", "a", "d", "w", "s"];
document.addEventListener("keydown", (event) => {
  const typing = event.target.tagName === "INPUT" && event.target.type !== "range" && event.target.type !== "checkbox";
  if (!info || typing || event.target.tagName === "SELECT") return;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (key === "Backspace") { event.preventDefault(); sessionCall("/back"); return; }
  if (info.conditioning === "latent") {
    const n = parseInt(key);
    if (n >= 1 && n <= info.num_actions) {
      event.preventDefault(); lastLatent = n - 1; if (!$("continuous").checked) step(n - 1);
    }
    return;
  }
  if (!GAME_KEYS.includes(key)) return;
  event.preventDefault();
  held.add(key);
  if (!$("continuous").checked) step(currentAction());
});
document.addEventListener("keyup", (event) => {
  held.delete(event.key.length === 1 ? event.key.toLowerCase() : event.key);
});
window.addEventListener("blur", () => held.clear());

async function init() {
  info = await (await api("GET", "/api/info")).json();
  $("model").textContent = info.name + " (" + info.preset + ", step " + info.step + ")";
  $("steps").max = info.limits.max_steps; $("steps").value = Math.min(info.steps, info.limits.max_steps);
  $("stepsval").textContent = $("steps").value;
  $("count").max = info.limits.max_frames_per_request;
  for (const start of info.starts) {
    const label = { fresh: "fresh Procgen level", test: "random " + info.data_split + " episode",
                    episode: "chosen episode" }[start];
    $("start").add(new Option(label, start));
  }
  for (const id of info.episodes) $("episode").add(new Option(id, id));
  if (info.conditioning === "latent") { $("realbox").hidden = true; $("real").checked = false; }
  for (let i = 0; i < info.num_actions; i++) {
    const button = document.createElement("button");
    button.textContent = (info.conditioning === "latent" ? (i + 1) + ": " : "") + info.action_labels[i];
    button.dataset.action = i;
    button.addEventListener("click", () => { lastLatent = i; step(i); });
    $("actions").appendChild(button);
  }
  $("help").textContent = info.conditioning === "latent"
    ? "Keys 1.." + info.num_actions + " are the " + info.num_actions
      + " latent actions the LAM found. Backspace steps back."
    : "Arrows or WASD move, Up / W / Space jump; keys combine (Right+Up = jump right). Backspace steps back.";
  $("start").addEventListener("change", () => {
    $("seedbox").hidden = $("start").value !== "fresh"; $("episodebox").hidden = $("start").value !== "episode";
  });
  $("steps").addEventListener("input", () => { $("stepsval").textContent = $("steps").value; });
  $("new").addEventListener("click", newGame);
  $("reset").addEventListener("click", () => { stepTimes = []; sessionCall("/reset"); });
  $("back").addEventListener("click", () => sessionCall("/back"));
  $("record").addEventListener("click", toggleRecord);
  $("upload").addEventListener("change", (e) => { if (e.target.files[0]) upload(e.target.files[0]); });
  // a focused button would take Space (jump) as a click: give focus back to the page
  document.addEventListener("click", (e) => { if (e.target.tagName === "BUTTON") e.target.blur(); });
  await newGame();
  continuousLoop();
  document.body.dataset.ready = "1";
}
init().catch((e) => status("cannot reach the play server: " + e.message));
</script>
</body>
</html>
"""
