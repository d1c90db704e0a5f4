"""Streams, rate buckets and history on SQLite (the rules are in ``store/features.py``)."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from typing import Any

from .. import cursors
from ..contract import EventKind, NewMessage, Target
from ..features import (
    AppendOutcome,
    AppendRefused,
    Charge,
    HistoryEntry,
    HistoryPage,
    HistoryQuery,
    RateCharge,
    RateState,
    StreamRow,
    StreamState,
)
from .base import MESSAGE_COLUMNS, WAITING
from .queue import Queue, take_tokens
from .rows import inbox_row, status_row
from .traffic import record

STREAM_COLUMNS = """
    st.*, (SELECT count(*) FROM deliveries d WHERE d.stream_id = st.id AND d.stream_seq IS NOT NULL
           AND d.attempts > 0) AS received,
    (SELECT count(*) FROM deliveries d WHERE d.stream_id = st.id AND d.stream_seq IS NOT NULL
           AND d.state = 'acked') AS acked
"""
STATUS_COLUMNS = """
    d.message_id, m.broadcast, m.protocol, m.version, m.created_at, d.recipient_id,
    r.name AS recipient_name, d.state, d.reason, d.attempts, d.visible_at, d.expires_at,
    d.updated_at, d.acked_at, COALESCE(d.version, m.version) AS delivered_version
"""


class Features(Queue):
    """The message features, on top of the queue's inserts."""

    async def open_stream(self, stream: StreamRow, *, max_open: int) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            held = db.execute(
                "SELECT count(*) FROM streams WHERE namespace = ns() AND sender_id = ? AND state = 'open'",
                (stream.sender_id,),
            ).fetchone()[0]
            if held >= max_open:
                return False
            db.execute(
                """INSERT INTO streams (namespace, id, sender_id, recipient_id, protocol, version, state,
                   opened_at, last_at) VALUES (ns(), ?, ?, ?, ?, ?, 'open', ?, ?)""",
                (stream.id, stream.sender_id, stream.recipient_id, stream.protocol, stream.version,
                 stream.opened_at, stream.last_at),
            )  # fmt: skip
            return True

        return await self._tx(run)

    async def append_chunk(
        self, message: NewMessage, target: Target, *, max_chunks: int, max_inbox: int
    ) -> AppendOutcome:
        def run(db: sqlite3.Connection) -> AppendOutcome:
            row = db.execute(
                "SELECT chunks FROM streams WHERE namespace = ns() AND id = ? AND sender_id = ? AND state = 'open'",
                (message.stream_id, message.sender_id),
            ).fetchone()
            if row is None:
                return AppendOutcome(None, AppendRefused.not_open)
            if row[0] >= max_chunks:
                return AppendOutcome(None, AppendRefused.too_many_chunks)
            depth = db.execute(
                f"SELECT count(*) FROM deliveries WHERE recipient_id = :r AND {WAITING}",
                {"r": target.recipient_id, "now": message.created_at},
            ).fetchone()[0]
            if depth >= max_inbox:
                return AppendOutcome(None, AppendRefused.inbox_full, depth)
            seq = row[0] + 1
            numbered = NewMessage(**{**vars(message), "stream_seq": seq})
            self._insert_message(db, numbered, None)
            self._insert_deliveries(db, numbered, [target])
            record(db, message.created_at, EventKind.sent, [(message.id, target.recipient_id, 0, None)])
            db.execute(
                "UPDATE streams SET chunks = ?, last_at = ?, state = ? WHERE namespace = ns() AND id = ?",
                (seq, message.created_at, "closed" if message.last else "open", message.stream_id),
            )
            return AppendOutcome(seq)

        return await self._tx(run)

    async def end_stream(
        self, stream_id: str, sender_id: str, *, reason: str, now: float, notice: NewMessage
    ) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            row = db.execute(
                """SELECT recipient_id FROM streams
                   WHERE namespace = ns() AND id = ? AND sender_id = ? AND state = 'open'""",
                (stream_id, sender_id),
            ).fetchone()
            if row is None:
                return False
            recipient = row[0]
            db.execute(
                "UPDATE streams SET state = 'aborted', reason = ?, last_at = ? WHERE namespace = ns() AND id = ?",
                (reason, now, stream_id),
            )
            dropped = db.execute(
                """UPDATE deliveries SET state = 'dead_lettered', reason = 'stream_aborted', updated_at = ?
                   WHERE namespace = ns() AND stream_id = ? AND stream_seq IS NOT NULL AND state = 'queued'
                   AND attempts = 0
                   RETURNING message_id, attempts""",
                (now, stream_id),
            ).fetchall()
            record(
                db, now, EventKind.dead_lettered, [(r[0], recipient, r[1], "stream_aborted") for r in dropped]
            )
            self._insert_message(db, notice, None)
            self._insert_deliveries(db, notice, [Target(recipient)])
            record(db, now, EventKind.sent, [(notice.id, recipient, 0, None)])
            return True

        return await self._tx(run)

    async def stream(self, stream_id: str) -> StreamRow | None:
        def run(db: sqlite3.Connection) -> StreamRow | None:
            row = db.execute(
                f"SELECT {STREAM_COLUMNS} FROM streams st WHERE st.namespace = ns() AND st.id = ?",
                (stream_id,),
            ).fetchone()
            return None if row is None else _stream(row)

        return await self._tx(run, write=False)

    async def idle_streams(self, *, before: float, limit: int) -> list[StreamRow]:
        def run(db: sqlite3.Connection) -> list[StreamRow]:
            rows = db.execute(
                f"""SELECT {STREAM_COLUMNS} FROM streams st
                    WHERE st.namespace = ns() AND st.state = 'open' AND st.last_at < ?
                    ORDER BY st.last_at LIMIT ?""",
                (before, limit),
            )
            return [_stream(r) for r in rows]

        return await self._tx(run, write=False)

    async def charge(self, session_id: str, cost: int, *, rate: float, burst: float, now: float) -> Charge:
        return await self._tx(take_tokens, RateCharge(session_id, cost, rate, burst), now)

    async def rate_states(self, *, since: float) -> dict[str, RateState]:
        def run(db: sqlite3.Connection) -> dict[str, RateState]:
            sent = dict(
                db.execute(
                    """SELECT m.sender_id, count(DISTINCT e.message_id) FROM events e
                       JOIN messages m ON m.id = e.message_id
                       WHERE e.namespace = ns() AND e.kind = 'sent' AND e.at >= ? GROUP BY m.sender_id""",
                    (since,),
                ).fetchall()
            )
            states = {
                r[0]: RateState(r[1], r[2], sent.get(r[0], 0))
                for r in db.execute(
                    "SELECT session_id, tokens, updated_at FROM rate_buckets WHERE namespace = ns()"
                )
            }
            return states

        return await self._tx(run, write=False)

    async def history(self, session_id: str, query: HistoryQuery) -> HistoryPage:
        before = cursors.decode("hi", query.cursor, 2**62) if query.cursor is not None else 2**62

        def run(db: sqlite3.Connection) -> HistoryPage:
            where = ["m.namespace = ns()", "m.rowid < :before"]
            args: dict[str, Any] = {"me": session_id, "before": before, "limit": query.limit + 1}
            mine = "m.sender_id = :me"
            theirs = "EXISTS (SELECT 1 FROM deliveries x WHERE x.message_id = m.id AND x.recipient_id = :me)"
            if query.direction == "sent":
                where.append(mine)
            elif query.direction == "received":
                where.append(theirs)
            else:
                where.append(f"({mine} OR {theirs})")
            if query.peer_id is not None:
                args["peer"] = query.peer_id
                where.append(
                    "((m.sender_id = :me AND EXISTS (SELECT 1 FROM deliveries y WHERE y.message_id = m.id"
                    " AND y.recipient_id = :peer)) OR m.sender_id = :peer)"
                )
            for key, clause in (("protocol", "m.protocol = :protocol"), ("since", "m.created_at >= :since")):
                if getattr(query, key) is not None:
                    args[key] = getattr(query, key)
                    where.append(clause)
            if query.until is not None:
                args["until"] = query.until
                where.append("m.created_at <= :until")
            heads = db.execute(
                f"SELECT m.rowid AS pos, m.id, m.sender_id FROM messages m WHERE {' AND '.join(where)}"
                " ORDER BY m.rowid DESC LIMIT :limit",
                args,
            ).fetchall()
            page, more = heads[: query.limit], len(heads) > query.limit
            entries = [_entry(db, session_id, h["id"], h["sender_id"] == session_id) for h in page]
            cursor = cursors.encode("hi", page[-1]["pos"]) if more else None
            return HistoryPage([e for e in entries if e is not None], cursor)

        return await self._tx(run, write=False)


