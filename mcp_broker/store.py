"""Storage: the ``SqliteStore``, the only module that speaks SQL or imports aiosqlite.

Every operation is one short transaction run whole on aiosqlite's worker thread (one thread hand-off
per operation, not one per statement). Writes open with ``BEGIN IMMEDIATE`` so a writer holds the
lock from its first statement; when another process holds it, we retry with a growing backoff that
starts at tens of microseconds, which keeps tail latency far below SQLite's own busy handler. No
transaction is ever held open while the broker waits for anything, so the WAL can always be
checkpointed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .errors import InboxFull, ProtocolConflict, StoreBusy, StoreUnavailable
from .models import DeliveryState

log = logging.getLogger(__name__)
T = TypeVar("T")

IDEMPOTENCY_WINDOW = 24 * 3600.0


# --- rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolRow:
    name: str
    version: str
    schema: str
    capabilities: list[str]
    metadata: dict[str, Any]
    fingerprint: str
    registered_at: float
    response_schema: str | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> ProtocolRow:
        return cls(
            name=row["name"],
            version=row["version"],
            schema=row["schema"],
            capabilities=json.loads(row["capabilities"]),
            metadata=json.loads(row["metadata"]),
            fingerprint=row["fingerprint"],
            registered_at=row["registered_at"],
            response_schema=row["response_schema"],
        )


@dataclass(frozen=True)
class SessionRow:
    id: str
    name: str
    protocols: list[dict[str, str]]
    features: list[str]
    metadata: dict[str, Any]
    owner: str | None
    host: str | None
    pid: int | None
    proc_start: str | None
    bell: str | None
    connected_at: float
    last_seen: float
    disconnected_at: float | None
    queue_depth: int = 0

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> SessionRow:
        keys = row.keys()
        return cls(
            id=row["id"],
            name=row["name"],
            protocols=json.loads(row["protocols"]),
            features=json.loads(row["features"]),
            metadata=json.loads(row["metadata"]),
            owner=row["owner"],
            host=row["host"],
            pid=row["pid"],
            proc_start=row["proc_start"],
            bell=row["bell"],
            connected_at=row["connected_at"],
            last_seen=row["last_seen"],
            disconnected_at=row["disconnected_at"],
            queue_depth=row["queue_depth"] if "queue_depth" in keys else 0,
        )


@dataclass(frozen=True)
class NewMessage:
    id: str
    sender_id: str
    broadcast: bool
    protocol: str
    version: str
    payload: str
    priority: int
    created_at: float
    expires_at: float | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    idempotency_key: str | None = None
    kind: str = "message"


@dataclass(frozen=True)
class InboxRow:
    message_id: str
    sender_id: str
    sender_name: str
    broadcast: bool
    kind: str
    protocol: str
    version: str
    payload: str
    priority: int
    created_at: float
    expires_at: float | None
    correlation_id: str | None
    reply_to: str | None
    attempts: int
    visible_at: float
    sent_version: str
    adapted_via: str | None
    state: str
    reason: str | None
    updated_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> InboxRow:
        return cls(
            message_id=row["message_id"],
            sender_id=row["sender_id"],
            sender_name=row["sender_name"] or row["sender_id"],
            broadcast=bool(row["broadcast"]),
            kind=row["kind"],
            protocol=row["protocol"],
            version=row["version"],
            payload=row["payload"],
            priority=row["priority"],
            created_at=row["created_at"],
            expires_at=row["expires_at"],
            correlation_id=row["correlation_id"],
            reply_to=row["reply_to"],
            attempts=row["attempts"],
            visible_at=row["visible_at"],
            sent_version=row["sent_version"],
            adapted_via=row["adapted_via"],
            state=row["state"],
            reason=row["reason"],
            updated_at=row["updated_at"],
        )


@dataclass(frozen=True)
class Target:
    """One recipient of a message, with the payload transformed for it when an adapter applies."""

    recipient_id: str
    version: str | None = None
    payload: str | None = None
    adapted_via: str | None = None


@dataclass(frozen=True)
class AdapterRow:
    protocol: str
    from_version: str
    to_version: str
    steps: list[dict[str, Any]]
    fingerprint: str
    registered_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> AdapterRow:
        return cls(
            protocol=row["protocol"],
            from_version=row["from_version"],
            to_version=row["to_version"],
            steps=json.loads(row["steps"]),
            fingerprint=row["fingerprint"],
            registered_at=row["registered_at"],
        )


@dataclass(frozen=True)
class StatusRow:
    """One delivery of a message this session sent, for ``message_status``."""

    message_id: str
    broadcast: bool
    protocol: str
    version: str
    created_at: float
    recipient_id: str
    recipient_name: str
    state: str
    reason: str | None
    attempts: int
    visible_at: float
    expires_at: float | None
    updated_at: float
    acked_at: float | None
    delivered_version: str

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StatusRow:
        return cls(
            message_id=row["message_id"],
            broadcast=bool(row["broadcast"]),
            protocol=row["protocol"],
            version=row["version"],
            created_at=row["created_at"],
            recipient_id=row["recipient_id"],
            recipient_name=row["recipient_name"] or row["recipient_id"],
            state=row["state"],
            reason=row["reason"],
            attempts=row["attempts"],
            visible_at=row["visible_at"],
            expires_at=row["expires_at"],
            updated_at=row["updated_at"],
            acked_at=row["acked_at"],
            delivered_version=row["delivered_version"],
        )


@dataclass(frozen=True)
class SendContext:
    """Everything ``send`` needs to decide, read in one transaction."""

    sender: SessionRow | None
    recipient: SessionRow | None
    versions: list[str]
    capabilities: dict[str, list[str]]  # version -> what it allows
    agreed: str | None
    adapters: list[AdapterRow]


@dataclass(frozen=True)
class EnqueueOutcome:
    """What one send or broadcast transaction did."""

    duplicate_result: dict[str, Any] | None = None
    delivered_to: tuple[str, ...] = ()
    full: tuple[tuple[str, int], ...] = ()  # (recipient_id, depth) skipped because the inbox is full


# --- the store -----------------------------------------------------------------------------------

_MESSAGE_COLUMNS = """
    d.message_id, m.sender_id, s.name AS sender_name, m.broadcast, m.kind, m.protocol,
    COALESCE(d.version, m.version) AS version, COALESCE(d.payload, m.payload) AS payload,
    m.version AS sent_version, d.adapted_via, d.priority, m.created_at, d.expires_at, m.correlation_id,
    m.reply_to, d.attempts, d.visible_at, d.state, d.reason, d.updated_at
