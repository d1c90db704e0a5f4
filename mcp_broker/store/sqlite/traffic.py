"""Traffic for people: the event log, the store at a glance, and dead letters across every session."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from .. import cursors
from ..contract import DeadLetterPage, Event, EventKind, EventPage, EventQuery, Overview
from .base import MESSAGE_COLUMNS, WAITING, StoreBase
from .rows import inbox_row

# (message_id, recipient_id, attempt, reason)
Change = tuple[str, str, int, str | None]

EVENT_COLUMNS = """
    e.seq, e.at, e.kind, e.message_id, m.sender_id, COALESCE(s.name, m.sender_id) AS sender_name,
    e.recipient_id, COALESCE(r.name, e.recipient_id) AS recipient_name, m.protocol, m.version,
    COALESCE(d.version, m.version) AS delivered_version, d.adapted_via, e.attempt, e.reason,
    m.created_at
"""
EVENT_JOINS = """
    FROM events e JOIN messages m ON m.id = e.message_id
    LEFT JOIN deliveries d ON d.message_id = e.message_id AND d.recipient_id = e.recipient_id
    LEFT JOIN sessions s ON s.id = m.sender_id LEFT JOIN sessions r ON r.id = e.recipient_id
"""


def record(db: sqlite3.Connection, at: float, kind: EventKind, changes: Iterable[Change]) -> None:
    """Append one event per change, in the caller's transaction."""
    db.executemany(
        """INSERT INTO events (namespace, at, kind, message_id, recipient_id, attempt, reason)
           VALUES (ns(), ?, ?, ?, ?, ?, ?)""",
        [(at, kind.value, *change) for change in changes],
    )


