"""The inbox: receive with leases and long-polls, ack, release, dead letters, and receipts for senders."""

from __future__ import annotations

import heapq
import json
import time
from collections.abc import Callable, Sequence

import anyio

from .. import versions
from ..config import Settings
from ..errors import InboxFull, InvalidCursor, NotConnected, UnknownMessage
from ..models import (
    AckOutcome,
    AckResult,
    DeadLetter,
    DeadLettersResult,
    DeliveryStatus,
    MessageStatus,
    MessageStatusResult,
    Priority,
    ReceivedMessage,
    ReceiveResult,
    RequeueOutcome,
    RequeueResult,
    iso,
)
from ..store.contract import (
    AckState,
    DeadReason,
    InboxRow,
    Notifier,
    RequeueState,
    Retryable,
    StatusRow,
    Store,
)
from ..store.contract import RequeueOutcome as StoreRequeue
from .binding import Binding
from .checks import (
    DEFAULT_LEASE_SECONDS,
    MAX_DELAY_SECONDS,
    MAX_LEASE_SECONDS,
    MAX_MESSAGES,
    MAX_PAGE,
    RECHECK_SECONDS,
    RETRY_BUSY_SECONDS,
    check_message_ids,
    check_range,
    check_wait,
)
from .failures import maps_store_errors


def dead_reason(reason: str | None, attempts: int) -> str | None:
    """A dead-letter reason as people read it."""
    if reason == DeadReason.max_attempts:
        return f"not acked after {attempts} deliveries"
    return reason


def to_received(row: InboxRow) -> ReceivedMessage:
    return ReceivedMessage(
        message_id=row.message_id,
        sender=row.sender_name,
        sender_id=row.sender_id,
        protocol=row.protocol,
        version=row.version,
        payload=json.loads(row.payload),
        created_at=iso(row.created_at) or "",
        priority=Priority.from_rank(row.priority),
        delivery_attempt=max(row.attempts, 1),
        lease_expires_at=iso(row.visible_at) or "",
        broadcast=row.broadcast,
        kind=row.kind,
        sent_version=row.sent_version if row.sent_version != row.version else None,
        adapted_via=row.adapted_via.split(">") if row.adapted_via else None,
        correlation_id=row.correlation_id,
        reply_to=row.reply_to,
        expires_at=iso(row.expires_at),
        replay_of=row.replay_of,
        stream_id=row.stream_id,
        stream_seq=row.stream_seq,
        last=row.last if row.stream_seq is not None else None,
    )


