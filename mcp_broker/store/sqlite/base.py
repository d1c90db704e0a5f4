"""The SQLite engine's base: the connection, its pragmas, migrations, and the transaction runner.

Every operation is one short transaction. It is first tried once right on the event loop's thread:
an uncontended transaction takes tens of microseconds, less than handing it to a worker thread and
back. When another process holds the lock, the whole transaction goes to aiosqlite's worker thread
instead, which retries it with a growing backoff that starts at tens of microseconds (far below the
tail latency of SQLite's own busy handler) while the event loop keeps serving. Writes open with
``BEGIN IMMEDIATE`` so a writer holds the lock from its first statement. No transaction is ever held
open while the broker waits for anything, so the WAL can always be checkpointed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import sqlite3
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from ...config import DEFAULT_NAMESPACE, NAMESPACE
from ..contract import Overloaded, Retryable, Unavailable
from . import _aiosqlite
from .turns import Turns, turns_path

log = logging.getLogger(__name__)
T = TypeVar("T")

MESSAGE_COLUMNS = """
    d.message_id, m.sender_id, s.name AS sender_name, m.broadcast, m.kind, m.protocol,
    COALESCE(d.version, m.version) AS version, COALESCE(d.payload, m.payload) AS payload,
    m.version AS sent_version, d.adapted_via, d.priority, m.created_at, d.expires_at, m.correlation_id,
    m.reply_to, d.attempts, d.visible_at, d.state, d.reason, d.updated_at, m.replay_of, m.stream_id,
    m.stream_seq, m.last
"""
# A delivery a lease may hand out: no chunk before every earlier chunk of its stream is acked.
IN_ORDER = """(d.stream_seq IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.stream_id = d.stream_id
    AND p.recipient_id = d.recipient_id AND p.stream_seq < d.stream_seq AND p.state != 'acked'))"""

# Waiting deliveries (queued or leased, not expired): the contract's one definition of inbox depth.
WAITING = "namespace = ns() AND state IN ('queued', 'leased') AND (expires_at IS NULL OR expires_at > :now)"
DEPTH_SQL = f"SELECT count(*) FROM deliveries WHERE recipient_id = sessions.id AND {WAITING}"


TURN_BUDGET = 2.0  # seconds a write waits in line for its turn before it is refused (OVERLOADED), early


class _Busy(Exception):
    """The file was locked on the one attempt made on the event loop's thread."""


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


