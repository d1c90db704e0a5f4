"""The dashboard's web app: a JSON API and a server-sent event stream over a Source, and the static page.

Safe by default, because any web page the user visits can reach a loopback port:

- **Host check.** A request whose ``Host`` is not the address this app serves is refused with 421, so a
  DNS-rebinding page (its own name resolved to 127.0.0.1) gets nothing.
- **Token.** Every API, event and metrics route wants the random token printed in the URL: as ``?token=``,
  an ``X-Dashboard-Token`` header, ``Authorization: Bearer``, or the cookie the page sets on first load
  (HttpOnly, SameSite=Strict). A changing action (POST) wants the header itself, which no cross-site form
  can send, and is refused with 403 unless the app was started with ``allow_actions``.
- **Content-Security-Policy** allows only this origin's own script, styles and connections.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics
from .source import Source

STATIC = Path(__file__).parent / "static"
MAX_TRAFFIC = 500  # events per API page
BACKLOG = 200  # events an event stream starts with
KEEPALIVE_SECONDS = 15.0  # a comment line this often keeps proxies and the browser from giving up
MAX_IDS = 500  # message ids per action
MAX_MINUTES = 24 * 60
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
LOOPBACK_NAMES = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class DashboardConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""  # empty: a fresh random one
    allow_actions: bool = False
    metrics_open: bool = False  # serve /metrics without the token (for a Prometheus scraper)

    def with_token(self) -> DashboardConfig:
        if self.token:
            return self
        return DashboardConfig(
            self.host, self.port, secrets.token_urlsafe(24), self.allow_actions, self.metrics_open
        )

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The address to open, token included."""
        return f"{self.origin}/?token={self.token}"

    @property
    def cookie_name(self) -> str:
        # Cookies ignore ports: two dashboards on one host must not overwrite each other's token.
        return f"mcp_broker_dashboard_{self.port}"


def _split_host(value: str) -> tuple[str, str]:
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        return name, rest.removeprefix(":")
    name, _, port = value.rpartition(":")
    return (name, port) if name else (value, "")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(header: str, config: DashboardConfig) -> bool:
    """Whether a ``Host`` header names this server: its own address and port, never some other name.

    On a loopback address the loopback names count too. On a wildcard address (0.0.0.0, ::) any IP literal
    with the right port and this machine's host name do: a rebinding attack needs a name of its own.
    """
    name, port = _split_host(header.strip().lower())
    if port != str(config.port):
        return False
    bound = config.host.lower()
    if name == bound:
        return True
    if bound in LOOPBACK_NAMES or (_is_ip(bound) and ipaddress.ip_address(bound).is_loopback):
        return name in LOOPBACK_NAMES
    if bound in ("0.0.0.0", "::", ""):
        return _is_ip(name) or name in ("localhost", socket.gethostname().lower())
    return False


class Guard:
    """ASGI middleware: Host check and security headers on everything, the token on guarded paths."""

    def __init__(self, app: ASGIApp, config: DashboardConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        if not host_allowed(headers.get("host", ""), self.config):
            refusal: Response = PlainTextResponse(
                f"misdirected request: this dashboard answers only to {self.config.origin}\n", status_code=421
            )
            await refusal(scope, receive, send_with_headers)
            return
        path: str = scope["path"]
        if self._guarded(path) and not self._authorized(scope, headers):
            refusal = JSONResponse(
                {"error": "missing or wrong token: open the URL that `mcp-broker dashboard` printed"},
                status_code=401,
            )
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _guarded(self, path: str) -> bool:
        if path == "/metrics":
            return not self.config.metrics_open
        return path.startswith("/api/")

    def _authorized(self, scope: Scope, headers: dict[str, str]) -> bool:
        offered = headers.get("x-dashboard-token", "")
        if not offered and headers.get("authorization", "").lower().startswith("bearer "):
            offered = headers["authorization"][7:].strip()
        if scope["method"] != "GET":
            # A cookie rides along with any request the browser makes; only our own script sets the header.
            return _same(offered, self.config.token) and _origin_ok(headers, self.config)
        if not offered:
            offered = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])[0]
        if not offered:
            offered = _cookie(headers.get("cookie", ""), self.config.cookie_name)
        return _same(offered, self.config.token)


def _same(offered: str, token: str) -> bool:
    return bool(offered) and secrets.compare_digest(offered.encode(), token.encode())


def _origin_ok(headers: dict[str, str], config: DashboardConfig) -> bool:
    origin = headers.get("origin")
    return origin is None or host_allowed(origin.removeprefix("http://"), config)


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def _json(value: Any, status_code: int = 200) -> Response:
    body = json.dumps(_plain(value), separators=(",", ":"), default=str)
    return Response(
        body, status_code=status_code, media_type="application/json", headers={"cache-control": "no-store"}
    )


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


class BadRequest(Exception):
    pass


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be an integer, got {raw!r}") from exc
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}, got {value}")
    return value


def _filters(request: Request) -> tuple[str | None, str | None]:
    return request.query_params.get("session") or None, request.query_params.get("protocol") or None


