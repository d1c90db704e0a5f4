"""End-to-end: the people's command line (``mcp-broker status``, ``tail``, ``dlq``, ``send --as``) run as
subprocesses against real broker processes on one SQLite file, and tool profiles on a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.abc import Process
from anyio.streams.text import TextReceiveStream
from conftest import CORE_TOOLS, Spawn, broker_env, broker_process, started
from fastmcp import Client

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

DEADLINE = 20  # generous: the CLI's start (imports) and a loaded CI machine; no timing is asserted
CHAT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
CHAT = [{"name": "chat", "versions": ">=1.0,<2"}]


async def call(client: Client[Any], tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert not result.is_error, f"{tool} refused: {result.content}"
    assert result.structured_content is not None
    return result.structured_content


async def cli(db: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """``mcp-broker ARGS`` on the test's store, to completion."""
    with anyio.fail_after(DEADLINE * 2):
        done = await anyio.run_process(
            [sys.executable, "-m", "mcp_broker", *args], env=broker_env(db), check=False
        )
    if check:
        assert done.returncode == 0, f"mcp-broker {' '.join(args)}: {done.returncode}\n{done.stderr.decode()}"
    return done


async def cli_json(db: Path, *args: str) -> Any:
    return json.loads((await cli(db, *args, "--json")).stdout)


async def two_agents(procs: list[Any]) -> None:
    a, b = procs
    await call(a.client, "register_protocol", name="chat", version="1.0.0", schema=CHAT_SCHEMA,
               capabilities=["point_to_point", "broadcast"])  # fmt: skip
    await call(a.client, "connect", name="author", protocols=CHAT)
    await call(b.client, "connect", name="reviewer", protocols=CHAT)


async def test_status_lists_the_sessions_processes_hold(spawn: Spawn, db_path: Path) -> None:
    async with started(spawn, 2) as procs:
        await two_agents(procs)
        await call(procs[0].client, "send", to="reviewer", protocol="chat", payload={"text": "one"})
        status = await cli_json(db_path, "status")
        by_name = {s["name"]: s for s in status["sessions"]}
        assert set(by_name) == {"author", "reviewer"}
        for session in by_name.values():
            assert session["status"] == "active"
            assert isinstance(session["pid"], int) and session["host"] and session["last_seen"]
        assert by_name["reviewer"]["queue_depth"] == 1
        assert (status["waiting"], status["dead_letters"]) == (1, 0)
        assert status["store"]["engine"] == "sqlite" and status["store"]["size_bytes"] > 0
        assert status["oldest_waiting_age_seconds"] >= 0 and status["last_activity"]
        readable = (await cli(db_path, "status")).stdout.decode()
        assert "reviewer" in readable and "2 active" in readable
        peek = await cli_json(db_path, "inbox", "reviewer")
        assert [m["payload"] for m in peek["messages"]] == [{"text": "one"}]
        assert (await cli_json(db_path, "inbox", "reviewer"))["messages"][0]["attempts"] == 0  # never leased


async def _line(stream: TextReceiveStream, buffer: list[str], needle: str) -> str:
    """The first line of the stream that contains ``needle``."""
    while True:
        while "\n" in buffer[0]:
            line, buffer[0] = buffer[0].split("\n", 1)
            if needle in line:
                return line
        buffer[0] += await stream.receive()


