"""The broker's ``Source``: the dashboard's reads and actions over the store contract, on any engine.

It reads what every broker process on the store wrote (sessions, the catalog, the event log, dead letters)
and wakes on their traffic through the notifier's ``watch``, as a receiver wakes on its doorbell. Every
read is bounded: events come in pages of ``PAGE``, a chart window reads at most ``STATS_MAX_EVENTS``, and
the metrics' totals are kept running from a cursor, so a scrape reads only what is new.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar, cast

import anyio

from .. import procs, versions
from ..config import Settings
from ..domain.catalog import compatibility_tables
from ..domain.presence import LocalProcesses, Presence
from ..store import open_engine
from ..store.contract import (
    Event,
    EventPage,
    EventQuery,
    Notifier,
    Retryable,
    SessionRow,
    SnapshotQuery,
    Store,
    StoreError,
)
from ..store.contract import EventKind as StoreKind
from .figures import Tally, Window, traffic_event
from .source import (
    ActionOutcome,
    AdapterEdge,
    CompatMode,
    CompatPair,
    DeadLetterView,
    DeliveryView,
    MessageStory,
    ProtocolCompat,
    ProtocolFamily,
    ProtocolRange,
    ProtocolVersion,
    SessionView,
    Stats,
    Totals,
    TrafficPage,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

PAGE = 1000  # events per store read
STATS_MAX_EVENTS = 200_000  # a chart window reads at most this many events
STORY_MAX_EVENTS = 2000
TOTALS_STEP = 50_000  # the totals' cursor is kept after this many events, not only at the end  # events of one message shown in its story
RECHECK_SECONDS = 5.0  # a wait looks at the store this often even without a wake-up (one may be lost)
BUSY_RETRIES = 3  # a read refused because the store is busy is tried this many more times
STATUS_ORDER = {"active": 0, "stale": 1, "disconnected": 2}
NO_SESSION = "-"  # a session id no row has: a filter by a name nobody holds keeps nothing


class StoreSource:
    """The dashboard's view of one store; built from its collaborators so a test can build it alone."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        settings: Settings,
        presence: Presence,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.settings = settings
        self.presence = presence
        self.clock = clock
        self.store_errors = 0  # this process's store calls that failed (the store keeps no such count)
        self.store_retries = 0
        self._tally: Tally | None = None
        self._tally_cursor: str | None = None
        self._tally_lock = anyio.Lock()

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """One store call, retried while the store is busy, its failures counted for the metrics."""
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return await fn(*args, **kwargs)
            except Retryable:
                if attempt == BUSY_RETRIES:
                    self.store_errors += 1
                    raise
                self.store_retries += 1
                await anyio.sleep(0.05 * 2**attempt)
            except StoreError:
                self.store_errors += 1
                raise
        raise AssertionError("unreachable")

    async def _scan(
        self, query: EventQuery, consume: Callable[[list[Event]], None], cap: int
    ) -> tuple[str | None, bool]:
        """Feed ``consume`` the pages from ``query`` on, following the cursor, until a read finds nothing
        new or ``cap`` events were read; the cursor reached, and whether the cap cut the scan short.

        A short page is not the end: an engine may stop a filtered scan early and hand out where it stopped.
        """
        read = 0
        while True:
            page = await self._events(query)
            consume(page.events)
            read += len(page.events)
            if page.cursor is None or (not page.events and page.cursor == query.after):
                return page.cursor or query.after, False
            if read >= cap:
                return page.cursor, True
            query = replace(query, after=page.cursor, since=None)

    async def _events(self, query: EventQuery) -> EventPage:
        """Events as asked; a cursor this store did not issue (another store's, an old tab's) reads from now."""
        try:
            return await self._call(self.store.events, query)
        except ValueError:
            return await self._call(self.store.events, replace(query, after=None))

    # --- sessions and the catalog ----------------------------------------------------------------

    async def sessions(self) -> Sequence[SessionView]:
        now = self.clock()
        views = [self._view(row, now) for row in await self._call(self.store.list_sessions, now)]
        return sorted(views, key=lambda v: (STATUS_ORDER.get(v.status, 3), v.name))

    def _view(self, row: SessionRow, now: float) -> SessionView:
        return SessionView(
            name=row.name,
            session_id=row.id,
            status=self.presence.status_of(row, now).value,
            host=row.host,
            pid=row.pid,
            protocols=tuple(ProtocolRange(p["name"], p["versions"]) for p in row.protocols),
            features=tuple(row.features),
            queue_depth=row.queue_depth,
            last_seen=row.last_seen,
        )

    async def protocols(self) -> Sequence[ProtocolFamily]:
        rows = await self._call(self.store.list_protocols)
        adapters = await self._call(self.store.list_adapters)
        families = []
        for name in sorted({r.name for r in rows}):
            mine = sorted((r for r in rows if r.name == name), key=lambda r: versions.version_key(r.version))
            families.append(
                ProtocolFamily(
                    name,
                    tuple(
                        ProtocolVersion(
                            r.version,
                            tuple(r.capabilities),
                            json.loads(r.schema),
                            r.metadata.get("description"),
                        )
                        for r in mine
                    ),
                    tuple(
                        AdapterEdge(a.from_version, a.to_version, tuple(a.steps))
                        for a in adapters
                        if a.protocol == name
                    ),
                )
            )
        return families

    async def compatibility(self) -> Sequence[ProtocolCompat]:
        now = self.clock()
        snap = await self._call(
            self.store.snapshot, SnapshotQuery(all_sessions=True, protocols=None, now=now)
        )
        live = [r for r in snap.sessions.values() if self.presence.is_live(r, now)]
        return [
            ProtocolCompat(
                table.protocol,
                tuple(table.sessions),
                tuple(
                    CompatPair(p.sender, p.recipient, cast(CompatMode, p.mode), tuple(p.path))
                    for p in table.pairs
                ),
            )
            for table in compatibility_tables(snap, live)
        ]

    # --- traffic -------------------------------------------------------------------------------------

    async def traffic(
        self,
        after: str | None = None,
        limit: int = 100,
        session: str | None = None,
        protocol: str | None = None,
    ) -> TrafficPage:
        session_id = None
        if session is not None:
            row = await self._call(self.store.find_session, session, is_id=False, now=self.clock())
            session_id = row.id if row is not None else NO_SESSION
        page = await self._events(
            EventQuery(after=after, limit=limit, session_id=session_id, protocol=protocol)
        )
        return TrafficPage(tuple(traffic_event(e) for e in page.events), page.cursor)

    async def _message_events(self, message_id: str, *, since: float = 0.0) -> list[Event]:
        found: list[Event] = []
        await self._scan(
            EventQuery(message_id=message_id, since=since, limit=PAGE), found.extend, STORY_MAX_EVENTS
        )
        return found[:STORY_MAX_EVENTS]

    async def message_story(self, message_id: str) -> MessageStory | None:
        events = await self._message_events(message_id)
        if not events:
            return None
        first = events[0]
        report = await self._call(self.store.message_status, first.sender_id, [message_id])
        paths = {e.recipient_id: e.adapted_via for e in events if e.adapted_via}
        deliveries = tuple(
            DeliveryView(
                recipient=d.recipient_name,
                state=d.state,
                attempts=d.attempts,
                delivered_version=d.delivered_version,
                adapter_path=tuple(paths[d.recipient_id].split(">")) if d.recipient_id in paths else (),
                reason=d.reason,
                updated_at=d.updated_at,
                acked_at=d.acked_at,
            )
            for d in report.rows
        )
        # The event log holds no payloads: show it as one recipient holds it, while a delivery exists.
        held = None
        for recipient_id in dict.fromkeys([d.recipient_id for d in report.rows] + [first.recipient_id]):
            held = await self._call(self.store.request_for_reply, recipient_id, message_id)
            if held is not None:
                break
        return MessageStory(
            message_id=message_id,
            sender=first.sender_name,
            protocol=first.protocol,
            version=first.version,
            created_at=first.created_at,
            broadcast=report.rows[0].broadcast if report.rows else bool(held and held.broadcast),
            payload=json.loads(held.payload) if held is not None else None,
            correlation_id=held.correlation_id if held is not None else None,
            events=tuple(traffic_event(e) for e in events),
            deliveries=deliveries,
        )

    # --- dead letters ----------------------------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> Sequence[DeadLetterView]:
        page = await self._call(self.store.all_dead_letters, limit=limit, cursor=None)
        return [
            DeadLetterView(
                message_id=r.message_id,
                sender=r.sender_name,
                recipient=r.recipient_name,
                protocol=r.protocol,
                version=r.version,
                reason=r.reason,
                attempts=r.attempts,
                dead_lettered_at=r.updated_at,
                payload=json.loads(r.payload),
            )
            for r in page.rows
        ]

    async def replay(self, message_ids: Sequence[str]) -> Sequence[ActionOutcome]:
        now = self.clock()
        moved = await self._call(
            self.store.replay_dead, message_ids, now=now, max_inbox=self.settings.max_inbox
        )
        woken: set[str] = set()
        outcomes = []
        for message_id in message_ids:
            if moved.get(message_id):
                replayed = await self._message_events(message_id, since=now)
                woken.update(e.recipient_id for e in replayed if e.kind is StoreKind.replayed)
                outcomes.append(ActionOutcome(message_id, "requeued"))
            else:
                outcomes.append(ActionOutcome(message_id, await self._dead_state(message_id)))
        self.notifier.notify(sorted(woken))  # the recipients' receives wake, and every watcher
        return outcomes

    async def _dead_state(self, message_id: str) -> str:
        """Why nothing moved: a dead letter still there (its inbox is full), or none to replay."""
        last: dict[str, StoreKind] = {}
        for event in (await self._events(EventQuery(message_id=message_id, limit=PAGE))).events:
            last[event.recipient_id] = event.kind
        return "dead_lettered" if StoreKind.dead_lettered in last.values() else "unknown"

    async def purge(self, message_ids: Sequence[str]) -> Sequence[ActionOutcome]:
        gone = await self._call(self.store.purge_dead, message_ids, now=self.clock())
        self.notifier.notify([])  # nobody's inbox changed; the watchers see the purge
        return [ActionOutcome(m, "purged" if gone.get(m) else "unknown") for m in message_ids]

    # --- figures ---------------------------------------------------------------------------------

    async def stats(self, since: float) -> Stats:
        depth_now = {s.name: s.queue_depth for s in await self.sessions()}
        window = Window(since, self.clock())
        _, partial = await self._scan(EventQuery(since=since, limit=PAGE), window.add, STATS_MAX_EVENTS)
        return window.stats(depth_now, partial=partial)

    async def totals(self, latency_bounds: Sequence[float]) -> Totals:
        """Counts over every retained event on the first call, then kept running: a call reads what is new."""
        async with self._tally_lock:
            if self._tally is None or self._tally.bounds != tuple(latency_bounds):
                self._tally, self._tally_cursor = Tally(latency_bounds), None
            tally = self._tally
            if self._tally_cursor is None:
                query = EventQuery(since=0.0, limit=PAGE)
            else:
                query = EventQuery(after=self._tally_cursor, limit=PAGE)
            capped = True
            try:
                while capped:  # in steps, so a first count over a long log keeps its cursor as it goes
                    self._tally_cursor, capped = await self._scan(query, tally.add, TOTALS_STEP)
                    query = EventQuery(after=self._tally_cursor, limit=PAGE)
            except BaseException:
                self._tally = None  # it may hold part of a page past its cursor: count afresh next time
                raise
            return tally.totals(store_errors=self.store_errors, store_retries=self.store_retries)

    async def wait_for_change(self, after: str | None, timeout: float) -> bool:
        deadline = anyio.current_time() + timeout
        while True:
            ticket = self.notifier.ticket()  # before looking: a wake-up from here on is not missed
            if (await self._events(EventQuery(after=after, limit=1))).events:
                return True
            remaining = deadline - anyio.current_time()
            if remaining <= 0:
                return False
            with anyio.move_on_after(min(remaining, RECHECK_SECONDS)):
                await ticket.wait()


@asynccontextmanager
async def open_store_source(
    settings: Settings, *, follow: bool = True, clock: Callable[[], float] = time.time
) -> AsyncIterator[StoreSource]:
    """Open the store the settings name; with ``follow``, wake on every broker process's traffic."""
    store, notifier = open_engine(settings)
    await store.open()
    try:
        await notifier.open()
        presence = Presence(settings, LocalProcesses(procs.Identity.current(settings.host_id or None)))
        source = StoreSource(store, notifier, settings, presence, clock)
        if not follow:
            yield source
            return
        await notifier.watch()
        async with anyio.create_task_group() as tg:
            tg.start_soon(notifier.listen)
            try:
                yield source
            finally:
                tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await notifier.close()
            finally:
                await store.close()
