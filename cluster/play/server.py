"""The play server: two Ray Serve deployments.

`WorldModelServer` holds the model and nothing else: it is stateless, so it can have several
replicas (one per GPU), and it batches concurrent step requests of different sessions into one
forward pass (`@serve.batch`). `PlayIngress` is the FastAPI front: it owns the sessions (their
tokens, frames, real games), validates every request (clear 4xx answers, never a crash) and
sends the model only token contexts and action ids. It runs as ONE replica, because sessions
live in its memory; the model is where the compute is.

Safety: every request passes `AccessGuard` first (the token off loopback, loopback Host names on it,
JSON or PNG POSTs only; cluster/play/access.py); each session has a request rate limit and a cap on
its GIF; every parameter has bounds. The only endpoints are the page and /api/...; nothing reads or
writes a path named by a request (the model and data set are fixed when the server starts); uploads
are PNG only, capped in size (counted while streaming) and checked to be a 64x64 frame.
"""


import asyncio
import os
import time
from typing import Any, Literal

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from cluster.play.access import AccessGuard
from cluster.play.actions import action_labels
from cluster.play.config import MAX_TEMPERATURE, PlayConfig
from cluster.play.media import MediaError, encode_gif, frame_from_png, frame_to_b64
from cluster.play.session import Session, SessionError, SessionStore
from cluster.play.starts import EpisodeStarts, RealGames, Start, StartError, fresh_level, uploaded
from cluster.play.stepper import Stepper, StepInput, StepOutput

APP_NAME = "genie-play"