class Traffic(StoreBase):
    """Reads and actions across every session, for the command line and the dashboard."""

    async def events(self, query: EventQuery) -> EventPage:
        after = cursors.decode("ev", query.after, 2**62) if query.after is not None else None

        def run(db: sqlite3.Connection) -> EventPage:
            where: list[str] = ["e.namespace = ns()"]
            args: dict[str, object] = {"limit": query.limit}
            if after is not None:
                where.append("e.seq > :after")
                args["after"] = after
            elif query.since is not None:
                where.append("e.at >= :since")
                args["since"] = query.since
            if query.session_id is not None:
                where.append("(e.recipient_id = :session OR m.sender_id = :session)")
                args["session"] = query.session_id
            if query.protocol is not None:
                where.append("m.protocol = :protocol")
                args["protocol"] = query.protocol
            if query.message_id is not None:
                where.append("e.message_id = :message")
                args["message"] = query.message_id
            head = db.execute("SELECT max(seq) FROM events WHERE namespace = ns()").fetchone()[0]
            order = "ASC" if after is not None or query.since is not None else "DESC"
            rows = db.execute(
                f"SELECT {EVENT_COLUMNS} {EVENT_JOINS} WHERE {' AND '.join(where)} ORDER BY e.seq {order} LIMIT :limit",
                args,
            ).fetchall()
            if order == "DESC":
                rows.reverse()
            events = [_event(r) for r in rows]
            if len(rows) == query.limit and order == "ASC":
                cursor: int | None = rows[-1]["seq"]  # more may follow the page
            else:
                cursor = head if head is not None else after
            return EventPage(events, None if cursor is None else cursors.encode("ev", cursor))

        return await self._tx(run, write=False)

    async def overview(self, now: float) -> Overview:
        def run(db: sqlite3.Connection) -> Overview:
            waiting, oldest = db.execute(
                """SELECT count(*), min(m.created_at) FROM deliveries d JOIN messages m ON m.id = d.message_id
                   WHERE d.namespace = ns() AND d.state IN ('queued', 'leased')
                   AND (d.expires_at IS NULL OR d.expires_at > ?)""",
                (now,),
            ).fetchone()
            dead = db.execute(
                "SELECT count(*) FROM deliveries WHERE namespace = ns() AND state = 'dead_lettered'"
            ).fetchone()[0]
            last = db.execute("SELECT max(at) FROM events WHERE namespace = ns()").fetchone()[0]
            return Overview(waiting, dead, oldest, last)

        return await self._tx(run, write=False)

    async def all_dead_letters(self, *, limit: int, cursor: str | None) -> DeadLetterPage:
        before = cursors.decode("adl", cursor, 2**62) if cursor is not None else 2**62

        def run(db: sqlite3.Connection) -> DeadLetterPage:
            rows = db.execute(
                f"""SELECT d.seq, d.recipient_id, COALESCE(r.name, d.recipient_id) AS recipient_name,
                    {MESSAGE_COLUMNS} FROM deliveries d
                    JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                    LEFT JOIN sessions r ON r.id = d.recipient_id
                    WHERE d.namespace = ns() AND d.state = 'dead_lettered' AND d.seq < ?
                    ORDER BY d.seq DESC LIMIT ?""",
                (before, limit + 1),
            ).fetchall()
            page = rows[:limit]
            more = len(rows) > limit
            found = [
                inbox_row(r, recipient_id=r["recipient_id"], recipient_name=r["recipient_name"]) for r in page
            ]
            return DeadLetterPage(found, cursors.encode("adl", page[-1]["seq"]) if more else None)

        return await self._tx(run, write=False)

    async def replay_dead(self, message_ids: Sequence[str], *, now: float, max_inbox: int) -> dict[str, int]:
        def run(db: sqlite3.Connection) -> dict[str, int]:
            moved = dict.fromkeys(message_ids, 0)
            marks = ",".join("?" * len(message_ids))
            dead = db.execute(
                f"""SELECT message_id, recipient_id FROM deliveries
                    WHERE namespace = ns() AND state = 'dead_lettered' AND message_id IN ({marks}) ORDER BY seq""",
                tuple(message_ids),
            ).fetchall()
            changes: list[Change] = []
            for row in dead:
                depth = db.execute(
                    f"SELECT count(*) FROM deliveries WHERE recipient_id = :r AND {WAITING}",
                    {"r": row["recipient_id"], "now": now},
                ).fetchone()[0]
                if depth >= max_inbox:
                    continue
                db.execute(
                    """UPDATE deliveries SET state = 'queued', visible_at = ?, updated_at = ?, attempts = 0,
                       reason = NULL, expires_at = NULL
                       WHERE namespace = ns() AND message_id = ? AND recipient_id = ?""",
                    (now, now, row["message_id"], row["recipient_id"]),
                )
                moved[row["message_id"]] += 1
                changes.append((row["message_id"], row["recipient_id"], 0, None))
            record(db, now, EventKind.replayed, changes)
            return moved

        return await self._tx(run)

    async def purge_dead(self, message_ids: Sequence[str], *, now: float) -> dict[str, int]:
        def run(db: sqlite3.Connection) -> dict[str, int]:
            marks = ",".join("?" * len(message_ids))
            gone = db.execute(
                f"""DELETE FROM deliveries WHERE namespace = ns() AND state = 'dead_lettered'
                    AND message_id IN ({marks})
                    RETURNING message_id, recipient_id, attempts""",
                tuple(message_ids),
            ).fetchall()
            record(db, now, EventKind.purged, [(r[0], r[1], r[2], None) for r in gone])
            counts = dict.fromkeys(message_ids, 0)
            for r in gone:
                counts[r[0]] += 1
            return counts

        return await self._tx(run)


def _event(row: sqlite3.Row) -> Event:
    return Event(
        cursor=cursors.encode("ev", row["seq"]),
        at=row["at"],
        kind=EventKind(row["kind"]),
        message_id=row["message_id"],
        sender_id=row["sender_id"],
        sender_name=row["sender_name"],
        recipient_id=row["recipient_id"],
        recipient_name=row["recipient_name"],
        protocol=row["protocol"],
        version=row["version"],
        delivered_version=row["delivered_version"],
        adapted_via=row["adapted_via"],
        attempt=row["attempt"],
        reason=row["reason"],
        created_at=row["created_at"],
    )
