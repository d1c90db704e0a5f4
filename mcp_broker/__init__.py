"""mcp-broker: a message broker for AI agents that speak MCP."""

__version__ = "0.1.0"
