"""The write-ahead log stays small, and the durability setting reaches SQLite.

A reader that keeps a transaction open pins the WAL: every commit after its snapshot stays in the
log and checkpoints cannot reset it. Measured while writing this test with the traffic below: with
one outside connection holding a read transaction the WAL grew to about 170 MB; without it, about
6 MB. No broker may hold one, not even while a long-poll waits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_broker import config
from mcp_broker.config import Settings
from mcp_broker.domain import Broker
from mcp_broker.errors import InboxFull

pytestmark = pytest.mark.anyio

CHAT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
CHAT = [{"name": "chat", "versions": ">=1.0,<2"}]
MESSAGES = 3000
PAYLOAD_BYTES = 2000
WAL_BOUND = 20 * 1024 * 1024  # journal_size_limit is 16 MiB; autocheckpoints keep it near 4 MiB


async def pragma(broker: Broker, name: str) -> Any:
    """A PRAGMA's value on the broker's own connection, read on its thread."""
    conn = broker.store._conn
    assert conn is not None
    return await conn._execute(lambda: conn._conn.execute(f"PRAGMA {name}").fetchone()[0])


@pytest.mark.timeout(180)
async def test_wal_stays_bounded_under_steady_traffic_with_a_long_poll_pending(
    brokers: Any, db_path: Path
) -> None:
    sender: Broker = await brokers()
    receiver: Broker = await brokers()
    idle: Broker = await brokers()
    await sender.catalog.register_protocol("chat", "1.0.0", CHAT_SCHEMA, ["point_to_point"])
    await sender.sessions.connect("sender", CHAT)
    await receiver.sessions.connect("receiver", CHAT)
    await idle.sessions.connect("idle", CHAT)

    wal = db_path.parent / (db_path.name + "-wal")
    largest = 0
    acked: set[str] = set()
    inbox_full = 0
    traffic_done = anyio.Event()
    long_poll: dict[str, Any] = {}

    async def watch_wal() -> None:
        nonlocal largest
        while not traffic_done.is_set():
            with contextlib.suppress(FileNotFoundError):
                largest = max(largest, wal.stat().st_size)
            await anyio.sleep(0.005)

    async def send_all() -> None:
        nonlocal inbox_full
        for i in range(MESSAGES):
            while True:
                try:
                    await sender.messaging.send(
                        "receiver", "chat", {"text": f"{i:05d}" + "x" * PAYLOAD_BYTES}
                    )
                    break
                except InboxFull:  # backpressure: the receiver is behind; let it catch up
                    inbox_full += 1
                    await anyio.sleep(0.05)

    async def receive_all() -> None:
        while len(acked) < MESSAGES:
            got = await receiver.inbox.receive(max_messages=100, wait_seconds=1)
            if got.messages:
                outcome = await receiver.inbox.ack([m.message_id for m in got.messages])
                assert outcome.acked == len(got.messages)
                acked.update(m.message_id for m in got.messages)

    async def wait_long() -> None:
        long_poll["result"] = await idle.inbox.receive(max_messages=1, wait_seconds=60)

    started = time.monotonic()
    async with anyio.create_task_group() as outer:
        outer.start_soon(wait_long)
        await anyio.wait_all_tasks_blocked()
        with anyio.fail_after(150):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch_wal)
                tg.start_soon(receive_all)
                await send_all()
                with anyio.fail_after(60):
                    while len(acked) < MESSAGES:
                        await anyio.sleep(0.05)
                traffic_done.set()
        elapsed = time.monotonic() - started
        assert "result" not in long_poll, "the long-poll returned although nothing was sent to it"

        # One message stays leased, not acked: a lease is a row in the store, never an open transaction.
        await sender.messaging.send("receiver", "chat", {"text": "held under lease"})
        leased = await receiver.inbox.receive(max_messages=1, wait_seconds=5, lease_seconds=60)
        assert len(leased.messages) == 1

        # With the long-poll still pending, a lease outstanding and two more brokers open, a full
        # checkpoint from another connection completes: no broker holds a read transaction (or the
        # write lock) while it waits.
        with contextlib.closing(sqlite3.connect(db_path, isolation_level=None, timeout=10)) as outside:
            busy, log, checkpointed = outside.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0, "a broker held a transaction open: the checkpoint could not finish"
        assert log == checkpointed, (log, checkpointed)
        assert wal.stat().st_size == 0, "TRUNCATE empties the WAL when nothing pins it"
        assert "result" not in long_poll
        assert (await receiver.inbox.ack([leased.messages[0].message_id])).acked == 1

        # The long-poll still works after all that: a message for it ends the wait.
        await sender.messaging.send("idle", "chat", {"text": "wake up"})
        with anyio.fail_after(10):
            while "result" not in long_poll:
                await anyio.sleep(0.01)
        outer.cancel_scope.cancel()

    assert [m.payload for m in long_poll["result"].messages] == [{"text": "wake up"}]
    summary = (
        f"wal: messages={MESSAGES}, payload={PAYLOAD_BYTES} B, max_wal={largest / 2**20:.1f} MiB "
        f"(bound {WAL_BOUND / 2**20:.0f} MiB), inbox_full_retries={inbox_full}, seconds={elapsed:.1f}"
    )
    print(summary)
    sys.stderr.write(summary + "\n")
    assert len(acked) == MESSAGES
    assert 0 < largest < WAL_BOUND, f"the WAL grew to {largest / 2**20:.1f} MiB"
    assert await sender.store.integrity_check() == "ok"


async def test_wal_settings_on_every_connection(brokers: Any) -> None:
    broker: Broker = await brokers()
    assert await pragma(broker, "journal_mode") == "wal"
    assert await pragma(broker, "journal_size_limit") == 16 * 1024 * 1024
    assert await pragma(broker, "wal_autocheckpoint") > 0


# --- durability ------------------------------------------------------------------------------------


async def test_durability_normal_by_default_and_full_when_asked(brokers: Any) -> None:
    default: Broker = await brokers()
    full: Broker = await brokers(durability="full")
    assert default.settings.durability == "normal"
    assert await pragma(default, "synchronous") == 1  # NORMAL: survives any process crash
    assert await pragma(full, "synchronous") == 2  # FULL: also survives power loss


@pytest.mark.parametrize(
    ("flags", "environ", "expected"),
    [
        ([], {}, 1),
        (["--durability", "full"], {}, 2),
        (["--durability", "normal"], {}, 1),
        ([], {"MCP_BROKER_DURABILITY": "full"}, 2),
        (["--durability", "normal"], {"MCP_BROKER_DURABILITY": "full"}, 1),  # the flag wins
    ],
)
async def test_durability_flag_and_environment_reach_the_store(
    tmp_path: Path, flags: list[str], environ: dict[str, str], expected: int
) -> None:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    settings = config.load(parser.parse_args(flags), environ=environ)
    async with Broker.running(replace(settings, store=str(tmp_path / "b.db"))) as broker:
        assert await pragma(broker, "synchronous") == expected


def test_unknown_durability_is_refused() -> None:
    with pytest.raises(ValueError, match="durability"):
        config.parse(["--durability", "sometimes"])


def test_settings_default_durability_is_normal() -> None:
    assert Settings().durability == "normal"
    assert os.environ.get("MCP_BROKER_DURABILITY") is None  # the suite scrubs the environment
