"""End-to-end on Redis: real ``python -m mcp_broker`` processes as on several machines, one Redis.

Each process presents its own host identity (``MCP_BROKER_HOST_ID``), so none can check another's
process id: as across real machines, only heartbeats tell whether a session's process is there.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from conftest import broker_process, started
from test_e2e import CHAT, call, refusal, register, session, until

from mcp_broker.config import url_namespace

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

ASK = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
ANSWER = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


@pytest.fixture
def spawn(redis_url: str) -> Callable[..., Any]:
    """``spawn(host_id=...)``: one broker process on the test's Redis namespace."""

    namespace = url_namespace(redis_url)  # the URL's ?namespace= must agree with the setting

    def _spawn(**settings: Any) -> Any:
        return broker_process(redis_url, **({"namespace": namespace} | settings))

    return _spawn


async def test_two_machines_negotiate_send_broadcast_request_and_reply(spawn: Callable[..., Any]) -> None:
    async with (
        started(lambda: spawn(host_id="machine-a"), 1) as (a,),
        started(lambda: spawn(host_id="machine-b"), 2) as (b, c),
    ):
        alice, bob, carol = a.client, b.client, c.client
        await register(alice)
        await call(
            alice,
            "register_protocol",
            name="ask",
            version="1.0.0",
            schema=ASK,
            response_schema=ANSWER,
            capabilities=["request_response"],
        )
        ask = [{"name": "ask", "versions": ">=1"}]
        await call(alice, "connect", name="alice", protocols=[*CHAT, *ask])
        await call(bob, "connect", name="bob", protocols=[*CHAT, *ask], features=["ci"])
        await call(carol, "connect", name="carol", protocols=CHAT)

        info = await session(alice, "bob")
        assert info["host"] == "machine-b" and info["status"] == "active"
        assert info["process_alive"] is None  # another machine: heartbeats decide
        assert (await session(bob, "carol"))["process_alive"] is True  # same machine: checked

        agreed = await call(alice, "negotiate", peer="bob", required_protocols=["chat"])
        assert agreed["compatible"] and agreed["agreed"]["chat"] == "1.0.0"

        # A long-poll on machine B wakes soon after a send committed on machine A.
        got: dict[str, Any] = {}

        async def wait_for_it() -> None:
            started_at = time.monotonic()
            got["result"] = await call(bob, "receive", wait_seconds=20)
            got["elapsed"] = time.monotonic() - started_at

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_it)
            await anyio.sleep(0.5)
            sent = await call(
                alice, "send", to="bob", protocol="chat", payload={"text": "hi"}, priority="high"
            )
        assert sent["status"] == "delivered"
        [message] = got["result"]["messages"]
        assert message["message_id"] == sent["message_id"] and message["sender"] == "alice"
        assert got["elapsed"] < 5, got["elapsed"]
        assert (await call(bob, "ack", message_ids=[message["message_id"]]))["acked"] == 1

        # A broadcast reaches both machines, the sender excepted.
        cast = await call(bob, "broadcast", protocol="chat", payload={"text": "build is green"})
        assert sorted(r["name"] for r in cast["recipients"]) == ["alice", "carol"]
        for client in (alice, carol):
            [m] = (await call(client, "receive", wait_seconds=5))["messages"]
            assert m["payload"] == {"text": "build is green"} and m["broadcast"] is True
            await call(client, "ack", message_ids=[m["message_id"]])

        # Request on A, reply on B: the reply is stored with the request's ack.
        async def answer() -> None:
            [request] = (await call(bob, "receive", wait_seconds=10))["messages"]
            assert request["kind"] == "request" and request["payload"] == {"q": "6*7?"}
            await call(bob, "reply", message_id=request["message_id"], payload={"a": 42})

        async with anyio.create_task_group() as tg:
            tg.start_soon(answer)
            result = await call(alice, "request", to="bob", protocol="ask", payload={"q": "6*7?"})
        assert result["status"] == "answered" and result["reply"]["payload"] == {"a": 42}
        status = await call(alice, "message_status", message_ids=[result["request_id"]])
        assert status["messages"][0]["deliveries"][0]["state"] == "acked"


async def test_a_session_resumes_on_another_machine_and_a_killed_ones_leases_come_back(
    spawn: Callable[..., Any],
) -> None:
    fast = {"heartbeat_interval": 0.5, "stale_after": 1, "expire_after": 2}
    async with (
        started(lambda: spawn(host_id="machine-a", **fast), 1) as (a,),
        started(lambda: spawn(host_id="machine-b", **fast), 1) as (b,),
        started(lambda: spawn(host_id="machine-c", **fast), 1) as (c,),
    ):
        alice = a.client
        await register(alice)
        await call(alice, "connect", name="alice", protocols=CHAT)
        first = await call(b.client, "connect", name="bob", protocols=CHAT)

        # Held by a live process elsewhere: refused, as on one machine.
        text = await refusal(c.client, "connect", {"name": "bob", "protocols": CHAT})
        assert text.startswith("NAME_TAKEN: "), text

        sent = await call(alice, "send", to="bob", protocol="chat", payload={"text": "handle me"})
        [leased] = (await call(b.client, "receive", wait_seconds=5, lease_seconds=2))["messages"]
        assert leased["message_id"] == sent["message_id"]

        # Machine B's broker dies without a word; machine C cannot see its process, only the silence.
        pid = (await session(alice, "bob"))["pid"]
        os.kill(pid, signal.SIGKILL)

        async def bob_gone() -> bool:
            return (await session(alice, "bob"))["status"] == "disconnected"

        await until(bob_gone, timeout=15, what="bob's session expired by heartbeat")
        again = await call(c.client, "connect", name="bob", protocols=CHAT)
        assert again["resumed"] is True and again["session_id"] == first["session_id"]
        assert (await session(alice, "bob"))["host"] == "machine-c"

        [redelivered] = (await call(c.client, "receive", wait_seconds=10))["messages"]
        assert redelivered["message_id"] == sent["message_id"] and redelivered["delivery_attempt"] == 2
        assert (await call(c.client, "ack", message_ids=[redelivered["message_id"]]))["acked"] == 1

        # A clean exit on C, a message while away, a resume back on A's machine.
        await call(c.client, "disconnect")
        queued = await call(alice, "send", to="bob", protocol="chat", payload={"text": "while away"})
        assert queued["status"] == "queued"
        async with started(lambda: spawn(host_id="machine-a", **fast), 1) as (d,):
            back = await call(d.client, "connect", name="bob", protocols=CHAT)
            assert back["resumed"] is True and back["queue_depth"] == 1
            [m] = (await call(d.client, "receive"))["messages"]
            assert m["payload"] == {"text": "while away"}
