"""The one module that touches private parts of FastMCP and the MCP SDK, each with the reason.

- ``lifespan`` and ``low_level``: our stdio transport (transport.py) must answer lines the SDK's own
  ``stdio_server`` drops (unparseable JSON, over-deep nesting), so it drives the low-level server
  itself; FastMCP offers no public "serve on these streams" entry point that runs its lifespan.
- ``context_streams``: the low-level server reads from the SDK's context-carrying memory streams,
  which are created by an underscore module; plain anyio streams would lose the request context.
- ``add_request_handler``: FastMCP does not serve ``resources/subscribe``; the SDK's low-level
  server can, through its handler table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastmcp import FastMCP
from mcp.shared._context_streams import ContextSendStream, create_context_streams

__all__ = ["ContextSendStream", "add_request_handler", "context_streams", "lifespan", "low_level"]


def lifespan(mcp: FastMCP) -> AbstractAsyncContextManager[Any]:
    return mcp._lifespan_manager()


def low_level(mcp: FastMCP) -> Any:
    return mcp._mcp_server


def context_streams(item_type: Any, size: int = 0) -> Any:
    return create_context_streams[item_type](size)


def add_request_handler(
    mcp: FastMCP, method: str, params: type, handler: Callable[..., Awaitable[Any]]
) -> None:
    low_level(mcp).add_request_handler(method, params, handler)