@serve.deployment(max_ongoing_requests=64)
class WorldModelServer:
    """The world model behind the sessions: encode start frames, step many sessions at once."""

    def __init__(self, model: str, config: PlayConfig) -> None:
        import torch

        from world_model.runs import load_world_model

        if config.torch_threads > 0:
            torch.set_num_threads(config.torch_threads)
        device = "cuda" if config.model_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.loaded = load_world_model(model, map_location=device)
        self.stepper = Stepper(self.loaded.model)
        self.step.set_max_batch_size(config.max_batch_size)
        self.step.set_batch_wait_timeout_s(config.batch_wait_s)
        self.batch_sizes: list[int] = []  # sizes of the last batches, for tests and the benchmark
        self.compute_ms: list[float] = []  # model time of the last batches

    def info(self) -> dict[str, Any]:
        dynamics = self.loaded.model.dynamics.config
        return {
            "name": self.loaded.name,
            "conditioning": self.loaded.conditioning,
            "num_actions": self.stepper.num_actions,
            "context_frames": self.stepper.context_frames,
            "steps": dynamics.sampling_steps,
            "temperature": dynamics.temperature,
            "preset": self.loaded.preset,
            "step": self.loaded.step,
            "checkpoint": self.loaded.checkpoint.name,
        }

    def encode(self, frames: np.ndarray, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Real context frames (Tc, H, W, C) uint8 and their CoinRun actions (Tc-1,) -> tokens (Tc, h, w) and the
        actions the dynamics takes between them (the LAM's latent ids for GenieRedux, else the same ids)."""
        tokens = self.stepper.encode(frames)  # (Tc, h, w)
        if self.loaded.conditioning == "latent" and len(frames) > 1:
            actions = self.loaded.model.lam.infer_actions(frames[None])[0].cpu().numpy()  # (Tc-1,)
        return tokens, np.asarray(actions, dtype=np.int64)

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.002)
    async def step(self, inputs: list[StepInput]) -> list[StepOutput]:
        began = time.perf_counter()
        # compute off the event loop, so requests arriving meanwhile gather into the next batch
        outputs = await asyncio.get_running_loop().run_in_executor(None, self.stepper.step, inputs)
        self.batch_sizes = (self.batch_sizes + [len(inputs)])[-256:]
        self.compute_ms = (self.compute_ms + [1000.0 * (time.perf_counter() - began)])[-256:]
        return outputs

    def recent_batches(self) -> dict[str, list]:
        return {"batch_sizes": list(self.batch_sizes), "compute_ms": list(self.compute_ms)}


# ---- HTTP API ------------------------------------------------------------------------------
class NewSession(BaseModel):
    start: Literal["fresh", "test", "episode"] = "fresh"
    seed: int | None = Field(None, ge=0, lt=2**31 - 1, description="fresh: the Procgen level seed (default random)")
    episode: str | None = Field(None, max_length=200, description="episode: the episode id in the data set")
    step: int = Field(0, ge=0, lt=2**31 - 1, description="episode: the step to start at")
    steps: int | None = Field(None, ge=1, description="MaskGIT steps per frame")
    temperature: float | None = Field(None, ge=0.0, le=MAX_TEMPERATURE)
    real: bool = Field(True, description="run the real game beside the dream (GenieRedux-G only)")


class StepRequest(BaseModel):
    action: int = Field(..., ge=0, lt=2**31 - 1,
                        description="CoinRun action id 0..14 (GenieRedux-G) or latent action 0..K-1 (GenieRedux)")
    count: int = Field(1, ge=1, lt=2**31 - 1, description="frames to generate with this action")
    steps: int | None = Field(None, ge=1, description="MaskGIT steps (default: the session's)")


class RecordRequest(BaseModel):
    on: bool


app = FastAPI(title="genie play", docs_url=None, redoc_url=None, openapi_url=None)


def _replica_access() -> tuple[str | None, tuple[str, ...] | None]:
    """The token and Host names of the ingress replica serving this request."""
    config = serve.get_replica_context().servable_object.config
    return config.token, config.allowed_hosts


app.add_middleware(AccessGuard, settings=_replica_access)


@app.exception_handler(SessionError)
async def _session_error(_: Request, err: SessionError) -> JSONResponse:
    return JSONResponse({"error": str(err)}, status_code=err.status)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, err: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in err.errors())
    return JSONResponse({"error": f"bad request: {problems}"}, status_code=422)


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=256)
@serve.ingress(app)
class PlayIngress:
    """The page and the JSON API; owns every session (so exactly one replica)."""

    def __init__(self, model: DeploymentHandle, config: PlayConfig, data: str | None = None,
                 seed: int | None = None) -> None:
        self.model = model
        self.config = config
        self.sessions = SessionStore(config)
        self.real_games = RealGames()
        self.starts = EpisodeStarts(data) if data else None
        self.rng = np.random.default_rng(seed)
        self._info: dict[str, Any] | None = None

    async def model_info(self) -> dict[str, Any]:
        if self._info is None:
            self._info = await self.model.info.remote()
        return self._info

    # ---- page and info ------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def page(self) -> HTMLResponse:
        from cluster.play.page import PAGE

        return HTMLResponse(PAGE, headers={"Cache-Control": "no-store"})

    @app.get("/api/info")
    async def info(self) -> JSONResponse:
        info = await self.model_info()
        return JSONResponse({
            **info,
            "action_labels": action_labels(info["conditioning"], info["num_actions"]),
            "starts": ["fresh"] + (["test", "episode"] if self.starts else []),
            "episodes": self.starts.episode_ids() if self.starts else [],
            "data_split": self.starts.split if self.starts else None,
            "limits": {
                "max_steps": self.config.max_steps, "max_frames_per_request": self.config.max_frames_per_request,
                "max_upload_bytes": self.config.max_upload_bytes, "max_sessions": self.config.max_sessions,
                "ttl_s": self.config.ttl_s, "max_history": self.config.max_history,
                "max_gif_frames": self.config.max_gif_frames, "rate_per_s": self.config.rate_per_s,
                "rate_burst": self.config.rate_burst, "max_temperature": MAX_TEMPERATURE,
            },
            "sessions": len(self.sessions),
        })

    # ---- sessions -----------------------------------------------------------------------
    @app.post("/api/sessions")
    async def create(self, body: NewSession) -> JSONResponse:
        info = await self.model_info()
        session_id = self.sessions.new_id()
        start = await self._make_start(body, info)
        return await self._open(session_id, start, body.steps, body.temperature, body.real, info)

    @app.post("/api/sessions/upload")
    async def create_from_upload(self, request: Request, steps: int | None = Query(None, ge=1),
                                 temperature: float | None = Query(None, ge=0.0, le=MAX_TEMPERATURE)) -> JSONResponse:
        """A session from the player's own 64x64 PNG frame (body = the PNG, Content-Type image/png)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "image/png":
            raise SessionError(415, f"upload a PNG with Content-Type image/png, got {kind or 'none'!r}")
        limit = self.config.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise SessionError(413, f"upload of {declared} bytes exceeds the {limit}-byte limit")
        body = bytearray()
        async for chunk in request.stream():  # count while reading: Content-Length may be absent or lie
            body.extend(chunk)
            if len(body) > limit:
                raise SessionError(413, f"upload exceeds the {limit}-byte limit")
        try:
            frame = frame_from_png(bytes(body))
        except MediaError as err:
            raise SessionError(415, str(err)) from err
        info = await self.model_info()
        session_id = self.sessions.new_id()
        return await self._open(session_id, uploaded(frame), steps, temperature, False, info)

    @app.get("/api/sessions/{session_id}")
    async def state(self, session_id: str) -> JSONResponse:
        return self._state(self.sessions.get(session_id))

    @app.delete("/api/sessions/{session_id}")
    async def close(self, session_id: str) -> JSONResponse:
        self.sessions.remove(session_id)
        return JSONResponse({"closed": session_id})

    @app.post("/api/sessions/{session_id}/step")
    async def step(self, session_id: str, body: StepRequest) -> JSONResponse:
        session = self.sessions.get(session_id)
        info = await self.model_info()
        if not 0 <= body.action < info["num_actions"]:
            raise SessionError(400, f"unknown action {body.action}: this {info['name']} model takes actions "
                                    f"0..{info['num_actions'] - 1} "
                                    f"({', '.join(action_labels(info['conditioning'], info['num_actions']))})")
        if body.count > self.config.max_frames_per_request:
            raise SessionError(400,
                               f"count {body.count} exceeds {self.config.max_frames_per_request} frames per request")
        steps = session.steps if body.steps is None else self._checked_steps(body.steps)
        session.steps = steps
        began = time.perf_counter()
        async with session.lock:
            for _ in range(body.count):
                tokens, actions = session.context(info["context_frames"], body.action)  # (Tc, h, w), (Tc,)
                out: StepOutput = await self.model.step.remote(
                    StepInput(tokens, actions, steps, session.temperature, previous_frame=session.frames[-1])
                )
                real_frame = None
                if session.real is not None:
                    self.real_games.step(session.real, body.action)
                    real_frame = session.real.frame
                session.push(out.tokens, out.frame, body.action, real_frame, self.config.max_history)
                if session.recording and session.recorded_count >= self.config.max_gif_frames:
                    session.recording_to = session.generated  # the recording is full: it stops itself
        return self._state(session, elapsed_ms=1000.0 * (time.perf_counter() - began))

    @app.post("/api/sessions/{session_id}/back")
    async def back(self, session_id: str) -> JSONResponse:
        session = self.sessions.get(session_id)
        async with session.lock:
            if not session.pop():
                raise SessionError(409, "nothing to step back to: this is the start (or the oldest kept frame)")
            if session.real is not None:
                self.real_games.back(session.real)
        return self._state(session)

    @app.post("/api/sessions/{session_id}/reset")
    async def reset(self, session_id: str) -> JSONResponse:
        session = self.sessions.get(session_id)
        async with session.lock:
            if session.real is not None:
                self.real_games.reset(session.real)
            session.restart(session.start.frames)
        return self._state(session)

    @app.post("/api/sessions/{session_id}/record")
    async def record(self, session_id: str, body: RecordRequest) -> JSONResponse:
        session = self.sessions.get(session_id)
        if body.on:
            session.recording_from, session.recording_to = session.generated, None
        elif session.recording:
            session.recording_to = session.generated
        else:
            raise SessionError(409, "not recording; start with {\"on\": true}")
        return self._state(session)

    @app.get("/api/sessions/{session_id}/recording.gif")
    async def gif(self, session_id: str) -> Response:
        session = self.sessions.get(session_id)
        frames = session.recorded_frames(limit=self.config.max_gif_frames)
        data = await asyncio.get_running_loop().run_in_executor(
            None, encode_gif, frames, self.config.gif_fps, self.config.gif_scale
        )
        return Response(data, media_type="image/gif",
                        headers={"Content-Disposition": f'attachment; filename="dream-{session.generated}.gif"'})

    @app.get("/api/stats")
    async def stats(self) -> JSONResponse:
        return JSONResponse({"sessions": len(self.sessions), **(await self.model.recent_batches.remote())})

    # ---- helpers ------------------------------------------------------------------------
    def _checked_steps(self, steps: int) -> int:
        if not 1 <= steps <= self.config.max_steps:
            raise SessionError(400, f"MaskGIT steps must lie in 1..{self.config.max_steps}, got {steps}")
        return steps

    async def _make_start(self, body: NewSession, info: dict[str, Any]) -> Start:
        loop = asyncio.get_running_loop()
        try:
            if body.start == "fresh":
                seed = body.seed if body.seed is not None else int(self.rng.integers(0, 2**31 - 1))
                return await loop.run_in_executor(None, fresh_level, seed)
            if self.starts is None:
                raise SessionError(400, f"start {body.start!r} needs a data set: run `genie play --data DIR`")
            if body.start == "test":
                return await loop.run_in_executor(None, self.starts.random, self.rng, info["context_frames"])
            if not body.episode:
                raise SessionError(400,
                                   "start 'episode' needs an episode id ('episode': ...); GET /api/info lists some")
            return await loop.run_in_executor(None, self.starts.episode, body.episode, body.step,
                                              info["context_frames"])
        except StartError as err:
            raise SessionError(400 if body.start != "episode" else 404, str(err)) from err

    async def _open(self, session_id: str, start: Start, steps: int | None, temperature: float | None, real: bool,
                    info: dict[str, Any]) -> JSONResponse:
        steps = self._checked_steps(steps) if steps is not None else (self.config.steps or info["steps"])
        if temperature is None:
            temperature = self.config.temperature if self.config.temperature is not None else info["temperature"]
        tokens, actions = await self.model.encode.remote(start.frames, start.actions)  # (Tc, h, w), (Tc-1,)
        session = Session(session_id, start, tokens, actions, steps, float(temperature))
        if real and info["conditioning"] == "ground_truth":
            session.real = self.real_games.start(start)
        session.restart(start.frames)
        self.sessions.add(session)
        return self._state(session)

    def _state(self, session: Session, elapsed_ms: float | None = None) -> JSONResponse:
        return JSONResponse({
            "session": session.id,
            "source": session.start.source,
            "generated": session.generated,
            "frame": frame_to_b64(session.frames[-1]),
            "real_frame": frame_to_b64(session.real.frame) if session.real is not None else None,
            "real_ended": session.real.ended if session.real is not None else None,
            "steps": session.steps,
            "temperature": session.temperature,
            "recording": session.recording,
            "recorded_frames": session.recorded_count,
            "can_back": session.generated > 0 and len(session.frames) > 1,
            "last_actions": session.actions[-16:],
            "elapsed_ms": elapsed_ms,
        })


def build_app(model: str, config: PlayConfig | None = None, data: str | os.PathLike | None = None,
              seed: int | None = None):
    """The Serve application of `genie play`: the batched model behind the session-keeping ingress."""
    config = config or PlayConfig()
    model_server = WorldModelServer.options(
        num_replicas=config.model_replicas,
        ray_actor_options={"num_cpus": config.model_cpus, "num_gpus": config.model_gpus},
        max_ongoing_requests=max(64, 4 * config.max_batch_size),
    ).bind(str(model), config)
    return PlayIngress.bind(model_server, config, str(data) if data else None, seed)
