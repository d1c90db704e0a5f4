"""Tools for sending: send, broadcast, and request/reply."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from ..domain import Broker, batches
from ..models import BroadcastFilter, BroadcastResult, ReplyResult, RequestResult, SendManyResult, SendResult
from .params import (
    MessageId,
    OutgoingMessages,
    Payload,
    PriorityName,
    ProtocolName,
    SessionRef,
    TagText,
    TimeoutSeconds,
    TtlSeconds,
    Version,
)


def register(tool: Any, broker: Broker) -> None:
    # Long on purpose: the group's tools are closures over the part they call; one registration per group.
    messaging, requests = broker.messaging, broker.requests

    @tool(title="Send a message")
    async def send(
        to: SessionRef,
        protocol: ProtocolName,
        payload: Payload,
        version: Version | None = None,
        correlation_id: TagText = None,
        reply_to: TagText = None,
        priority: PriorityName = "normal",
        ttl_seconds: TtlSeconds = None,
        idempotency_key: Annotated[
            TagText, Field(description="repeat-safe: the same key within 24 h sends once")
        ] = None,
    ) -> SendResult:
        """Send one message to one session (by name or id); it is stored durably before this returns.

        Without version, uses the version negotiated with that peer, else the highest both accept.
        Status is `delivered` when the recipient is active, `queued` when it is away."""
        return await messaging.send(
            to, protocol, payload, version, correlation_id, reply_to, priority, ttl_seconds, idempotency_key
        )

    @tool(title="Send many messages")
    async def send_many(messages: OutgoingMessages) -> SendManyResult:
        """Send up to 100 messages in one call, each as send would (for agents that are programs).

        Each is answered on its own, in order: a refused one does not stop the rest, except a refusal
        they would all meet (RATE_LIMITED, OVERLOADED, STORE_BUSY, STORE_UNAVAILABLE)."""
        return await batches.send_many(messaging, [m.model_dump() for m in messages])

    @tool(title="Broadcast a message")
    async def broadcast(
        protocol: ProtocolName,
        payload: Payload,
        version: Version | None = None,
        filter: Annotated[
            BroadcastFilter | None,
            Field(description="narrow recipients by names, features (all of them) and status"),
        ] = None,
        priority: PriorityName = "normal",
        ttl_seconds: TtlSeconds = None,
    ) -> BroadcastResult:
        """Send one message to every other session that speaks the protocol at that version (one transaction).

        Lists who got it and who was skipped, with the reason."""
        return await messaging.broadcast(
            protocol,
            payload,
            version,
            filter.model_dump(exclude_none=True) if filter else None,
            priority,
            ttl_seconds,
        )

    @tool(title="Ask and wait for the answer")
    async def request(
        to: SessionRef,
        protocol: ProtocolName,
        payload: Annotated[Any, Field(description="the request; must match the protocol version's schema")],
        timeout_seconds: TimeoutSeconds = 30,
        version: Version | None = None,
    ) -> RequestResult:
        """Send a request (protocol needs request_response) and wait for the reply, validated against its
        response_schema. If it does not come in time, status is `pending`: call await_reply later."""
        return await requests.request(to, protocol, payload, timeout_seconds, version)

    @tool(title="Keep waiting for a reply", read_only=False)
    async def await_reply(request_id: MessageId, timeout_seconds: TimeoutSeconds = 30) -> RequestResult:
        """Wait again for the reply to a request you sent earlier (also after reconnecting)."""
        return await requests.await_reply(request_id, timeout_seconds)

    @tool(title="Answer a request")
    async def reply(
        message_id: Annotated[
            MessageId, Field(description="the request's message_id, as receive returned it")
        ],
        payload: Annotated[Any, Field(description="the answer; must match the protocol's response_schema")],
    ) -> ReplyResult:
        """Answer a request you received; the reply goes to the requester and the request is acked with it."""
        return await requests.reply(message_id, payload)
