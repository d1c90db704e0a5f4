"""Faults of the database file: corrupt, locked by another program, read-only, full disk, not a file.

Each one must give a clear coded error, at startup (the process exits non-zero with the code on stderr)
or per call (a tool error), never a hang and never a rewritten file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastmcp import Client

from mcp_broker.config import Settings
from mcp_broker.domain import Broker
from mcp_broker.errors import StoreUnavailable
from mcp_broker.mcp import build_server
from mcp_broker.store.contract import Unavailable

CHAT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
CHAT = [{"name": "chat", "versions": ">=1.0,<2"}]
STARTUP_DEADLINE = 30.0  # start-up (imports, a few seconds on a loaded 2-core machine) plus the lock wait

# A wrapper that runs the broker as root without the capabilities that let root ignore file
# permissions, so a 0444 file binds as it does for any user. (Switching to an unprivileged uid does not
# work when the interpreter itself lives under a 0700 home directory, as /root/.pyenv does.)
DROP_DAC = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
    if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP: gone after exec
        raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


# --- helpers ---------------------------------------------------------------------------------------


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def listing(folder: Path) -> dict[str, str]:
    """Everything under ``folder``, files with their hash: anything created, changed or removed shows."""
    return {
        str(p.relative_to(folder)): digest(p) if p.is_file() else "dir" for p in sorted(folder.rglob("*"))
    }


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MCP_BROKER_")}


@dataclass
class Exit:
    code: int
    stdout: str
    stderr: str
    elapsed: float


def run_broker(tmp_path: Path, *args: str, without_dac: bool = False) -> Exit:
    """Start ``python -m mcp_broker`` with stdin held open, as a host does, and wait for it to give up.

    A broker that started serving instead would wait on stdin forever: that is the hang we refuse.
    """
    prefix = ["-c", DROP_DAC] if without_dac else []
    command = [sys.executable, *prefix, "-m", "mcp_broker", *args]
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    started = time.monotonic()
    with (
        out.open("w") as stdout,
        err.open("w") as stderr,
        subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, env=clean_env()
        ) as proc,
    ):
        try:
            code = proc.wait(timeout=STARTUP_DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(
                f"the broker neither failed nor exited within {STARTUP_DEADLINE} s: {err.read_text()[-2000:]}"
            )
    elapsed = time.monotonic() - started
    result = Exit(code, out.read_text(), err.read_text(), elapsed)
    out.unlink()
    err.unlink()
    return result


def assert_refused_at_startup(result: Exit, code: str, *hints: str) -> None:
    assert result.code == 1, f"exit {result.code}, stderr: {result.stderr[-2000:]}"
    assert result.stdout == "", f"stdout is for JSON-RPC only, got {result.stdout[:500]!r}"
    lines = [line for line in result.stderr.splitlines() if f"{code}: " in line]
    assert lines, f"no {code} line on stderr: {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr, f"a clear error, not a traceback: {result.stderr[-3000:]}"
    for hint in hints:
        assert any(hint in line.lower() for line in lines), f"{hint!r} not said in {lines}"


def make_broker_db(path: Path) -> None:
    """A real broker database with a protocol, two sessions and a queued message."""

    async def fill() -> None:
        async with Broker.running(Settings(store=path)) as a, Broker.running(Settings(store=path)) as b:
            await a.catalog.register_protocol("chat", "1.0.0", CHAT_SCHEMA, ["point_to_point"])
            await a.sessions.connect("alice", CHAT)
            await b.sessions.connect("bob", CHAT)
            await a.messaging.send("bob", "chat", {"text": "hi"})

    anyio.run(fill)


HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute(sys.argv[2])
conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
print("held", flush=True)
sys.stdin.read()  # hold the lock until the test closes our stdin
"""


@contextlib.contextmanager
def lock_held_by_another_program(db: Path, begin: str) -> Iterator[None]:
    """A separate process holding the database's lock until the block ends.

    A separate process, not a connection in the test: POSIX locks belong to the process, and the test's
    own reads of the file (hashing it) would silently drop a lock it held.
    """
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(db), begin],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stdin is not None
        try:
            assert proc.stdout.readline().strip() == "held", "the lock holder did not start"
            yield
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)


