"""What a tool's input schema says is what it accepts: no coercion of wrong types (issue 9, defect 6),
and a refused resource read is an answer logged in one quiet line (defect 8)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import BrokerFactory
from fastmcp import Client
from mcp.shared.exceptions import MCPError

from mcp_broker.mcp import build_server

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("receive", {"wait_seconds": True}),
        ("receive", {"max_messages": "7"}),
        ("receive", {"lease_seconds": 1.5e400}),
        ("release", {"message_ids": ["x"], "delay_seconds": "5"}),
        ("list_dead_letters", {"limit": " 7 "}),
        ("list_dead_letters", {"limit": 7.0}),
        ("broadcast", {"protocol": "chat", "payload": {}, "ttl_seconds": "1e2"}),
        ("await_reply", {"request_id": "r", "timeout_seconds": "0" * 4096}),
        ("send", {"to": 5, "protocol": "chat", "payload": {}}),
    ],
)
async def test_wrong_types_are_refused_not_coerced(
    brokers: BrokerFactory, tool: str, arguments: dict[str, Any]
) -> None:
    broker = await brokers()
    await broker.sessions.connect("alice", [])
    async with Client(build_server(broker)) as client:
        result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert result.is_error
    text = result.content[0].text
    assert text.startswith("INVALID_ARGUMENT: "), text
    assert len(text) < 2000 and "0000000000" not in text  # the value is never echoed whole


async def test_a_refused_resource_read_logs_one_quiet_line(
    brokers: BrokerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    broker = await brokers()  # no session: the inbox cannot be read
    caplog.set_level(logging.INFO)
    async with Client(build_server(broker)) as client:
        with pytest.raises(MCPError, match="NOT_CONNECTED"):
            await client.read_resource("broker://inbox")
    assert not [r for r in caplog.records if r.exc_info], "a refusal was logged with a traceback"
    assert any("resource refused: NOT_CONNECTED" in r.getMessage() for r in caplog.records)
