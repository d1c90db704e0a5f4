"""Tools for presence: connect, list sessions, negotiate with a peer, disconnect."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from ..domain import Broker, checks
from ..models import ConnectResult, DisconnectResult, ListSessionsResult, NegotiateResult, ProtocolSpec
from .params import ProtocolName, SessionName, SessionRef, ShortText


def register(tool: Any, broker: Broker) -> None:
    sessions = broker.sessions

    @tool(title="Connect as a session", idempotent=True)
    async def connect(
        name: SessionName,
        protocols: Annotated[
            list[ProtocolSpec],
            Field(
                max_length=checks.MAX_PROTOCOLS_PER_SESSION,
                description='protocols you speak, e.g. [{"name": "chat", "versions": ">=1.0,<2"}]',
            ),
        ],
        features: Annotated[
            list[ShortText] | None,
            Field(max_length=checks.MAX_SHORT_TEXTS, description="capability strings, e.g. code_review"),
        ] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="small JSON object about you")] = None,
    ) -> ConnectResult:
        """Create this process's session, or resume an earlier one of the same name with its queued messages.

        Every other tool but register_protocol and discover_protocols needs it. A name held by a live
        process is refused."""
        return await sessions.connect(name, protocols, features, metadata)

    @tool(title="List sessions", read_only=True)
    async def list_sessions(
        status: Literal["active", "stale", "disconnected"] | None = None,
        protocol: ProtocolName | None = None,
        feature: Annotated[str | None, Field(strict=True, max_length=64)] = None,
    ) -> ListSessionsResult:
        """Who is on the broker: every session with its status, protocols, features and queue depth."""
        return await sessions.list_sessions(status, protocol, feature)

    @tool(title="Negotiate with a peer", idempotent=True)
    async def negotiate(
        peer: SessionRef,
        required_protocols: Annotated[
            list[ProtocolName] | None,
            Field(
                max_length=checks.MAX_PROTOCOLS_PER_SESSION,
                description="protocols that must have a common version",
            ),
        ] = None,
    ) -> NegotiateResult:
        """Agree protocol versions and compare features with another session.

        Returns the highest version both accept per protocol; later sends to that peer use it."""
        return await sessions.negotiate(peer, required_protocols)

    @tool(title="Disconnect", idempotent=False)
    async def disconnect() -> DisconnectResult:
        """End this process's session. Messages sent to its name queue until someone connects with it again."""
        return await sessions.disconnect()
