"""``mcp-broker history`` and the rate in ``status``, as subprocesses on a store real brokers use."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import BrokerFactory

pytestmark = pytest.mark.anyio

CHAT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
SPEAKS = [{"name": "chat", "versions": "^1.0"}]


async def people(db: Path, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_BROKER_")}
    done = await anyio.to_thread.run_sync(
        lambda: subprocess.run(
            [sys.executable, "-m", "mcp_broker", "--store", str(db), *args, "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_history_shows_one_session_both_ways_and_every_sessions_sends(
    brokers: BrokerFactory, db_path: Path
) -> None:
    a, b = await brokers(rate_per_second=5.0, rate_burst=5.0), await brokers()
    await a.catalog.register_protocol("chat", "1.0.0", CHAT, ["point_to_point"])
    await a.sessions.connect("alice", SPEAKS)
    await b.sessions.connect("bob", SPEAKS)
    asked = await a.messaging.send("bob", "chat", {"text": "ping"})
    answer = await b.messaging.send("alice", "chat", {"text": "pong"})
    await a.inbox.ack([m.message_id for m in (await a.inbox.receive()).messages])

    mine = await people(db_path, "history", "--session", "alice")
    assert [(m["direction"], m["message_id"]) for m in mine["messages"]] == [
        ("received", answer.message_id),
        ("sent", asked.message_id),
    ]
    assert mine["messages"][0]["deliveries"][0]["state"] == "acked"
    everyone = await people(db_path, "history")
    assert {m["message_id"] for m in everyone["messages"]} == {asked.message_id, answer.message_id}
    only_bob = await people(db_path, "history", "--session", "alice", "--direction", "sent", "--peer", "bob")
    assert [m["message_id"] for m in only_bob["messages"]] == [asked.message_id]

    status = await people(db_path, "status")
    alice = next(s for s in status["sessions"] if s["name"] == "alice")
    assert alice["rate"]["sent_last_minute"] == 1 and alice["rate"]["limited"] is False
