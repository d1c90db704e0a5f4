"""3. Store throughput without MCP: the domain layer in this process, beside raw sqlite3.

``Broker.send`` (validation, one transaction each) is timed in blocks alternating with blocks of raw
``sqlite3`` insert-and-commit transactions on a file of the same kind (WAL, synchronous=NORMAL, same
folder). Then messages per second through send -> receive -> ack, receive and ack in batches of 100.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path

from mcp_broker.config import Settings
from mcp_broker.domain import Broker

from .common import PROTOCOL, REGISTER, SPEAKS, TEXT, UNLIMITED, Progress, Run, payload


class RawSqlite:
    """The floor: one INSERT and a COMMIT per transaction, nothing else."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, sender TEXT, recipient TEXT, "
            "protocol TEXT, payload TEXT, created_at REAL)"
        )

    def insert(self, n: int) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.execute(
            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)",
            (str(uuid.uuid4()), "a", "b", PROTOCOL, f'{{"n": {n}, "text": "{TEXT}"}}', time.time()),
        )
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


async def _drain(broker: Broker) -> int:
    total = 0
    while True:
        got = await broker.inbox.receive(max_messages=100)
        if not got.messages:
            return total
        await broker.inbox.ack([m.message_id for m in got.messages])
        total += len(got.messages)


async def run_store(run: Run) -> None:
    progress = Progress("store")
    db = run.db("store")
    settings = Settings(store=db, heartbeat_interval=3600, log_level="WARNING", **UNLIMITED)
    block = 50 if run.quick else 200
    rounds = max(2, (run.messages * 2) // block)
    pipeline_total = 300 if run.quick else max(1000, run.messages * 5)
    raw = RawSqlite(db.parent / "raw.db")
    async with AsyncExitStack() as stack:
        alice = await stack.enter_async_context(Broker.running(settings))
        bob = await stack.enter_async_context(Broker.running(settings))
        await alice.catalog.register_protocol(**REGISTER)
        await alice.sessions.connect("store-alice", SPEAKS)
        await bob.sessions.connect("store-bob", SPEAKS)
        progress(
            f"{rounds} rounds of {block} Broker.send and {block} raw sqlite3 insert-commits, alternating"
        )

        async def sends(start: int) -> float:
            t0 = time.perf_counter()
            for n in range(start, start + block):
                await alice.messaging.send("store-bob", PROTOCOL, payload(n))
            return time.perf_counter() - t0

        def inserts(start: int) -> float:
            t0 = time.perf_counter()
            for n in range(start, start + block):
                raw.insert(n)
            return time.perf_counter() - t0

        await sends(0)
        inserts(0)
        await _drain(bob)
        send_time = insert_time = 0.0
        for r in range(rounds):
            if r % 2:
                send_time += await sends(r * block)
                insert_time += inserts(r * block)
            else:
                insert_time += inserts(r * block)
                send_time += await sends(r * block)
            await _drain(bob)
        raw.close()
        total = rounds * block
        send_rate, insert_rate = total / send_time, total / insert_time

        progress(f"pipeline: {pipeline_total} messages, send x100 -> receive(100) -> ack(100)")
        t0 = time.perf_counter()
        done = 0
        while done < pipeline_total:
            batch = min(100, pipeline_total - done)
            for n in range(done, done + batch):
                await alice.messaging.send("store-bob", PROTOCOL, payload(n))
            got = 0
            while got < batch:
                received = await bob.inbox.receive(max_messages=100)
                if not received.messages:
                    raise RuntimeError("a sent message was not there to receive")
                await bob.inbox.ack([m.message_id for m in received.messages])
                got += len(received.messages)
            done += batch
        pipeline_rate = pipeline_total / (time.perf_counter() - t0)

    run.details["store"] = {"sends_per_kind": total, "block": block, "pipeline_messages": pipeline_total}
    run.figure("store.broker_send_per_s", send_rate, "tx/s", "Broker.send in-process, one transaction each")
    run.figure(
        "store.sqlite_insert_per_s", insert_rate, "tx/s", "baseline: raw sqlite3 INSERT+COMMIT, same pragmas"
    )
    run.figure("store.send_per_sqlite_insert", send_rate / insert_rate, "")
    run.figure(
        "store.pipeline_msgs_per_s", pipeline_rate, "msg/s", "send each, receive and ack in batches of 100"
    )
