"""Per-player state of the play server: small, isolated, and gone when idle.

A session holds token ids (512 B per frame at 16x16) for the dream's context, the frames it
showed (12 KB each, capped at `max_history`) for step back and GIF recording, the actions, and
its real game (a ~40 KB Procgen state). Sessions live in the ingress replica's memory; a session
idle for `ttl_s` is dropped at the next request, and at most `max_sessions` exist at once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field

import numpy as np

from cluster.play.config import PlayConfig
from cluster.play.starts import RealGame, Start


class SessionError(Exception):
    """A request the sessions cannot serve; `status` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Session:
    id: str
    start: Start
    start_tokens: np.ndarray  # (Tc, h, w) int16 tokens of the start context
    start_actions: np.ndarray  # (Tc-1,) int64 actions between the context frames (latent ids for GenieRedux)
    steps: int
    temperature: float
    tokens: list[np.ndarray] = field(default_factory=list)  # each (h, w) int16, oldest first
    frames: list[np.ndarray] = field(default_factory=list)  # each (H, W, C) uint8, aligned with tokens
    actions: list[int] = field(default_factory=list)  # actions[i] leads from frames[i] to frames[i+1]
    real: RealGame | None = None
    real_frames: list[np.ndarray] = field(default_factory=list)  # aligned with frames when real is set
    generated: int = 0  # frames generated since the start (the page's frame counter)
    recording_from: int | None = None  # `generated` when recording began
    recording_to: int | None = None  # `generated` when recording stopped (None: still recording)
    last_used: float = field(default_factory=time.monotonic)
    allowance: float | None = None  # requests it may still make at once (rate limit; None: a full burst)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one request at a time per session

    def spend_request(self, now: float, rate_per_s: float, burst: int) -> bool:
        """Take one request from the session's allowance (a token bucket); False when it is spent."""
        allowance = burst if self.allowance is None else min(burst,
                                                             self.allowance + (now - self.last_used) * rate_per_s)
        self.allowance = allowance - 1 if allowance >= 1 else allowance
        return allowance >= 1

    def restart(self, start_frames: np.ndarray) -> None:
        """Back to the start context (the dream forgets everything since)."""
        self.tokens = list(self.start_tokens)
        self.frames = list(start_frames)
        self.actions = [int(a) for a in self.start_actions]
        self.generated = 0
        self.recording_from = None
        self.recording_to = None
        self.real_frames = list(start_frames) if self.real is not None else []  # the start frames are real

    def context(self, length: int, action: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens (Tc, h, w) of the last Tc frames and the Tc actions into frames 1..Tc (the last = `action`)."""
        tokens = np.stack(self.tokens[-length:])  # (Tc, h, w)
        previous = self.actions[len(self.actions) - (len(tokens) - 1):] if len(tokens) > 1 else []
        return tokens, np.array([*previous, action], dtype=np.int64)  # (Tc,)

    def push(self, tokens: np.ndarray, frame: np.ndarray, action: int, real_frame: np.ndarray | None,
             max_history: int) -> None:
        self.tokens.append(tokens)
        self.frames.append(frame)
        self.actions.append(int(action))
        if real_frame is not None:
            self.real_frames.append(real_frame)
        self.generated += 1
        excess = len(self.frames) - max_history
        if excess > 0:  # oldest frames go; step back stops there
            del self.tokens[:excess], self.frames[:excess], self.actions[:excess], self.real_frames[:excess]

    def pop(self) -> bool:
        """Undo the last generated frame; False when there is nothing left to undo."""
        if self.generated == 0 or len(self.frames) < 2:
            return False
        self.tokens.pop()
        self.frames.pop()
        self.actions.pop()
        if self.real_frames:
            self.real_frames.pop()
        self.generated -= 1
        if self.recording_from is not None and self.recording_from > self.generated:
            self.recording_from = self.generated
        if self.recording_to is not None and self.recording_to > self.generated:
            self.recording_to = self.generated
        return True

    @property
    def recording(self) -> bool:
        return self.recording_from is not None and self.recording_to is None

    def recorded_range(self) -> tuple[int, int]:
        """List positions [begin, end) of the recording (or, without one, of the whole kept history).

        Frame `g` (counted in generated frames, the start = 0) sits at list position len-1-(generated-g).
        """
        first = 0 if self.recording_from is None else self.recording_from
        last = self.generated if self.recording_to is None else self.recording_to
        end = len(self.frames) - (self.generated - last)  # one past the last recorded frame
        begin = max(0, len(self.frames) - 1 - (self.generated - first))
        return begin, end

    @property
    def recorded_count(self) -> int:
        """Frames in the recording; 0 when none was started."""
        if self.recording_from is None:
            return 0
        begin, end = self.recorded_range()
        return end - begin

    def recorded_frames(self, limit: int | None = None) -> list[np.ndarray]:
        """The recording's frames (H, W, C) uint8, the last `limit` of them: dream | real side by side when there is
        a real game."""
        begin, end = self.recorded_range()
        if limit is not None:
            begin = max(begin, end - limit)
        frames = self.frames[begin:end]
        if self.real is None:
            return frames
        from cluster.play.media import side_by_side

        return [side_by_side(d, r) for d, r in zip(frames, self.real_frames[begin:end])]


class SessionStore:
    """Sessions by id, with a size cap and idle expiry (checked on every access)."""

    def __init__(self, config: PlayConfig, clock=time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    def expire(self) -> int:
        now = self._clock()
        stale = [sid for sid, s in self._sessions.items() if now - s.last_used > self.config.ttl_s]
        for sid in stale:
            del self._sessions[sid]
        return len(stale)

    def new_id(self) -> str:
        self.expire()
        if len(self._sessions) >= self.config.max_sessions:
            raise SessionError(429, f"all {self.config.max_sessions} sessions are in use; close a tab or wait "
                                    f"{int(self.config.ttl_s)} s for idle ones to expire")
        return secrets.token_urlsafe(12)

    def add(self, session: Session) -> None:
        if len(self._sessions) >= self.config.max_sessions:
            raise SessionError(429, f"all {self.config.max_sessions} sessions are in use")
        session.last_used = self._clock()
        self._sessions[session.id] = session

    def get(self, session_id: str) -> Session:
        self.expire()
        session = self._sessions.get(session_id)
        if session is None:
            raise SessionError(404,
                               f"unknown or expired session {session_id[:64]!r}; start a new one (POST /api/sessions)")
        now = self._clock()
        allowed = session.spend_request(now, self.config.rate_per_s, self.config.rate_burst)
        session.last_used = now
        if not allowed:
            raise SessionError(429, f"too many requests for this session: at most {self.config.rate_burst} at once and "
                                    f"{self.config.rate_per_s:g} per second; slow down")
        return session

    def remove(self, session_id: str) -> None:
        self.get(session_id)
        del self._sessions[session_id]