# --- corrupt ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["random_bytes", "sqlite_header_then_garbage"])
def test_corrupt_database_is_refused_at_startup_and_left_untouched(tmp_path: Path, kind: str) -> None:
    rng = random.Random(20240517)
    db = tmp_path / "bad.db"
    body = rng.randbytes(64 * 1024)
    if kind == "sqlite_header_then_garbage":
        body = b"SQLite format 3\x00" + body[16:]
    db.write_bytes(body)
    before = listing(tmp_path)

    result = run_broker(tmp_path, "--db", str(db))

    assert_refused_at_startup(result, "STORE_UNAVAILABLE", str(db).lower())
    assert "not a database" in result.stderr or "malformed" in result.stderr, result.stderr[-1000:]
    assert result.elapsed < STARTUP_DEADLINE
    assert listing(tmp_path) == before, "the corrupt file was rewritten, or files were left next to it"


@pytest.mark.anyio
async def test_corrupt_page_gives_store_unavailable_per_call_and_other_calls_keep_serving(
    tmp_path: Path,
) -> None:
    db = tmp_path / "broker.db"
    fast = Settings(store=db, rate_per_second=1e9, rate_burst=1e9)  # type: ignore[arg-type]
    async with Broker.running(fast) as a, Broker.running(fast) as b:
        await a.catalog.register_protocol("chat", "1.0.0", CHAT_SCHEMA, ["point_to_point"])
        await a.sessions.connect("alice", CHAT)
        await b.sessions.connect("bob", CHAT)
        for i in range(200):
            await a.messaging.send("bob", "chat", {"text": f"{i:03d}" + "x" * 300})
    with contextlib.closing(sqlite3.connect(db)) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'deliveries'").fetchone()[0]
    # The deliveries table's root page turns to noise, as after a bad sector or a stray write.
    start = (root - 1) * page_size
    noise = random.Random(7).randbytes(page_size)
    data = bytearray(db.read_bytes())
    data[start : start + page_size] = noise
    db.write_bytes(bytes(data))

    async with Broker.running(Settings(store=db)) as bob:
        await bob.sessions.connect("bob", CHAT)
        async with Client(build_server(bob)) as client:
            refused = await client.call_tool("receive", {"max_messages": 5}, raise_on_error=False)
            assert refused.is_error
            text = refused.content[0].text
            assert text.startswith("STORE_UNAVAILABLE: ") and "malformed" in text, text
            # What does not touch the damaged table still works, and the process goes on serving.
            found = await client.call_tool("discover_protocols", {})
            assert [p["name"] for p in found.structured_content["protocols"]] == ["chat"]
            assert not (await client.call_tool("list_sessions", {})).is_error
            again = await client.call_tool("receive", {"max_messages": 5}, raise_on_error=False)
            assert again.is_error and again.content[0].text.startswith("STORE_UNAVAILABLE: ")
        with pytest.raises(Unavailable, match="malformed"):
            await bob.store.integrity_check()  # type: ignore[attr-defined]  # SQLite's own check

    assert db.read_bytes()[start : start + page_size] == noise, "the damaged page was rewritten"


