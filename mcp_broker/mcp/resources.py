"""Read-only resources, and push for ``broker://inbox`` through resources/subscribe."""

from __future__ import annotations

import json
from typing import Any

from fastmcp import FastMCP
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from ..domain import Broker
from ..errors import BrokerError, UnknownProtocol
from . import sdk
from .errors import resource_refusal

INBOX_URI = "broker://inbox"


def register(mcp: FastMCP, broker: Broker) -> None:
    _subscriptions(mcp, broker)

    @mcp.resource("broker://protocols", mime_type="application/json", description="every registered protocol")
    async def protocols_resource() -> str:
        found = await broker.catalog.discover_protocols(limit=100)
        rows = [p.model_dump(mode="json", exclude={"json_schema"}) for p in found.protocols]
        return json.dumps({"protocols": rows, "next_cursor": found.next_cursor})

    @mcp.resource(
        "broker://protocols/{name}/{version}",
        mime_type="application/schema+json",
        description="a protocol's schema",
    )
    async def protocol_schema(name: str, version: str) -> str:
        try:
            found = await broker.catalog.discover_protocols(name=name, version_range=f"=={version}", limit=1)
            if not found.protocols:
                raise UnknownProtocol(f"no protocol {name[:64]!r} {version[:32]}")
        except BrokerError as exc:
            raise resource_refusal(exc) from exc
        return json.dumps(found.protocols[0].json_schema)

    @mcp.resource(
        "broker://sessions", mime_type="application/json", description="every session and its status"
    )
    async def sessions_resource() -> str:
        sessions = await broker.sessions.sessions_view()
        return json.dumps({"sessions": [s.model_dump(mode="json") for s in sessions]})

    @mcp.resource(
        INBOX_URI, mime_type="application/json", description="this session's waiting messages (a peek)"
    )
    async def inbox_resource() -> str:
        try:
            messages = await broker.inbox.peek_inbox()
        except BrokerError as exc:
            raise resource_refusal(exc) from exc
        return json.dumps({"messages": [m.model_dump(mode="json") for m in messages]})


def _subscriptions(mcp: FastMCP, broker: Broker) -> None:
    """A host that subscribed to broker://inbox gets notifications/resources/updated when a message
    arrives; others pay nothing."""
    subscribers: set[Any] = set()

    async def subscribe(ctx: Any, params: SubscribeRequestParams) -> EmptyResult:
        if params.uri != INBOX_URI:
            raise MCPError(code=INVALID_PARAMS, message=f"only {INBOX_URI} can be subscribed to")
        subscribers.add(ctx.session)
        return EmptyResult()

    async def unsubscribe(ctx: Any, params: UnsubscribeRequestParams) -> EmptyResult:
        subscribers.discard(ctx.session)
        return EmptyResult()

    async def notify_subscribers() -> None:
        for session in list(subscribers):
            try:
                await session.send_resource_updated(INBOX_URI)
            except Exception:  # the host went away; stop writing to it
                subscribers.discard(session)

    sdk.add_request_handler(mcp, "resources/subscribe", SubscribeRequestParams, subscribe)
    sdk.add_request_handler(mcp, "resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
    broker.on_inbox_change(notify_subscribers)
