"""History: a session's own sent and received messages within retention, and replays of them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from ..errors import InvalidArgument, InvalidCursor, UnknownMessage
from ..models import SessionStatus, iso
from ..models_features import HistoryItem, HistoryResult, ReplayResult
from ..store.contract import NewMessage, Notifier, Store, Target
from ..store.features import HistoryEntry, HistoryQuery
from .binding import Binding
from .checks import MAX_PAGE, check_message_ids, check_range
from .failures import maps_store_errors
from .inbox import delivery_status
from .presence import Presence
from .rates import RateLimiter
from .sessions import Sessions

DIRECTIONS = ("sent", "received")


@maps_store_errors
class History:
    """What this session sent and received, newest first, and copies of it sent again."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        binding: Binding,
        sessions: Sessions,
        presence: Presence,
        limiter: RateLimiter,
        max_inbox: int,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.binding = binding
        self.sessions = sessions
        self.presence = presence
        self.limiter = limiter
        self.max_inbox = max_inbox
        self.clock = clock

    async def history(
        self,
        peer: str | None = None,
        protocol: str | None = None,
        direction: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> HistoryResult:
        me = self.binding.require()
        check_range(limit, 1, MAX_PAGE, "limit")
        if direction is not None and direction not in DIRECTIONS:
            raise InvalidArgument("direction must be sent or received (or left out for both)")
        peer_id = (await self.sessions.peer(peer)).id if peer is not None else None
        query = HistoryQuery(peer_id, protocol, direction, since, until, limit, cursor)
        try:
            page = await self.store.history(me, query)
        except ValueError as exc:
            raise InvalidCursor(
                "the cursor is not one this broker issued; start again without cursor"
            ) from exc
        now = self.clock()
        return HistoryResult(messages=[_item(e, now) for e in page.entries], next_cursor=page.next_cursor)

    async def replay_message(self, message_id: str, to_self: bool = False) -> ReplayResult:
        """A copy of a message in this session's history, marked as a replay of it, sent again: to its
        recipients (what this session sent) or to this session (what it received, or with ``to_self``)."""
        me = self.binding.require()
        (original_id,) = check_message_ids([message_id])
        entry = await self._find(me, original_id)
        message = entry.message
        if to_self or entry.direction == "received":
            recipients = [me]
        else:
            recipients = [d.recipient_id for d in entry.deliveries]
        if not recipients:
            raise InvalidArgument(f"message {original_id} reached no one; there is nobody to replay it to")
        toll = self.limiter.toll(me, len(recipients))
        now = self.clock()
        copy = NewMessage(
            id=str(uuid.uuid4()),
            sender_id=me,  # the copy is this session's; the original keeps its sender and receipts
            broadcast=message.broadcast and len(recipients) > 1,
            protocol=message.protocol,
            version=message.sent_version,
            payload=message.payload,
            priority=message.priority,
            created_at=now,
            correlation_id=message.correlation_id,
            kind="message" if message.kind in ("request", "reply") else message.kind,
            replay_of=original_id,
        )
        outcome = await self.store.enqueue(
            copy, [Target(r) for r in recipients], max_inbox=self.max_inbox, refuse_full=False, rate=toll
        )
        self.limiter.refuse(outcome.limited)
        self.notifier.notify(outcome.delivered_to)
        names = []
        active = True
        for recipient_id in outcome.delivered_to:
            row = await self.store.find_session(recipient_id, is_id=True, now=now)
            names.append(row.name if row else recipient_id)
            active = active and row is not None and self.presence.status_of(row, now) is SessionStatus.active
        if not outcome.delivered_to:
            raise InvalidArgument("every recipient's inbox is full; nothing was replayed. Retry later.")
        return ReplayResult(
            message_id=copy.id,
            replay_of=original_id,
            recipients=names,
            status="delivered" if active else "queued",
        )

    async def _find(self, me: str, message_id: str) -> HistoryEntry:
        cursor: str | None = None
        for _ in range(1000):  # history pages, newest first; bounded like retention is
            page = await self.store.history(me, HistoryQuery(limit=100, cursor=cursor))
            for entry in page.entries:
                if entry.message.message_id == message_id:
                    return entry
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        raise UnknownMessage(f"no message {message_id!r} in your history; history lists what it holds")


def _item(entry: HistoryEntry, now: float) -> HistoryItem:
    m = entry.message
    return HistoryItem(
        message_id=m.message_id,
        direction=entry.direction,
        sender=m.sender_name,
        sender_id=m.sender_id,
        protocol=m.protocol,
        version=m.version,
        kind=m.kind,
        payload=json.loads(m.payload),
        created_at=iso(m.created_at) or "",
        broadcast=m.broadcast,
        correlation_id=m.correlation_id,
        replay_of=m.replay_of,
        stream_id=m.stream_id,
        stream_seq=m.stream_seq,
        deliveries=[delivery_status(d, now) for d in entry.deliveries],
    )
