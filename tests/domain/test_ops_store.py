"""The operating tools against a real store: hooks peek what waits and wake on arrival; doctor reads sessions."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import BrokerFactory

from mcp_broker import __version__

pytestmark = pytest.mark.anyio

CHAT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
SPEAKS = [{"name": "chat", "versions": "^1.0"}]


def hook_env(db: Path, session: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_BROKER_")}
    env |= {"MCP_BROKER_STORE": str(db), "MCP_BROKER_SESSION": session}
    return env


def stdin_for(event: str, **extra: Any) -> str:
    return json.dumps(
        {"session_id": "cc-1", "transcript_path": "/tmp/t.jsonl", "cwd": "/tmp", "hook_event_name": event}
        | extra
    )


async def pair(brokers: BrokerFactory) -> tuple[Any, Any]:
    a, b = await brokers(), await brokers()
    await a.catalog.register_protocol("chat", "1.0.0", CHAT, ["point_to_point"])
    await a.sessions.connect("author", SPEAKS)
    await b.sessions.connect("reviewer", SPEAKS)
    return a, b


async def test_session_start_hook_summarises_what_waits_and_leases_nothing(
    brokers: BrokerFactory, db_path: Path
) -> None:
    a, b = await pair(brokers)
    sent = await a.messaging.send("reviewer", "chat", {"text": "please review app.py\u202e now"})
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "mcp_broker", "hook", "claude-code", "SessionStart"],
            input=stdin_for("SessionStart", source="startup"),
            capture_output=True,
            text=True,
            env=hook_env(db_path, "reviewer"),
            timeout=60,
        )
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)["hookSpecificOutput"]
    assert out["hookEventName"] == "SessionStart"
    context = out["additionalContext"]
    assert "author" in context and "chat" in context and "\u202e" not in context
    status = await a.inbox.message_status([sent.message_id])
    assert status.messages[0].deliveries[0].state == "queued"  # only peeked
    got = await b.inbox.receive()
    assert [m.delivery_attempt for m in got.messages] == [1]


async def test_stop_waiter_wakes_within_a_second_of_a_send(brokers: BrokerFactory, db_path: Path) -> None:
    a, _ = await pair(brokers)
    waiter = subprocess.Popen(
        [sys.executable, "-m", "mcp_broker", "hook", "claude-code", "Stop", "--wait", "30"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=hook_env(db_path, "reviewer"),
    )
    try:
        assert waiter.stdin is not None
        waiter.stdin.write(stdin_for("Stop", stop_hook_active=False))
        waiter.stdin.close()
        await anyio.sleep(2.0)  # let it start and take its first look
        assert waiter.poll() is None, "the waiter ended before anything arrived"
        sent = await a.messaging.send("reviewer", "chat", {"text": "wake up"})
        code = await anyio.to_thread.run_sync(lambda: waiter.wait(timeout=20))
        assert code == 2  # asyncRewake: exit 2 wakes the idle session
        assert waiter.stdout is not None and waiter.stderr is not None
        note = waiter.stderr.read() or waiter.stdout.read()
        assert "author" in note and "chat" in note and "receive" in note
    finally:
        if waiter.poll() is None:
            waiter.kill()
        waiter.wait(timeout=10)
        for pipe in (waiter.stdout, waiter.stderr):
            if pipe is not None:
                pipe.close()
    status = await a.inbox.message_status([sent.message_id])
    assert status.messages[0].deliveries[0].state == "queued"  # the waiter never leases


async def test_doctor_reads_the_sessions_of_the_store(brokers: BrokerFactory, db_path: Path) -> None:
    await pair(brokers)
    from mcp_broker.ops.reader import read_sessions

    records = await read_sessions(str(db_path))
    assert {(r.name, r.status) for r in records} == {("author", "active"), ("reviewer", "active")}
    assert all(r.process_alive for r in records)
    assert {r.version for r in records} == {__version__}  # each process records its version

    from mcp_broker.ops import doctor

    older = [replace(r, version="0.0.1") if r.name == "author" else r for r in records]
    findings = doctor.check_sessions(older, now=datetime.now(UTC), host=socket.gethostname())
    assert any("0.0.1" in f.message for f in findings), findings  # version skew is reported


async def test_the_store_named_before_the_command_reaches_the_hook(
    brokers: BrokerFactory, db_path: Path
) -> None:
    a, _ = await pair(brokers)
    await a.messaging.send("reviewer", "chat", {"text": "look"})
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_BROKER_")} | {
        "MCP_BROKER_SESSION": "reviewer"
    }
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [
                sys.executable,
                "-m",
                "mcp_broker",
                "--store",
                str(db_path),
                "hook",
                "claude-code",
                "UserPromptSubmit",
            ],
            input=stdin_for("UserPromptSubmit", prompt="go on"),
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    )
    assert done.returncode == 0, done.stderr
    assert "1 message is waiting" in json.loads(done.stdout)["hookSpecificOutput"]["additionalContext"]
