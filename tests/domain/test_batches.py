"""send_many in the domain: one snapshot for the batch, and the event loop gets a turn between its sends."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mcp_broker.domain import Broker, batches
from mcp_broker.errors import InvalidArgument, NotConnected

pytestmark = pytest.mark.anyio
BrokerFactory = Callable[..., Awaitable[Broker]]
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}}}
SPEAKS = [{"name": "chat", "versions": "^1.0"}]


async def _sessions(brokers: BrokerFactory, *names: str) -> list[Broker]:
    """One broker per name, each connected as it; the first registers the protocol."""
    parts = [await brokers() for _ in names]
    await parts[0].catalog.register_protocol("chat", "1.0.0", SCHEMA, ["point_to_point"], None)
    for part, name in zip(parts, names, strict=True):
        await part.sessions.connect(name, SPEAKS)
    return parts


def _count_reads(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, after_first: Callable[[], Awaitable[None]] | None = None
) -> list[Any]:
    """The snapshot queries ``broker``'s sends make from now on; ``after_first`` runs once the first is read."""
    reads: list[Any] = []
    real = broker.messaging.store.snapshot

    async def counted(query: Any) -> Any:
        reads.append(query)
        snap = await real(query)
        if after_first is not None and len(reads) == 1:
            await after_first()
        return snap

    monkeypatch.setattr(broker.messaging.store, "snapshot", counted)
    return reads


async def test_other_work_runs_between_the_sends_of_a_batch(brokers: BrokerFactory) -> None:
    a, _ = await _sessions(brokers, "alice", "bob")
    items = [{"to": "bob", "protocol": "chat", "payload": {"n": n}} for n in range(50)]
    turns = 0
    running = True

    async def other_work() -> None:  # stands for a ping or another call on the same loop
        nonlocal turns
        while running:
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_work)
        await anyio.lowlevel.checkpoint()
        before = turns
        result = await batches.send_many(a.messaging, items)
        during = turns - before
        running = False
    assert result.sent == 50
    assert during >= len(items)  # at least one turn before each send (a store that was free yields none)


async def test_a_batch_needs_a_session_and_one_to_a_hundred_messages(brokers: BrokerFactory) -> None:
    a = await brokers()
    with pytest.raises(NotConnected):
        await batches.send_many(a.messaging, [{"to": "bob", "protocol": "chat", "payload": {}}])
    await a.sessions.connect("alice", SPEAKS)
    for count in (0, batches.MAX_BATCH + 1):
        with pytest.raises(InvalidArgument, match="between 1 and 100"):
            await batches.send_many(a.messaging, [{"to": "bob", "protocol": "chat", "payload": {}}] * count)


async def test_a_batch_reads_one_snapshot_for_all_its_sends(
    brokers: BrokerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, _ = await _sessions(brokers, "alice", "bob", "carol")

    async def bob_reconnects() -> None:  # right after the batch's read
        await b.sessions.disconnect()
        await b.sessions.connect("bob", SPEAKS)

    reads = _count_reads(a, monkeypatch, after_first=bob_reconnects)
    items = [
        {"to": to, "protocol": "chat", "payload": {"n": n}} for n in range(10) for to in ("bob", "carol")
    ]
    result = await batches.send_many(a.messaging, items)
    assert result.sent == 20
    # One read for the batch; each send to bob, decided on it, found him reconnected and read again
    # for itself (as a lone send would); the sends to carol needed nothing more.
    assert sorted(reads[0].session_refs) == [("bob", False), ("carol", False)]
    assert [q.session_refs for q in reads[1:]] == [[("bob", False)]] * 10
    got = await b.inbox.receive(max_messages=100)
    assert [m.payload["n"] for m in got.messages] == list(range(10))


async def test_a_batch_that_outlives_its_read_reads_again(
    brokers: BrokerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = await _sessions(brokers, "alice", "bob")
    reads = _count_reads(a, monkeypatch)
    monkeypatch.setattr(batches, "SNAPSHOT_SECONDS", -1.0)  # every read is already too old
    result = await batches.send_many(a.messaging, [{"to": "bob", "protocol": "chat", "payload": {}}] * 5)
    assert result.sent == 5
    assert len(reads) == 1 + 5  # the batch's read, then a fresh one before each send