def _entry(db: sqlite3.Connection, me: str, message_id: str, sent: bool) -> HistoryEntry | None:
    """One message as ``me`` sees it: every delivery of what it sent, its own of what it received."""
    own = "" if sent else " AND d.recipient_id = :me"
    deliveries = db.execute(
        f"""SELECT {STATUS_COLUMNS} FROM deliveries d JOIN messages m ON m.id = d.message_id
            LEFT JOIN sessions r ON r.id = d.recipient_id
            WHERE d.namespace = ns() AND d.message_id = :m{own} ORDER BY d.seq""",
        {"m": message_id, "me": me},
    ).fetchall()
    view = db.execute(
        f"""SELECT {MESSAGE_COLUMNS} FROM messages m
            LEFT JOIN deliveries d ON d.message_id = m.id AND d.recipient_id = :me
            LEFT JOIN sessions s ON s.id = m.sender_id WHERE m.namespace = ns() AND m.id = :m""",
        {"m": message_id, "me": me},
    ).fetchone()
    if view is None:
        return None
    # What it sent has no delivery of its own: the message's fields stand in for one.
    at = view["created_at"]
    fallback = {"message_id": message_id, "attempts": 0, "visible_at": at, "state": "sent", "updated_at": at}
    message = inbox_row(view, **{k: v for k, v in fallback.items() if view[k] is None})
    if view["priority"] is None:
        message = replace(message, priority=_priority(db, message_id))
    return HistoryEntry("sent" if sent else "received", message, [status_row(r) for r in deliveries])


def _priority(db: sqlite3.Connection, message_id: str) -> int:
    row = db.execute(
        "SELECT priority FROM messages WHERE namespace = ns() AND id = ?", (message_id,)
    ).fetchone()
    return int(row[0])


def _stream(row: sqlite3.Row) -> StreamRow:
    return StreamRow(
        id=row["id"],
        sender_id=row["sender_id"],
        recipient_id=row["recipient_id"],
        protocol=row["protocol"],
        version=row["version"],
        state=StreamState(row["state"]),
        reason=row["reason"],
        opened_at=row["opened_at"],
        last_at=row["last_at"],
        chunks=row["chunks"],
        received=row["received"],
        acked=row["acked"],
    )