# --- locked ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("journal", ["rollback_exclusive", "wal_write_lock"])
def test_database_locked_for_long_gives_a_clear_error_at_startup(tmp_path: Path, journal: str) -> None:
    db = tmp_path / "held.db"
    if journal == "rollback_exclusive":
        # Another program's database in rollback-journal mode, under an exclusive lock: even reading
        # it, or switching it to WAL, has to wait.
        with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode = DELETE")
            conn.execute("CREATE TABLE theirs (x)")
            conn.execute("INSERT INTO theirs VALUES (1)")
        begin = "BEGIN EXCLUSIVE"
    else:
        make_broker_db(db)  # ours, in WAL: readers go on, the write lock is what is held
        begin = "BEGIN IMMEDIATE"
    before = listing(tmp_path)
    with lock_held_by_another_program(db, begin):
        result = run_broker(tmp_path, "--db", str(db), "--lock-timeout", "1")
    assert listing(tmp_path) == before, "the locked file was changed"

    assert result.code == 1, f"exit {result.code}, stderr: {result.stderr[-2000:]}"
    assert result.stdout == ""
    coded = [
        line for line in result.stderr.splitlines() if "STORE_BUSY: " in line or "STORE_UNAVAILABLE: " in line
    ]
    assert coded, f"no STORE_BUSY / STORE_UNAVAILABLE line on stderr: {result.stderr[-2000:]}"
    assert any("locked" in line for line in coded), coded
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.mark.anyio
@pytest.mark.e2e
async def test_write_lock_held_by_another_program_gives_store_busy_per_call(
    spawn: Any, db_path: Path
) -> None:
    lock_timeout = 1.0
    async with Broker.running(Settings(store=db_path)) as setup:
        await setup.catalog.register_protocol("chat", "1.0.0", CHAT_SCHEMA, ["point_to_point"])
        await setup.sessions.connect("sink", CHAT)  # disconnected when this block ends: messages queue for it

    async with spawn(lock_timeout=lock_timeout) as client:

        async def send(text: str) -> Any:
            return await client.call_tool(
                "send", {"to": "sink", "protocol": "chat", "payload": {"text": text}}, raise_on_error=False
            )

        assert not (await client.call_tool("connect", {"name": "writer", "protocols": CHAT})).is_error
        assert not (await send("before")).is_error

        holder = sqlite3.connect(db_path, isolation_level=None, timeout=10)
        holder.execute("BEGIN IMMEDIATE")  # another connection takes the write lock and keeps it
        try:
            started = time.monotonic()
            with anyio.fail_after(lock_timeout + 10):
                refused = await send("while locked")
            waited = time.monotonic() - started
            assert refused.is_error, refused.structured_content
            text = refused.content[0].text
            assert text.startswith("STORE_BUSY: "), text
            assert "locked" in text and "retry" in text.lower(), text
            assert lock_timeout * 0.9 <= waited <= lock_timeout + 3.0, f"answered after {waited:.2f} s"
            # Readers are not blocked by a writer in WAL: the process serves reads meanwhile.
            sessions = await client.call_tool("list_sessions", {}, raise_on_error=False)
            assert not sessions.is_error, sessions.content
            # Nothing of the refused send was stored.
            assert holder.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
        finally:
            holder.execute("ROLLBACK")
            holder.close()

        # The lock is gone: the same call succeeds at once.
        ok = await send("after")
        assert not ok.is_error, ok.content
        assert ok.structured_content["status"] == "queued"

        # A lock held for less than lock_timeout is waited out: the call succeeds, no error surfaces.
        holder = sqlite3.connect(db_path, isolation_level=None, timeout=10)
        try:
            holder.execute("BEGIN IMMEDIATE")
            result: dict[str, Any] = {}

            async def call_during_lock() -> None:
                started = time.monotonic()
                result["answer"] = await send("short lock")
                result["elapsed"] = time.monotonic() - started

            async with anyio.create_task_group() as tg:
                tg.start_soon(call_during_lock)
                await anyio.sleep(0.4)  # the fault schedule: hold the lock this long, then let go
                holder.execute("COMMIT")
            assert not result["answer"].is_error, result["answer"].content
            assert result["elapsed"] < lock_timeout + 2.0
        finally:
            holder.close()

    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        texts = [
            json.loads(t)["text"] for (t,) in conn.execute("SELECT payload FROM messages ORDER BY created_at")
        ]
        assert texts == ["before", "after", "short lock"], texts
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# --- read-only -------------------------------------------------------------------------------------


