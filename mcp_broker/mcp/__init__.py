"""The MCP face of the broker: tool groups, resources, and the stdio transport."""

from .server import build_server

__all__ = ["build_server"]
