"""The broker's server plus one no-op tool, ``noop_send``, with send's parameters and result type.

The throughput section talks to this process instead of a plain broker, so send, ping and a tool that
does nothing are measured on one connection: how much of a send is FastMCP's path around any tool,
and how much is the send's own work. Only the benchmark starts it; the broker never offers the tool.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from mcp_broker import config
from mcp_broker.domain import Broker
from mcp_broker.mcp import build_server
from mcp_broker.mcp.transport import serve_stdio
from mcp_broker.models import SendResult

ANSWER = SendResult(
    message_id="00000000-0000-4000-8000-000000000000",
    status="delivered",
    recipient="nobody",
    recipient_id="00000000-0000-4000-8000-000000000001",
    protocol="bench",
    version="1.0.0",
    delivered_version="1.0.0",
    created_at="2026-01-01T00:00:00.000Z",
)


async def serve() -> None:
    settings = config.load()
    logging.basicConfig(level=settings.log_level)  # stderr
    async with Broker.running(settings) as broker:
        server = build_server(broker)

        @server.tool
        async def noop_send(to: str, protocol: str, payload: Any) -> SendResult:
            """Answer like send, doing nothing."""
            return ANSWER

        await serve_stdio(server)


if __name__ == "__main__":
    anyio.run(serve)
