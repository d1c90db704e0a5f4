"""Messages and their deliveries: the queued -> leased -> acked | dead_lettered state machine."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from .. import cursors
from ..contract import (
    IDEMPOTENCY_WINDOW,
    AckState,
    Conflict,
    DeadLetterPage,
    DeadReason,
    EnqueueOutcome,
    EventKind,
    Guard,
    InboxRow,
    NewMessage,
    RequeueOutcome,
    RequeueState,
    StatusReport,
    Target,
)
from ..features import Charge, RateCharge
from .base import DEPTH_SQL, IN_ORDER, MESSAGE_COLUMNS, WAITING, StoreBase
from .rows import inbox_row, status_row
from .traffic import record

DEPTH_OF = f"SELECT count(*) FROM deliveries WHERE recipient_id = :r AND {WAITING}"


def take_tokens(db: sqlite3.Connection, rate: RateCharge, now: float) -> Charge:
    """Take ``rate.cost`` tokens from the session's bucket, or none (see ``Store.charge``)."""
    row = db.execute(
        "SELECT tokens, updated_at FROM rate_buckets WHERE namespace = ns() AND session_id = ?",
        (rate.session_id,),
    ).fetchone()
    tokens = rate.burst if row is None else min(rate.burst, row[0] + max(0.0, now - row[1]) * rate.rate)
    if tokens < rate.cost:
        return Charge(False, tokens, (rate.cost - tokens) / rate.rate)
    db.execute(
        "INSERT OR REPLACE INTO rate_buckets (namespace, session_id, tokens, updated_at) VALUES (ns(), ?, ?, ?)",
        (rate.session_id, tokens - rate.cost, now),
    )
    return Charge(True, tokens - rate.cost, 0.0)