async def test_tail_prints_a_send_made_by_another_process(spawn: Spawn, db_path: Path) -> None:
    async with started(spawn, 2) as procs:
        await two_agents(procs)
        command = [sys.executable, "-m", "mcp_broker", "tail", "--json"]
        process: Process = await anyio.open_process(command, env=broker_env(db_path))
        try:
            assert process.stdout is not None and process.stderr is not None
            out, err = TextReceiveStream(process.stdout), TextReceiveStream(process.stderr)
            with anyio.fail_after(DEADLINE):
                await _line(err, [""], "following")
            sent = await call(procs[0].client, "send", to="reviewer", protocol="chat", payload={"text": "hi"})
            buffer = [""]
            with anyio.fail_after(DEADLINE):
                event = json.loads(await _line(out, buffer, sent["message_id"]))
            assert event["kind"] == "sent"
            assert (event["sender"], event["recipient"], event["protocol"]) == ("author", "reviewer", "chat")
            received = await call(procs[1].client, "receive", wait_seconds=5)
            await call(procs[1].client, "ack", message_ids=[received["messages"][0]["message_id"]])
            with anyio.fail_after(DEADLINE):
                kinds = [json.loads(await _line(out, buffer, sent["message_id"]))["kind"] for _ in range(2)]
            assert kinds == ["leased", "acked"]
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(DEADLINE):
                assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
            await process.aclose()


async def test_dlq_replay_makes_a_dead_letter_receivable_again(spawn: Spawn, db_path: Path) -> None:
    async with started(spawn, 2) as procs:
        await two_agents(procs)
        author, reviewer = procs[0].client, procs[1].client
        sent = await call(
            author, "send", to="reviewer", protocol="chat", payload={"text": "late"}, ttl_seconds=1
        )
        with anyio.fail_after(DEADLINE):
            while (await cli_json(db_path, "inbox", "reviewer"))["messages"]:  # until its TTL runs out
                await anyio.sleep(0.2)
        assert (await call(reviewer, "receive"))["messages"] == []  # this lease dead-letters it
        dead = (await cli_json(db_path, "dlq"))["dead_letters"]
        assert [(d["message_id"], d["recipient"], d["reason"]) for d in dead] == [
            (sent["message_id"], "reviewer", "expired")
        ]
        replayed = await cli_json(db_path, "dlq", "replay", sent["message_id"], "no-such-id")
        assert replayed == {"replayed": {sent["message_id"]: 1, "no-such-id": 0}}
        got = await call(reviewer, "receive", wait_seconds=5)
        assert [m["message_id"] for m in got["messages"]] == [sent["message_id"]]
        assert (await cli_json(db_path, "dlq"))["dead_letters"] == []


async def test_send_as_is_received_by_an_agent_and_a_live_name_is_refused(
    spawn: Spawn, db_path: Path
) -> None:
    async with started(spawn, 2) as procs:
        await two_agents(procs)
        result = await cli_json(db_path, "send", "--as", "me", "reviewer", "chat", '{"text": "from a shell"}')
        assert result["status"] == "delivered"
        got = await call(procs[1].client, "receive", wait_seconds=5)
        assert [(m["sender"], m["payload"]) for m in got["messages"]] == [("me", {"text": "from a shell"})]
        invalid = await cli(db_path, "send", "--as", "me", "reviewer", "chat", '{"txt": 1}', check=False)
        assert invalid.returncode == 1 and b"PAYLOAD_INVALID" in invalid.stderr
        taken = await cli(db_path, "send", "--as", "author", "reviewer", "chat", '{"text": "x"}', check=False)
        assert taken.returncode == 1 and b"NAME_TAKEN" in taken.stderr
        me = {s["name"]: s for s in (await cli_json(db_path, "sessions"))["sessions"]}["me"]
        assert me["status"] == "disconnected"


async def test_a_core_process_lists_exactly_the_ten(db_path: Path) -> None:
    async with broker_process(db_path, tools="core") as client:
        assert {t.name for t in await client.list_tools()} == CORE_TOOLS


async def test_an_unknown_tool_name_is_refused_at_start(db_path: Path) -> None:
    with anyio.fail_after(DEADLINE * 2):
        done = await anyio.run_process(
            [sys.executable, "-m", "mcp_broker"],
            env=broker_env(db_path, tools="core,sned"),
            check=False,
            input=b"",
        )
    assert done.returncode != 0
    assert b"no such tool: sned" in done.stderr
