"""Traffic for people: the event log, the namespace at a glance, and dead letters across sessions.

The log is a stream per namespace (``ev``, ids ``<n>-0``) that the scripts changing deliveries
append to in the same atomic step, with a time index (``evat``) for ``since`` and for pruning by
retention. A filtered read scans the log on the server, at most ``SCAN_BUDGET`` entries per call
so a script never holds Redis long; a page cut short by it still carries a cursor to go on from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import cursors
from ..contract import DeadLetterPage, Event, EventKind, EventPage, EventQuery, Overview
from .base import RedisBase
from .rows import inbox_row

SCAN_BUDGET = 20_000  # log entries one ``events`` call reads at most (a few milliseconds of Redis)
EVENT_CURSOR, DEAD_CURSOR = "redis-ev", "redis-adl"
LIMIT = 2**53  # positions are Redis integers that Lua keeps exactly


def _float(value: str | None) -> float | None:
    return None if value is None else float(value)


class Traffic(RedisBase):
    """Reads and actions across every session of the namespace, for the command line and the dashboard."""

    async def events(self, query: EventQuery) -> EventPage:
        after = cursors.decode(EVENT_CURSOR, query.after, LIMIT) if query.after is not None else None
        found, head, last, cut_short = await self._run(
            "events",
            "" if after is None else after,
            "" if query.since is None else repr(query.since),
            query.limit,
            query.session_id or "",
            query.protocol or "",
            query.message_id or "",
            SCAN_BUDGET,
        )
        events = [_event(r) for r in found]
        ascending = after is not None or query.since is not None
        cursor: int | None
        if ascending and len(events) == query.limit:
            cursor = int(found[-1][0])  # more may follow the page
        elif ascending and cut_short:
            cursor = int(last)  # the budget ran out: go on from where the scan stopped
        else:
            cursor = int(head) if head else after
        return EventPage(events, None if cursor is None else cursors.encode(EVENT_CURSOR, cursor))

    async def overview(self, now: float) -> Overview:
        waiting, dead, oldest, last = await self._run("overview", repr(now))
        return Overview(int(waiting), int(dead), _float(oldest), _float(last))

    async def all_dead_letters(self, *, limit: int, cursor: str | None) -> DeadLetterPage:
        before = "+inf" if cursor is None else str(cursors.decode(DEAD_CURSOR, cursor, LIMIT))
        found = await self._run("all_dead", before, limit + 1)
        page = found[:limit]
        rows = [inbox_row(row, recipient_id=r, recipient_name=name) for _, r, name, row in page]
        more = len(found) > limit
        return DeadLetterPage(rows, cursors.encode(DEAD_CURSOR, int(float(page[-1][0]))) if more else None)

    async def replay_dead(self, message_ids: Sequence[str], *, now: float, max_inbox: int) -> dict[str, int]:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return {}
        moved = await self._run("replay_dead", repr(now), max_inbox, *ids)
        return {m: int(n) for m, n in zip(ids, moved, strict=True)}

    async def purge_dead(self, message_ids: Sequence[str], *, now: float) -> dict[str, int]:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return {}
        gone = await self._run("purge_dead", repr(now), *ids)
        return {m: int(n) for m, n in zip(ids, gone, strict=True)}


def _event(found: Sequence[Any]) -> Event:
    seq, at, kind, mid, sender, sender_name, r, r_name, protocol, version, delivered, via = found[:12]
    attempt, reason, created = found[12:]
    return Event(
        cursor=cursors.encode(EVENT_CURSOR, int(seq)),
        at=float(at),
        kind=EventKind(kind),
        message_id=mid,
        sender_id=sender,
        sender_name=sender_name,
        recipient_id=r,
        recipient_name=r_name,
        protocol=protocol,
        version=version,
        delivered_version=delivered,
        adapted_via=via,
        attempt=int(attempt),
        reason=reason,
        created_at=float(created),
    )