@maps_store_errors
class Inbox:
    """This session's incoming messages, and the delivery state of what it sent."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        binding: Binding,
        owner: str,
        settings: Settings,
        clock: Callable[[], float],
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.binding = binding
        self.owner = owner
        self.max_attempts = settings.max_attempts
        self.max_inbox = settings.max_inbox
        self.clock = clock
        self.recheck_seconds = RECHECK_SECONDS
        # When a message this process knows of becomes visible again without anyone ringing: leases it
        # handed out running out, releases with a delay. A waiting receive sleeps until the first of
        # them (or a ring); ``recheck_seconds`` is only the net under lost rings.
        self._wakes: list[float] = []
        self._seeded: str | None = None  # the session whose leases from before this process were read

    async def receive(
        self,
        max_messages: int = 10,
        wait_seconds: float = 0.0,
        protocol: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        stream_id: str | None = None,
        ack: Sequence[str] | None = None,
    ) -> ReceiveResult:
        """Lease waiting messages, waiting up to ``wait_seconds`` for some. ``ack`` (the ids of the previous
        batch) is acked first, exactly as ``ack`` would; if it names an unknown id nothing is acked and
        nothing is leased."""
        # Long on purpose: checks, the ack, then the lease-or-wait loop with its wake-up ticket; the
        # order of those steps is what keeps a ring between the look and the wait from being missed.
        me = self.binding.require()
        check_range(max_messages, 1, MAX_MESSAGES, "max_messages")
        check_wait(wait_seconds, "wait_seconds")
        check_range(lease_seconds, 1, MAX_LEASE_SECONDS, "lease_seconds")
        if protocol is not None:
            versions.check_protocol_name(protocol)
        ack_ids = check_message_ids(ack) if ack else None  # every argument checked before anything changes
        acked = await self._ack(me, ack_ids) if ack_ids else None
        if self._seeded != me:
            await self._seed_wakes(me)
        deadline = time.monotonic() + wait_seconds
        while True:
            ticket = self.notifier.ticket()
            if not self.binding.holds(me):
                # The process disconnected or moved on while this call waited: stop acting for it.
                raise NotConnected("this process no longer holds the session this receive was waiting for")
            now = self.clock()
            retry_in = self.recheck_seconds
            try:
                rows = await self.store.lease(
                    me,
                    self.owner,
                    limit=max_messages,
                    lease_seconds=lease_seconds,
                    now=now,
                    max_attempts=self.max_attempts,
                    protocol=protocol,
                    stream_id=stream_id,
                )
            except Retryable:
                # Many receivers woken at once (a large broadcast) contend for the write lock; while
                # the caller still has time to wait, that is a reason to try again, not an error.
                if deadline - time.monotonic() <= 0:
                    raise
                rows = []
                retry_in = RETRY_BUSY_SECONDS
            if rows and not self.binding.holds(me):
                # Unbound while the lease ran: hand the messages straight back rather than to a caller
                # that no longer acts for the session.
                ids = [r.message_id for r in rows]
                await self.store.requeue(
                    me, ids, now=self.clock(), from_states=("leased",), reset_attempts=False
                )
                raise NotConnected("this process no longer holds the session this receive was waiting for")
            remaining = deadline - time.monotonic()
            if rows:
                heapq.heappush(self._wakes, now + lease_seconds)
                self.notifier.notify([])  # people following the traffic see the lease
            if rows or remaining <= 0:
                return ReceiveResult(messages=[to_received(r) for r in rows], acked=acked)
            with anyio.move_on_after(min(remaining, retry_in, self._next_wake(now))):
                await ticket.wait()

    def _next_wake(self, now: float) -> float:
        """Seconds until a lease or delay this process knows of ends after ``now`` (the lease just
        made saw every one ending before it)."""
        wakes = self._wakes
        while wakes and wakes[0] <= now:
            heapq.heappop(wakes)
        if not wakes:
            return float("inf")
        return max(wakes[0] - self.clock(), 0.0) + 0.005  # just past it: visible_at <= now must hold

    async def _seed_wakes(self, me: str) -> None:
        """Leases a previous process of this session handed out end without a ring, too."""
        now = self.clock()
        for row in await self.store.peek(me, MAX_PAGE, now):
            if row.state == "leased" and row.visible_at > now:
                heapq.heappush(self._wakes, row.visible_at)
        self._seeded = me

    async def ack(self, message_ids: Sequence[str]) -> AckResult:
        me = self.binding.require()
        return await self._ack(me, check_message_ids(message_ids))

    async def _ack(self, me: str, ids: list[str]) -> AckResult:
        outcome = await self.store.ack(me, ids, self.clock())
        self.notifier.notify([])
        unknown = [m for m, state in outcome.items() if state is AckState.unknown]
        if unknown:
            raise UnknownMessage(
                f"not in your inbox: {', '.join(m[:64] for m in unknown[:10])}; nothing was acked. "
                "Ack only ids that receive returned to this session."
            )
        return AckResult(
            acked=sum(1 for state in outcome.values() if state is AckState.acked),
            results=[AckOutcome(message_id=m, status=outcome[m].value) for m in ids],
        )

    async def release(self, message_ids: Sequence[str], delay_seconds: float = 0.0) -> RequeueResult:
        """Hand leased messages back before their lease ends (a negative ack), visible again after the delay."""
        me = self.binding.require()
        ids = check_message_ids(message_ids)
        check_range(delay_seconds, 0, MAX_DELAY_SECONDS, "delay_seconds")
        now = self.clock()
        outcome = await self.store.requeue(
            me, ids, now=now, from_states=("leased",), delay=delay_seconds, reset_attempts=False
        )
        if delay_seconds:
            heapq.heappush(self._wakes, now + delay_seconds)
        self.notifier.notify([me])
        return _requeue_result(ids, outcome, "in your inbox", 0)

    async def list_dead_letters(self, limit: int = 50, cursor: str | None = None) -> DeadLettersResult:
        me = self.binding.require()
        check_range(limit, 1, MAX_PAGE, "limit")
        try:
            page = await self.store.dead_letters(me, limit=limit, cursor=cursor)
        except ValueError as exc:
            raise InvalidCursor(
                "the cursor is not one this broker issued; start again without cursor"
            ) from exc
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
                    reason=dead_reason(r.reason, r.attempts),
                    attempts=r.attempts,
                    dead_lettered_at=iso(r.updated_at) or "",
                )
                for r in page.rows
            ],
            next_cursor=page.next_cursor,
        )

    async def replay_dead_letters(self, message_ids: Sequence[str]) -> RequeueResult:
        """Queue dead letters again with a fresh attempt count (and no expiry)."""
        me = self.binding.require()
        ids = check_message_ids(message_ids)
        outcome = await self.store.requeue(
            me,
            ids,
            now=self.clock(),
            from_states=("dead_lettered",),
            reset_attempts=True,
            max_inbox=self.max_inbox,
        )
        result = _requeue_result(ids, outcome, "among your dead letters", self.max_inbox)
        self.notifier.notify([me])
        return result

    async def message_status(self, message_ids: Sequence[str]) -> MessageStatusResult:
        """Where each message this session sent stands, per recipient."""
        me = self.binding.require()
        ids = check_message_ids(message_ids)
        report = await self.store.message_status(me, ids)
        unknown = [m for m in ids if m not in report.known]
        if unknown:
            raise UnknownMessage(
                f"you sent no message with id {', '.join(m[:64] for m in unknown[:10])}; "
                "message_status covers only messages this session sent"
            )
        now = self.clock()
        by_id: dict[str, list[StatusRow]] = {m: [] for m in ids}
        for r in report.rows:
            by_id[r.message_id].append(r)
        result = []
        for message_id in ids:
            deliveries = by_id[message_id]
            head = deliveries[0] if deliveries else None
            result.append(
                MessageStatus(
                    message_id=message_id,
                    protocol=head.protocol if head else "",
                    version=head.version if head else "",
                    broadcast=head.broadcast if head else True,
                    created_at=(iso(head.created_at) or "") if head else "",
                    deliveries=[delivery_status(r, now) for r in deliveries],
                )
            )
        return MessageStatusResult(messages=result)

    async def peek_inbox(self, limit: int = 20) -> list[ReceivedMessage]:
        """This session's waiting messages, without leasing them (the ``broker://inbox`` resource)."""
        me = self.binding.require()
        return [to_received(r) for r in await self.store.peek(me, limit, self.clock())]


