"""The inbox: receive with leases and long-polls, ack, release, dead letters, and receipts for senders."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from . import versions
from .core import (
    BrokerCore,
    check_message_ids,
    check_wait,
    decode_cursor,
    encode_cursor,
    to_received,
)
from .errors import (
    InvalidArgument,
    StoreBusy,
    UnknownMessage,
)
from .models import (
    AckOutcome,
    AckResult,
    DeadLetter,
    DeadLettersResult,
    DeliveryStatus,
    MessageStatus,
    MessageStatusResult,
    ReceivedMessage,
    ReceiveResult,
    RequeueOutcome,
    RequeueResult,
    iso,
)
from .store import StatusRow


class Inbox(BrokerCore):
    """This session's incoming messages, and the delivery state of what it sent."""

    async def receive(
        self,
        max_messages: int = 10,
        wait_seconds: float = 0.0,
        protocol: str | None = None,
        lease_seconds: float = 60.0,
    ) -> ReceiveResult:
        me = self._require_session()
        if not 1 <= max_messages <= 100:
            raise InvalidArgument("max_messages must be between 1 and 100")
        check_wait(wait_seconds, "wait_seconds")
        if not 1 <= lease_seconds <= 3600:
            raise InvalidArgument("lease_seconds must be between 1 and 3600")
        if protocol is not None:
            versions.check_protocol_name(protocol)
        deadline = time.monotonic() + wait_seconds
        while True:
            ticket = self.doorbell.ticket()
            now = self.clock()
            try:
                rows = await self.store.lease(
                    me,
                    limit=max_messages,
                    lease_seconds=lease_seconds,
                    now=now,
                    max_attempts=self.settings.max_attempts,
                    protocol=protocol,
                )
            except StoreBusy:
                # Many receivers woken at once (a large broadcast) contend for the write lock; while
                # the caller still has time to wait, that is a reason to try again, not an error.
                if deadline - time.monotonic() <= 0:
                    raise
                rows = []
            remaining = deadline - time.monotonic()
            if rows or remaining <= 0:
                return ReceiveResult(messages=[to_received(r) for r in rows])
            await self.doorbell.wait(ticket, min(remaining, self.recheck_seconds))

    async def ack(self, message_ids: Sequence[str]) -> AckResult:
        me = self._require_session()
        ids = check_message_ids(message_ids)
        outcome = await self.store.ack(me, ids, self.clock())
        unknown = [m for m, state in outcome.items() if state == "unknown"]
        if unknown:
            raise UnknownMessage(
                f"not in your inbox: {', '.join(m[:64] for m in unknown[:10])}; nothing was acked. "
                "Ack only ids that receive returned to this session."
            )
        return AckResult(
            acked=sum(1 for state in outcome.values() if state == "acked"),
            results=[AckOutcome(message_id=m, status=outcome[m]) for m in ids],
        )

    async def release(self, message_ids: Sequence[str], delay_seconds: float = 0.0) -> RequeueResult:
        """Hand leased messages back before their lease ends (a negative ack), visible again after the delay."""
        me = self._require_session()
        ids = check_message_ids(message_ids)
        if not 0 <= delay_seconds <= 3600:
            raise InvalidArgument("delay_seconds must be between 0 and 3600")
        outcome = await self.store.requeue(
            me, ids, now=self.clock(), from_states=("leased",), delay=delay_seconds, reset_attempts=False
        )
        return _requeue_result(ids, outcome, "in your inbox")

    async def list_dead_letters(self, limit: int = 50, cursor: str | None = None) -> DeadLettersResult:
        me = self._require_session()
        if not 1 <= limit <= 100:
            raise InvalidArgument("limit must be between 1 and 100")
        before = decode_cursor(cursor, "dead_letters") if cursor else None
        rows = await self.store.dead_letters(me, limit=limit + 1, before_seq=before)
        page = rows[:limit]
        return DeadLettersResult(
            dead_letters=[
                DeadLetter(
                    message_id=r.message_id,
                    sender=r.sender_name,
                    sender_id=r.sender_id,
                    protocol=r.protocol,
                    version=r.version,
                    payload=json.loads(r.payload),
                    created_at=iso(r.created_at) or "",
                    reason=r.reason,
                    attempts=r.attempts,
                    dead_lettered_at=iso(r.updated_at) or "",
                )
                for _, r in page
            ],
            next_cursor=encode_cursor(page[-1][0], "dead_letters") if len(rows) > limit else None,
        )

    async def replay_dead_letters(self, message_ids: Sequence[str]) -> RequeueResult:
        """Queue dead letters again with a fresh attempt count (and no expiry)."""
        me = self._require_session()
        ids = check_message_ids(message_ids)
        outcome = await self.store.requeue(
            me,
            ids,
            now=self.clock(),
            from_states=("dead_lettered",),
            reset_attempts=True,
            max_inbox=self.settings.max_inbox,
        )
        self.doorbell.poke()
        return _requeue_result(ids, outcome, "among your dead letters")

    async def message_status(self, message_ids: Sequence[str]) -> MessageStatusResult:
        """Where each message this session sent stands, per recipient."""
        me = self._require_session()
        ids = check_message_ids(message_ids)
        rows = await self.store.message_status(me, ids)
        known = await self.store.known_messages(me, ids)
        unknown = [m for m in ids if m not in known]
        if unknown:
            raise UnknownMessage(
                f"you sent no message with id {', '.join(m[:64] for m in unknown[:10])}; "
                "message_status covers only messages this session sent"
            )
        now = self.clock()
        by_id: dict[str, list[Any]] = {m: [] for m in ids}
        heads: dict[str, Any] = {}
        for r in rows:
            by_id[r.message_id].append(r)
            heads.setdefault(r.message_id, r)
        result = []
        for message_id in ids:
            deliveries = by_id[message_id]
            head = heads.get(message_id)
            result.append(
                MessageStatus(
                    message_id=message_id,
                    protocol=head.protocol if head else "",
                    version=head.version if head else "",
                    broadcast=head.broadcast if head else True,
                    created_at=(iso(head.created_at) or "") if head else "",
                    deliveries=[_delivery_status(r, now) for r in deliveries],
                )
            )
        return MessageStatusResult(messages=result)

    async def peek_inbox(self, limit: int = 20) -> list[ReceivedMessage]:
        """This session's waiting messages, without leasing them (the ``broker://inbox`` resource)."""
        me = self._require_session()
        return [to_received(r) for r in await self.store.peek(me, limit, self.clock())]


