"""Integration tier: ``SqliteStore`` on a real file in ``tmp_path``, with real locks from other connections.

Several stores on one file stand for several broker processes; a plain ``sqlite3`` connection stands
for any other program holding the write lock.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_broker.errors import InboxFull, NameTaken, ProtocolConflict, StoreBusy, StoreUnavailable
from mcp_broker.store import NewMessage, ProtocolRow, SessionRow, SqliteStore, Target

pytestmark = pytest.mark.anyio


# --- helpers -------------------------------------------------------------------------------------


@asynccontextmanager
async def opened(path: Path, **kwargs: Any) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(path, **kwargs)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    async with opened(db_path) as s:
        yield s


@contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another program holding the database's write lock until the block ends."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def protocol_row(name: str = "chat", version: str = "1.0.0", fingerprint: str = "f1") -> ProtocolRow:
    return ProtocolRow(name, version, '{"type":"object"}', ["point_to_point"], {}, fingerprint, time.time())


def session_fields(owner: str) -> dict[str, Any]:
    return {
        "protocols": json.dumps([{"name": "chat", "versions": "*"}]),
        "features": "[]",
        "metadata": "{}",
        "owner": owner,
        "host": "test-host",
        "pid": None,
        "proc_start": None,
        "bell": None,
    }


async def claim(
    store: SqliteStore, name: str, owner: str | None = None, live: bool = True
) -> tuple[SessionRow, bool]:
    return await store.claim_session(
        new_id=str(uuid.uuid4()),
        name=name,
        fields=session_fields(owner or f"owner-{name}"),
        now=time.time(),
        is_live=lambda row: live,
        on_taken=lambda row: NameTaken(f"{row.name} is taken"),
    )


def message(sender_id: str, n: int = 0, **kwargs: Any) -> NewMessage:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "sender_id": sender_id,
        "broadcast": False,
        "protocol": "chat",
        "version": "1.0.0",
        "payload": json.dumps({"n": n}),
        "priority": 1,
        "created_at": time.time(),
    }
    return NewMessage(**(values | kwargs))


async def put(
    store: SqliteStore, msg: NewMessage, *recipients: str, max_inbox: int = 10_000, refuse_full: bool = True
) -> Any:
    return await store.enqueue(
        msg,
        [Target(r) for r in recipients],
        max_inbox=max_inbox,
        result_for=lambda reached: {"message_id": msg.id, "reached": list(reached)},
        refuse_full=refuse_full,
    )


def raw_query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def migration_numbers() -> list[int]:
    folder = resources.files("mcp_broker") / "sql"
    return sorted(int(e.name.split("_", 1)[0]) for e in folder.iterdir() if e.name.endswith(".sql"))


# --- the file: permissions, WAL, migrations, reopening -------------------------------------------


async def test_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "broker.db"
    old = os.umask(0)  # even a permissive umask must not widen the file
    try:
        async with opened(path) as s:
            await s.add_protocol(protocol_row())
            for file in (path, path.with_name("broker.db-wal"), path.with_name("broker.db-shm")):
                assert file.exists(), file
                assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)


async def test_wal_mode_is_persistent(store: SqliteStore, db_path: Path) -> None:
    assert raw_query(db_path, "PRAGMA journal_mode") == [("wal",)]


@pytest.mark.parametrize(("durability", "expected"), [("normal", 1), ("full", 2)])
async def test_durability_sets_synchronous(db_path: Path, durability: str, expected: int) -> None:
    async with opened(db_path, durability=durability) as s:
        # synchronous is per connection, so ask the store's own connection.
        level = await s._tx(lambda db: db.execute("PRAGMA synchronous").fetchone()[0], write=False)
    assert level == expected


async def test_migrations_are_recorded_and_applied_once(db_path: Path) -> None:
    async with opened(db_path) as s:
        await s.add_protocol(protocol_row())
    first = raw_query(db_path, "SELECT version, applied_at FROM schema_migrations ORDER BY version")
    assert [v for v, _ in first] == migration_numbers()
    assert migration_numbers()[0] == 1
    tables = {r[0] for r in raw_query(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"protocols", "sessions", "agreements", "messages", "deliveries", "schema_migrations"} <= tables
    async with opened(db_path):
        pass
    assert raw_query(db_path, "SELECT version, applied_at FROM schema_migrations ORDER BY version") == first


async def test_stores_opening_a_fresh_file_at_once_migrate_it_once(db_path: Path) -> None:
    stores = [SqliteStore(db_path) for _ in range(6)]
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for s in stores:
                    tg.start_soon(s.open)
        for s in stores:
            assert await s.integrity_check() == "ok"
    finally:
        for s in stores:
            await s.close()
    assert [v for (v,) in raw_query(db_path, "SELECT version FROM schema_migrations ORDER BY version")] == (
        migration_numbers()
    )


async def test_reopening_keeps_everything(db_path: Path) -> None:
    proto = protocol_row()
    async with opened(db_path) as s:
        await s.add_protocol(proto)
        alice, _ = await claim(s, "alice")
        bob, _ = await claim(s, "bob")
        sent = message(alice.id, 7)
        await put(s, sent, bob.id)
    async with opened(db_path) as s:
        assert await s.get_protocol("chat", "1.0.0") == proto
        assert await s.protocol_versions("chat") == ["1.0.0"]
        found = await s.find_session("bob")
        assert found is not None and found.id == bob.id and found.queue_depth == 1
        (waiting,) = await s.peek(bob.id, 10, time.time())
        assert waiting.message_id == sent.id and json.loads(waiting.payload) == {"n": 7}
        assert waiting.sender_name == "alice"
        assert await s.integrity_check() == "ok"


async def test_unopenable_path_is_store_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(StoreUnavailable, match="cannot open the database") as info:
        await SqliteStore(directory).open()
    assert str(info.value).startswith("STORE_UNAVAILABLE: ")


async def test_not_a_database_is_store_unavailable(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a SQLite database, just some text that is long enough" * 100)
    with pytest.raises(StoreUnavailable):
        await SqliteStore(db_path).open()
    assert db_path.read_bytes().startswith(b"this is not")


async def test_closed_store_is_unavailable(db_path: Path) -> None:
    s = SqliteStore(db_path)
    await s.open()
    await s.close()
    await s.close()  # twice is harmless
    with pytest.raises(StoreUnavailable, match="closed"):
        await s.get_protocol("chat", "1.0.0")
    with pytest.raises(StoreUnavailable, match="closed"):
        await s.lease("x", limit=1, lease_seconds=1, now=time.time(), max_attempts=5)


# --- transactions, locks, retry ------------------------------------------------------------------


async def test_failed_transaction_rolls_back_and_connection_stays_usable(
    store: SqliteStore, db_path: Path
) -> None:
    def insert_then_fail(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO protocols VALUES ('ghost', '1.0.0', '{}', '[]', '{}', 'f', 0, NULL)",
        )
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store._tx(insert_then_fail)
    assert await store.get_protocol("ghost", "1.0.0") is None
    assert await store.add_protocol(protocol_row()) == "registered"
    assert raw_query(db_path, "SELECT name FROM protocols") == [("chat",)]


async def test_reads_go_on_while_another_program_holds_the_write_lock(
    store: SqliteStore, db_path: Path
) -> None:
    await store.add_protocol(protocol_row())
    with write_lock(db_path), anyio.fail_after(5):
        assert await store.get_protocol("chat", "1.0.0") is not None
        assert await store.list_sessions() == []
        # An empty inbox is checked without the write lock, so a long-poll is never blocked by writers.
        assert await store.lease("nobody", limit=5, lease_seconds=30, now=time.time(), max_attempts=5) == []


async def test_write_waits_out_a_brief_lock(store: SqliteStore, db_path: Path) -> None:
    done = anyio.Event()
    outcome: list[str] = []

    async def write() -> None:
        outcome.append(await store.add_protocol(protocol_row()))
        done.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with write_lock(db_path):
                tg.start_soon(write)
                await anyio.sleep(0.3)  # the other program's transaction takes this long
                assert not done.is_set(), "a write went through while another connection held the lock"
            await done.wait()
    assert outcome == ["registered"]


async def test_while_a_write_waits_for_the_lock_the_loop_serves_and_later_writes_queue_behind_it(
    store: SqliteStore, db_path: Path
) -> None:
    # Uncontended transactions run on the event loop's thread; a locked file sends them to the worker
    # thread. Writes issued meanwhile must wait their turn there too, not overtake on the loop.
    alice, _ = await claim(store, "alice")
    first, second = message(alice.id, 1), message(alice.id, 2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.01)
            ticks += 1

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ticker)
            with write_lock(db_path):
                tg.start_soon(put, store, first, alice.id)
                await anyio.sleep(0.05)
                tg.start_soon(put, store, second, alice.id)
                await anyio.sleep(0.25)
                assert raw_query(db_path, "SELECT count(*) FROM messages") == [(0,)]
                assert ticks >= 5, "the event loop was blocked while a write waited for the lock"
            while len(raw_query(db_path, "SELECT id FROM messages")) < 2:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    leased = await store.lease(alice.id, limit=5, lease_seconds=30, now=time.time(), max_attempts=5)
    assert [row.message_id for row in leased] == [first.id, second.id]


async def test_a_write_whose_caller_stopped_waiting_still_goes_before_later_writes(
    store: SqliteStore, db_path: Path
) -> None:
    # The caller of `first` is cancelled while its transaction waits for the lock on the worker
    # thread; the transaction itself goes on there. A write issued right after the lock is released
    # must queue behind it, not run on the loop's thread beside it (one connection, two threads).
    alice, _ = await claim(store, "alice")
    first, second = message(alice.id, 1), message(alice.id, 2)
    with anyio.fail_after(10):
        with write_lock(db_path):
            with anyio.move_on_after(0.3):  # by then the retry backs off 50 ms at a time
                await put(store, first, alice.id)
        await put(store, second, alice.id)
        while len(raw_query(db_path, "SELECT id FROM messages")) < 2:
            await anyio.sleep(0.01)
    leased = await store.lease(alice.id, limit=5, lease_seconds=30, now=time.time(), max_attempts=5)
    assert [row.message_id for row in leased] == [first.id, second.id]


async def test_store_busy_after_the_budget(db_path: Path) -> None:
    async with opened(db_path, busy_budget=0.3) as s:
        alice, _ = await claim(s, "alice")
        await put(s, message(alice.id), alice.id)
        with write_lock(db_path):
            for attempt in (
                lambda: s.add_protocol(protocol_row()),
                lambda: s.lease(alice.id, limit=5, lease_seconds=30, now=time.time(), max_attempts=5),
                lambda: put(s, message(alice.id), alice.id),
            ):
                start = time.monotonic()
                with anyio.fail_after(10), pytest.raises(StoreBusy) as info:
                    await attempt()
                assert 0.3 <= time.monotonic() - start < 5
                assert str(info.value).startswith("STORE_BUSY: ")
        # Once the lock is gone the same store works, and nothing half-done was left behind.
        assert await s.add_protocol(protocol_row()) == "registered"
        assert len(await s.peek(alice.id, 10, time.time())) == 1
        assert len(await s.lease(alice.id, limit=5, lease_seconds=30, now=time.time(), max_attempts=5)) == 1


def _sqlite_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def test_failed_open_on_a_locked_file_releases_its_connection(db_path: Path) -> None:
    """A store that cannot open must not leave its connection (and aiosqlite's worker thread) behind.

    The worker thread is not a daemon: a leaked one keeps ``python -m mcp_broker`` from ever exiting
    after it reported the failure, so a host waits on a process that will not end.
    """
    async with opened(db_path):
        pass
    before = _sqlite_threads()
    s = SqliteStore(db_path, busy_budget=0.2)
    try:
        # Migrations run in a write transaction; a file locked past the budget is STORE_BUSY, not a hang.
        with write_lock(db_path), anyio.fail_after(10), pytest.raises(StoreBusy):
            await s.open()
        assert s._conn is None, "open() failed but kept its sqlite connection"
        # The worker thread ends just after close() returns: wait for it, with a deadline.
        with anyio.fail_after(5):
            while _sqlite_threads() - before:
                await anyio.sleep(0.01)
    finally:
        if s._conn is not None:  # clean up after the bug, or this test process could never exit
            await s._conn.close()
            s._conn = None


async def test_concurrent_writers_lose_nothing_and_keep_order(db_path: Path) -> None:
    async with opened(db_path) as home:
        inbox, _ = await claim(home, "inbox")
        stores = [SqliteStore(db_path) for _ in range(4)]
        try:
            senders = []
            for i, s in enumerate(stores):
                await s.open()
                senders.append((await claim(s, f"sender{i}"))[0])

            async def send_many(s: SqliteStore, sender: SessionRow) -> None:
                for n in range(60):
                    await put(s, message(sender.id, n), inbox.id)

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for s, sender in zip(stores, senders, strict=True):
                        tg.start_soon(send_many, s, sender)
        finally:
            for s in stores:
                await s.close()
        waiting = await home.peek(inbox.id, 1000, time.time())
    assert len(waiting) == 240
    by_sender: dict[str, list[int]] = {}
    for row in waiting:
        by_sender.setdefault(row.sender_name, []).append(json.loads(row.payload)["n"])
    assert by_sender == {f"sender{i}": list(range(60)) for i in range(4)}


async def test_writer_threads_with_their_own_stores(db_path: Path) -> None:
    """Threads with their own event loop and store, as separate processes would have."""
    async with opened(db_path) as home:
        inbox, _ = await claim(home, "inbox")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        async def run() -> None:
            async with opened(db_path) as s:
                sender, _ = await claim(s, f"thread{i}")
                for n in range(40):
                    await put(s, message(sender.id, n), inbox.id)

        try:
            anyio.run(run)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    # A plain connection also writes in short transactions at the same time.
    with anyio.fail_after(60):
        for _ in range(20):
            with write_lock(db_path) as conn:
                conn.execute("UPDATE sessions SET last_seen = last_seen WHERE name = 'inbox'")
            await anyio.sleep(0.005)
        for t in threads:
            await anyio.to_thread.run_sync(t.join)
    assert errors == []
    counts = raw_query(
        db_path,
        "SELECT count(*), count(DISTINCT message_id) FROM deliveries WHERE recipient_id = ?",
        inbox.id,
    )
    assert counts == [(160, 160)]


async def test_concurrent_leases_hand_each_message_out_once(db_path: Path) -> None:
    async with opened(db_path) as home:
        inbox, _ = await claim(home, "inbox")
        sender, _ = await claim(home, "sender")
        ids = set()
        for n in range(150):
            msg = message(sender.id, n)
            ids.add(msg.id)
            await put(home, msg, inbox.id)
    stores = [SqliteStore(db_path) for _ in range(4)]
    taken: list[list[str]] = [[] for _ in stores]
    try:
        for s in stores:
            await s.open()

        async def drain(i: int) -> None:
            while rows := await stores[i].lease(
                inbox.id, limit=5, lease_seconds=600, now=time.time(), max_attempts=5
            ):
                taken[i].extend(r.message_id for r in rows)
                assert all(r.attempts == 1 for r in rows)

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for i in range(len(stores)):
                    tg.start_soon(drain, i)
    finally:
        for s in stores:
            await s.close()
    everything = [m for batch in taken for m in batch]
    assert len(everything) == len(set(everything)) == 150
    assert set(everything) == ids


# --- store semantics the domain relies on ----------------------------------------------------------


async def test_add_protocol_states(store: SqliteStore) -> None:
    assert await store.add_protocol(protocol_row()) == "registered"
    assert await store.add_protocol(protocol_row()) == "unchanged"
    with pytest.raises(ProtocolConflict):
        await store.add_protocol(protocol_row(fingerprint="other"))
    assert await store.add_protocol(protocol_row(version="1.1.0")) == "registered"
    assert sorted(await store.protocol_versions("chat")) == ["1.0.0", "1.1.0"]
    assert await store.protocol_versions("nothing") == []
    assert sorted(r.version for r in await store.list_protocols("chat")) == ["1.0.0", "1.1.0"]
    assert [r.name for r in await store.list_protocols()] == ["chat", "chat"]


async def test_claim_session_create_update_resume_and_taken(store: SqliteStore) -> None:
    first, resumed = await claim(store, "alice", owner="p1")
    assert resumed is False
    same, resumed = await claim(store, "alice", owner="p1")
    assert (same.id, resumed) == (first.id, False)
    with pytest.raises(NameTaken):
        await claim(store, "alice", owner="p2", live=True)
    taken, resumed = await claim(store, "alice", owner="p2", live=False)
    assert (taken.id, resumed, taken.owner) == (first.id, True, "p2")
    # The old holder can no longer heartbeat or end it.
    assert await store.heartbeat(first.id, "p1", time.time()) is False
    assert await store.end_session(first.id, "p1", time.time()) is None
    assert await store.heartbeat(first.id, "p2", time.time()) is True
    ended = await store.end_session(first.id, "p2", time.time())
    assert ended is not None and ended.disconnected_at is not None and ended.bell is None
    assert await store.heartbeat(first.id, "p2", time.time()) is False
    found = await store.find_session(first.id)
    assert found is not None and found.name == "alice"


async def test_enqueue_idempotency_and_full_inbox(store: SqliteStore) -> None:
    alice, _ = await claim(store, "alice")
    bob, _ = await claim(store, "bob")
    first = message(alice.id, idempotency_key="k1")
    outcome = await put(store, first, bob.id)
    assert outcome.duplicate_result is None and outcome.delivered_to == (bob.id,)
    repeat = await put(store, message(alice.id, 2, idempotency_key="k1"), bob.id)
    assert repeat.duplicate_result == {"message_id": first.id, "reached": [bob.id]}
    assert len(await store.peek(bob.id, 10, time.time())) == 1

    await put(store, message(alice.id), bob.id)
    with pytest.raises(InboxFull) as info:
        await put(store, message(alice.id, idempotency_key="k2"), bob.id, max_inbox=2)
    assert info.value.details == {"recipient_id": bob.id, "depth": 2}
    # Not stored, and its key is not remembered.
    assert len(await store.peek(bob.id, 10, time.time())) == 2
    assert (await put(store, message(alice.id, idempotency_key="k2"), bob.id)).duplicate_result is None

    carol, _ = await claim(store, "carol")
    partial = await put(
        store, message(alice.id, broadcast=True), bob.id, carol.id, max_inbox=3, refuse_full=False
    )
    assert partial.delivered_to == (carol.id,) and partial.full == ((bob.id, 3),)


async def test_lease_order_ack_and_dead_letters(store: SqliteStore) -> None:
    alice, _ = await claim(store, "alice")
    bob, _ = await claim(store, "bob")
    start = time.time()
    low = message(alice.id, 1, priority=0)
    high = message(alice.id, 2, priority=2)
    expiring = message(alice.id, 3, expires_at=start + 10)
    for m in (low, high, expiring):
        await put(store, m, bob.id)
    now = time.time()
    rows = await store.lease(bob.id, limit=10, lease_seconds=30, now=now, max_attempts=2)
    assert [r.message_id for r in rows] == [high.id, expiring.id, low.id]
    assert all(r.attempts == 1 and r.visible_at == now + 30 for r in rows)
    assert await store.lease(bob.id, limit=10, lease_seconds=30, now=now + 1, max_attempts=2) == []
    assert await store.ack(bob.id, [high.id], now + 1) == {high.id: "acked"}
    # Leases run out: the expired one is dead-lettered, the rest come back on attempt 2.
    again = await store.lease(bob.id, limit=10, lease_seconds=30, now=now + 31, max_attempts=2)
    assert [(r.message_id, r.attempts) for r in again] == [(low.id, 2)]
    assert await store.lease(bob.id, limit=10, lease_seconds=30, now=now + 62, max_attempts=2) == []
    dead = {r.message_id: r.reason for _, r in await store.dead_letters(bob.id, limit=10, before_seq=None)}
    assert dead == {expiring.id: "expired", low.id: "not acked after 2 deliveries"}
    assert await store.ack(bob.id, [high.id, low.id], now + 63) == {
        high.id: "already_acked",
        low.id: "dead_lettered",
    }


async def test_ack_with_a_foreign_id_changes_nothing(store: SqliteStore) -> None:
    alice, _ = await claim(store, "alice")
    bob, _ = await claim(store, "bob")
    mine = message(alice.id)
    queued = message(alice.id)
    await put(store, mine, bob.id)
    await store.lease(bob.id, limit=1, lease_seconds=30, now=time.time(), max_attempts=5)
    await put(store, queued, bob.id)
    foreign = str(uuid.uuid4())
    assert await store.ack(bob.id, [mine.id, foreign], time.time()) == {foreign: "unknown"}
    assert await store.ack(alice.id, [mine.id], time.time()) == {mine.id: "unknown"}
    assert await store.ack(bob.id, [mine.id, queued.id], time.time()) == {
        mine.id: "acked",
        queued.id: "not_received",
    }


async def test_prune_removes_only_what_retention_lets_go(store: SqliteStore, db_path: Path) -> None:
    alice, _ = await claim(store, "alice")
    bob, _ = await claim(store, "bob")
    done = message(alice.id)
    waiting = message(alice.id)
    await put(store, done, bob.id)
    await store.lease(bob.id, limit=1, lease_seconds=30, now=time.time(), max_attempts=5)
    await store.ack(bob.id, [done.id], time.time())
    await put(store, waiting, bob.id)
    await store.end_session(alice.id, "owner-alice", time.time())
    counts = await store.prune(before=time.time() + 1)
    assert counts == {"deliveries": 1, "messages": 1, "sessions": 1}
    # bob still has a waiting message, so bob and that message stay.
    assert await store.find_session("bob") is not None
    assert await store.find_session("alice") is None
    assert [r.message_id for r in await store.peek(bob.id, 10, time.time())] == [waiting.id]
    assert await store.prune(before=time.time() - 3600) == {"deliveries": 0, "messages": 0, "sessions": 0}
