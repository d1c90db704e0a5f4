"""Tools for the inbox: receive, ack, release, dead letters, and receipts for what was sent."""

from __future__ import annotations

from typing import Any

from ..domain import Broker
from ..models import AckResult, DeadLettersResult, MessageStatusResult, ReceiveResult, RequeueResult
from .params import (
    Cursor,
    DelaySeconds,
    LeaseSeconds,
    MaxMessages,
    MessageIds,
    PageLimit,
    ProtocolName,
    StreamId,
    WaitSeconds,
)


def register(tool: Any, broker: Broker) -> None:
    inbox = broker.inbox

    @tool(title="Receive messages")
    async def receive(
        max_messages: MaxMessages = 10,
        wait_seconds: WaitSeconds = 0,
        protocol: ProtocolName | None = None,
        lease_seconds: LeaseSeconds = 60,
        stream_id: StreamId | None = None,
        ack: MessageIds | None = None,
    ) -> ReceiveResult:
        """Lease waiting messages for this session, oldest first within priority; wait up to wait_seconds.

        Ack each message once handled; un-acked ones come back after lease_seconds. A stream's chunks
        come one at a time, in order: ack one to get the next. stream_id reads that stream only.
        ack: ids of the previous batch to ack first (as ack does; an unknown id refuses the whole call)."""
        return await inbox.receive(max_messages, wait_seconds, protocol, lease_seconds, stream_id, ack)

    @tool(title="Acknowledge messages", idempotent=True)
    async def ack(message_ids: MessageIds) -> AckResult:
        """Confirm you processed these received messages; they will not be delivered again."""
        return await inbox.ack(message_ids)

    @tool(title="Hand messages back", idempotent=True)
    async def release(message_ids: MessageIds, delay_seconds: DelaySeconds = 0) -> RequeueResult:
        """Give leased messages back unprocessed (a negative ack) so they are delivered again, now or after a delay.

        The attempt still counts toward max_attempts."""
        return await inbox.release(message_ids, delay_seconds)

    @tool(title="Message receipts", read_only=True)
    async def message_status(message_ids: MessageIds) -> MessageStatusResult:
        """Where messages you sent stand, per recipient: queued, leased, acked, dead_lettered or expired."""
        return await inbox.message_status(message_ids)

    @tool(title="List dead letters", read_only=True)
    async def list_dead_letters(limit: PageLimit = 50, cursor: Cursor = None) -> DeadLettersResult:
        """Messages to you that were given up on (expired, or not acked after max_attempts), newest first."""
        return await inbox.list_dead_letters(limit, cursor)

    @tool(title="Replay dead letters", idempotent=True)
    async def replay_dead_letters(message_ids: MessageIds) -> RequeueResult:
        """Queue dead letters again for yourself with a fresh attempt count and no expiry."""
        return await inbox.replay_dead_letters(message_ids)