"""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class SqliteStore:
    """The embedded store: one SQLite file in WAL mode shared by every broker process on the machine."""

    def __init__(self, path: Path, *, durability: str = "normal", busy_budget: float = 10.0) -> None:
        self.path = Path(path)
        self.durability = durability
        self.busy_budget = busy_budget
        self._conn: aiosqlite.Connection | None = None

    # lifecycle

    async def open(self) -> None:
        try:
            self._create_file()
            self._conn = await aiosqlite.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            await self._conn._execute(self._setup)
        except BaseException as exc:
            # Whatever went wrong, stop aiosqlite's worker thread: it is not a daemon and would keep
            # the process from exiting.
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            if not isinstance(exc, OSError | sqlite3.Error):
                raise
            raise StoreUnavailable(
                f"cannot open the database {self.path}: {exc}. Check the path and its permissions."
            ) from exc

    async def close(self) -> None:
        if self._conn is not None:
            conn = self._conn
            try:
                await conn._execute(self._checkpoint_quietly)
            finally:
                self._conn = None
                await conn.close()

    def _create_file(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file ourselves so it is owner-only from its first byte; SQLite gives the
        # -wal and -shm files the same permissions as the database.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)

    def _setup(self) -> None:
        db = self._db
        db.row_factory = sqlite3.Row
        # Setup statements run outside our retry loop, so let SQLite wait for a brief lock here.
        db.execute(f"PRAGMA busy_timeout = {int(self.busy_budget * 1000)}")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch to WAL (journal_mode is {mode})")
        db.execute(f"PRAGMA synchronous = {'FULL' if self.durability == 'full' else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys = ON")
        # After a checkpoint, a WAL that grew past this is truncated back, so it cannot stay huge.
        db.execute("PRAGMA journal_size_limit = 16777216")
        db.execute("PRAGMA busy_timeout = 0")  # from here on we retry ourselves, faster than SQLite's handler
        self._retrying(self._migrate, write=True)

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "store is not open"
        return self._conn._conn

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
        folder = resources.files("mcp_broker") / "sql"
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".sql"):
                continue
            number = int(entry.name.split("_", 1)[0])
            if number in done:
                continue
            for statement in entry.read_text(encoding="utf-8").split(";\n"):
                if statement.strip():
                    db.execute(statement)
            db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (number, time.time()))
            log.info("applied migration %s", entry.name)

    def _checkpoint_quietly(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # transactions

    async def _tx(self, fn: Callable[..., T], *args: Any, write: bool = True) -> T:
        if self._conn is None:
            raise StoreUnavailable("the store is closed")
        return await self._conn._execute(self._retrying, fn, *args, write=write)

    def _retrying(self, fn: Callable[..., T], *args: Any, write: bool) -> T:
        """Run ``fn(db, *args)`` in one transaction, retrying the whole of it while the file is locked."""
        db = self._db
        deadline = time.monotonic() + self.busy_budget
        delay = 20e-6
        while True:
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    result = fn(db, *args)
                    db.execute("COMMIT")
                    return result
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise self._unavailable(exc) from exc
                if time.monotonic() > deadline:
                    raise StoreBusy(
                        f"the database stayed locked for {self.busy_budget:g} s; another program may hold it. Retry shortly."
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 0.01)
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.Error) -> StoreUnavailable:
        return StoreUnavailable(
            f"database error on {self.path}: {exc}. Check the file, its disk and its permissions."
        )

    async def data_version(self) -> int:
        """Changes whenever another connection commits: the cheap safety net under the doorbell."""
        if self._conn is None:
            raise StoreUnavailable("the store is closed")
        return await self._conn._execute(lambda: self._db.execute("PRAGMA data_version").fetchone()[0])

    async def integrity_check(self) -> str:
        return await self._tx(lambda db: db.execute("PRAGMA integrity_check").fetchone()[0], write=False)

    # protocols

    async def add_protocol(self, row: ProtocolRow) -> str:
        """Insert a protocol; ``unchanged`` if this exact definition is there, conflict if another is."""

        def run(db: sqlite3.Connection) -> str:
            found = db.execute(
                "SELECT fingerprint FROM protocols WHERE name = ? AND version = ?", (row.name, row.version)
            ).fetchone()
            if found is not None:
                if found[0] == row.fingerprint:
                    return "unchanged"
                raise ProtocolConflict(
                    f"{row.name} {row.version} is already registered with a different definition; "
                    "registered versions are immutable, so bump the version (e.g. to the next minor)."
                )
            db.execute(
                "INSERT INTO protocols VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.name,
                    row.version,
                    row.schema,
                    json.dumps(row.capabilities),
                    json.dumps(row.metadata, sort_keys=True),
                    row.fingerprint,
                    row.registered_at,
                    row.response_schema,
                ),
            )
            return "registered"

        return await self._tx(run)

    async def get_protocol(self, name: str, version: str) -> ProtocolRow | None:
        def run(db: sqlite3.Connection) -> ProtocolRow | None:
            row = db.execute(
                "SELECT * FROM protocols WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            return None if row is None else ProtocolRow.from_row(row)

        return await self._tx(run, write=False)

    async def protocol_versions(self, name: str) -> list[str]:
        def run(db: sqlite3.Connection) -> list[str]:
            return [r[0] for r in db.execute("SELECT version FROM protocols WHERE name = ?", (name,))]

        return await self._tx(run, write=False)

    async def list_protocols(self, name: str | None = None) -> list[ProtocolRow]:
        def run(db: sqlite3.Connection) -> list[ProtocolRow]:
            if name is None:
                rows = db.execute("SELECT * FROM protocols ORDER BY name")
            else:
                rows = db.execute("SELECT * FROM protocols WHERE name = ?", (name,))
            return [ProtocolRow.from_row(r) for r in rows]

        return await self._tx(run, write=False)

    # sessions

    async def claim_session(
        self,
        *,
        new_id: str,
        name: str,
        fields: dict[str, Any],
        now: float,
        is_live: Callable[[SessionRow], bool],
        on_taken: Callable[[SessionRow], Exception],
    ) -> tuple[SessionRow, bool]:
        """Create the session ``name``, or take over its row (same id, same inbox) if its holder is gone.

        ``fields`` holds protocols, features, metadata (as JSON text) and owner, host, pid, proc_start, bell.
        Returns the row and whether it was resumed.
        """

        def run(db: sqlite3.Connection) -> tuple[SessionRow, bool]:
            found = db.execute("SELECT * FROM sessions WHERE name = ?", (name,)).fetchone()
            if found is not None:
                existing = SessionRow.from_row(found)
                if existing.owner != fields["owner"] and is_live(existing):
                    raise on_taken(existing)
                db.execute(
                    """UPDATE sessions SET protocols = :protocols, features = :features, metadata = :metadata,
                       owner = :owner, host = :host, pid = :pid, proc_start = :proc_start, bell = :bell,
                       last_seen = :now, disconnected_at = NULL,
                       connected_at = CASE WHEN owner = :owner THEN connected_at ELSE :now END
                       WHERE id = :id""",
                    {**fields, "now": now, "id": existing.id},
                )
                resumed = existing.owner != fields["owner"] or existing.disconnected_at is not None
                session_id = existing.id
            else:
                db.execute(
                    """INSERT INTO sessions (id, name, protocols, features, metadata, owner, host, pid,
                       proc_start, bell, connected_at, last_seen)
                       VALUES (:id, :name, :protocols, :features, :metadata, :owner, :host, :pid,
                       :proc_start, :bell, :now, :now)""",
                    {**fields, "id": new_id, "name": name, "now": now},
                )
                session_id, resumed = new_id, False
            return self._session(db, session_id), resumed

        return await self._tx(run)

    @staticmethod
    def _session(db: sqlite3.Connection, session_id: str) -> SessionRow:
        row = db.execute(
            f"SELECT *, ({_DEPTH_SQL}) AS queue_depth FROM sessions WHERE id = ?", (session_id,)
        ).fetchone()
        return SessionRow.from_row(row)

    async def heartbeat(self, session_id: str, owner: str, now: float) -> bool:
        """Refresh ``last_seen``; False when this process no longer holds the session."""

        def run(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                "UPDATE sessions SET last_seen = ? WHERE id = ? AND owner = ? AND disconnected_at IS NULL",
                (now, session_id, owner),
            )
            return cur.rowcount == 1

        return await self._tx(run)

    async def end_session(self, session_id: str, owner: str, now: float) -> SessionRow | None:
        def run(db: sqlite3.Connection) -> SessionRow | None:
            cur = db.execute(
                "UPDATE sessions SET disconnected_at = ?, bell = NULL WHERE id = ? AND owner = ?",
                (now, session_id, owner),
            )
            return self._session(db, session_id) if cur.rowcount else None

        return await self._tx(run)

    async def find_session(self, ref: str) -> SessionRow | None:
        """A session by name or by id."""

        def run(db: sqlite3.Connection) -> SessionRow | None:
            row = db.execute(
                f"SELECT *, ({_DEPTH_SQL}) AS queue_depth FROM sessions WHERE name = ? OR id = ? LIMIT 1",
                (ref, ref),
            ).fetchone()
            return None if row is None else SessionRow.from_row(row)

        return await self._tx(run, write=False)

    async def send_context(self, sender_id: str, recipient_ref: str, protocol: str) -> SendContext:
        def run(db: sqlite3.Connection) -> SendContext:
            sender = db.execute("SELECT * FROM sessions WHERE id = ?", (sender_id,)).fetchone()
            recipient = db.execute(
                f"SELECT *, ({_DEPTH_SQL}) AS queue_depth FROM sessions WHERE name = ? OR id = ? LIMIT 1",
                (recipient_ref, recipient_ref),
            ).fetchone()
            capabilities = {
                r[0]: json.loads(r[1])
                for r in db.execute("SELECT version, capabilities FROM protocols WHERE name = ?", (protocol,))
            }
            known = list(capabilities)
            agreed = None
            if recipient is not None:
                row = db.execute(
                    "SELECT version FROM agreements WHERE session_id = ? AND peer_id = ? AND protocol = ?",
                    (sender_id, recipient["id"], protocol),
                ).fetchone()
                agreed = row[0] if row else None
            adapters = [
                AdapterRow.from_row(r)
                for r in db.execute("SELECT * FROM adapters WHERE protocol = ?", (protocol,))
            ]
            return SendContext(
                sender=SessionRow.from_row(sender) if sender else None,
                recipient=SessionRow.from_row(recipient) if recipient else None,
                versions=known,
                capabilities=capabilities,
                agreed=agreed,
                adapters=adapters,
            )

        return await self._tx(run, write=False)

    async def list_sessions(self) -> list[SessionRow]:
        def run(db: sqlite3.Connection) -> list[SessionRow]:
            rows = db.execute(f"SELECT *, ({_DEPTH_SQL}) AS queue_depth FROM sessions ORDER BY name")
            return [SessionRow.from_row(r) for r in rows]

        return await self._tx(run, write=False)

    # negotiation

    async def save_agreements(self, agreements: Sequence[tuple[str, str, str, str]], now: float) -> None:
        """Remember, per (sender, recipient, protocol), the version the sender writes in."""

        def run(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR REPLACE INTO agreements VALUES (?, ?, ?, ?, ?)", [(*a, now) for a in agreements]
            )

        await self._tx(run)

    async def agreed_version(self, session_id: str, peer_id: str, protocol: str) -> str | None:
        def run(db: sqlite3.Connection) -> str | None:
            row = db.execute(
                "SELECT version FROM agreements WHERE session_id = ? AND peer_id = ? AND protocol = ?",
                (session_id, peer_id, protocol),
            ).fetchone()
            return None if row is None else row[0]

        return await self._tx(run, write=False)

    # messages

    async def enqueue(
        self,
        message: NewMessage,
        recipients: Sequence[Target],
        *,
        max_inbox: int,
        result_for: Callable[[tuple[str, ...]], dict[str, Any]],
        refuse_full: bool,
    ) -> EnqueueOutcome:
        """Store a message and one delivery per recipient, all in one transaction.

        A repeated ``idempotency_key`` from the same sender within 24 h stores nothing and returns the
        first answer. A full inbox is refused (``refuse_full``, for send) or skipped (for broadcast);
        ``result_for`` builds the answer to remember from the recipients reached.
        """

        def run(db: sqlite3.Connection) -> EnqueueOutcome:
            if message.idempotency_key is not None:
                row = db.execute(
                    """SELECT result FROM messages WHERE sender_id = ? AND idempotency_key = ? AND created_at > ?
                       ORDER BY created_at DESC LIMIT 1""",
                    (message.sender_id, message.idempotency_key, message.created_at - IDEMPOTENCY_WINDOW),
                ).fetchone()
                if row is not None:
                    return EnqueueOutcome(duplicate_result=json.loads(row[0]))
            reached: list[Target] = []
            full: list[tuple[str, int]] = []
            for target in recipients:
                recipient = target.recipient_id
                depth = db.execute(
                    """SELECT count(*) FROM deliveries WHERE recipient_id = ? AND state IN ('queued', 'leased')
                       AND (expires_at IS NULL OR expires_at > ?)""",
                    (recipient, message.created_at),
                ).fetchone()[0]
                if depth >= max_inbox:
                    if refuse_full:
                        raise InboxFull(
                            f"the recipient's inbox holds {depth} waiting messages (limit {max_inbox}); "
                            "nothing was stored. Retry after it receives and acks some.",
                            recipient_id=recipient,
                            depth=depth,
                        )
                    full.append((recipient, depth))
                else:
                    reached.append(target)
            result = result_for(tuple(t.recipient_id for t in reached))
            self._insert_message(db, message, json.dumps(result))
            self._insert_deliveries(db, message, reached)
            return EnqueueOutcome(delivered_to=tuple(t.recipient_id for t in reached), full=tuple(full))

        return await self._tx(run)

    @staticmethod
    def _insert_message(db: sqlite3.Connection, message: NewMessage, result: str | None) -> None:
        db.execute(
            """INSERT INTO messages (id, sender_id, broadcast, kind, protocol, version, payload, correlation_id,
               reply_to, priority, created_at, expires_at, idempotency_key, result)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
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
            ),
        )

    @staticmethod
    def _insert_deliveries(db: sqlite3.Connection, message: NewMessage, targets: Sequence[Target]) -> None:
        db.executemany(
            """INSERT INTO deliveries (message_id, recipient_id, protocol, priority, expires_at,
               visible_at, updated_at, version, payload, adapted_via) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
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
                )
                for t in targets
            ],
        )

    async def request_for_reply(self, recipient_id: str, message_id: str) -> InboxRow | None:
        """A request this recipient received, for ``reply`` to answer."""

        def run(db: sqlite3.Connection) -> InboxRow | None:
            row = db.execute(
                f"""SELECT {_MESSAGE_COLUMNS} FROM deliveries d
                    JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                    WHERE d.recipient_id = ? AND d.message_id = ?""",
                (recipient_id, message_id),
            ).fetchone()
            return None if row is None else InboxRow.from_row(row)

        return await self._tx(run, write=False)

    async def reply(self, recipient_id: str, request_id: str, message: NewMessage, target: Target) -> bool:
        """Store the reply to the requester and ack the request, in one transaction.

        False (nothing stored) when the request was acked already: a request is answered once.
        """

        def run(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                """UPDATE deliveries SET state = 'acked', acked_at = :now, updated_at = :now
                   WHERE recipient_id = :r AND message_id = :m AND state IN ('queued', 'leased', 'dead_lettered')""",
                {"now": message.created_at, "r": recipient_id, "m": request_id},
            )
            if cur.rowcount != 1:
                return False
            self._insert_message(db, message, None)
            self._insert_deliveries(db, message, [target])
            return True

        return await self._tx(run)

    async def take_reply(self, requester_id: str, request_id: str, now: float) -> InboxRow | None:
        """The reply to this request, if it has come: handed over and acked at once."""

        def run(db: sqlite3.Connection) -> InboxRow | None:
            row = db.execute(
                f"""SELECT d.seq, {_MESSAGE_COLUMNS} FROM deliveries d
                    JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                    WHERE d.recipient_id = ? AND m.correlation_id = ? AND m.kind = 'reply'
                    AND d.state IN ('queued', 'leased', 'acked') ORDER BY d.seq LIMIT 1""",
                (requester_id, request_id),
            ).fetchone()
            if row is None:
                return None
            if row["state"] == "acked":  # already taken by receive and acked: answer all the same
                return InboxRow.from_row(row)
            db.execute(
                """UPDATE deliveries SET state = 'acked', attempts = attempts + 1, acked_at = ?, updated_at = ?
                   WHERE seq = ?""",
                (now, now, row["seq"]),
            )
            return dataclasses.replace(InboxRow.from_row(row), attempts=row["attempts"] + 1, state="acked")

        return await self._tx(run)

    async def sent_request(self, sender_id: str, request_id: str) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT 1 FROM messages WHERE id = ? AND sender_id = ? AND kind = 'request'",
                (request_id, sender_id),
            ).fetchone()
            return row is not None

        return await self._tx(run, write=False)

    @staticmethod
    def _has_ready(db: sqlite3.Connection, recipient_id: str, now: float, protocol: str | None) -> bool:
        sql = "SELECT 1 FROM deliveries WHERE recipient_id = ? AND state IN ('queued', 'leased') AND visible_at <= ?"
        args: list[Any] = [recipient_id, now]
        if protocol is not None:
            sql += " AND protocol = ?"
            args.append(protocol)
        return db.execute(sql + " LIMIT 1", args).fetchone() is not None

    async def lease(
        self,
        recipient_id: str,
        *,
        limit: int,
        lease_seconds: float,
        now: float,
        max_attempts: int,
        protocol: str | None = None,
    ) -> list[InboxRow]:
        """Lease up to ``limit`` ready messages, oldest first within priority.

        Expired messages, and leases that ran out on their last allowed attempt, are dead-lettered on
        the way instead of handed out.
        """

        def run(db: sqlite3.Connection) -> list[InboxRow]:
            db.execute(
                """UPDATE deliveries SET state = 'dead_lettered', reason = 'expired', updated_at = :now
                   WHERE recipient_id = :r AND state IN ('queued', 'leased') AND expires_at <= :now""",
                {"r": recipient_id, "now": now},
            )
            db.execute(
                """UPDATE deliveries SET state = 'dead_lettered', updated_at = :now,
                   reason = 'not acked after ' || attempts || ' deliveries'
                   WHERE recipient_id = :r AND state IN ('queued', 'leased') AND visible_at <= :now
                   AND attempts >= :max""",
                {"r": recipient_id, "now": now, "max": max_attempts},
            )
            sql = f"""SELECT d.seq, {_MESSAGE_COLUMNS} FROM deliveries d
                      JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                      WHERE d.recipient_id = ? AND d.state IN ('queued', 'leased') AND d.visible_at <= ?"""
            args: list[Any] = [recipient_id, now]
            if protocol is not None:
                sql += " AND d.protocol = ?"
                args.append(protocol)
            rows = db.execute(sql + " ORDER BY d.priority DESC, d.seq LIMIT ?", [*args, limit]).fetchall()
            until = now + lease_seconds
            db.executemany(
                """UPDATE deliveries SET state = 'leased', attempts = attempts + 1, visible_at = ?, updated_at = ?
                   WHERE seq = ?""",
                [(until, now, r["seq"]) for r in rows],
            )
            return [
                dataclasses.replace(InboxRow.from_row(r), attempts=r["attempts"] + 1, visible_at=until)
                for r in rows
            ]

        def check_then_lease() -> list[InboxRow]:
            # An autocommit read first, in the same thread hand-off: an empty inbox (the common case
            # for a long-poll) never takes the write lock.
            if not self._retrying(self._has_ready, recipient_id, now, protocol, write=False):
                return []
            return self._retrying(run, write=True)

        if self._conn is None:
            raise StoreUnavailable("the store is closed")
        try:
            return await self._conn._execute(check_then_lease)
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from exc

    async def ack(self, recipient_id: str, message_ids: Sequence[str], now: float) -> dict[str, str]:
        """Ack this recipient's deliveries: the outcome per id; if any id is not theirs, only those
        ids come back, as ``unknown``, and nothing changes."""

        def run(db: sqlite3.Connection) -> dict[str, str]:
            marks = ",".join("?" * len(message_ids))
            rows = db.execute(
                f"SELECT message_id, state, attempts FROM deliveries WHERE recipient_id = ? AND message_id IN ({marks})",
                (recipient_id, *message_ids),
            ).fetchall()
            found = {r["message_id"]: (r["state"], r["attempts"]) for r in rows}
            missing = [m for m in message_ids if m not in found]
            if missing:
                return {m: "unknown" for m in missing}
            outcome: dict[str, str] = {}
            for message_id, (state, attempts) in found.items():
                if state == DeliveryState.acked:
                    outcome[message_id] = "already_acked"
                elif state == DeliveryState.dead_lettered:
                    outcome[message_id] = "dead_lettered"
                elif attempts == 0:
                    outcome[message_id] = "not_received"
                else:
                    db.execute(
                        """UPDATE deliveries SET state = 'acked', acked_at = ?, updated_at = ?
                           WHERE recipient_id = ? AND message_id = ?""",
                        (now, now, recipient_id, message_id),
                    )
                    outcome[message_id] = "acked"
            return outcome

        return await self._tx(run)

    async def peek(self, recipient_id: str, limit: int, now: float) -> list[InboxRow]:
        def run(db: sqlite3.Connection) -> list[InboxRow]:
            rows = db.execute(
                f"""SELECT {_MESSAGE_COLUMNS} FROM deliveries d
                    JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                    WHERE d.recipient_id = ? AND d.state IN ('queued', 'leased')
                    AND (d.expires_at IS NULL OR d.expires_at > ?)
                    ORDER BY d.priority DESC, d.seq LIMIT ?""",
                (recipient_id, now, limit),
            )
            return [InboxRow.from_row(r) for r in rows]

        return await self._tx(run, write=False)

    async def dead_letters(
        self, recipient_id: str, *, limit: int, before_seq: int | None
    ) -> list[tuple[int, InboxRow]]:
        """This recipient's dead letters, newest first, with their ``seq`` for keyset pagination."""

        def run(db: sqlite3.Connection) -> list[tuple[int, InboxRow]]:
            rows = db.execute(
                f"""SELECT d.seq, {_MESSAGE_COLUMNS} FROM deliveries d
                    JOIN messages m ON m.id = d.message_id LEFT JOIN sessions s ON s.id = m.sender_id
                    WHERE d.recipient_id = ? AND d.state = 'dead_lettered' AND d.seq < ?
                    ORDER BY d.seq DESC LIMIT ?""",
                (recipient_id, before_seq if before_seq is not None else 2**62, limit),
            )
            return [(r["seq"], InboxRow.from_row(r)) for r in rows]

        return await self._tx(run, write=False)

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
    ) -> dict[str, str]:
        """Put this recipient's deliveries in ``from_states`` back in the queue (replay, release).

        Returns the outcome per id: ``requeued``, or the state it was in; only ``unknown`` ids (and
        nothing changed) when any id is not the recipient's. Replay clears the expiry: a replayed
        message that had expired would otherwise die again at once.
        """

        def run(db: sqlite3.Connection) -> dict[str, str]:
            marks = ",".join("?" * len(message_ids))
            found = {
                r["message_id"]: r["state"]
                for r in db.execute(
                    f"SELECT message_id, state FROM deliveries WHERE recipient_id = ? AND message_id IN ({marks})",
                    (recipient_id, *message_ids),
                )
            }
            missing = [m for m in message_ids if m not in found]
            if missing:
                return {m: "unknown" for m in missing}
            movable = [m for m in message_ids if found[m] in from_states]
            if max_inbox is not None and movable:
                depth = db.execute(
                    """SELECT count(*) FROM deliveries WHERE recipient_id = ? AND state IN ('queued', 'leased')
                       AND (expires_at IS NULL OR expires_at > ?)""",
                    (recipient_id, now),
                ).fetchone()[0]
                if depth + len(movable) > max_inbox:
                    raise InboxFull(
                        f"your inbox holds {depth} waiting messages; requeueing {len(movable)} more would pass "
                        f"the limit of {max_inbox}. Receive and ack some first.",
                        recipient_id=recipient_id,
                        depth=depth,
                    )
            extra = ", attempts = 0, reason = NULL, expires_at = NULL" if reset_attempts else ""
            db.executemany(
                f"""UPDATE deliveries SET state = 'queued', visible_at = ?, updated_at = ?{extra}
                    WHERE recipient_id = ? AND message_id = ?""",
                [(now + delay, now, recipient_id, m) for m in movable],
            )
            return {m: ("requeued" if m in movable else found[m]) for m in message_ids}

        return await self._tx(run)

    async def message_status(self, sender_id: str, message_ids: Sequence[str]) -> list[StatusRow]:
        """Every delivery of these messages, when this session sent them."""

        def run(db: sqlite3.Connection) -> list[StatusRow]:
            marks = ",".join("?" * len(message_ids))
            rows = db.execute(
                f"""SELECT d.message_id, m.broadcast, m.protocol, m.version, m.created_at, d.recipient_id,
                    s.name AS recipient_name, d.state, d.reason, d.attempts, d.visible_at, d.expires_at,
                    d.updated_at, d.acked_at, COALESCE(d.version, m.version) AS delivered_version
                    FROM messages m JOIN deliveries d ON d.message_id = m.id
                    LEFT JOIN sessions s ON s.id = d.recipient_id
                    WHERE m.sender_id = ? AND m.id IN ({marks}) ORDER BY d.seq""",
                (sender_id, *message_ids),
            )
            return [StatusRow.from_row(r) for r in rows]

        return await self._tx(run, write=False)

    async def known_messages(self, sender_id: str, message_ids: Sequence[str]) -> set[str]:
        """Which of these ids this session sent (including broadcasts that reached no one)."""

        def run(db: sqlite3.Connection) -> set[str]:
            marks = ",".join("?" * len(message_ids))
            rows = db.execute(
                f"SELECT id FROM messages WHERE sender_id = ? AND id IN ({marks})", (sender_id, *message_ids)
            )
            return {r[0] for r in rows}

        return await self._tx(run, write=False)

    # adapters

    async def add_adapter(self, row: AdapterRow) -> str:
        def run(db: sqlite3.Connection) -> str:
            found = db.execute(
                "SELECT fingerprint FROM adapters WHERE protocol = ? AND from_version = ? AND to_version = ?",
                (row.protocol, row.from_version, row.to_version),
            ).fetchone()
            if found is not None:
                if found[0] == row.fingerprint:
                    return "unchanged"
                raise ProtocolConflict(
                    f"an adapter {row.protocol} {row.from_version} -> {row.to_version} is already registered with "
                    "other steps; adapters are immutable like protocols"
                )
            db.execute(
                "INSERT INTO adapters VALUES (?, ?, ?, ?, ?, ?)",
                (
                    row.protocol,
                    row.from_version,
                    row.to_version,
                    json.dumps(row.steps),
                    row.fingerprint,
                    row.registered_at,
                ),
            )
            return "registered"

        return await self._tx(run)

    async def list_adapters(self, protocol: str | None = None) -> list[AdapterRow]:
        def run(db: sqlite3.Connection) -> list[AdapterRow]:
            if protocol is None:
                rows = db.execute("SELECT * FROM adapters ORDER BY protocol, from_version, to_version")
            else:
                rows = db.execute("SELECT * FROM adapters WHERE protocol = ?", (protocol,))
            return [AdapterRow.from_row(r) for r in rows]

        return await self._tx(run, write=False)

    async def wal_size(self) -> int:
        try:
            return (self.path.parent / (self.path.name + "-wal")).stat().st_size
        except FileNotFoundError:
            return 0

    async def prune(self, *, before: float) -> dict[str, int]:
        """Delete what retention no longer keeps: finished deliveries, orphan messages, long-gone sessions."""

        def run(db: sqlite3.Connection) -> dict[str, int]:
            counts = {}
            counts["deliveries"] = db.execute(
                "DELETE FROM deliveries WHERE state IN ('acked', 'dead_lettered') AND updated_at < ?",
                (before,),
            ).rowcount
            counts["messages"] = db.execute(
                """DELETE FROM messages WHERE created_at < ?
                   AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = messages.id)""",
                (before,),
            ).rowcount
            counts["sessions"] = db.execute(
                f"""DELETE FROM sessions WHERE last_seen < ? AND ({_DEPTH_SQL}) = 0""", (before,)
            ).rowcount
            db.execute(
                "DELETE FROM agreements WHERE session_id NOT IN (SELECT id FROM sessions) "
                "OR peer_id NOT IN (SELECT id FROM sessions)"
            )
            return counts

        return await self._tx(run)


_DEPTH_SQL = (
    "SELECT count(*) FROM deliveries d WHERE d.recipient_id = sessions.id AND d.state IN ('queued', 'leased')"
)
