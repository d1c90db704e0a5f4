"""Requests and their replies: a reply is stored with the request's ack, and taken by the requester."""

from __future__ import annotations

import sqlite3

from ..contract import EventKind, InboxRow, NewMessage, Target
from .base import MESSAGE_COLUMNS
from .queue import Queue
from .rows import inbox_row
from .traffic import record


class Replies(Queue):
    """The request/reply operations, on top of the queue's inserts."""

    async def request_for_reply(self, recipient_id: str, message_id: str) -> InboxRow | None:
        """A request this recipient received, for ``reply`` to answer."""

        def run(db: sqlite3.Connection) -> InboxRow | None:
            row = db.execute(
                f"""SELECT {MESSAGE_COLUMNS} FROM deliveries d
                    JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                    WHERE d.namespace = ns() AND d.recipient_id = ? AND d.message_id = ?""",
                (recipient_id, message_id),
            ).fetchone()
            return None if row is None else inbox_row(row)

        return await self._tx(run, write=False)

    async def reply(self, recipient_id: str, request_id: str, message: NewMessage, target: Target) -> bool:
        """Store the reply to the requester and ack the request, in one transaction.

        False (nothing stored) when the request was acked already: a request is answered once.
        """

        def run(db: sqlite3.Connection) -> bool:
            if db.execute(
                "SELECT 1 FROM messages WHERE namespace = ns() AND id = ?", (message.id,)
            ).fetchone():
                return True  # a retry of a call whose answer was lost: stored already
            acked = db.execute(
                """UPDATE deliveries SET state = 'acked', acked_at = :now, updated_at = :now
                   WHERE namespace = ns() AND recipient_id = :r AND message_id = :m
                   AND state IN ('queued', 'leased', 'dead_lettered')
                   RETURNING attempts""",
                {"now": message.created_at, "r": recipient_id, "m": request_id},
            ).fetchall()
            if len(acked) != 1:
                return False
            self._insert_message(db, message, None)
            self._insert_deliveries(db, message, [target])
            record(db, message.created_at, EventKind.acked, [(request_id, recipient_id, acked[0][0], None)])
            record(db, message.created_at, EventKind.sent, [(message.id, target.recipient_id, 0, None)])
            return True

        return await self._tx(run)

    async def take_reply(self, requester_id: str, request_id: str, now: float) -> InboxRow | None:
        """The reply to this request, if it has come: handed over and acked at once."""

        def run(db: sqlite3.Connection) -> InboxRow | None:
            row = db.execute(
                f"""SELECT d.seq, {MESSAGE_COLUMNS} FROM deliveries d
                    JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                    WHERE d.namespace = ns() AND d.recipient_id = ? AND m.correlation_id = ? AND m.kind = 'reply'
                    AND d.state IN ('queued', 'leased', 'acked') ORDER BY d.seq LIMIT 1""",
                (requester_id, request_id),
            ).fetchone()
            if row is None:
                return None
            if row["state"] == "acked":  # already taken by receive and acked: answer all the same
                return inbox_row(row)
            db.execute(
                """UPDATE deliveries SET state = 'acked', attempts = attempts + 1, acked_at = ?, updated_at = ?
                   WHERE namespace = ns() AND seq = ?""",
                (now, now, row["seq"]),
            )
            record(db, now, EventKind.acked, [(row["message_id"], requester_id, row["attempts"] + 1, None)])
            return inbox_row(row, attempts=row["attempts"] + 1, state="acked")

        return await self._tx(run)

    async def sent_request(self, sender_id: str, request_id: str) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT 1 FROM messages WHERE namespace = ns() AND id = ? AND sender_id = ? AND kind = 'request'",
                (request_id, sender_id),
            ).fetchone()
            return row is not None

        return await self._tx(run, write=False)
