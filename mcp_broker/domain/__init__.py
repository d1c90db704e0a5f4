"""The domain: catalog, sessions, messaging and inbox, composed by ``Broker``; it never sees MCP."""

from .broker import Broker

__all__ = ["Broker"]
