"""End-to-end: real ``python -m mcp_broker`` processes over stdio, sharing one SQLite file.

Every test here spawns broker processes the way an MCP host does and talks to them with an MCP
client. Start-up (imports) dominates the run time, so a test starts all the processes it needs at
once; waits are conditions polled under a deadline, never sleeps that hope something happened.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import pytest
from conftest import CORE_TOOLS, Spawn, broker_env, call, started, text_of
from fastmcp import Client
from mcp.shared.exceptions import MCPError

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

T = TypeVar("T")

CHAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
    "additionalProperties": False,
}
CHAT = [{"name": "chat", "versions": ">=1.0,<2"}]


# --- helpers ---------------------------------------------------------------------------------------


async def refusal(client: Client[Any], tool: str, arguments: dict[str, Any]) -> str:
    """Call a tool that must be refused; the error text."""
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert result.is_error, f"{tool}({arguments}) was not refused: {result.structured_content}"
    return text_of(result)


async def register(
    client: Client[Any],
    name: str = "chat",
    version: str = "1.0.0",
    capabilities: tuple[str, ...] = ("point_to_point", "broadcast"),
    schema: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return await call(
        client,
        "register_protocol",
        name=name,
        version=version,
        schema=CHAT_SCHEMA if schema is None else schema,
        capabilities=list(capabilities),
    )


async def session(client: Client[Any], name: str) -> dict[str, Any]:
    """The session called ``name`` as ``client``'s process sees it in list_sessions."""
    sessions = (await call(client, "list_sessions"))["sessions"]
    found = [s for s in sessions if s["name"] == name]
    assert len(found) == 1, f"expected one session {name!r}, got {sessions}"
    return found[0]