def _requeue_result(ids: list[str], outcome: StoreRequeue, where: str, max_inbox: int) -> RequeueResult:
    unknown = [m for m, state in outcome.states.items() if state is RequeueState.unknown]
    if unknown:
        raise UnknownMessage(f"not {where}: {', '.join(m[:64] for m in unknown[:10])}; nothing changed")
    if outcome.full_depth is not None:
        movable = sum(1 for state in outcome.states.values() if state is RequeueState.dead_lettered)
        raise InboxFull(
            f"your inbox holds {outcome.full_depth} waiting messages; requeueing {movable} more would pass "
            f"the limit of {max_inbox}. Receive and ack some first.",
            depth=outcome.full_depth,
        )
    return RequeueResult(
        requeued=sum(1 for state in outcome.states.values() if state is RequeueState.requeued),
        results=[RequeueOutcome(message_id=m, status=outcome.states[m].value) for m in ids],
    )


def delivery_status(row: StatusRow, now: float) -> DeliveryStatus:
    """The state a sender sees: a lapsed lease is queued again; an expiry shows as ``expired``."""
    state = row.state
    if state in ("queued", "leased") and row.expires_at is not None and row.expires_at <= now:
        state = "expired"
    elif state == "leased" and row.visible_at <= now:
        state = "queued"
    elif state == "dead_lettered" and row.reason == DeadReason.expired:
        state = "expired"
    return DeliveryStatus(
        recipient=row.recipient_name,
        recipient_id=row.recipient_id,
        state=state,
        reason=dead_reason(row.reason, row.attempts),
        attempts=row.attempts,
        delivered_version=row.delivered_version,
        updated_at=iso(row.updated_at) or "",
        acked_at=iso(row.acked_at),
        expires_at=iso(row.expires_at),
    )
