"""Protocols and adapters (immutable once stored), sessions, agreements, and the decision snapshot."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from ...lru import Lru
from ..contract import (
    AdapterRow,
    Added,
    Conflict,
    Full,
    ProtocolRow,
    SessionClaim,
    SessionRow,
    Snapshot,
    SnapshotQuery,
)
from .base import DEPTH_SQL, StoreBase
from .rows import adapter_row, protocol_row, session_row

# Every read of sessions starts here, so it is this namespace's sessions only: append "AND ...".
SESSION_WITH_DEPTH = f"SELECT *, ({DEPTH_SQL}) AS queue_depth FROM sessions WHERE namespace = ns()"


SNAPSHOTS_KEPT = 256  # decision snapshots a process keeps for reuse (see 008_generation.sql)


class Catalog(StoreBase):
    """Protocols and adapters, sessions, and agreements between them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The snapshots read at ``_generation``: any change to what they hold moves the counter on.
        self._snapshots: Lru[tuple[Any, ...], Snapshot] = Lru(SNAPSHOTS_KEPT)
        self._generation: int | None = None

    async def add_protocol(self, row: ProtocolRow, *, max_versions: int | None = None) -> Added:
        def run(db: sqlite3.Connection) -> Added:
            found = db.execute(
                "SELECT fingerprint FROM protocols WHERE namespace = ns() AND name = ? AND version = ?",
                (row.name, row.version),
            ).fetchone()
            if found is not None:
                return Added.unchanged if found[0] == row.fingerprint else Added.conflict
            if (
                max_versions is not None
                and db.execute("SELECT count(*) FROM protocols WHERE namespace = ns()").fetchone()[0]
                >= max_versions
            ):
                return Added.full
            db.execute(
                """INSERT INTO protocols (namespace, name, version, schema, capabilities, metadata, fingerprint,
                   registered_at, response_schema) VALUES (ns(), ?, ?, ?, ?, ?, ?, ?, ?)""",
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
            return Added.registered

        return await self._tx(run)

    async def get_protocol(self, name: str, version: str) -> ProtocolRow | None:
        def run(db: sqlite3.Connection) -> ProtocolRow | None:
            row = db.execute(
                "SELECT * FROM protocols WHERE namespace = ns() AND name = ? AND version = ?", (name, version)
            ).fetchone()
            return None if row is None else protocol_row(row)

        return await self._tx(run, write=False)

    async def list_protocols(self, name: str | None = None) -> list[ProtocolRow]:
        def run(db: sqlite3.Connection) -> list[ProtocolRow]:
            if name is None:
                rows = db.execute("SELECT * FROM protocols WHERE namespace = ns() ORDER BY name")
            else:
                rows = db.execute("SELECT * FROM protocols WHERE namespace = ns() AND name = ?", (name,))
            return [protocol_row(r) for r in rows]

        return await self._tx(run, write=False)

    async def add_adapter(self, row: AdapterRow, *, max_adapters: int | None = None) -> Added:
        def run(db: sqlite3.Connection) -> Added:
            found = db.execute(
                """SELECT fingerprint FROM adapters
                   WHERE namespace = ns() AND protocol = ? AND from_version = ? AND to_version = ?""",
                (row.protocol, row.from_version, row.to_version),
            ).fetchone()
            if found is not None:
                return Added.unchanged if found[0] == row.fingerprint else Added.conflict
            if (
                max_adapters is not None
                and db.execute("SELECT count(*) FROM adapters WHERE namespace = ns()").fetchone()[0]
                >= max_adapters
            ):
                return Added.full
            db.execute(
                """INSERT INTO adapters (namespace, protocol, from_version, to_version, steps, fingerprint,
                   registered_at) VALUES (ns(), ?, ?, ?, ?, ?, ?)""",
                (
                    row.protocol,
                    row.from_version,
                    row.to_version,
                    json.dumps(row.steps),
                    row.fingerprint,
                    row.registered_at,
                ),
            )
            return Added.registered

        return await self._tx(run)

    async def list_adapters(self, protocol: str | None = None) -> list[AdapterRow]:
        def run(db: sqlite3.Connection) -> list[AdapterRow]:
            if protocol is None:
                rows = db.execute(
                    "SELECT * FROM adapters WHERE namespace = ns() ORDER BY protocol, from_version, to_version"
                )
            else:
                rows = db.execute(
                    "SELECT * FROM adapters WHERE namespace = ns() AND protocol = ?", (protocol,)
                )
            return [adapter_row(r) for r in rows]

        return await self._tx(run, write=False)

    async def snapshot(self, query: SnapshotQuery) -> Snapshot:
        if query.all_sessions:  # carries queue depths, which no counter follows
            return await self._tx(read_snapshot, query, write=False)
        return await self._tx(self._kept_snapshot, query, write=False)

    def _kept_snapshot(self, db: sqlite3.Connection, query: SnapshotQuery) -> Snapshot:
        """The snapshot for ``query``: the one kept from an earlier read while nothing it holds has
        changed since (the generation counter, read in the same transaction), else read afresh.
        Callers share a kept snapshot, which the contract says never to change."""
        generation = db.execute("SELECT n FROM generation").fetchone()[0]
        if generation != self._generation:
            self._snapshots.clear()
            self._generation = generation
        protocols = None if query.protocols is None else tuple(query.protocols)
        key = (tuple(query.session_ids), tuple(query.session_refs), protocols, query.agreed_by)
        kept = self._snapshots.get(key)
        if kept is None:
            kept = read_snapshot(db, query)
            self._snapshots.put(key, kept)
        return kept

    async def claim_session(self, claim: SessionClaim) -> SessionRow:
        def run(db: sqlite3.Connection) -> SessionRow:
            found = db.execute(
                "SELECT id, owner FROM sessions WHERE namespace = ns() AND name = ?", (claim.name,)
            ).fetchone()
            if (found is not None) != claim.expect_exists or (
                found is not None and found["owner"] != claim.expect_owner
            ):
                raise Conflict(f"session {claim.name!r} changed since it was read")
            fields: dict[str, Any] = {
                "protocols": claim.protocols,
                "features": claim.features,
                "metadata": claim.metadata,
                "owner": claim.owner,
                "host": claim.host,
                "pid": claim.pid,
                "proc_start": claim.proc_start,
                "broker_version": claim.broker_version,
                "now": claim.now,
            }
            if found is not None:
                session_id = found["id"]
                db.execute(
                    """UPDATE sessions SET protocols = :protocols, features = :features, metadata = :metadata,
                       owner = :owner, host = :host, pid = :pid, proc_start = :proc_start,
                       broker_version = :broker_version, last_seen = :now, disconnected_at = NULL, revision = revision + 1,
                       connected_at = CASE WHEN owner = :owner THEN connected_at ELSE :now END
                       WHERE namespace = ns() AND id = :id""",
                    {**fields, "id": session_id},
                )
            else:
                held = (
                    db.execute("SELECT count(*) FROM sessions WHERE namespace = ns()").fetchone()[0]
                    if claim.max_sessions
                    else 0
                )
                if claim.max_sessions is not None and held >= claim.max_sessions:
                    raise Full(f"the store holds {claim.max_sessions} sessions")
                session_id = claim.new_id
                db.execute(
                    """INSERT INTO sessions (id, namespace, name, protocols, features, metadata, owner, host,
                       pid, proc_start, broker_version, connected_at, last_seen)
                       VALUES (:id, ns(), :name, :protocols, :features, :metadata, :owner, :host, :pid,
                       :proc_start, :broker_version, :now, :now)""",
                    {**fields, "id": session_id, "name": claim.name},
                )
            return _session(db, session_id, claim.now)

        return await self._tx(run)

    async def heartbeat(self, session_id: str, owner: str, now: float) -> bool:
        def run(db: sqlite3.Connection) -> bool:
            cur = db.execute(
                """UPDATE sessions SET last_seen = ?
                   WHERE namespace = ns() AND id = ? AND owner = ? AND disconnected_at IS NULL""",
                (now, session_id, owner),
            )
            return cur.rowcount == 1

        return await self._tx(run)

    async def end_session(self, session_id: str, owner: str, now: float) -> SessionRow | None:
        def run(db: sqlite3.Connection) -> SessionRow | None:
            cur = db.execute(
                "UPDATE sessions SET disconnected_at = ? WHERE namespace = ns() AND id = ? AND owner = ?",
                (now, session_id, owner),
            )
            return _session(db, session_id, now) if cur.rowcount else None

        return await self._tx(run)

    async def find_session(self, ref: str, *, is_id: bool, now: float) -> SessionRow | None:
        def run(db: sqlite3.Connection) -> SessionRow | None:
            column = "id" if is_id else "name"
            row = db.execute(f"{SESSION_WITH_DEPTH} AND {column} = :ref", {"ref": ref, "now": now}).fetchone()
            return None if row is None else session_row(row)

        return await self._tx(run, write=False)

    async def list_sessions(self, now: float) -> list[SessionRow]:
        def run(db: sqlite3.Connection) -> list[SessionRow]:
            rows = db.execute(f"{SESSION_WITH_DEPTH} ORDER BY name", {"now": now})
            return [session_row(r) for r in rows]

        return await self._tx(run, write=False)

    async def save_agreements(self, agreements: Sequence[tuple[str, str, str, str]], now: float) -> None:
        def run(db: sqlite3.Connection) -> None:
            db.executemany(
                """INSERT OR REPLACE INTO agreements (session_id, peer_id, protocol, version, agreed_at, namespace)
                   VALUES (?, ?, ?, ?, ?, ns())""",
                [(*a, now) for a in agreements],
            )

        await self._tx(run)


def _session(db: sqlite3.Connection, session_id: str, now: float) -> SessionRow:
    row = db.execute(f"{SESSION_WITH_DEPTH} AND id = :id", {"id": session_id, "now": now}).fetchone()
    return session_row(row)


def read_snapshot(db: sqlite3.Connection, query: SnapshotQuery) -> Snapshot:
    """Sessions, versions, adapters and agreements for one decision, in one read transaction.

    Sessions read by id or reference carry no queue depth (the enqueue counts it where it matters);
    ``all_sessions`` reads every session with its depth.
    """
    # Long on purpose: one read transaction answers a whole SnapshotQuery, part by part.
    sessions: dict[str, SessionRow] = {}
    refs: dict[str, str] = {}
    if query.all_sessions:
        for r in db.execute(f"{SESSION_WITH_DEPTH} ORDER BY name", {"now": query.now}):
            sessions[r["id"]] = session_row(r)
    else:
        for session_id in query.session_ids:
            r = db.execute(
                "SELECT * FROM sessions WHERE namespace = ns() AND id = ?", (session_id,)
            ).fetchone()
            if r is not None:
                sessions[r["id"]] = session_row(r)
    for ref, is_id in query.session_refs:
        if query.all_sessions:
            match = next((s.id for s in sessions.values() if (s.id if is_id else s.name) == ref), None)
        else:
            column = "id" if is_id else "name"
            r = db.execute(
                f"SELECT * FROM sessions WHERE namespace = ns() AND {column} = ?", (ref,)
            ).fetchone()
            match = None if r is None else r["id"]
            if r is not None:
                sessions.setdefault(r["id"], session_row(r))
        if match is not None:
            refs[ref] = match

    names = query.protocols
    if names is None:
        rows = db.execute(
            "SELECT name, version, capabilities FROM protocols WHERE namespace = ns()"
        ).fetchall()
        adapter_rows = db.execute("SELECT * FROM adapters WHERE namespace = ns()").fetchall()
    else:
        marks = ",".join("?" * len(names))
        rows = db.execute(
            f"SELECT name, version, capabilities FROM protocols WHERE namespace = ns() AND name IN ({marks})",
            tuple(names),
        ).fetchall()
        adapter_rows = db.execute(
            f"SELECT * FROM adapters WHERE namespace = ns() AND protocol IN ({marks})", tuple(names)
        ).fetchall()
    versions: dict[str, dict[str, list[str]]] = {name: {} for name in names or ()}
    for r in rows:
        versions.setdefault(r["name"], {})[r["version"]] = json.loads(r["capabilities"])
    adapters: dict[str, list[AdapterRow]] = {name: [] for name in versions}
    for r in adapter_rows:
        adapters.setdefault(r["protocol"], []).append(adapter_row(r))

    agreed: dict[tuple[str, str], str] = {}
    if query.agreed_by is not None:
        peers = [s for s in sessions if s != query.agreed_by]
        if peers:
            marks = ",".join("?" * len(peers))
            for r in db.execute(
                f"""SELECT peer_id, protocol, version FROM agreements
                    WHERE namespace = ns() AND session_id = ? AND peer_id IN ({marks})""",
                (query.agreed_by, *peers),
            ):
                agreed[(r["peer_id"], r["protocol"])] = r["version"]
    return Snapshot(sessions=sessions, refs=refs, versions=versions, adapters=adapters, agreed=agreed)
