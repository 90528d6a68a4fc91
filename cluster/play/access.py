"""Who may talk to the play server: the token off loopback, loopback names on it, JSON (or PNG) POSTs only.

Three threats, one check each, all before a request reaches an endpoint:
- bound to a network interface, anyone who can reach the port could play: every request must then carry the
  server's token (the printed URL holds it; the page it opens keeps it as a same-site, HTTP-only cookie);
- bound to loopback, a web page whose name resolves to 127.0.0.1 (DNS rebinding) reaches the server with its own
  name in the Host header: on loopback only loopback names are answered;
- any web page can make the browser send a "simple" POST (a form or text body, no CORS preflight): a POST must be
  application/json (image/png for an upload), which a foreign page cannot send without the preflight this server
  never grants.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
from urllib.parse import parse_qs

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def access_for(host: str, token: str | None) -> tuple[str | None, tuple[str, ...] | None]:
    """The (token, Host names answered) of a server bound to `host`: off loopback a token is required (a fresh one
    when none is given) and any Host name is answered; on loopback only loopback names (and the token if given)."""
    if is_loopback(host):
        return token, LOOPBACK_NAMES
    return token or secrets.token_urlsafe(24), None


def play_url(host: str, port: int, token: str | None) -> str:
    """The URL a player opens: the bound address (for 0.0.0.0 / ::, this machine's address on the network)."""
    shown = host
    if host in ("0.0.0.0", "::", ""):
        shown = _network_address()
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def _network_address() -> str:
    """This machine's address on its default route (a UDP connect sends nothing), else its host name."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))
            return probe.getsockname()[0]
    except OSError:
        return socket.gethostname()


def cookie_name(token: str) -> str:
    """One cookie per server (cookies ignore ports, so two servers on one machine must not share a name)."""
    return "genie_play_" + hashlib.sha256(token.encode()).hexdigest()[:12]


def refusal(method: str, path: str, headers: dict[str, str], query: str, token: str | None,
            hosts: tuple[str, ...] | None) -> tuple[int, str] | None:
    """(HTTP status, why) when a request must not reach the endpoints, else None. `headers` has lower-case names."""
    if hosts is not None:
        name = _host_name(headers.get("host", ""))
        if name not in hosts:
            return 403, (f"this server answers only to {', '.join(hosts)} (the request named "
                         f"{headers.get('host', 'no host')!r}); open the URL `genie play` printed")
    if token is not None and not _carries(token, headers, query):
        return 401, ("this server needs its token: open the URL `genie play` printed (it ends in ?token=...), or send "
                     "the header 'Authorization: Bearer TOKEN'")
    if method == "POST":
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        upload = path.rstrip("/").endswith("/api/sessions/upload")
        wanted = "image/png" if upload else "application/json"
        if kind != wanted:
            return 415, (f"send {'a PNG' if upload else 'JSON'} with Content-Type {wanted}, "
                         f"got {kind or 'no Content-Type'!r}")
    return None


def token_from_query(query: str, token: str | None) -> bool:
    """Whether the query string carries the right token (the page then keeps it as a cookie)."""
    return token is not None and any(hmac.compare_digest(v, token) for v in parse_qs(query).get("token", []))


def _carries(token: str, headers: dict[str, str], query: str) -> bool:
    bearer = headers.get("authorization", "")
    if bearer.lower().startswith("bearer ") and hmac.compare_digest(bearer[7:].strip(), token):
        return True
    name = cookie_name(token)
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and hmac.compare_digest(value, token):
            return True
    return token_from_query(query, token)


def _host_name(host: str) -> str:
    """'[::1]:8000' -> '::1', 'localhost:8000' -> 'localhost'."""
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class AccessGuard:
    """ASGI middleware applying `refusal` with the settings of the serving ingress replica (`access()`)."""

    def __init__(self, app, settings) -> None:
        self.app = app
        self.settings = settings  # () -> (token, hosts)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        token, hosts = self.settings()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        query = scope.get("query_string", b"").decode("latin-1")
        refused = refusal(scope["method"], scope["path"], headers, query, token, hosts)
        if refused is not None:
            status, message = refused
            body = json.dumps({"error": message}).encode()
            await send({"type": "http.response.start", "status": status,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return None
        if not token_from_query(query, token):
            return await self.app(scope, receive, send)
        cookie = f"{cookie_name(token)}={token}; HttpOnly; SameSite=Strict; Path=/".encode()

        async def send_with_cookie(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        return await self.app(scope, receive, send_with_cookie)
