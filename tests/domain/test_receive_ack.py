"""receive(ack=...): a delivered message in two calls, and long-polls that sleep until something can change."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from mcp_broker.domain import Broker
from mcp_broker.errors import InvalidArgument, UnknownMessage

pytestmark = pytest.mark.anyio
BrokerFactory = Callable[..., Awaitable[Broker]]
SCHEMA: dict[str, Any] = {"type": "object", "properties": {"n": {"type": "integer"}}}
SPEAKS = [{"name": "chat", "versions": "^1.0"}]


async def _pair(brokers: BrokerFactory) -> tuple[Broker, Broker]:
    a, b = await brokers(), await brokers()
    await a.catalog.register_protocol("chat", "1.0.0", SCHEMA, ["point_to_point"], None)
    await a.sessions.connect("alice", SPEAKS)
    await b.sessions.connect("bob", SPEAKS)
    return a, b


async def test_receive_acks_the_previous_batch_before_leasing(brokers: BrokerFactory) -> None:
    a, b = await _pair(brokers)
    first = await a.messaging.send("bob", "chat", {"n": 1})
    got = await b.inbox.receive()
    assert [m.message_id for m in got.messages] == [first.message_id] and got.acked is None
    second = await a.messaging.send("bob", "chat", {"n": 2})
    got = await b.inbox.receive(ack=[first.message_id])
    assert got.acked is not None and got.acked.acked == 1
    assert [(r.message_id, r.status) for r in got.acked.results] == [(first.message_id, "acked")]
    assert [m.message_id for m in got.messages] == [second.message_id]
    status = (await a.inbox.message_status([first.message_id])).messages[0].deliveries[0]
    assert status.state == "acked"
    again = await b.inbox.receive(ack=[first.message_id, second.message_id])
    assert again.acked is not None
    assert [r.status for r in again.acked.results] == ["already_acked", "acked"]
    assert again.messages == []


async def test_an_unknown_id_in_ack_refuses_the_call_and_leases_nothing(brokers: BrokerFactory) -> None:
    a, b = await _pair(brokers)
    first = await a.messaging.send("bob", "chat", {"n": 1})
    (leased,) = (await b.inbox.receive()).messages
    waiting = await a.messaging.send("bob", "chat", {"n": 2})
    with pytest.raises(UnknownMessage, match="nothing was acked"):
        await b.inbox.receive(ack=[leased.message_id, "no-such-id"])
    with pytest.raises(InvalidArgument):
        await b.inbox.receive(ack=["x"] * 0 + ["x" * 65])
    # Neither the known id was acked nor the waiting message leased.
    statuses = await a.inbox.message_status([first.message_id, waiting.message_id])
    assert [m.deliveries[0].state for m in statuses.messages] == ["leased", "queued"]


async def test_a_waiting_receive_wakes_when_its_own_lease_runs_out(brokers: BrokerFactory) -> None:
    # No ring announces a lapsed lease: the wait must end at the lease's end, not at the safety net.
    a, b = await _pair(brokers)
    b.inbox.recheck_seconds = 30.0
    sent = await a.messaging.send("bob", "chat", {"n": 1})
    await b.inbox.receive(lease_seconds=1)
    with anyio.fail_after(10):
        start = time.monotonic()
        again = await b.inbox.receive(wait_seconds=20)
    assert [m.message_id for m in again.messages] == [sent.message_id]
    assert again.messages[0].delivery_attempt == 2
    assert time.monotonic() - start < 15


async def test_a_resumed_session_wakes_when_a_lease_of_its_previous_process_runs_out(
    brokers: BrokerFactory,
) -> None:
    a, b = await _pair(brokers)
    sent = await a.messaging.send("bob", "chat", {"n": 1})
    await b.inbox.receive(lease_seconds=1)
    await b.sessions.disconnect()
    c = await brokers()
    await c.sessions.connect("bob", SPEAKS)
    c.inbox.recheck_seconds = 30.0
    with anyio.fail_after(10):
        again = await c.inbox.receive(wait_seconds=20)
    assert [m.message_id for m in again.messages] == [sent.message_id]