class Queue(StoreBase):
    """Enqueue, lease, ack, requeue and report on deliveries, each operation one transaction."""

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
        """Store a message and one delivery per target in one transaction (see the contract).

        The transaction starts deferred on the event loop's thread: the guard and idempotency reads
        hold no lock, which is taken at the insert.
        """
        return await self._tx(
            self._enqueue, message, targets, max_inbox, refuse_full, answer, guard, rate, deferred=True
        )

    def _enqueue(
        self,
        db: sqlite3.Connection,
        message: NewMessage,
        targets: Sequence[Target],
        max_inbox: int,
        refuse_full: bool,
        answer: dict[str, Any] | None,
        guard: Guard | None,
        rate: RateCharge | None = None,
    ) -> EnqueueOutcome:
        found = db.execute(
            "SELECT 1 FROM messages WHERE namespace = ns() AND id = ?", (message.id,)
        ).fetchone()
        if found is not None:
            # A retry of a call whose answer was lost on the way (see the contract): stored already.
            to = db.execute(
                "SELECT recipient_id FROM deliveries WHERE namespace = ns() AND message_id = ? ORDER BY seq",
                (message.id,),
            )
            return EnqueueOutcome(delivered_to=tuple(r[0] for r in to), stored=True)
        if guard is not None:
            row = db.execute(
                "SELECT revision FROM sessions WHERE namespace = ns() AND id = ?", (guard.recipient_id,)
            ).fetchone()
            if row is None or row[0] != guard.revision:
                raise Conflict("the recipient reconnected since the send was decided")
        if message.idempotency_key is not None:
            row = db.execute(
                """SELECT result FROM messages WHERE namespace = ns() AND sender_id = ? AND idempotency_key = ?
                   AND created_at > ?
                   ORDER BY created_at DESC LIMIT 1""",
                (message.sender_id, message.idempotency_key, message.created_at - IDEMPOTENCY_WINDOW),
            ).fetchone()
            if row is not None:
                return EnqueueOutcome(duplicate_result=json.loads(row[0]))
        reached: list[Target] = []
        full: list[tuple[str, int]] = []
        for target in targets:
            depth = db.execute(DEPTH_OF, {"r": target.recipient_id, "now": message.created_at}).fetchone()[0]
            if depth >= max_inbox:
                full.append((target.recipient_id, depth))
            else:
                reached.append(target)
        if full and refuse_full:
            return EnqueueOutcome(full=tuple(full))
        if rate is not None:
            charge = take_tokens(db, rate, message.created_at)
            if not charge.allowed:
                return EnqueueOutcome(limited=charge)
        # The answer is kept only to be replayed for a repeated idempotency key.
        result = json.dumps(answer or {}) if message.idempotency_key is not None else None
        self._insert_message(db, message, result)
        self._insert_deliveries(db, message, reached)
        record(
            db, message.created_at, EventKind.sent, [(message.id, t.recipient_id, 0, None) for t in reached]
        )
        return EnqueueOutcome(
            delivered_to=tuple(t.recipient_id for t in reached), full=tuple(full), stored=True
        )

    @staticmethod
    def _insert_message(db: sqlite3.Connection, message: NewMessage, result: str | None) -> None:
        db.execute(
            """INSERT INTO messages (namespace, id, sender_id, broadcast, kind, protocol, version, payload,
               correlation_id, reply_to, priority, created_at, expires_at, idempotency_key, result, replay_of,
               stream_id, stream_seq, last) VALUES (ns(), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                message.id,
                message.sender_id,
                int(message.broadcast),
                message.kind,
                message.protocol,
                message.version,
                message.payload,
                message.correlation_id,
                message.reply_to,
                message.priority,
                message.created_at,
                message.expires_at,
                message.idempotency_key,
                result,
                message.replay_of,
                message.stream_id,
                message.stream_seq,
                int(message.last),
            ),
        )

    @staticmethod
    def _insert_deliveries(db: sqlite3.Connection, message: NewMessage, targets: Sequence[Target]) -> None:
        db.executemany(
            """INSERT INTO deliveries (namespace, message_id, recipient_id, protocol, priority, expires_at,
               visible_at, updated_at, version, payload, adapted_via, stream_id, stream_seq)
               VALUES (ns(), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [
                (
                    message.id,
                    t.recipient_id,
                    message.protocol,
                    message.priority,
                    message.expires_at,
                    message.created_at,
                    message.created_at,
                    t.version,
                    t.payload,
                    t.adapted_via,
                    message.stream_id,
                    message.stream_seq,
                )
                for t in targets
            ],
        )

    @staticmethod
    def _has_work(
        db: sqlite3.Connection, recipient_id: str, now: float, protocol: str | None, stream_id: str | None
    ) -> bool:
        """Whether a lease would change anything: a ready delivery, or an expired one to dead-letter
        (even under a lease). Expiry is checked across protocols, as the lease dead-letters it so."""
        ready = "d.visible_at <= :now AND " + IN_ORDER + _narrowing(protocol, stream_id)
        sql = f"""SELECT 1 FROM deliveries d WHERE d.namespace = ns() AND d.recipient_id = :r
                  AND d.state IN ('queued', 'leased')
                  AND (({ready}) OR d.expires_at <= :now) LIMIT 1"""
        args = {"r": recipient_id, "now": now, "protocol": protocol, "stream": stream_id}
        return db.execute(sql, args).fetchone() is not None

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
        """Lease up to ``limit`` ready messages, oldest first within priority, while ``owner`` holds
        the live session.

        Expired messages, and leases that ran out on their last allowed attempt, are dead-lettered on
        the way instead of handed out.
        """
        # Long on purpose: one transaction (dead-letter what is due, pick, lease, log) and the read
        # that spares it when the inbox is empty, which must run as one job on the connection.

        def run(db: sqlite3.Connection) -> list[InboxRow]:
            held = db.execute(
                "SELECT 1 FROM sessions WHERE namespace = ns() AND id = ? AND owner = ? AND disconnected_at IS NULL",
                (recipient_id, owner),
            ).fetchone()
            if held is None:
                return []
            expired = db.execute(
                """UPDATE deliveries SET state = 'dead_lettered', reason = :reason, updated_at = :now
                   WHERE namespace = ns() AND recipient_id = :r AND state IN ('queued', 'leased')
                   AND expires_at <= :now RETURNING message_id, attempts, reason""",
                {"r": recipient_id, "now": now, "reason": DeadReason.expired.value},
            ).fetchall()
            tired = db.execute(
                """UPDATE deliveries SET state = 'dead_lettered', updated_at = :now,
                   reason = :reason
                   WHERE namespace = ns() AND recipient_id = :r AND state IN ('queued', 'leased')
                   AND visible_at <= :now AND attempts >= :max RETURNING message_id, attempts, reason""",
                {"r": recipient_id, "now": now, "max": max_attempts, "reason": DeadReason.max_attempts.value},
            ).fetchall()
            record(
                db, now, EventKind.dead_lettered, [(r[0], recipient_id, r[1], r[2]) for r in expired + tired]
            )
            sql = f"""SELECT d.seq, {MESSAGE_COLUMNS} FROM deliveries d
                      JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                      WHERE d.namespace = ns() AND d.recipient_id = :r AND d.state IN ('queued', 'leased')
                      AND d.visible_at <= :now AND {IN_ORDER}{_narrowing(protocol, stream_id)}
                      ORDER BY d.priority DESC, d.seq LIMIT :limit"""
            args = {"r": recipient_id, "now": now, "protocol": protocol, "stream": stream_id, "limit": limit}
            rows = db.execute(sql, args).fetchall()
            until = now + lease_seconds
            db.executemany(
                """UPDATE deliveries SET state = 'leased', attempts = attempts + 1, visible_at = ?, updated_at = ?
                   WHERE namespace = ns() AND seq = ?""",
                [(until, now, r["seq"]) for r in rows],
            )
            record(
                db,
                now,
                EventKind.leased,
                [(r["message_id"], recipient_id, r["attempts"] + 1, None) for r in rows],
            )
            return [
                inbox_row(r, state="leased", attempts=r["attempts"] + 1, visible_at=until, updated_at=now)
                for r in rows
            ]

        def check_then_lease(patient: bool) -> list[InboxRow]:
            # A read first, in the same job: an empty inbox (the common case for a long-poll)
            # never takes the write lock.
            found = self._retrying(
                self._has_work, recipient_id, now, protocol, stream_id, write=False, patient=patient
            )
            if not found:
                return []
            return self._retrying(run, write=True, patient=patient)

        return await self._run(check_then_lease)

    async def ack(self, recipient_id: str, message_ids: Sequence[str], now: float) -> dict[str, AckState]:
        """Ack this recipient's deliveries: the outcome per id; if any id is not theirs, only those
        ids come back, as ``unknown``, and nothing changes."""

        def run(db: sqlite3.Connection) -> dict[str, AckState]:
            marks = ",".join("?" * len(message_ids))
            rows = db.execute(
                f"""SELECT message_id, state, attempts FROM deliveries
                    WHERE namespace = ns() AND recipient_id = ? AND message_id IN ({marks})""",
                (recipient_id, *message_ids),
            ).fetchall()
            found = {r["message_id"]: (r["state"], r["attempts"]) for r in rows}
            missing = [m for m in message_ids if m not in found]
            if missing:
                return {m: AckState.unknown for m in missing}
            outcome: dict[str, AckState] = {}
            for message_id, (state, attempts) in found.items():
                if state == "acked":
                    outcome[message_id] = AckState.already_acked
                elif state == "dead_lettered":
                    outcome[message_id] = AckState.dead_lettered
                elif attempts == 0:
                    outcome[message_id] = AckState.not_received
                else:
                    db.execute(
                        """UPDATE deliveries SET state = 'acked', acked_at = ?, updated_at = ?
                           WHERE namespace = ns() AND recipient_id = ? AND message_id = ?""",
                        (now, now, recipient_id, message_id),
                    )
                    outcome[message_id] = AckState.acked
            acked = [
                (m, recipient_id, found[m][1], None)
                for m, state in outcome.items()
                if state is AckState.acked
            ]
            record(db, now, EventKind.acked, acked)
            return outcome

        return await self._tx(run)

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
        """Put this recipient's deliveries in ``from_states`` back in the queue (replay, release).

        The outcome per id: ``requeued``, or the state it was in; only ``unknown`` ids (and nothing
        changed) when any id is not the recipient's. Replay clears the expiry: a replayed message
        that had expired would otherwise die again at once.
        """

        def run(db: sqlite3.Connection) -> RequeueOutcome:
            marks = ",".join("?" * len(message_ids))
            found = {
                r["message_id"]: r["state"]
                for r in db.execute(
                    f"""SELECT message_id, state FROM deliveries
                        WHERE namespace = ns() AND recipient_id = ? AND message_id IN ({marks})""",
                    (recipient_id, *message_ids),
                )
            }
            missing = [m for m in message_ids if m not in found]
            if missing:
                return RequeueOutcome({m: RequeueState.unknown for m in missing})
            movable = [m for m in message_ids if found[m] in from_states]
            if max_inbox is not None and movable:
                depth = db.execute(DEPTH_OF, {"r": recipient_id, "now": now}).fetchone()[0]
                if depth + len(movable) > max_inbox:
                    return RequeueOutcome({m: RequeueState(found[m]) for m in message_ids}, full_depth=depth)
            extra = ", attempts = 0, reason = NULL, expires_at = NULL" if reset_attempts else ""
            db.executemany(
                f"""UPDATE deliveries SET state = 'queued', visible_at = ?, updated_at = ?{extra}
                    WHERE namespace = ns() AND recipient_id = ? AND message_id = ?""",
                [(now + delay, now, recipient_id, m) for m in movable],
            )
            kind = EventKind.replayed if reset_attempts else EventKind.released
            record(db, now, kind, [(m, recipient_id, 0, None) for m in movable])
            return RequeueOutcome(
                {m: (RequeueState.requeued if m in movable else RequeueState(found[m])) for m in message_ids}
            )

        return await self._tx(run)

    async def peek(self, recipient_id: str, limit: int, now: float) -> list[InboxRow]:
        def run(db: sqlite3.Connection) -> list[InboxRow]:
            rows = db.execute(
                f"""SELECT {MESSAGE_COLUMNS} FROM deliveries d
                    JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                    WHERE d.namespace = ns() AND d.recipient_id = ? AND d.state IN ('queued', 'leased')
                    AND (d.expires_at IS NULL OR d.expires_at > ?)
                    ORDER BY d.priority DESC, d.seq LIMIT ?""",
                (recipient_id, now, limit),
            )
            return [inbox_row(r) for r in rows]

        return await self._tx(run, write=False)

    async def dead_letters(self, recipient_id: str, *, limit: int, cursor: str | None) -> DeadLetterPage:
        """This recipient's dead letters, newest first; the cursor is the last row's ``seq``."""
        before = cursors.decode("dl", cursor, 2**62) if cursor is not None else 2**62

        def run(db: sqlite3.Connection) -> DeadLetterPage:
            rows = db.execute(
                f"""SELECT d.seq, {MESSAGE_COLUMNS} FROM deliveries d
                    JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                    WHERE d.namespace = ns() AND d.recipient_id = ? AND d.state = 'dead_lettered' AND d.seq < ?
                    ORDER BY d.seq DESC LIMIT ?""",
                (recipient_id, before, limit + 1),
            ).fetchall()
            page = rows[:limit]
            more = len(rows) > limit
            return DeadLetterPage(
                [inbox_row(r) for r in page], cursors.encode("dl", page[-1]["seq"]) if more else None
            )

        return await self._tx(run, write=False)

    async def message_status(self, sender_id: str, message_ids: Sequence[str]) -> StatusReport:
        """Every delivery of these messages, when this session sent them, and which ids it sent."""

        def run(db: sqlite3.Connection) -> StatusReport:
            marks = ",".join("?" * len(message_ids))
            known = {
                r[0]
                for r in db.execute(
                    f"SELECT id FROM messages WHERE namespace = ns() AND sender_id = ? AND id IN ({marks})",
                    (sender_id, *message_ids),
                )
            }
            rows = db.execute(
                f"""SELECT d.message_id, m.broadcast, m.protocol, m.version, m.created_at, d.recipient_id,
                    s.name AS recipient_name, d.state, d.reason, d.attempts, d.visible_at, d.expires_at,
                    d.updated_at, d.acked_at, COALESCE(d.version, m.version) AS delivered_version
                    FROM messages m JOIN deliveries d ON d.message_id = m.id
                    LEFT JOIN sessions s ON s.id = d.recipient_id
                    WHERE m.namespace = ns() AND m.sender_id = ? AND m.id IN ({marks}) ORDER BY d.seq""",
                (sender_id, *message_ids),
            )
            return StatusReport([status_row(r) for r in rows], known)

        return await self._tx(run, write=False)

    async def prune(
        self, *, before: float, now: float, sessions_before: float | None = None
    ) -> dict[str, int]:
        """Delete what retention no longer keeps: finished deliveries, events and streams, orphan
        messages, and sessions gone since ``sessions_before`` (default ``before``) with nothing waiting."""

        def run(db: sqlite3.Connection) -> dict[str, int]:
            counts = {}
            # Finished long ago, or expired long ago while still waiting (no lease will dead-letter
            # those once their session is gone).
            counts["deliveries"] = db.execute(
                """DELETE FROM deliveries WHERE namespace = ns() AND (
                   (state IN ('acked', 'dead_lettered') AND updated_at < :before)
                   OR (state IN ('queued', 'leased') AND expires_at < :before))""",
                {"before": before},
            ).rowcount
            counts["events"] = db.execute(
                "DELETE FROM events WHERE namespace = ns() AND at < ?", (before,)
            ).rowcount
            counts["messages"] = db.execute(
                """DELETE FROM messages WHERE namespace = ns() AND created_at < ?
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id)""",
                (before,),
            ).rowcount
            counts["streams"] = db.execute(
                "DELETE FROM streams WHERE namespace = ns() AND state != 'open' AND last_at < ?", (before,)
            ).rowcount
            counts["sessions"] = db.execute(
                f"""DELETE FROM sessions WHERE namespace = ns() AND last_seen < :before AND ({DEPTH_SQL}) = 0""",
                {"before": before if sessions_before is None else sessions_before, "now": now},
            ).rowcount
            db.execute(
                """DELETE FROM agreements WHERE namespace = ns() AND (session_id NOT IN (SELECT id FROM sessions)
                   OR peer_id NOT IN (SELECT id FROM sessions))"""
            )
            db.execute(
                "DELETE FROM rate_buckets WHERE namespace = ns() AND session_id NOT IN (SELECT id FROM sessions)"
            )
            return counts

        return await self._tx(run, inline=False)  # may delete many rows


def _narrowing(protocol: str | None, stream_id: str | None) -> str:
    """The extra conditions of a lease narrowed to one protocol or one stream (named parameters)."""
    return (" AND d.protocol = :protocol" if protocol is not None else "") + (
        " AND d.stream_id = :stream" if stream_id is not None else ""
    )