async def until(probe: Callable[[], Awaitable[T]], *, timeout: float = 5.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy, failing after ``timeout`` seconds."""
    last: T | None = None
    try:
        with anyio.fail_after(timeout):
            while not (last := await probe()):
                await anyio.sleep(0.05)
            return last
    except TimeoutError:
        pytest.fail(f"{what} not reached within {timeout} s; last seen: {last!r}")


async def receive_timed(client: Client[Any], out: dict[str, Any], **arguments: Any) -> None:
    started_at = time.monotonic()
    out["result"] = await call(client, "receive", **arguments)
    out["elapsed"] = time.monotonic() - started_at


async def resource_json(client: Client[Any], uri: str) -> Any:
    contents = await client.read_resource(uri)
    assert len(contents) == 1
    return json.loads(contents[0].text)  # type: ignore[union-attr]


def read_store(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Look into the shared file directly, as a second opinion on what the broker says."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, args).fetchall()


# --- 1. two agents ---------------------------------------------------------------------------------


async def test_two_agents_negotiate_and_exchange_messages(spawn: Spawn) -> None:
    async with started(spawn, 2) as (a, b):
        alice, bob = a.client, b.client
        await register(alice, version="1.0.0")
        await register(alice, version="1.1.0")
        await call(alice, "connect", name="alice", protocols=CHAT, features=["python", "code_review"])
        await call(bob, "connect", name="bob", protocols=CHAT, features=["python", "ci"])

        deal = await call(alice, "negotiate", peer="bob", required_protocols=["chat"])
        assert deal["compatible"] is True
        assert deal["agreed"] == {"chat": "1.1.0"}
        assert deal["unsupported"] == [] and deal["reasons"] == []
        assert deal["features"] == {"common": ["python"], "only_mine": ["code_review"], "only_theirs": ["ci"]}

        # A newer version both accept appears after the handshake: sends keep the agreed one.
        await register(bob, version="1.2.0")

        waited: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(receive_timed, bob, waited, wait_seconds=30))
            await anyio.wait_all_tasks_blocked()  # bob's receive is on the wire before the ping
            with anyio.fail_after(5):
                assert await bob.ping() is True
            assert "result" not in waited, "receive returned although nothing was sent"
            sent = await call(alice, "send", to="bob", protocol="chat", payload={"text": "hello bob"})
        assert sent["status"] == "delivered"
        assert sent["version"] == "1.1.0"
        assert waited["elapsed"] < 5, f"receive woke {waited['elapsed']:.2f} s after it started"
        [message] = waited["result"]["messages"]
        assert message["message_id"] == sent["message_id"]
        assert message["sender"] == "alice"
        assert message["protocol"] == "chat" and message["version"] == "1.1.0"
        assert message["payload"] == {"text": "hello bob"}
        assert message["delivery_attempt"] == 1
        # Only the recipient can ack: the sender's process cannot settle bob's message for him.
        text = await refusal(alice, "ack", {"message_ids": [message["message_id"]]})
        assert text.startswith("UNKNOWN_MESSAGE: "), text
        acked = await call(bob, "ack", message_ids=[message["message_id"]])
        assert acked["acked"] == 1

        # The other way: the agreement holds for bob too, and alice's long-poll wakes.
        waited = {}
        async with anyio.create_task_group() as tg:
            tg.start_soon(functools.partial(receive_timed, alice, waited, wait_seconds=30))
            await anyio.wait_all_tasks_blocked()
            answer = await call(bob, "send", to="alice", protocol="chat", payload={"text": "hi alice"})
        assert answer["status"] == "delivered" and answer["version"] == "1.1.0"
        assert waited["elapsed"] < 5
        [reply] = waited["result"]["messages"]
        assert (reply["message_id"], reply["sender"], reply["version"]) == (
            answer["message_id"],
            "bob",
            "1.1.0",
        )
        assert reply["payload"] == {"text": "hi alice"}
        assert (await call(alice, "ack", message_ids=[reply["message_id"]]))["acked"] == 1

        # A broadcast from one process reaches the other, and not the sender.
        shout = await call(alice, "broadcast", protocol="chat", payload={"text": "all hands"})
        assert shout["recipient_count"] == 1 and [r["name"] for r in shout["recipients"]] == ["bob"]
        [heard] = (await call(bob, "receive", wait_seconds=5))["messages"]
        assert (heard["message_id"], heard["broadcast"], heard["payload"]) == (
            shout["message_id"],
            True,
            {"text": "all hands"},
        )
        await call(bob, "ack", message_ids=[heard["message_id"]])

        # Nothing is left over on either side.
        assert (await call(alice, "receive"))["messages"] == []
        assert (await call(bob, "receive"))["messages"] == []


# --- 2. clean exit, offline agent, resume -----------------------------------------------------------


async def test_clean_exit_disconnects_and_queued_message_waits_for_resume(
    spawn: Spawn, db_path: Path
) -> None:
    async with started(spawn, 3) as (a, b_first, b_again):
        alice = a.client
        await register(alice)
        await call(alice, "connect", name="alice", protocols=CHAT)
        first = await call(b_first.client, "connect", name="bob", protocols=CHAT)
        assert first["resumed"] is False
        assert (await session(alice, "bob"))["status"] == "active"

        await b_first.close()  # the host quits: stdin closes

        async def bob_gone() -> dict[str, Any] | None:
            info = await session(alice, "bob")
            return info if info["status"] == "disconnected" else None

        info = await until(bob_gone, what="bob disconnected after a clean exit, as another process sees it")
        assert info["session_id"] == first["session_id"]
        assert [
            s["name"] for s in (await call(alice, "list_sessions", status="disconnected"))["sessions"]
        ] == ["bob"]
        # The exiting process ended its session itself: not merely inferred from a dead pid.
        rows = read_store(db_path, "SELECT disconnected_at FROM sessions WHERE id = ?", first["session_id"])
        assert rows and rows[0][0] is not None

        note = {
            "to": "bob",
            "protocol": "chat",
            "payload": {"text": "while you were out"},
            "idempotency_key": "n-1",
        }
        sent = await call(alice, "send", **note)
        assert sent["status"] == "queued" and sent["duplicate"] is False
        retried = await call(alice, "send", **note)  # a host retrying after a lost answer
        assert retried["duplicate"] is True and retried["message_id"] == sent["message_id"]
        assert (await session(alice, "bob"))["queue_depth"] == 1

        again = await call(b_again.client, "connect", name="bob", protocols=CHAT)
        assert again["resumed"] is True
        assert again["session_id"] == first["session_id"]
        assert again["queue_depth"] == 1
        got = await call(b_again.client, "receive", wait_seconds=5)
        [message] = got["messages"]
        assert message["message_id"] == sent["message_id"]
        assert message["payload"] == {"text": "while you were out"}
        assert message["sender"] == "alice" and message["delivery_attempt"] == 1
        assert (await call(b_again.client, "ack", message_ids=[message["message_id"]]))["acked"] == 1
        assert (await session(alice, "bob"))["status"] == "active"


# --- 3. names held by live processes; SIGKILL with a lease --------------------------------------------


async def test_live_name_is_refused_and_sigkill_frees_it_with_lease_redelivered(spawn: Spawn) -> None:
    async with started(spawn, 3) as (a, *hosts):
        alice = a.client
        await register(alice)
        await call(alice, "connect", name="alice", protocols=CHAT)

        # Two hosts start an agent called bob at the same moment: exactly one gets the name.
        answers: dict[int, Any] = {}

        async def claim(i: int) -> None:
            arguments = {"name": "bob", "protocols": CHAT}
            answers[i] = await hosts[i].client.call_tool("connect", arguments, raise_on_error=False)

        async with anyio.create_task_group() as tg:
            for i in range(2):
                tg.start_soon(claim, i)
        winners = [i for i in range(2) if not answers[i].is_error]
        assert len(winners) == 1, [text_of(answers[i]) for i in range(2)]
        b_doomed, b_heir = hosts[winners[0]], hosts[1 - winners[0]]
        assert text_of(answers[1 - winners[0]]).startswith("NAME_TAKEN: ")
        first = answers[winners[0]].structured_content
        assert first["resumed"] is False

        # While bob's process lives, nobody else can take the name, and the refusal changes nothing.
        text = await refusal(b_heir.client, "connect", {"name": "bob", "protocols": CHAT})
        assert text.startswith("NAME_TAKEN: "), text
        info = await session(alice, "bob")
        assert info["session_id"] == first["session_id"] and info["status"] == "active"
        assert (await call(b_doomed.client, "receive"))["messages"] == []
        sent = await call(alice, "send", to="bob", protocol="chat", payload={"text": "handle me"})

        leased = await call(b_doomed.client, "receive", wait_seconds=5, lease_seconds=2)
        [message] = leased["messages"]
        assert message["message_id"] == sent["message_id"] and message["delivery_attempt"] == 1

        pid = info["pid"]
        assert isinstance(pid, int) and pid != os.getpid()
        assert pid != (await session(alice, "alice"))["pid"]
        os.kill(pid, signal.SIGKILL)

        # The kill is asynchronous: wait until the broker sees the process gone (no heartbeat wait).
        async def bob_dead() -> bool:
            info = await session(alice, "bob")
            return info["status"] == "disconnected" and info["process_alive"] is False

        await until(bob_dead, what="bob's process seen dead")

        again = await call(b_heir.client, "connect", name="bob", protocols=CHAT)
        assert again["resumed"] is True and again["session_id"] == first["session_id"]

        started_at = time.monotonic()
        redelivered = await call(b_heir.client, "receive", wait_seconds=15)
        assert time.monotonic() - started_at < 5, "the lease of 2 s ran out long ago"
        [message] = redelivered["messages"]
        assert message["message_id"] == sent["message_id"]
        assert message["payload"] == {"text": "handle me"}
        assert message["delivery_attempt"] == 2
        assert (await call(b_heir.client, "ack", message_ids=[message["message_id"]]))["acked"] == 1
        assert (await call(b_heir.client, "receive", lease_seconds=1))["messages"] == []
        assert (await session(alice, "bob"))["queue_depth"] == 0


# --- 4. many senders at once -------------------------------------------------------------------------

SENDERS = 5
PER_SENDER = 40
NUMBERED = {
    "type": "object",
    "properties": {"sender": {"type": "string"}, "seq": {"type": "integer", "minimum": 0}},
    "required": ["sender", "seq"],
}


async def test_concurrent_senders_every_message_once_in_order(spawn: Spawn) -> None:
    async with started(spawn, SENDERS + 1) as procs:
        receiver, senders = procs[0].client, [p.client for p in procs[1:]]
        await register(receiver, name="numbered", schema=NUMBERED, capabilities=("point_to_point",))
        speaks = [{"name": "numbered", "versions": "^1.0"}]
        await call(receiver, "connect", name="sink", protocols=speaks)
        for i, client in enumerate(senders):
            await call(client, "connect", name=f"sender-{i}", protocols=speaks)

        received: list[dict[str, Any]] = []
        statuses: list[str] = []
        sent_ids: dict[int, list[str]] = {i: [] for i in range(SENDERS)}

        async def send_all(i: int, client: Client[Any]) -> None:
            for seq in range(PER_SENDER):
                result = await call(
                    client,
                    "send",
                    to="sink",
                    protocol="numbered",
                    payload={"sender": f"sender-{i}", "seq": seq},
                )
                statuses.append(result["status"])
                sent_ids[i].append(result["message_id"])

        async def drain() -> None:
            while len(received) < SENDERS * PER_SENDER:
                batch = (await call(receiver, "receive", max_messages=25, wait_seconds=5))["messages"]
                if batch:
                    acked = await call(receiver, "ack", message_ids=[m["message_id"] for m in batch])
                    assert {r["status"] for r in acked["results"]} == {"acked"}
                    assert acked["acked"] == len(batch)
                received.extend(batch)

        with anyio.fail_after(40):
            async with anyio.create_task_group() as tg:
                tg.start_soon(drain)
                for i, client in enumerate(senders):
                    tg.start_soon(send_all, i, client)

        assert statuses == ["delivered"] * (SENDERS * PER_SENDER)
        ids = [m["message_id"] for m in received]
        assert len(ids) == len(set(ids)) == SENDERS * PER_SENDER, "a message was lost or delivered twice"
        assert all(m["delivery_attempt"] == 1 for m in received)
        by_sender: dict[str, list[int]] = {}
        for m in received:
            assert m["sender"] == m["payload"]["sender"]
            by_sender.setdefault(m["sender"], []).append(m["payload"]["seq"])
        assert by_sender == {f"sender-{i}": list(range(PER_SENDER)) for i in range(SENDERS)}, (
            "per-sender order"
        )
        assert sorted(ids) == sorted(m for batch in sent_ids.values() for m in batch)
        assert (await call(receiver, "receive"))["messages"] == []
        assert (await session(receiver, "sink"))["queue_depth"] == 0
        # Each sender's receipts agree: every message it sent was acked once, by the sink.
        for i, client in enumerate(senders):
            receipts = (await call(client, "message_status", message_ids=sent_ids[i]))["messages"]
            assert [m["message_id"] for m in receipts] == sent_ids[i]
            assert all(
                [(d["recipient"], d["state"], d["attempts"]) for d in m["deliveries"]]
                == [("sink", "acked", 1)]
                for m in receipts
            ), receipts


# --- 5. refusals carry their codes --------------------------------------------------------------------

BIG = {"text": "x" * 2000}  # over the max_payload_bytes=1000 these processes run with
GOOD = {"text": "hi"}

# Before the process has a session: every tool that needs one says so.
UNCONNECTED: list[tuple[str, dict[str, Any], str]] = [
    ("list_sessions", {}, "NOT_CONNECTED"),
    ("negotiate", {"peer": "peer"}, "NOT_CONNECTED"),
    ("send", {"to": "peer", "protocol": "chat", "payload": GOOD}, "NOT_CONNECTED"),
    ("broadcast", {"protocol": "chat", "payload": GOOD}, "NOT_CONNECTED"),
    ("receive", {}, "NOT_CONNECTED"),
    ("ack", {"message_ids": ["m-1"]}, "NOT_CONNECTED"),
    ("disconnect", {}, "NOT_CONNECTED"),
    ("release", {"message_ids": ["m-1"]}, "NOT_CONNECTED"),
    ("message_status", {"message_ids": ["m-1"]}, "NOT_CONNECTED"),
    ("list_dead_letters", {}, "NOT_CONNECTED"),
    ("replay_dead_letters", {"message_ids": ["m-1"]}, "NOT_CONNECTED"),
    ("request", {"to": "peer", "protocol": "chat", "payload": GOOD, "timeout_seconds": 0}, "NOT_CONNECTED"),
    ("await_reply", {"request_id": "m-1", "timeout_seconds": 0}, "NOT_CONNECTED"),
    ("reply", {"message_id": "m-1", "payload": GOOD}, "NOT_CONNECTED"),
    # Tools that work without a session refuse bad input with its own code.
    (
        "register_protocol",
        {"name": "chat", "version": "1.0.0", "schema": {"type": "array"}, "capabilities": ["point_to_point"]},
        "PROTOCOL_CONFLICT",
    ),
    (
        "register_protocol",
        {
            "name": "odd",
            "version": "1.0.0",
            "schema": {"type": "nonsense"},
            "capabilities": ["point_to_point"],
        },
        "INVALID_SCHEMA",
    ),
    (
        "register_protocol",
        {"name": "odd", "version": "01.0.0", "schema": {}, "capabilities": ["point_to_point"]},
        "INVALID_VERSION",
    ),
    (
        "register_protocol",
        {"name": "Odd", "version": "1.0.0", "schema": {}, "capabilities": ["point_to_point"]},
        "INVALID_ARGUMENT",
    ),
    (
        "register_protocol",
        {"name": "odd", "version": "1.0", "schema": {}, "capabilities": ["point_to_point"]},
        "INVALID_ARGUMENT",
    ),
    (
        "register_protocol",
        {"name": "odd", "version": "1.0.0", "schema": {}, "capabilities": []},
        "INVALID_ARGUMENT",
    ),
    (
        "register_protocol",
        {"name": "odd", "version": "1.0.0", "schema": {}, "capabilities": ["telepathy"]},
        "INVALID_ARGUMENT",
    ),
    ("discover_protocols", {"version_range": "banana"}, "INVALID_VERSION"),
    ("discover_protocols", {"limit": 0}, "INVALID_ARGUMENT"),
    ("discover_protocols", {"limit": 101}, "INVALID_ARGUMENT"),
    ("discover_protocols", {"cursor": "not-a-cursor"}, "INVALID_CURSOR"),
    ("connect", {"name": "bad name!", "protocols": CHAT}, "INVALID_ARGUMENT"),
    ("connect", {"name": "me", "protocols": [{"name": "chat", "versions": "banana"}]}, "INVALID_VERSION"),
    ("connect", {"name": "me", "protocols": [{"name": "chat"}, {"name": "chat"}]}, "INVALID_ARGUMENT"),
    ("receive", {"max_messages": 1000}, "INVALID_ARGUMENT"),
]

# Connected as "me", with a disconnected "peer" whose inbox is full (max_inbox=3).
CONNECTED: list[tuple[str, dict[str, Any], str]] = [
    ("connect", {"name": "someone-else", "protocols": CHAT}, "ALREADY_CONNECTED"),
    ("list_sessions", {"status": "gone"}, "INVALID_ARGUMENT"),
    ("negotiate", {"peer": "nobody"}, "UNKNOWN_SESSION"),
    ("negotiate", {"peer": ""}, "INVALID_ARGUMENT"),
    ("negotiate", {"peer": "me"}, "INVALID_ARGUMENT"),
    ("send", {"to": "nobody", "protocol": "chat", "payload": GOOD}, "UNKNOWN_SESSION"),
    ("send", {"to": "peer", "protocol": "nochat", "payload": GOOD}, "UNKNOWN_PROTOCOL"),
    ("send", {"to": "peer", "protocol": "chat", "payload": GOOD, "version": "1.4.0"}, "UNKNOWN_PROTOCOL"),
    ("send", {"to": "peer", "protocol": "chat", "payload": {"text": 5}}, "PAYLOAD_INVALID"),
    ("send", {"to": "peer", "protocol": "chat", "payload": {"words": "hi"}}, "PAYLOAD_INVALID"),
    ("send", {"to": "peer", "protocol": "chat", "payload": BIG}, "TOO_LARGE"),
    ("send", {"to": "peer", "protocol": "solo", "payload": GOOD}, "NOT_ACCEPTED"),
    ("send", {"to": "peer", "protocol": "chat", "payload": GOOD, "version": "2.0.0"}, "NOT_ACCEPTED"),
    ("send", {"to": "peer", "protocol": "narrow", "payload": GOOD}, "NO_COMMON_VERSION"),
    ("send", {"to": "peer", "protocol": "shout", "payload": GOOD}, "CAPABILITY_NOT_SUPPORTED"),
    ("send", {"to": "peer", "protocol": "chat", "payload": GOOD}, "INBOX_FULL"),
    ("send", {"to": "peer", "protocol": "chat", "payload": GOOD, "priority": "urgent"}, "INVALID_ARGUMENT"),
    ("send", {"to": "peer", "protocol": "chat", "payload": GOOD, "ttl_seconds": 0}, "INVALID_ARGUMENT"),
    ("send", {"to": "peer", "protocol": "chat", "payload": GOOD, "version": "1.0"}, "INVALID_ARGUMENT"),
    ("broadcast", {"protocol": "nochat", "payload": GOOD}, "UNKNOWN_PROTOCOL"),
    ("broadcast", {"protocol": "chat", "payload": GOOD, "version": "1.4.0"}, "UNKNOWN_PROTOCOL"),
    ("broadcast", {"protocol": "direct", "payload": GOOD}, "CAPABILITY_NOT_SUPPORTED"),
    ("broadcast", {"protocol": "chat", "payload": {"text": 5}}, "PAYLOAD_INVALID"),
    ("broadcast", {"protocol": "chat", "payload": BIG}, "TOO_LARGE"),
    ("broadcast", {"protocol": "chat", "payload": GOOD, "filter": {"colour": ["red"]}}, "INVALID_ARGUMENT"),
    ("receive", {"max_messages": 1000}, "INVALID_ARGUMENT"),
    ("receive", {"max_messages": 0}, "INVALID_ARGUMENT"),
    ("receive", {"wait_seconds": 61}, "INVALID_ARGUMENT"),
    ("receive", {"lease_seconds": 0}, "INVALID_ARGUMENT"),
    ("receive", {"protocol": "Chat"}, "INVALID_ARGUMENT"),
    ("ack", {"message_ids": ["no-such-message"]}, "UNKNOWN_MESSAGE"),
    ("ack", {"message_ids": []}, "INVALID_ARGUMENT"),
    ("release", {"message_ids": ["no-such-message"]}, "UNKNOWN_MESSAGE"),
    ("message_status", {"message_ids": ["no-such-message"]}, "UNKNOWN_MESSAGE"),
    ("list_dead_letters", {"limit": 0}, "INVALID_ARGUMENT"),
    ("list_dead_letters", {"cursor": "not-a-cursor"}, "INVALID_CURSOR"),
    ("replay_dead_letters", {"message_ids": ["no-such-message"]}, "UNKNOWN_MESSAGE"),
    (
        "request",
        {"to": "peer", "protocol": "chat", "payload": GOOD, "timeout_seconds": 0},
        "CAPABILITY_NOT_SUPPORTED",
    ),
    ("await_reply", {"request_id": "no-such-message", "timeout_seconds": 0}, "UNKNOWN_MESSAGE"),
    ("reply", {"message_id": "no-such-message", "payload": GOOD}, "UNKNOWN_MESSAGE"),
]


def test_refusal_table_covers_every_core_tool() -> None:
    assert {tool for tool, _, _ in UNCONNECTED + CONNECTED} >= CORE_TOOLS


async def test_each_tool_refuses_with_its_code_over_stdio(spawn: Spawn, db_path: Path) -> None:
    async with started(spawn, 1, max_payload_bytes=1000, max_inbox=3) as (proc,):
        client = proc.client
        assert {t.name for t in await client.list_tools()} >= CORE_TOOLS
        await register(client, "chat", "1.0.0")
        await register(client, "chat", "2.0.0")
        await register(client, "direct", "1.0.0", capabilities=("point_to_point",))
        await register(client, "shout", "1.0.0", capabilities=("broadcast",))
        await register(client, "solo", "1.0.0")
        await register(client, "narrow", "1.0.0")
        await register(client, "narrow", "2.0.0")

        failures = []
        for tool, arguments, code in UNCONNECTED:
            text = await refusal(client, tool, arguments)
            if not text.startswith(code + ": "):
                failures.append(f"{tool}({arguments}): expected {code}, got {text[:200]}")

        peer_protocols = [
            {"name": "chat", "versions": ">=1.0,<2"},
            {"name": "direct", "versions": "*"},
            {"name": "shout", "versions": "*"},
            {"name": "narrow", "versions": "^1"},
        ]
        peer = await call(client, "connect", name="peer", protocols=peer_protocols)
        await call(client, "disconnect")
        my_protocols = [
            *peer_protocols[:3],
            {"name": "solo", "versions": "*"},
            {"name": "narrow", "versions": "^2"},
        ]
        await call(client, "connect", name="me", protocols=my_protocols)
        queued = [
            (await call(client, "send", to="peer", protocol="chat", payload={"text": f"#{i}"}))["message_id"]
            for i in range(3)
        ]

        for tool, arguments, code in CONNECTED:
            text = await refusal(client, tool, arguments)
            if not text.startswith(code + ": "):
                failures.append(f"{tool}({arguments}): expected {code}, got {text[:200]}")
        assert not failures, "\n".join(failures)

        # The process still answers, and nothing the refusals touched changed the store.
        with anyio.fail_after(5):
            assert await client.ping() is True
        chats = (await call(client, "discover_protocols", name="chat"))["protocols"]
        assert [(p["version"], p["schema"]) for p in chats] == [
            ("2.0.0", CHAT_SCHEMA),
            ("1.0.0", CHAT_SCHEMA),
        ]
        assert [p["name"] for p in (await call(client, "discover_protocols", limit=100))["protocols"]] == [
            "chat",
            "chat",
            "direct",
            "narrow",
            "narrow",
            "shout",
            "solo",
        ]
        info = await session(client, "peer")
        assert info["session_id"] == peer["session_id"] and info["queue_depth"] == 3
        assert [s["name"] for s in (await call(client, "list_sessions"))["sessions"]] == ["me", "peer"]
        statuses = (await call(client, "message_status", message_ids=queued))["messages"]
        assert [m["deliveries"][0]["state"] for m in statuses] == ["queued"] * 3
        assert read_store(db_path, "PRAGMA integrity_check") == [("ok",)]
        assert read_store(db_path, "SELECT count(*) FROM messages") == [(3,)]


# --- 6. only JSON-RPC on stdout; the database file ----------------------------------------------


async def test_raw_stdio_carries_only_json_rpc_and_database_is_owner_only(tmp_path: Path) -> None:
    db = tmp_path / "not" / "yet" / "there" / "broker.db"
    stderr = (tmp_path / "stderr.log").open("wb")
    previous = os.umask(0)  # even a careless umask must not make the database readable by others
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_broker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=broker_env(db),
        )
    finally:
        os.umask(previous)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    lines: list[bytes] = []

    def write(message: dict[str, Any] | bytes) -> None:
        data = message if isinstance(message, bytes) else json.dumps(message).encode()
        stdin.write(data + b"\n")
        stdin.flush()

    async def answer() -> dict[str, Any]:
        with anyio.fail_after(30):  # the first answer waits for the process to start
            line = await anyio.to_thread.run_sync(stdout.readline, abandon_on_cancel=True)
        assert line, "the broker closed stdout without answering"
        lines.append(line)
        return json.loads(line)

    try:
        write(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "raw-e2e", "version": "0"},
                },
            }
        )
        init = await answer()
        assert init["id"] == 1 and init["result"]["serverInfo"]["name"] == "mcp-broker"
        assert init["result"]["protocolVersion"] == "2025-11-25"
        write({"jsonrpc": "2.0", "method": "notifications/initialized"})

        write({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        listed = await answer()
        assert listed["id"] == 2
        assert {t["name"] for t in listed["result"]["tools"]} >= CORE_TOOLS

        arguments = {
            "name": "chat",
            "version": "1.0.0",
            "schema": CHAT_SCHEMA,
            "capabilities": ["point_to_point"],
        }
        write({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
               "params": {"name": "register_protocol", "arguments": arguments}})  # fmt: skip
        registered = await answer()
        assert registered["id"] == 3 and registered["result"].get("isError") is not True
        assert registered["result"]["structuredContent"]["status"] == "registered"

        # The store is open: its parent directories were created and every file of it is owner-only.
        assert db.parent.is_dir()
        files = [
            p for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")) if p.exists()
        ]
        assert db in files
        for path in files:
            assert path.stat().st_uid == os.getuid()
            assert path.stat().st_mode & 0o777 == 0o600, (
                f"{path.name} has mode {oct(path.stat().st_mode & 0o777)}"
            )

        write(
            {
                "jsonrpc": "2.0",
                "id": 4,
                "method": "tools/call",
                "params": {"name": "receive", "arguments": {}},
            }
        )
        refused = await answer()
        assert refused["id"] == 4 and refused["result"]["isError"] is True
        assert refused["result"]["content"][0]["text"].startswith("NOT_CONNECTED: ")

        write(b"this is not json {")
        garbage = await answer()
        assert garbage["id"] is None and garbage["error"]["code"] == -32700

        write({"jsonrpc": "2.0", "id": 5, "method": "ping"})
        assert await answer() == {"jsonrpc": "2.0", "id": 5, "result": {}}

        stdin.close()
        with anyio.fail_after(20):
            code = await anyio.to_thread.run_sync(proc.wait)
        assert code == 0, (tmp_path / "stderr.log").read_text()
        lines.extend(stdout.read().splitlines(keepends=True))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        stdout.close()
        stderr.close()

    for line in lines:
        assert line.endswith(b"\n")
        message = json.loads(line)
        assert message["jsonrpc"] == "2.0"
        is_response = "id" in message and ("result" in message) != ("error" in message)
        assert is_response or "method" in message, message


# --- 7. resources ---------------------------------------------------------------------------------


async def test_resources_over_stdio(spawn: Spawn) -> None:
    async with started(spawn, 2) as (a, b):
        alice, bob = a.client, b.client
        with pytest.raises(MCPError) as not_connected:
            await bob.read_resource("broker://inbox")
        assert str(not_connected.value).startswith("NOT_CONNECTED: ")

        await register(alice)
        await call(alice, "connect", name="alice", protocols=CHAT)
        await call(bob, "connect", name="bob", protocols=CHAT)
        sent = await call(alice, "send", to="bob", protocol="chat", payload={"text": "peek at me"})

        # A peek shows the waiting message and leases nothing: it stays visible and is delivered fresh.
        for _ in range(2):
            inbox = await resource_json(bob, "broker://inbox")
            assert [(m["message_id"], m["payload"]) for m in inbox["messages"]] == [
                (sent["message_id"], {"text": "peek at me"})
            ]
        [message] = (await call(bob, "receive"))["messages"]
        assert message["message_id"] == sent["message_id"] and message["delivery_attempt"] == 1
        await call(bob, "ack", message_ids=[message["message_id"]])
        assert (await resource_json(bob, "broker://inbox"))["messages"] == []
        assert (await resource_json(alice, "broker://inbox"))["messages"] == []

        protocols = (await resource_json(bob, "broker://protocols"))["protocols"]
        assert [(p["name"], p["version"]) for p in protocols] == [("chat", "1.0.0")]
        assert await resource_json(bob, "broker://protocols/chat/1.0.0") == CHAT_SCHEMA
        with pytest.raises(MCPError) as unknown:
            await bob.read_resource("broker://protocols/chat/9.9.9")
        assert "UNKNOWN_PROTOCOL" in str(unknown.value)

        sessions = (await resource_json(alice, "broker://sessions"))["sessions"]
        assert {(s["name"], s["status"]) for s in sessions} == {("alice", "active"), ("bob", "active")}
        templates = {t.uri_template for t in await alice.list_resource_templates()}
        assert "broker://protocols/{name}/{version}" in templates
        assert {str(r.uri) for r in await alice.list_resources()} >= {
            "broker://protocols",
            "broker://sessions",
            "broker://inbox",
        }