def _requeue_result(ids: list[str], outcome: dict[str, str], where: str) -> RequeueResult:
    unknown = [m for m, state in outcome.items() if state == "unknown"]
    if unknown:
        raise UnknownMessage(f"not {where}: {', '.join(m[:64] for m in unknown[:10])}; nothing changed")
    return RequeueResult(
        requeued=sum(1 for state in outcome.values() if state == "requeued"),
        results=[RequeueOutcome(message_id=m, status=outcome[m]) for m in ids],
    )


def _delivery_status(row: StatusRow, now: float) -> DeliveryStatus:
    """The state a sender sees: a lapsed lease is queued again; an expiry shows as ``expired``."""
    state = row.state
    if state in ("queued", "leased") and row.expires_at is not None and row.expires_at <= now:
        state = "expired"
    elif state == "leased" and row.visible_at <= now:
        state = "queued"
    elif state == "dead_lettered" and row.reason == "expired":
        state = "expired"
    return DeliveryStatus(
        recipient=row.recipient_name,
        recipient_id=row.recipient_id,
        state=state,
        reason=row.reason,
        attempts=row.attempts,
        delivered_version=row.delivered_version,
        updated_at=iso(row.updated_at) or "",
        acked_at=iso(row.acked_at),
        expires_at=iso(row.expires_at),
    )