class StoreBase:
    """The connection, its pragmas, migrations, and the one-transaction-per-operation runner."""

    def __init__(
        self,
        path: Path,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        durability: str = "normal",
        busy_budget: float = 10.0,
    ) -> None:
        self.path = Path(path)
        if not NAMESPACE.fullmatch(namespace):
            raise ValueError(f"namespace {namespace!r}: use 1 to 32 of a-z, 0-9, '_' and '-'")
        self.namespace = namespace
        self.durability = durability
        self.busy_budget = busy_budget
        self._conn: aiosqlite.Connection | None = None
        # Transactions handed to the worker thread and not yet finished. While there are any, the
        # connection is theirs: nothing runs on the event loop's thread, and order is kept.
        self._in_thread = 0
        self._turns: Turns | None = None

    async def open(self) -> None:
        try:
            self._create_file()
            try:
                self._turns = Turns(turns_path(self.path))
            except OSError as exc:  # writers still take SQLite's lock, only without a queue
                log.warning("no queue of writers (%s); retrying around the lock instead", exc)
            self._conn = await aiosqlite.connect(
                str(self.path), isolation_level=None, check_same_thread=False
            )
            await _aiosqlite.in_worker(self._conn, self._setup)
        except BaseException as exc:
            # Whatever went wrong, stop aiosqlite's worker thread: it is not a daemon and would keep
            # the process from exiting.
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
            self._close_turns()
            if not isinstance(exc, OSError | sqlite3.Error):
                raise
            raise Unavailable(
                f"cannot open the database {self.path}: {exc}. Check the path and its permissions."
            ) from exc

    async def close(self) -> None:
        if self._conn is not None:
            conn = self._conn
            try:
                await _aiosqlite.in_worker(conn, self._checkpoint_quietly)
            finally:
                self._conn = None
                await conn.close()
        self._close_turns()

    def _close_turns(self) -> None:
        if self._turns is not None:
            self._turns.close()
            self._turns = None

    def _create_file(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except (FileExistsError, NotADirectoryError) as exc:
            raise OSError(f"{exc.filename} exists and is not a directory") from exc
        # Create the file ourselves so it is owner-only from its first byte; SQLite gives the
        # -wal and -shm files the same permissions as the database.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)

    def _setup(self) -> None:
        db = self._db
        db.row_factory = sqlite3.Row
        # Every statement names its namespace as ns(): one connection, one namespace, so no statement
        # can be handed another's. Deterministic, so the planner uses it as a constant for the indexes.
        namespace = self.namespace
        db.create_function("ns", 0, lambda: namespace, deterministic=True)
        # Setup statements run outside our retry loop, so let SQLite wait for a brief lock here.
        db.execute(f"PRAGMA busy_timeout = {int(self.busy_budget * 1000)}")
        mode = self._switch_to_wal(db)
        if str(mode).lower() != "wal":
            raise sqlite3.OperationalError(f"could not switch to WAL (journal_mode is {mode})")
        db.execute(f"PRAGMA synchronous = {'FULL' if self.durability == 'full' else 'NORMAL'}")
        db.execute("PRAGMA foreign_keys = ON")
        # After a checkpoint, a WAL that grew past this is truncated back, so it cannot stay huge.
        db.execute("PRAGMA journal_size_limit = 16777216")
        db.execute("PRAGMA busy_timeout = 0")  # from here on we retry ourselves, faster than SQLite's handler
        self._retrying(self._migrate, write=True)

    def _switch_to_wal(self, db: sqlite3.Connection) -> str:
        # Several processes opening a fresh file at once all ask for WAL; SQLite may refuse one as
        # busy without waiting (to rule out a deadlock), so we wait and ask again ourselves.
        deadline = time.monotonic() + self.busy_budget
        while True:
            try:
                return str(db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.005 + 0.01 * random.random())

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._conn is not None, "store is not open"
        return _aiosqlite.raw(self._conn)

    def _migrate(self, db: sqlite3.Connection) -> None:
        db.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        done = {row[0] for row in db.execute("SELECT version FROM schema_migrations")}
        folder = resources.files(__package__) / "sql"
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

    async def _tx(
        self,
        fn: Callable[..., T],
        *args: Any,
        write: bool = True,
        inline: bool = True,
        deferred: bool = False,
    ) -> T:
        """Run ``fn(db, *args)`` in one transaction (see ``_run``). A ``deferred`` write takes the
        lock at its first write on the impatient attempt (reads and decisions before it hold no lock;
        if another writer commits meanwhile, that attempt fails as busy) and from the start when
        retrying patiently, so it cannot be starved."""
        return await self._run(
            lambda patient: self._retrying(
                fn, *args, write=write, patient=patient, deferred=deferred and not patient
            ),
            inline=inline,
        )

    async def _run(self, job: Callable[[bool], T], *, inline: bool = True) -> T:
        """Run ``job(patient)``: once on this thread, impatient; if the file is locked, on the worker
        thread, patient (retrying until the busy budget runs out). Work that may take long
        (``inline=False``) always goes to the worker thread, so the event loop keeps serving."""
        if self._conn is None:
            raise Unavailable("the store is closed")
        if inline and not self._in_thread:
            try:
                return job(False)
            except _Busy:
                pass
        conn = self._conn
        if not _aiosqlite.is_running(conn):
            raise Unavailable("the store is closed")
        loop = asyncio.get_running_loop()

        def in_thread() -> T:
            try:
                return job(True)
            finally:
                # Counted down when the job ends, not when its caller stops waiting: a cancelled
                # caller leaves the job running, and nothing may run on the loop's thread beside it.
                with contextlib.suppress(RuntimeError):  # the loop is gone: so is anyone to run beside
                    loop.call_soon_threadsafe(self._left_thread)

        self._in_thread += 1
        return await _aiosqlite.in_worker(
            conn, in_thread
        )  # queued at once: nothing awaits before the job is in

    def _left_thread(self) -> None:
        self._in_thread -= 1

    def _retrying(
        self, fn: Callable[..., T], *args: Any, write: bool, patient: bool = True, deferred: bool = False
    ) -> T:
        """Run ``fn(db, *args)`` in one transaction; while the file is locked, retry the whole of it
        (``patient``) or raise ``_Busy``. A write first takes its turn among the machine's writers
        (``turns.py``): impatient, only if nobody holds one; patient, waiting in line for at most
        ``TURN_BUDGET`` before it is refused early as busy."""
        turns = self._turns if write else None
        if turns is None:
            return self._attempts(fn, *args, write=write, patient=patient, deferred=deferred)
        if not patient:
            if not turns.try_take():
                raise _Busy
            give = turns.give_quick
        elif turns.take(min(self.busy_budget, TURN_BUDGET)):
            give = turns.give
        else:
            # Spread the retries of a crowd refused together, so they do not come back as one.
            wait = round(TURN_BUDGET * (0.5 + random.random()), 2)
            raise Overloaded(
                f"the store is past capacity: this write waited {min(self.busy_budget, TURN_BUDGET):g} s for its "
                f"turn behind other writers and was not made. Retry in {wait:g} s (retry_after_seconds).",
                retry_after=wait,
            )
        try:
            return self._attempts(fn, *args, write=write, patient=patient, deferred=deferred)
        finally:
            give()

    def _attempts(
        self, fn: Callable[..., T], *args: Any, write: bool, patient: bool = True, deferred: bool = False
    ) -> T:
        db = self._db
        deadline = time.monotonic() + self.busy_budget
        delay = 20e-6
        while True:
            try:
                db.execute("BEGIN IMMEDIATE" if write and not deferred else "BEGIN")
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
                if not patient:
                    raise _Busy from exc
                if time.monotonic() > deadline:
                    raise Retryable(
                        f"the database stayed locked for {self.busy_budget:g} s; another program may hold it. Retry shortly."
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                # Short waits first for low latency; a longer cap so a crowd of waiters does not
                # keep the lock holder off the CPU (measured: a 1,000-receiver herd drains 4x faster).
                delay = min(delay * 2, 0.05)
            except sqlite3.DatabaseError as exc:
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                raise self._unavailable(exc) from exc

    def _unavailable(self, exc: sqlite3.Error) -> Unavailable:
        return Unavailable(
            f"database error on {self.path}: {exc}. Check the file, its disk and its permissions."
        )

    async def integrity_check(self) -> str:
        return await self._tx(
            lambda db: db.execute("PRAGMA integrity_check").fetchone()[0], write=False, inline=False
        )