def build_app(source: Source, config: DashboardConfig, closing: anyio.Event | None = None) -> ASGIApp:
    """The dashboard over one Source; ``config.token`` must be set (see ``DashboardConfig.with_token``).

    Setting ``closing`` ends the open event streams, so a server can stop without cutting them off.
    """
    if not config.token:
        raise ValueError("the dashboard needs a token")
    # Long on purpose: every route is a closure over the source and the token, declared where the
    # routing table below lists them, so the whole surface the browser sees reads in one place.
    index_html = (STATIC / "index.html").read_text(encoding="utf-8")

    def api(handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                return _json(await handler(request))
            except BadRequest as exc:
                return _json({"error": str(exc)}, status_code=400)

        return endpoint

    async def index(request: Request) -> Response:
        offered = request.query_params.get("token")
        if offered is not None:
            if not _same(offered, config.token):
                return PlainTextResponse(
                    "wrong token: open the URL that `mcp-broker dashboard` printed\n", 401
                )
            # Trade the token in the address bar for a cookie, so it leaves the history and the screen.
            response: Response = RedirectResponse("/", status_code=303)
            response.set_cookie(config.cookie_name, config.token, httponly=True, samesite="strict", path="/")
            return response
        if not _same(request.cookies.get(config.cookie_name, ""), config.token):
            return PlainTextResponse(
                "this dashboard needs its token: open the URL that `mcp-broker dashboard` printed\n", 401
            )
        page = index_html.replace("__TOKEN__", config.token).replace(
            "__ACTIONS__", "on" if config.allow_actions else "off"
        )
        return Response(page, media_type="text/html", headers={"cache-control": "no-store"})

    async def sessions(request: Request) -> Any:
        return {"sessions": _plain(list(await source.sessions())), "now": time.time()}

    async def protocols(request: Request) -> Any:
        return {"protocols": _plain(list(await source.protocols()))}

    async def compatibility(request: Request) -> Any:
        return {"protocols": _plain(list(await source.compatibility()))}

    async def traffic(request: Request) -> Any:
        limit = _int_param(request, "limit", 100, 1, MAX_TRAFFIC)
        session, protocol = _filters(request)
        page = await source.traffic(request.query_params.get("after") or None, limit, session, protocol)
        return asdict(page)

    async def story(request: Request) -> Any:
        found = await source.message_story(request.path_params["message_id"])
        if found is None:
            return {"error": "no such message (it may have been pruned)"}
        return asdict(found)

    async def dead_letters(request: Request) -> Any:
        limit = _int_param(request, "limit", 100, 1, MAX_TRAFFIC)
        return {
            "dead_letters": _plain(list(await source.dead_letters(limit))),
            "actions": config.allow_actions,
        }

    async def stats(request: Request) -> Any:
        minutes = _int_param(request, "minutes", 60, 1, MAX_MINUTES)
        now = time.time()
        return {"since": now - minutes * 60, "now": now, **asdict(await source.stats(now - minutes * 60))}

    def action(
        name: str, run: Callable[[list[str]], Awaitable[Any]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            if not config.allow_actions:
                return _json(
                    {
                        "error": f"{name} is disabled: restart with `mcp-broker dashboard --allow-actions` to allow it"
                    },
                    status_code=403,
                )
            try:
                body = await request.json()
            except ValueError:
                return _json({"error": 'the body must be JSON: {"message_ids": [...]}'}, status_code=400)
            ids = body.get("message_ids") if isinstance(body, dict) else None
            if (
                not isinstance(ids, list)
                or not 1 <= len(ids) <= MAX_IDS
                or not all(isinstance(i, str) and 0 < len(i) <= 200 for i in ids)
            ):
                return _json({"error": f"message_ids must be a list of 1 to {MAX_IDS} ids"}, status_code=400)
            return _json({"results": _plain(list(await run(ids)))})

        return endpoint

    async def events(request: Request) -> Response:
        session, protocol = _filters(request)
        start = request.headers.get("last-event-id") or None
        return StreamingResponse(
            _event_stream(source, start, session, protocol, closing or anyio.Event()),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def metrics_endpoint(request: Request) -> Response:
        return Response(await metrics.render_source(source), media_type=metrics.CONTENT_TYPE)

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/favicon.ico", no_icon),
            Route("/api/sessions", api(sessions)),
            Route("/api/protocols", api(protocols)),
            Route("/api/compatibility", api(compatibility)),
            Route("/api/traffic", api(traffic)),
            Route("/api/messages/{message_id}", api(story)),
            Route("/api/dead-letters", api(dead_letters)),
            Route("/api/dead-letters/replay", action("replay", source.replay), methods=["POST"]),
            Route("/api/dead-letters/purge", action("purge", source.purge), methods=["POST"]),
            Route("/api/stats", api(stats)),
            Route("/api/events", events),
            Route("/metrics", metrics_endpoint),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    return Guard(app, config)


async def _event_stream(
    source: Source, cursor: str | None, session: str | None, protocol: str | None, closing: anyio.Event
) -> AsyncIterator[str]:
    """Traffic as server-sent events: a backlog, then whatever follows, woken by the source."""
    yield "retry: 1000\n\n"
    page = await source.traffic(cursor, BACKLOG, session, protocol)
    while True:
        for event in page.events:
            yield f"id: {event.cursor}\nevent: traffic\ndata: {json.dumps(asdict(event), separators=(',', ':'))}\n\n"
        cursor = page.cursor or cursor
        if len(page.events) < BACKLOG:  # else more is waiting already: read on
            changed = await _wait_for_change(source, cursor, closing)
            if closing.is_set():
                return
            if not changed:
                yield ": keepalive\n\n"
        page = await source.traffic(cursor, BACKLOG, session, protocol)


async def _wait_for_change(source: Source, cursor: str | None, closing: anyio.Event) -> bool:
    """The source's wait, cut short when the server closes."""
    changed = False
    async with anyio.create_task_group() as group:

        async def wait() -> None:
            nonlocal changed
            changed = await source.wait_for_change(cursor, KEEPALIVE_SECONDS)
            group.cancel_scope.cancel()

        group.start_soon(wait)
        await closing.wait()
        group.cancel_scope.cancel()
    return changed
