"""What agents declare: protocols, adapters, sessions and their negotiated agreements."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ProtocolConflict
from .base import DEPTH_SQL, StoreBase
from .rows import (
    AdapterRow,
    ProtocolRow,
    SendContext,
    SessionRow,
)


class Catalog(StoreBase):
    """Protocols and adapters (immutable once stored), sessions, and agreements between them."""

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
            f"SELECT *, ({DEPTH_SQL}) AS queue_depth FROM sessions WHERE id = ?", (session_id,)
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
                f"SELECT *, ({DEPTH_SQL}) AS queue_depth FROM sessions WHERE name = ? OR id = ? LIMIT 1",
                (ref, ref),
            ).fetchone()
            return None if row is None else SessionRow.from_row(row)

        return await self._tx(run, write=False)

    async def list_sessions(self) -> list[SessionRow]:
        def run(db: sqlite3.Connection) -> list[SessionRow]:
            rows = db.execute(f"SELECT *, ({DEPTH_SQL}) AS queue_depth FROM sessions ORDER BY name")
            return [SessionRow.from_row(r) for r in rows]

        return await self._tx(run, write=False)

    async def save_agreements(self, agreements: Sequence[tuple[str, str, str, str]], now: float) -> None:
        """Remember, per (sender, recipient, protocol), the version the sender writes in."""

        def run(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT OR REPLACE INTO agreements VALUES (?, ?, ?, ?, ?)", [(*a, now) for a in agreements]
            )

        await self._tx(run)


def read_send_context(
    db: sqlite3.Connection, sender_id: str, recipient_ref: str, protocol: str
) -> SendContext:
    """Who sends to whom, the protocol's versions and adapters, and any agreed version: what send decides on."""
    sender = db.execute("SELECT * FROM sessions WHERE id = ?", (sender_id,)).fetchone()
    # No queue depth here: the enqueue counts it, in the same transaction as the insert.
    recipient = db.execute(
        "SELECT * FROM sessions WHERE name = ? OR id = ? LIMIT 1", (recipient_ref, recipient_ref)
    ).fetchone()
    capabilities = {
        r[0]: json.loads(r[1])
        for r in db.execute("SELECT version, capabilities FROM protocols WHERE name = ?", (protocol,))
    }
    agreed = None
    if recipient is not None:
        row = db.execute(
            "SELECT version FROM agreements WHERE session_id = ? AND peer_id = ? AND protocol = ?",
            (sender_id, recipient["id"], protocol),
        ).fetchone()
        agreed = row[0] if row else None
    adapters = [
        AdapterRow.from_row(r) for r in db.execute("SELECT * FROM adapters WHERE protocol = ?", (protocol,))
    ]
    return SendContext(
        sender=SessionRow.from_row(sender) if sender else None,
        recipient=SessionRow.from_row(recipient) if recipient else None,
        versions=list(capabilities),
        capabilities=capabilities,
        agreed=agreed,
        adapters=adapters,
    )
