"""Graceful degradation: Redis goes away, the broker keeps running and spools sends in its outbox.

Each test starts its own redis-server (AOF on), because it stops it; the outbox lives under
``tmp_path`` (``XDG_DATA_HOME``), as the outbox of one machine.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_broker.config import Settings
from mcp_broker.domain import Broker
from mcp_broker.errors import BrokerError

pytest.importorskip("redis")
from redis_server import RedisServer

pytestmark = pytest.mark.anyio

SCHEMA: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
OUTAGE = 10.0


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # this machine's outbox
    found = RedisServer(tmp_path / "redis")
    found.start()
    yield found
    found.stop()


@pytest.fixture
async def stack() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as found:
        yield found


async def broker(stack: AsyncExitStack, server: Any) -> Broker:
    settings = Settings(store=server.url(namespace="spool"), namespace="spool", heartbeat_interval=0.5)
    return await stack.enter_async_context(Broker.running(settings))


async def receive_all(b: Broker, count: int) -> list[int]:
    """Receive and ack until ``count`` messages came, in the order received."""
    got: list[int] = []
    with anyio.fail_after(30):
        while len(got) < count:
            try:
                found = await b.inbox.receive(max_messages=100, wait_seconds=1)
            except BrokerError:
                await anyio.sleep(0.2)  # the store is not back yet
                continue
            got += [m.payload["n"] for m in found.messages]
            if found.messages:
                await b.inbox.ack([m.message_id for m in found.messages])
    return got


async def test_sends_while_redis_is_down_are_spooled_then_delivered_in_order_once(
    server: Any, stack: AsyncExitStack
) -> None:
    alice, bob = await broker(stack, server), await broker(stack, server)
    await alice.catalog.register_protocol("count", "1.0.0", SCHEMA, ["point_to_point", "broadcast"])
    await alice.sessions.connect("alice", [{"name": "count", "versions": "^1.0"}])
    await bob.sessions.connect("bob", [{"name": "count", "versions": "^1.0"}])
    before = [await alice.messaging.send("bob", "count", {"n": n}) for n in range(3)]
    assert {r.status for r in before} == {"delivered"}

    server.stop()
    stopped = time.monotonic()
    spooled = []
    n = 3
    while time.monotonic() - stopped < OUTAGE:  # sends throughout the outage
        result = await alice.messaging.send("bob", "count", {"n": n})
        assert result.status == "spooled"
        spooled.append(result.message_id)
        n += 1
        await anyio.sleep(0.5)
    with pytest.raises(BrokerError, match=r"^STORE_UNAVAILABLE"):
        await bob.inbox.receive(max_messages=10)
    waiting = await alice.inbox.message_status(spooled[:1])
    assert [r.state for r in waiting.messages[0].deliveries] == ["spooled"]

    server.start()
    got = await receive_all(bob, n)
    assert got == list(range(n))  # in order, none lost, none twice
    with anyio.fail_after(10):
        while True:
            status = await alice.inbox.message_status(spooled)
            if all(d.state == "acked" for m in status.messages for d in m.deliveries):
                break
            await anyio.sleep(0.2)
    assert await bob.inbox.receive(max_messages=100) is not None


async def test_a_broker_starts_while_redis_is_down_and_its_outbox_survives_a_restart(
    server: Any, tmp_path: Path
) -> None:
    settings = Settings(store=server.url(namespace="restart"), namespace="restart", heartbeat_interval=0.5)
    async with Broker.running(settings) as alice, Broker.running(settings) as bob:
        await alice.catalog.register_protocol("count", "1.0.0", SCHEMA, ["point_to_point"])
        await alice.sessions.connect("alice", [{"name": "count", "versions": "^1.0"}])
        await bob.sessions.connect("bob", [{"name": "count", "versions": "^1.0"}])
        await bob.sessions.disconnect()
        # What a send decides on while Redis is down is what this process last read.
        assert (await alice.messaging.send("bob", "count", {"n": 0})).status == "queued"
        server.stop()
        first = await alice.messaging.send("bob", "count", {"n": 1})
        assert first.status == "spooled"
    # The process is gone; another one starts while Redis is still down, and does not exit.
    async with Broker.running(settings) as again:
        with pytest.raises(BrokerError, match=r"^STORE_UNAVAILABLE"):
            await again.sessions.connect("carol", [{"name": "count", "versions": "^1.0"}])
        server.start()
        async with Broker.running(settings) as bob:
            with anyio.fail_after(20):
                while True:
                    try:
                        await bob.sessions.connect("bob", [{"name": "count", "versions": "^1.0"}])
                        break
                    except BrokerError:
                        await anyio.sleep(0.2)
            assert await receive_all(bob, 2) == [0, 1]  # forwarded by the process that started later
