"""A helper process holding many broadcast recipients: ``python -m bench.fleet DB FIRST COUNT``.

It opens COUNT ``Broker`` sessions (the domain layer, no MCP) named ``bc-FIRST`` ... on DB, then obeys
one command per stdin line and answers one JSON line on stdout each:

* ``park``: every session long-polls ``receive(wait_seconds=30)``; answers ``{"parked": n}`` once this
  process is quiet (all waiting), then ``{"received": [stamps], "errors": [...]}`` when each has
  returned, stamps from ``time.perf_counter`` (CLOCK_MONOTONIC on Linux: the same clock in every process).
* ``drain``: receive and ack everything waiting; answers ``{"drained": n}``.
* ``exit`` (or end of input): close every session; answers ``{"closed": n}``.

Spreading 1,000 recipients over several such processes keeps each one's threads (one per store
connection) few enough that waking them all measures the broker, not one interpreter's GIL.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import traceback
from contextlib import AsyncExitStack
from pathlib import Path

from mcp_broker.config import Settings
from mcp_broker.domain import Broker

from . import procfs
from .common import SPEAKS, UNLIMITED

PARK_SECONDS = 30.0


def say(message: dict[str, object]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def until_quiet(at_most: float) -> None:
    """Until this process spends under one clock tick of CPU in 100 ms: every receiver is waiting."""
    pid = os.getpid()
    deadline = time.perf_counter() + at_most
    before = procfs.cpu_seconds(pid)
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.1)
        now = procfs.cpu_seconds(pid)
        if now - before < 1.5 / procfs.CLOCK_TICKS:
            return
        before = now


async def drain(broker: Broker, slots: asyncio.Semaphore) -> int:
    total = 0
    async with slots:
        while got := (await broker.inbox.receive(max_messages=100)).messages:
            await broker.inbox.ack([m.message_id for m in got])
            total += len(got)
    return total


async def park(brokers: list[Broker]) -> None:
    received: list[float] = []
    errors: list[str] = []

    async def one(broker: Broker) -> None:
        try:
            got = await broker.inbox.receive(max_messages=10, wait_seconds=PARK_SECONDS)
            if not got.messages:
                errors.append(f"{broker.session_name}: nothing arrived in {PARK_SECONDS:g} s")
                return
            received.append(time.perf_counter())
            await broker.inbox.ack([m.message_id for m in got.messages])
        except Exception as exc:
            errors.append(f"{broker.session_name}: {type(exc).__name__}: {exc}")

    tasks = [asyncio.create_task(one(b)) for b in brokers]
    await until_quiet(at_most=10)
    say({"parked": sum(not t.done() for t in tasks)})
    await asyncio.gather(*tasks)
    say({"received": received, "errors": errors[:20], "error_count": len(errors)})


async def main(db: Path, first: int, count: int) -> None:
    settings = Settings(store=db, heartbeat_interval=3600, stale_after=3600, log_level="WARNING", **UNLIMITED)
    async with AsyncExitStack() as stack:
        brokers = []
        for i in range(first, first + count):
            broker = await stack.enter_async_context(Broker.running(settings))
            await broker.sessions.connect(f"bc-{i}", SPEAKS)
            brokers.append(broker)
        say({"ready": len(brokers)})
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while command := (await reader.readline()).decode().strip():
            if command == "park":
                await park(brokers)
            elif command == "drain":  # not measured: a few at a time, so no session starves
                slots = asyncio.Semaphore(4)
                drained = await asyncio.gather(*(drain(b, slots) for b in brokers))
                say({"drained": sum(drained)})
            elif command == "exit":
                break
            else:
                say({"error": f"unknown command {command!r}"})
    say({"closed": len(brokers)})


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


if __name__ == "__main__":
    try:
        asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
    except BaseExceptionGroup as group:  # 100 nested task groups bury the cause ten levels deep
        for leaf in _leaves(group):
            traceback.print_exception(leaf)
        sys.exit(f"fleet failed: {'; '.join(repr(leaf) for leaf in _leaves(group))[:500]}")