def test_read_only_database_is_refused_at_startup_and_left_untouched(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "broker.db"
    make_broker_db(db)
    assert not (folder / "broker.db-wal").exists(), "a clean close leaves no WAL behind"
    db.chmod(0o444)
    folder.chmod(0o555)
    try:
        before = listing(folder)
        result = run_broker(tmp_path, "--db", str(db), without_dac=os.geteuid() == 0)
        after = listing(folder)
        mode = stat.S_IMODE(db.stat().st_mode)
    finally:
        folder.chmod(0o755)
        db.chmod(0o600)

    assert_refused_at_startup(result, "STORE_UNAVAILABLE", "permission")
    assert after == before, "the read-only file was changed, or files were created next to it"
    assert mode == 0o444


# --- full disk -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_full_disk_refuses_send_whole_and_the_broker_keeps_serving(brokers: Any, db_path: Path) -> None:
    sender: Broker = await brokers()
    sink: Broker = await brokers()
    await sender.catalog.register_protocol("chat", "1.0.0", CHAT_SCHEMA, ["point_to_point"])
    await sink.sessions.connect("sink", CHAT)
    await sender.sessions.connect("sender", CHAT)
    first = await sender.messaging.send("sink", "chat", {"text": "fits"})

    conn = sender.store._conn
    assert conn is not None

    def pragma(sql: str) -> Any:
        return conn._conn.execute(sql).fetchone()[0]

    async def on_store_thread(sql: str) -> Any:
        return await conn._execute(pragma, sql)

    def counts() -> tuple[int, int]:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as ro:
            return (
                ro.execute("SELECT count(*) FROM messages").fetchone()[0],
                ro.execute("SELECT count(*) FROM deliveries").fetchone()[0],
            )

    # The disk is full: the file may not grow by a single page on the sender's connection.
    pages = await on_store_thread("PRAGMA page_count")
    assert await on_store_thread(f"PRAGMA max_page_count = {pages}") == pages
    before = counts()
    big = {"text": "x" * (200 * 1024)}  # needs about fifty new pages

    async with Client(build_server(sender)) as client:
        refused = await client.call_tool(
            "send", {"to": "sink", "protocol": "chat", "payload": big}, raise_on_error=False
        )
        assert refused.is_error
        text = refused.content[0].text
        assert text.startswith("STORE_UNAVAILABLE: "), text
        assert "full" in text, text
        assert counts() == before, "a refused send left part of itself behind"

        # The same process keeps serving: reads, and writes that need no new page.
        status = await client.call_tool("message_status", {"message_ids": [first.message_id]})
        assert status.structured_content["messages"][0]["deliveries"][0]["state"] == "queued"
        assert not (await client.call_tool("list_sessions", {})).is_error
        with pytest.raises(StoreUnavailable, match="full"):
            await sender.messaging.send("sink", "chat", big)

        # Space comes back: the very same call goes through.
        await on_store_thread("PRAGMA max_page_count = 1073741823")
        sent = await client.call_tool("send", {"to": "sink", "protocol": "chat", "payload": big})
        assert sent.structured_content["status"] == "delivered"

    got = await sink.inbox.receive(max_messages=10)
    assert [m.payload for m in got.messages] == [{"text": "fits"}, big]
    assert counts() == (before[0] + 1, before[1] + 1)
    assert await sender.store.integrity_check() == "ok"


# --- not a file ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["path_is_a_directory", "parent_is_a_file"])
def test_database_path_that_is_not_a_file_gives_a_clear_error(tmp_path: Path, shape: str) -> None:
    if shape == "path_is_a_directory":
        db = tmp_path / "broker.db"
        db.mkdir()
        (db / "keep.txt").write_text("someone's file")
        hint = "directory"
    else:
        parent = tmp_path / "notes.txt"
        parent.write_text("a regular file, not a folder")
        db = parent / "broker.db"
        hint = "notes.txt"  # the error names the file that stands where a folder should be
    before = listing(tmp_path)

    result = run_broker(tmp_path, "--db", str(db))

    assert_refused_at_startup(result, "STORE_UNAVAILABLE", hint)
    assert listing(tmp_path) == before, "files were created or changed"
