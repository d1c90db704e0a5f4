"""SQLite specifics: the file, WAL, migrations, faults and locks, on a real file in ``tmp_path``.

Several stores on one file stand for several broker processes; a plain ``sqlite3`` connection stands
for any other program holding the write lock. What every backend must do is in ``tests/contract``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import anyio
import pytest
from contract.store_contract import T0, connect, lease, message, protocol, send

from mcp_broker.store.contract import Added, Retryable, Unavailable
from mcp_broker.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

SQL = resources.files("mcp_broker.store.sqlite") / "sql"


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


def raw_query(path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def migration_numbers() -> list[int]:
    return sorted(int(e.name.split("_", 1)[0]) for e in SQL.iterdir() if e.name.endswith(".sql"))


def recorded_migrations(path: Path) -> list[int]:
    return [v for (v,) in raw_query(path, "SELECT version FROM schema_migrations ORDER BY version")]


async def wait_for_messages(path: Path, count: int) -> None:
    while raw_query(path, "SELECT count(*) FROM messages") != [(count,)]:
        await anyio.sleep(0.01)


# --- the file: permissions, WAL, migrations, reopening -------------------------------------------


async def test_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "fresh" / "broker.db"
    old = os.umask(0)  # even a permissive umask must not widen the file
    try:
        async with opened(path) as s:
            await s.add_protocol(protocol())
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
        # synchronous is per connection, so only the store's own connection can tell.
        level = await s._tx(lambda db: db.execute("PRAGMA synchronous").fetchone()[0], write=False)
    assert level == expected


async def test_migrations_are_recorded_and_applied_once(db_path: Path) -> None:
    assert migration_numbers()[:3] == [1, 2, 3]
    async with opened(db_path) as s:
        await s.add_protocol(protocol())
    first = raw_query(db_path, "SELECT version, applied_at FROM schema_migrations ORDER BY version")
    assert [v for v, _ in first] == migration_numbers()
    tables = {r[0] for r in raw_query(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"protocols", "adapters", "sessions", "agreements", "messages", "deliveries"} <= tables
    columns = {r[1] for r in raw_query(db_path, "PRAGMA table_info(sessions)")}
    assert "revision" in columns and "bell" not in columns  # 003
    async with opened(db_path):
        pass
    assert raw_query(db_path, "SELECT version, applied_at FROM schema_migrations ORDER BY version") == first


async def test_migration_003_upgrades_a_database_of_the_previous_release(db_path: Path) -> None:
    conn = sqlite3.connect(db_path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)")
        for number, name in ((1, "001_initial.sql"), (2, "002_covering_pending.sql")):
            conn.executescript((SQL / name).read_text(encoding="utf-8"))
            conn.execute("INSERT INTO schema_migrations VALUES (?, ?)", (number, T0))
        conn.execute(
            "INSERT INTO sessions VALUES ('b', 'bob', '[]', '[]', '{}', 'o', 'h', 1, 's', '/tmp/bell', ?, ?, NULL)",
            (T0, T0),
        )
        for mid, reason in (("m1", "not acked after 3 deliveries"), ("m2", "expired")):
            conn.execute(
                "INSERT INTO messages (id, sender_id, protocol, version, payload, priority, created_at) "
                "VALUES (?, 'b', 'chat', '1.0.0', '{}', 1, ?)",
                (mid, T0),
            )
            conn.execute(
                "INSERT INTO deliveries (message_id, recipient_id, protocol, priority, state, attempts, "
                "visible_at, updated_at, reason) VALUES (?, 'b', 'chat', 1, 'dead_lettered', 3, ?, ?, ?)",
                (mid, T0, T0, reason),
            )
        conn.commit()
    finally:
        conn.close()
    async with opened(db_path) as s:
        assert recorded_migrations(db_path) == migration_numbers()
        bob = await s.find_session("bob", is_id=False, now=T0)
        assert bob is not None and bob.revision == 0
        page = await s.dead_letters("b", limit=10, cursor=None)
        assert {r.message_id: r.reason for r in page.rows} == {"m1": "max_attempts", "m2": "expired"}
    async with opened(db_path, namespace="team-b") as other:  # 006 put the rows from before in default
        assert await other.find_session("bob", is_id=False, now=T0) is None
        assert (await other.dead_letters("b", limit=10, cursor=None)).rows == []


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
    assert recorded_migrations(db_path) == migration_numbers()


async def test_reopening_keeps_everything(db_path: Path) -> None:
    async with opened(db_path) as s:
        await s.add_protocol(protocol())
        alice = await connect(s, "alice")
        bob = await connect(s, "bob")
        sent = message(alice.id, 7)
        await send(s, sent, bob.id)
    async with opened(db_path) as s:
        assert await s.get_protocol("chat", "1.0.0") == protocol()
        assert [r.version for r in await s.list_protocols("chat")] == ["1.0.0"]
        found = await s.find_session("bob", is_id=False, now=T0)
        assert found is not None and found.id == bob.id and found.queue_depth == 1
        (waiting,) = await s.peek(bob.id, 10, T0)
        assert waiting.message_id == sent.id and json.loads(waiting.payload) == {"n": 7}
        assert waiting.sender_name == "alice"
        assert await s.integrity_check() == "ok"


async def test_unopenable_path_is_unavailable(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(Unavailable, match="cannot open the database"):
        await SqliteStore(directory).open()
    (tmp_path / "a-file").touch()
    with pytest.raises(Unavailable, match="not a directory"):
        await SqliteStore(tmp_path / "a-file" / "broker.db").open()


async def test_not_a_database_is_unavailable(db_path: Path) -> None:
    db_path.write_bytes(b"this is not a SQLite database, just some text that is long enough" * 100)
    with pytest.raises(Unavailable):
        await SqliteStore(db_path).open()
    assert db_path.read_bytes().startswith(b"this is not")


async def test_closed_store_is_unavailable(db_path: Path) -> None:
    s = SqliteStore(db_path)
    await s.open()
    await s.close()
    await s.close()  # twice is harmless
    with pytest.raises(Unavailable, match="closed"):
        await s.get_protocol("chat", "1.0.0")
    with pytest.raises(Unavailable, match="closed"):
        await s.lease("x", "owner", limit=1, lease_seconds=1, now=T0, max_attempts=5)


# --- transactions, locks, retry ------------------------------------------------------------------


async def test_failed_transaction_rolls_back_and_connection_stays_usable(
    store: SqliteStore, db_path: Path
) -> None:
    def insert_then_fail(db: sqlite3.Connection) -> None:
        db.execute(
            "INSERT INTO protocols (namespace, name, version, schema, capabilities, metadata, fingerprint, "
            "registered_at) VALUES ('default', 'ghost', '1.0.0', '{}', '[]', '{}', 'f', 0)"
        )
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await store._tx(insert_then_fail)  # the one way to fail midway through a transaction
    assert await store.get_protocol("ghost", "1.0.0") is None
    assert await store.add_protocol(protocol()) is Added.registered
    assert raw_query(db_path, "SELECT name FROM protocols") == [("chat",)]


async def test_reads_go_on_while_another_program_holds_the_write_lock(
    store: SqliteStore, db_path: Path
) -> None:
    await store.add_protocol(protocol())
    alice = await connect(store, "alice")
    with write_lock(db_path), anyio.fail_after(5):
        assert await store.get_protocol("chat", "1.0.0") is not None
        assert [s.name for s in await store.list_sessions(T0)] == ["alice"]
        # An empty inbox is checked without the write lock, so a long-poll is never blocked by writers.
        assert await lease(store, alice, now=T0 + 1) == []


async def test_write_waits_out_a_brief_lock(store: SqliteStore, db_path: Path) -> None:
    done = anyio.Event()
    outcome: list[Added] = []

    async def write() -> None:
        outcome.append(await store.add_protocol(protocol()))
        done.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            with write_lock(db_path):
                tg.start_soon(write)
                await anyio.sleep(0.3)  # the other program's transaction takes this long
                assert not done.is_set(), "a write went through while another connection held the lock"
            await done.wait()
    assert outcome == [Added.registered]


async def test_while_a_write_waits_for_the_lock_the_loop_serves_and_later_writes_queue_behind_it(
    store: SqliteStore, db_path: Path
) -> None:
    # Uncontended transactions run on the event loop's thread; a locked file sends them to the worker
    # thread. Writes issued meanwhile must wait their turn there too, not overtake on the loop.
    alice = await connect(store, "alice")
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
                tg.start_soon(send, store, first, alice.id)
                await anyio.sleep(0.05)
                tg.start_soon(send, store, second, alice.id)
                await anyio.sleep(0.25)
                assert raw_query(db_path, "SELECT count(*) FROM messages") == [(0,)]
                assert ticks >= 5, "the event loop was blocked while a write waited for the lock"
            await wait_for_messages(db_path, 2)
            tg.cancel_scope.cancel()
    assert [r.message_id for r in await lease(store, alice, now=T0 + 1)] == [first.id, second.id]


async def test_a_write_whose_caller_stopped_waiting_still_goes_before_later_writes(
    store: SqliteStore, db_path: Path
) -> None:
    # The caller of `first` is cancelled while its transaction waits for the lock on the worker
    # thread; the transaction itself goes on there. A write issued right after the lock is released
    # must queue behind it, not run on the loop's thread beside it (one connection, two threads).
    alice = await connect(store, "alice")
    first, second = message(alice.id, 1), message(alice.id, 2)
    with anyio.fail_after(10):
        with write_lock(db_path), anyio.move_on_after(0.3):  # by then the retry backs off 50 ms at a time
            await send(store, first, alice.id)
        await send(store, second, alice.id)
        await wait_for_messages(db_path, 2)
    assert [r.message_id for r in await lease(store, alice, now=T0 + 1)] == [first.id, second.id]


async def test_retryable_after_the_busy_budget(db_path: Path) -> None:
    async with opened(db_path, busy_budget=0.3) as s:
        alice = await connect(s, "alice")
        await send(s, message(alice.id), alice.id)
        with write_lock(db_path):
            for attempt in (
                lambda: s.add_protocol(protocol()),
                lambda: lease(s, alice, now=T0 + 1),
                lambda: send(s, message(alice.id), alice.id),
            ):
                start = time.monotonic()
                with anyio.fail_after(10), pytest.raises(Retryable, match="locked"):
                    await attempt()
                assert time.monotonic() - start >= 0.3  # it waited out its budget before refusing
        # Once the lock is gone the same store works, and nothing half-done was left behind.
        assert await s.add_protocol(protocol()) is Added.registered
        assert len(await s.peek(alice.id, 10, T0)) == 1
        assert len(await lease(s, alice, now=T0 + 1)) == 1


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
        # Migrations run in a write transaction; a file locked past the budget is Retryable, not a hang.
        with write_lock(db_path), anyio.fail_after(10), pytest.raises(Retryable):
            await s.open()
        # The worker thread ends just after its connection closes: wait for it, with a deadline.
        with anyio.fail_after(5):
            while _sqlite_threads() - before:
                await anyio.sleep(0.01)
    finally:
        if s._conn is not None:  # clean up after the bug, or this test process could never exit
            await s._conn.close()


async def test_writer_threads_with_their_own_stores(db_path: Path) -> None:
    """Threads with their own event loop and store, as separate processes would have."""
    async with opened(db_path) as home:
        inbox = await connect(home, "inbox")
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        async def run() -> None:
            async with opened(db_path) as s:
                sender = await connect(s, f"thread{i}")
                for n in range(40):
                    await send(s, message(sender.id, n, at=T0 + n), inbox.id)

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
    async with opened(db_path) as home:
        waiting = await home.peek(inbox.id, 1000, T0 + 100)
    by_sender: dict[str, list[int]] = {}
    for row in waiting:
        by_sender.setdefault(row.sender_name, []).append(json.loads(row.payload)["n"])
    assert by_sender == {f"thread{i}": list(range(40)) for i in range(4)}
