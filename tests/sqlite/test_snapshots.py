"""The decision snapshots a SQLite store keeps: reused while nothing they hold changes, read afresh
as soon as anything does, whichever process (or other program) changed it.

Two stores on one file stand for two broker processes; a plain ``sqlite3`` connection for a program
that is not a broker at all.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from contract.store_contract import T0, adapter, connect, protocol

from mcp_broker.store.contract import SnapshotQuery
from mcp_broker.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio


@pytest.fixture
async def stores(db_path: Path) -> AsyncIterator[tuple[SqliteStore, SqliteStore]]:
    here, there = SqliteStore(db_path), SqliteStore(db_path)
    await here.open()
    await there.open()
    try:
        yield here, there
    finally:
        await there.close()
        await here.close()


def send_query(sender_id: str, *names: str) -> SnapshotQuery:
    """What a send from ``sender_id`` to ``names`` reads (as the domain's ``send_query`` asks)."""
    return SnapshotQuery(
        session_ids=[sender_id],
        session_refs=[(name, False) for name in names],
        protocols=["chat"],
        agreed_by=sender_id,
    )


async def test_a_snapshot_is_reused_while_nothing_changes(stores: tuple[SqliteStore, SqliteStore]) -> None:
    here, _ = stores
    await here.add_protocol(protocol())
    alice, bob = await connect(here, "alice"), await connect(here, "bob")

    first = await here.snapshot(send_query(alice.id, "bob"))
    again = await here.snapshot(send_query(alice.id, "bob"))
    assert again is first
    assert first.refs == {"bob": bob.id}
    # Another question is another snapshot, read for itself.
    other = await here.snapshot(send_query(bob.id, "alice"))
    assert other is not first and other.refs == {"alice": alice.id}


async def test_every_change_another_process_makes_is_seen_at_the_next_snapshot(
    stores: tuple[SqliteStore, SqliteStore],
) -> None:
    here, there = stores
    await here.add_protocol(protocol())
    alice = await connect(here, "alice")
    query = send_query(alice.id, "bob")

    absent = await here.snapshot(query)
    assert absent.refs == {}  # bob is not there yet: remembered, until he is

    bob = await connect(there, "bob")
    seen = await here.snapshot(query)
    assert seen.refs == {"bob": bob.id}

    assert await there.heartbeat(bob.id, bob.owner, T0 + 5)
    seen = await here.snapshot(query)
    assert seen.sessions[bob.id].last_seen == T0 + 5

    await there.add_protocol(protocol(version="2.0.0", fingerprint="f2"))
    seen = await here.snapshot(query)
    assert sorted(seen.versions["chat"]) == ["1.0.0", "2.0.0"]

    await there.add_adapter(adapter())
    seen = await here.snapshot(query)
    assert [(a.from_version, a.to_version) for a in seen.adapters["chat"]] == [("1.0.0", "2.0.0")]

    await there.save_agreements([(alice.id, bob.id, "chat", "2.0.0")], T0 + 6)
    seen = await here.snapshot(query)
    assert seen.agreed == {(bob.id, "chat"): "2.0.0"}

    await there.end_session(bob.id, bob.owner, T0 + 7)
    seen = await here.snapshot(query)
    assert seen.sessions[bob.id].disconnected_at == T0 + 7


async def test_a_change_by_another_program_is_seen_too(
    stores: tuple[SqliteStore, SqliteStore], db_path: Path
) -> None:
    here, _ = stores
    await here.add_protocol(protocol())
    alice, bob = await connect(here, "alice"), await connect(here, "bob")
    query = send_query(alice.id, "bob")
    assert (await here.snapshot(query)).sessions[bob.id].last_seen == T0

    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        conn.execute("UPDATE sessions SET last_seen = ? WHERE id = ?", (T0 + 9, bob.id))
        conn.execute("DELETE FROM protocols WHERE name = 'chat'")
    finally:
        conn.close()

    seen = await here.snapshot(query)
    assert seen.sessions[bob.id].last_seen == T0 + 9
    assert seen.versions == {"chat": {}}


async def test_queue_depths_are_read_afresh_every_time(stores: tuple[SqliteStore, SqliteStore]) -> None:
    here, _ = stores
    await connect(here, "alice")
    query = SnapshotQuery(all_sessions=True, protocols=None, now=T0)
    assert await here.snapshot(query) is not await here.snapshot(query)
