"""``SpoolingStore``: every call passes through to the network store; sends go to the outbox while it is down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..contract import (
    AckState,
    AdapterRow,
    Added,
    DeadLetterPage,
    EnqueueOutcome,
    EventPage,
    EventQuery,
    Guard,
    InboxRow,
    Misconfigured,
    NewMessage,
    Overview,
    ProtocolRow,
    RequeueOutcome,
    SessionClaim,
    SessionRow,
    Snapshot,
    SnapshotQuery,
    StatusReport,
    StatusRow,
    Store,
    Target,
    Unavailable,
)
from ..features import AppendOutcome, Charge, HistoryPage, HistoryQuery, RateCharge, RateState, StreamRow
from .mirror import Mirror
from .outbox import Outbox, Spooled

log = logging.getLogger(__name__)
T = TypeVar("T")

BACKOFF_FIRST, BACKOFF_CAP = 0.2, 5.0
FORWARD_EVERY = 5.0  # the keeper looks at the outbox this often while the store answers


class SpoolingStore:
    """A ``Store`` around a network store: the same calls, and an outbox for sends while it is down."""

    def __init__(
        self, inner: Store, outbox_path: Path, *, notify: Callable[[Sequence[str]], None] | None = None
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.outbox = Outbox(outbox_path)
        self._notify = notify or (lambda ids: None)
        self._mirror = Mirror()
        self._opened = False
        self._up = False
        self._wake = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    # --- state -------------------------------------------------------------------------------------

    def _went_down(self, exc: BaseException) -> None:
        if self._up or not self._opened:
            log.warning(
                "the store at %s is unreachable (%s); sends are kept in the outbox %s and forwarded when "
                "it is back; reconnecting with backoff",
                self.url,
                exc,
                self.outbox.path,
            )
        self._up = False
        self._wake.set()

    def _came_up(self) -> None:
        if not self._up:
            log.warning("the store at %s is reachable again", self.url)
            self._up = True
            self._wake.set()

    async def _call(self, step: Awaitable[T]) -> T:
        try:
            found = await step
        except Misconfigured:
            raise
        except Unavailable as exc:
            self._went_down(exc)
            raise
        self._came_up()
        return found

    async def open(self) -> None:
        await self.outbox.open()
        try:
            await self.inner.open()
            self._opened = self._up = True
        except Misconfigured:
            raise
        except Unavailable as exc:
            self._went_down(exc)
        self._keeper = asyncio.get_running_loop().create_task(self._keep())

    async def close(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._keeper
            self._keeper = None
        if self._opened:
            await self.inner.close()

    async def _keep(self) -> None:
        """Reconnect with backoff while the store is down; forward the outbox while it is up."""
        delay = BACKOFF_FIRST
        while True:
            try:
                if not self._opened:
                    await self.inner.open()
                    self._opened = True
                await self._call(self.inner.get_protocol("", ""))  # one cheap round trip
                await self._forward()
                delay = BACKOFF_FIRST
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), FORWARD_EVERY)
            except Misconfigured:
                log.exception("the store at %s refuses this broker; sends stay in the outbox", self.url)
                await asyncio.sleep(BACKOFF_CAP)
            except Unavailable as exc:
                self._went_down(exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, BACKOFF_CAP)
            except Exception:
                log.exception("forwarding the outbox failed; will retry")
                await asyncio.sleep(BACKOFF_CAP)

    async def _forward(self) -> None:
        """Forward what waits in the outbox, oldest first, each by its message id."""
        while batch := await self.outbox.pending():
            for item in batch:
                await self._forward_one(item)

    async def _forward_one(self, item: Spooled) -> None:
        message, now = item.message, item.message.created_at
        ids = [t.recipient_id for t in item.targets]
        snap = await self._call(self.inner.snapshot(SnapshotQuery(session_ids=ids, protocols=[])))
        targets = [t for t in item.targets if t.recipient_id in snap.sessions]
        if not message.broadcast and not targets:
            await self.outbox.fail(item.seq, "recipient gone: its session no longer exists", now)
            log.warning("spooled message %s not delivered: its recipient is gone", message.id)
            return
        outcome = await self._call(
            self.inner.enqueue(
                message, targets, max_inbox=item.max_inbox, refuse_full=item.refuse_full, answer=item.answer
            )
        )
        if not outcome.stored and outcome.duplicate_result is None:
            (_, depth), *_ = outcome.full
            await self.outbox.fail(item.seq, f"inbox full ({depth} waiting; limit {item.max_inbox})", now)
            log.warning("spooled message %s not delivered: the recipient's inbox is full", message.id)
            return
        await self.outbox.done(item.seq)
        self._notify(outcome.delivered_to)

    # --- what changes while the store is down -----------------------------------------------------------

    async def snapshot(self, query: SnapshotQuery) -> Snapshot:
        try:
            snap = await self._call(self.inner.snapshot(query))
        except Misconfigured:
            raise
        except Unavailable:
            kept = self._mirror.answer(query)
            if kept is None:
                raise
            return kept
        self._mirror.keep(query, snap)
        return snap

    async def enqueue(
        self,
        message: NewMessage,
        targets: Sequence[Target],
        *,
        max_inbox: int,
        refuse_full: bool,
        answer: dict[str, Any] | None = None,
        guard: Guard | None = None,
        rate: RateCharge | None = None,
    ) -> EnqueueOutcome:
        if self._up and not await self.outbox.pending(message.sender_id, limit=1):
            try:
                return await self._call(
                    self.inner.enqueue(
                        message,
                        targets,
                        max_inbox=max_inbox,
                        refuse_full=refuse_full,
                        answer=answer,
                        guard=guard,
                        rate=rate,
                    )
                )
            except Misconfigured:
                raise
            except Unavailable:
                pass  # maybe stored, its answer lost: spooled all the same, forwarded by its id
        # No shared bucket to charge while the store is down: the outbox is the limit (as in charge).
        await self.outbox.add(message, targets, max_inbox, refuse_full, answer)
        self._wake.set()
        return EnqueueOutcome(delivered_to=tuple(t.recipient_id for t in targets), stored=True, spooled=True)

    async def message_status(self, sender_id: str, message_ids: Sequence[str]) -> StatusReport:
        spooled = await self.outbox.of_messages(sender_id, message_ids)
        held = {s.message.id for s in spooled}
        rest = [m for m in message_ids if m not in held]
        report = StatusReport([], set())
        if rest:
            report = await self._call(self.inner.message_status(sender_id, rest))
        rows = [row for s in spooled for row in _status_rows(s, self._mirror)]
        return StatusReport(rows + report.rows, report.known | held)

    async def dead_letters(self, recipient_id: str, *, limit: int, cursor: str | None) -> DeadLetterPage:
        page = await self._call(self.inner.dead_letters(recipient_id, limit=limit, cursor=cursor))
        if cursor is not None:
            return page
        undelivered = [_dead_row(s, self._mirror) for s in await self.outbox.failed(recipient_id)]
        return DeadLetterPage(undelivered + page.rows, page.next_cursor)

    async def heartbeat(self, session_id: str, owner: str, now: float) -> bool:
        try:
            return await self._call(self.inner.heartbeat(session_id, owner, now))
        except Misconfigured:
            raise
        except Unavailable:
            return True  # still ours as far as anyone can tell; the heartbeat resumes with the store

    async def end_session(self, session_id: str, owner: str, now: float) -> SessionRow | None:
        try:
            return await self._call(self.inner.end_session(session_id, owner, now))
        except Misconfigured:
            raise
        except Unavailable:
            return None  # a process exiting while the store is down: others see it go stale instead

    async def prune(
        self, *, before: float, now: float, sessions_before: float | None = None
    ) -> dict[str, int]:
        try:
            return await self._call(self.inner.prune(before=before, now=now, sessions_before=sessions_before))
        except Misconfigured:
            raise
        except Unavailable:
            return {}

    async def charge(self, session_id: str, cost: int, *, rate: float, burst: float, now: float) -> Charge:
        try:
            return await self._call(self.inner.charge(session_id, cost, rate=rate, burst=burst, now=now))
        except Misconfigured:
            raise
        except Unavailable:
            return Charge(True, burst, 0.0)  # no shared bucket to take from: the outbox is the limit

    # --- the rest passes through ------------------------------------------------------------------------

    async def add_protocol(self, row: ProtocolRow, *, max_versions: int | None = None) -> Added:
        return await self._call(self.inner.add_protocol(row, max_versions=max_versions))

    async def get_protocol(self, name: str, version: str) -> ProtocolRow | None:
        return await self._call(self.inner.get_protocol(name, version))

    async def list_protocols(self, name: str | None = None) -> list[ProtocolRow]:
        return await self._call(self.inner.list_protocols(name))

    async def add_adapter(self, row: AdapterRow, *, max_adapters: int | None = None) -> Added:
        return await self._call(self.inner.add_adapter(row, max_adapters=max_adapters))

    async def list_adapters(self, protocol: str | None = None) -> list[AdapterRow]:
        return await self._call(self.inner.list_adapters(protocol))

    async def find_session(self, ref: str, *, is_id: bool, now: float) -> SessionRow | None:
        return await self._call(self.inner.find_session(ref, is_id=is_id, now=now))

    async def list_sessions(self, now: float) -> list[SessionRow]:
        return await self._call(self.inner.list_sessions(now))

    async def claim_session(self, claim: SessionClaim) -> SessionRow:
        return await self._call(self.inner.claim_session(claim))

    async def save_agreements(self, agreements: Sequence[tuple[str, str, str, str]], now: float) -> None:
        await self._call(self.inner.save_agreements(agreements, now))

    async def lease(
        self,
        recipient_id: str,
        owner: str,
        *,
        limit: int,
        lease_seconds: float,
        now: float,
        max_attempts: int,
        protocol: str | None = None,
        stream_id: str | None = None,
    ) -> list[InboxRow]:
        return await self._call(
            self.inner.lease(
                recipient_id,
                owner,
                limit=limit,
                lease_seconds=lease_seconds,
                now=now,
                max_attempts=max_attempts,
                protocol=protocol,
                stream_id=stream_id,
            )
        )

    async def ack(self, recipient_id: str, message_ids: Sequence[str], now: float) -> dict[str, AckState]:
        return await self._call(self.inner.ack(recipient_id, message_ids, now))

    async def requeue(
        self,
        recipient_id: str,
        message_ids: Sequence[str],
        *,
        now: float,
        from_states: tuple[str, ...],
        delay: float = 0.0,
        reset_attempts: bool,
        max_inbox: int | None = None,
    ) -> RequeueOutcome:
        return await self._call(
            self.inner.requeue(
                recipient_id,
                message_ids,
                now=now,
                from_states=from_states,
                delay=delay,
                reset_attempts=reset_attempts,
                max_inbox=max_inbox,
            )
        )

    async def peek(self, recipient_id: str, limit: int, now: float) -> list[InboxRow]:
        return await self._call(self.inner.peek(recipient_id, limit, now))

    async def request_for_reply(self, recipient_id: str, message_id: str) -> InboxRow | None:
        return await self._call(self.inner.request_for_reply(recipient_id, message_id))

    async def reply(self, recipient_id: str, request_id: str, message: NewMessage, target: Target) -> bool:
        return await self._call(self.inner.reply(recipient_id, request_id, message, target))

    async def take_reply(self, requester_id: str, request_id: str, now: float) -> InboxRow | None:
        return await self._call(self.inner.take_reply(requester_id, request_id, now))

    async def sent_request(self, sender_id: str, request_id: str) -> bool:
        return await self._call(self.inner.sent_request(sender_id, request_id))

    async def events(self, query: EventQuery) -> EventPage:
        return await self._call(self.inner.events(query))

    async def overview(self, now: float) -> Overview:
        return await self._call(self.inner.overview(now))

    async def all_dead_letters(self, *, limit: int, cursor: str | None) -> DeadLetterPage:
        return await self._call(self.inner.all_dead_letters(limit=limit, cursor=cursor))

    async def replay_dead(self, message_ids: Sequence[str], *, now: float, max_inbox: int) -> dict[str, int]:
        return await self._call(self.inner.replay_dead(message_ids, now=now, max_inbox=max_inbox))

    async def purge_dead(self, message_ids: Sequence[str], *, now: float) -> dict[str, int]:
        return await self._call(self.inner.purge_dead(message_ids, now=now))

    async def open_stream(self, stream: StreamRow, *, max_open: int) -> bool:
        return await self._call(self.inner.open_stream(stream, max_open=max_open))

    async def append_chunk(
        self, message: NewMessage, target: Target, *, max_chunks: int, max_inbox: int
    ) -> AppendOutcome:
        return await self._call(
            self.inner.append_chunk(message, target, max_chunks=max_chunks, max_inbox=max_inbox)
        )

    async def end_stream(
        self, stream_id: str, sender_id: str, *, reason: str, now: float, notice: NewMessage
    ) -> bool:
        return await self._call(
            self.inner.end_stream(stream_id, sender_id, reason=reason, now=now, notice=notice)
        )

    async def stream(self, stream_id: str) -> StreamRow | None:
        return await self._call(self.inner.stream(stream_id))

    async def idle_streams(self, *, before: float, limit: int) -> list[StreamRow]:
        return await self._call(self.inner.idle_streams(before=before, limit=limit))

    async def rate_states(self, *, since: float) -> dict[str, RateState]:
        return await self._call(self.inner.rate_states(since=since))

    async def history(self, session_id: str, query: HistoryQuery) -> HistoryPage:
        return await self._call(self.inner.history(session_id, query))


def _name(mirror: Mirror, session_id: str) -> str:
    row = mirror.sessions.get(session_id)
    return row.name if row is not None else session_id


def _status_rows(item: Spooled, mirror: Mirror) -> list[StatusRow]:
    m = item.message
    state = "spooled" if item.state == "pending" else "dead_lettered"
    return [
        StatusRow(
            message_id=m.id,
            broadcast=m.broadcast,
            protocol=m.protocol,
            version=m.version,
            created_at=m.created_at,
            recipient_id=t.recipient_id,
            recipient_name=_name(mirror, t.recipient_id),
            state=state,
            reason=item.reason,
            attempts=0,
            visible_at=m.created_at,
            expires_at=m.expires_at,
            updated_at=item.failed_at or m.created_at,
            acked_at=None,
            delivered_version=t.version or m.version,
        )
        for t in item.targets
    ]


def _dead_row(item: Spooled, mirror: Mirror) -> InboxRow:
    """A spooled message that could not be delivered, shown among its sender's dead letters."""
    m = item.message
    target = item.targets[0] if item.targets else Target(m.sender_id)
    return InboxRow(
        message_id=m.id,
        sender_id=m.sender_id,
        sender_name=_name(mirror, m.sender_id),
        broadcast=m.broadcast,
        kind=m.kind,
        protocol=m.protocol,
        version=target.version or m.version,
        payload=target.payload or m.payload,
        priority=m.priority,
        created_at=m.created_at,
        expires_at=m.expires_at,
        correlation_id=m.correlation_id,
        reply_to=m.reply_to,
        attempts=0,
        visible_at=m.created_at,
        sent_version=m.version,
        adapted_via=target.adapted_via,
        state="dead_lettered",
        reason=f"undeliverable: {item.reason}",
        updated_at=item.failed_at or m.created_at,
        recipient_id=target.recipient_id,
        recipient_name=_name(mirror, target.recipient_id),
    )
