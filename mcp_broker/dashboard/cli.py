"""``mcp-broker dashboard`` and ``mcp-broker metrics``: the subcommands, and serving the app with uvicorn."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import socket
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import anyio

from .. import config

if TYPE_CHECKING:  # the web stack loads only when a dashboard runs, not with every stdio server
    from .app import DashboardConfig
    from .source import Source

log = logging.getLogger(__name__)


def open_source(settings: config.Settings, *, follow: bool = True) -> AbstractAsyncContextManager[Source]:
    """The broker's Source over the store the settings name; ``follow`` wakes it on every process's traffic."""
    from .store_source import open_store_source

    return open_store_source(settings, follow=follow)


def add_subcommands(subparsers: Any) -> None:
    """Register ``dashboard`` and ``metrics`` on the top-level parser's subparsers; each sets ``run_with_settings``."""
    dash = subparsers.add_parser(
        "dashboard",
        help="serve a local web dashboard of sessions, traffic, dead letters and protocols",
        description="Serve a local web dashboard. It prints a URL with a random token: only that URL opens it.",
    )
    config.add_arguments(dash, subcommand=True)
    dash.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dash.add_argument(
        "--port", type=int, default=8765, help="port to listen on; 0 picks a free one (default 8765)"
    )
    dash.add_argument("--open", action="store_true", help="open the dashboard in a web browser")
    dash.add_argument(
        "--allow-actions", action="store_true", help="allow replaying and purging dead letters from the page"
    )
    dash.add_argument(
        "--metrics-open",
        action="store_true",
        help="serve /metrics without the token, for a Prometheus scraper (the rest stays guarded)",
    )
    dash.set_defaults(run_with_settings=_dashboard_command)

    metrics = subparsers.add_parser(
        "metrics",
        help="print the broker's metrics once in Prometheus' text format",
        description="Print the /metrics text once to stdout, e.g. for node-exporter's textfile collector.",
    )
    config.add_arguments(metrics, subcommand=True)
    metrics.set_defaults(run_with_settings=_metrics_command)


def _dashboard_command(args: argparse.Namespace, settings: config.Settings) -> int:
    from .app import DashboardConfig

    if not 0 <= args.port <= 65535:
        log.error("--port must be between 0 and 65535, got %s", args.port)
        return 2
    dash = DashboardConfig(
        host=args.host, port=args.port, allow_actions=args.allow_actions, metrics_open=args.metrics_open
    )

    async def main() -> None:
        async with open_source(settings) as source:
            await serve(source, dash, open_browser=args.open)

    return _run_with_source(main)


def _metrics_command(args: argparse.Namespace, settings: config.Settings) -> int:
    from .metrics import render_source

    async def main() -> None:
        async with open_source(settings, follow=False) as source:
            text = await render_source(source)
        sys.stdout.buffer.write(text)
        sys.stdout.flush()

    return _run_with_source(main)


def _run_with_source(main: Callable[[], Any]) -> int:
    from ..store import StoreUrlError
    from ..store.contract import StoreError

    try:
        anyio.run(main)
    except StoreUrlError as exc:
        log.error("%s", exc)
        return 2
    except StoreError as exc:  # the store cannot be opened or read
        log.error("the store failed: %s", exc)
        return 1
    except OSError as exc:  # the port is taken, the address is not ours
        log.error("cannot serve the dashboard: %s", exc)
        return 1
    return 0


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, bound before the app is built so port 0 yields the real port for the URL."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def serve(
    source: Source,
    dash: DashboardConfig,
    *,
    open_browser: bool = False,
    ready: Callable[[DashboardConfig, Any], None] | None = None,
) -> None:
    """Serve the dashboard until cancelled or signalled; ``ready`` gets the final config and the server."""
    import uvicorn

    from .app import build_app

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            closing.set()  # end the event streams first, or shutting down waits for them and cuts them off
            await super().shutdown(sockets)

    closing = anyio.Event()
    sock = bind(dash.host, dash.port)
    dash = dataclasses.replace(dash, port=sock.getsockname()[1]).with_token()
    server = Server(
        uvicorn.Config(
            build_app(source, dash, closing),
            log_config=None,  # uvicorn logs through the root logger, to stderr like the rest
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
    )
    if not _is_loopback(dash.host):
        log.warning(
            "listening on %s, not a loopback address: whoever has the URL can read the broker", dash.host
        )
    print(f"mcp-broker dashboard: {dash.url}", flush=True)
    if not dash.allow_actions:
        print("read-only (start with --allow-actions to replay or purge dead letters)", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(dash.url)
    if ready is not None:
        ready(dash, server)
    try:
        await server.serve(sockets=[sock])
    finally:
        sock.close()
