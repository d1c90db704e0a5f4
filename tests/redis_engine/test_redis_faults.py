"""Faults on Redis: redis-server SIGKILLed during traffic between real broker processes, and restarted.

With the append-only file on, every send answered ``delivered`` or ``queued`` is received after the
restart, and no message is acked twice. The brokers never exit for the outage: calls in it are
refused (STORE_UNAVAILABLE, with a retry hint) and work again once Redis is back.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from conftest import broker_process, started
from redis_server import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CHAT = [{"name": "chat", "versions": ">=1.0,<2"}]
SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
SENDS = 150
KILL_AFTER = 50  # answered sends before the kill


async def tool(client: Any, tool_name: str, **arguments: Any) -> tuple[bool, Any]:
    result = await client.call_tool(tool_name, arguments, raise_on_error=False)
    if result.is_error:
        return False, result.content[0].text if result.content else ""
    return True, result.structured_content


async def test_sigkill_of_redis_during_traffic_loses_no_answered_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # the machine's outbox
    server = RedisServer(tmp_path / "redis")
    server.start()
    url = server.url("faults")
    try:
        async with (
            started(lambda: broker_process(url, namespace="faults", host_id="machine-a"), 1) as (a,),
            started(lambda: broker_process(url, namespace="faults", host_id="machine-b"), 1) as (b,),
        ):
            await run_traffic(server, a.client, b.client)
    finally:
        server.stop()


async def run_traffic(server: RedisServer, alice: Any, bob: Any) -> None:
    ok, _ = await tool(
        alice,
        "register_protocol",
        name="chat",
        version="1.0.0",
        schema=SCHEMA,
        capabilities=["point_to_point"],
    )
    assert ok
    assert (await tool(alice, "connect", name="alice", protocols=CHAT))[0]
    assert (await tool(bob, "connect", name="bob", protocols=CHAT))[0]

    answered: list[str] = []
    spooled: list[str] = []  # answered while Redis was down: kept in the outbox, forwarded after
    refused: list[str] = []
    acked: collections.Counter[str] = collections.Counter()
    received: collections.Counter[str] = collections.Counter()
    settled: set[str] = set()
    kills = 0
    sending_done = anyio.Event()

    async def send_all() -> None:
        for n in range(SENDS):
            ok, found = await tool(alice, "send", to="bob", protocol="chat", payload={"n": n})
            if ok:
                assert found["status"] in ("delivered", "queued", "spooled")
                answered.append(found["message_id"])
                if found["status"] == "spooled":
                    spooled.append(found["message_id"])
            else:
                assert found.startswith(("STORE_UNAVAILABLE: ", "STORE_BUSY: ")), found
                refused.append(found)
        sending_done.set()

    async def kill_and_restart() -> None:
        nonlocal kills
        while len(answered) < KILL_AFTER:
            await anyio.sleep(0.01)
        server.kill()
        kills += 1
        while not refused and not spooled:  # sends in the outage are answered, not hung
            await anyio.sleep(0.05)
        await anyio.to_thread.run_sync(server.start)

    async def receive_all() -> None:
        while True:
            ok, found = await tool(bob, "receive", max_messages=20, wait_seconds=1, lease_seconds=5)
            if not ok:
                assert found.startswith(("STORE_UNAVAILABLE: ", "STORE_BUSY: ")), found
                await anyio.sleep(0.1)
                continue
            ids = [m["message_id"] for m in found["messages"]]
            received.update(ids)
            if ids:
                ok, outcome = await tool(bob, "ack", message_ids=ids)
                if ok:
                    acked.update(r["message_id"] for r in outcome["results"] if r["status"] == "acked")
                    # An ack whose answer was lost in the kill is retried by the client library
                    # and answered already_acked: done, but not acked twice.
                    settled.update(r["message_id"] for r in outcome["results"])
            if sending_done.is_set() and set(answered) <= settled:
                return

    with anyio.fail_after(90):
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_all)
            tg.start_soon(receive_all)
            tg.start_soon(kill_and_restart)

    lost = set(answered) - set(received)
    twice = [m for m, count in acked.items() if count > 1]
    print(
        f"redis SIGKILL: {SENDS} sends, {len(answered)} answered ({len(spooled)} spooled), "
        f"{len(refused)} refused in the outage, "
        f"{kills} kill(s), {len(received)} received, lost {len(lost)}, acked twice {len(twice)}"
    )
    assert kills == 1 and len(answered) > KILL_AFTER
    assert not lost and not twice
