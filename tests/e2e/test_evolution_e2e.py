"""End-to-end protocol evolution and request/reply: real ``python -m mcp_broker`` processes over stdio.

Agents on different versions of ``note`` talk through adapters registered by one of them, a broadcast
reaches three versions at once, and a request is answered across processes, also after the requester
restarted. Processes a test needs are started together (start-up dominates); waits are long-polls
under ``anyio.fail_after``.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from conftest import Proc, Spawn, started

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

CAPS = ["point_to_point", "broadcast"]

NOTES: dict[str, dict[str, Any]] = {
    "1.0.0": {
        "type": "object",
        "properties": {"text": {"type": "string"}, "level": {"enum": ["hi", "lo"]}},
        "required": ["text"],
        "additionalProperties": False,
    },
    "1.1.0": {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "lang": {"type": "string"},
            "level": {"enum": ["hi", "lo"]},
        },
        "required": ["text", "lang"],
    },
    "2.0.0": {
        "type": "object",
        "properties": {
            "body": {"type": "string"},
            "lang": {"type": "string"},
            "level": {"enum": ["high", "low"]},
        },
        "required": ["body", "lang"],
        "additionalProperties": False,
    },
}
ADAPTERS: list[tuple[str, str, list[dict[str, Any]]]] = [
    ("1.0.0", "1.1.0", [{"op": "set_default", "path": "/lang", "value": "en"}]),
    ("1.1.0", "1.0.0", [{"op": "remove", "path": "/lang"}]),
    (
        "1.1.0",
        "2.0.0",
        [
            {"op": "rename", "from": "/text", "to": "/body"},
            {"op": "map_values", "path": "/level", "mapping": {"hi": "high", "lo": "low"}},
        ],
    ),
    (
        "2.0.0",
        "1.1.0",
        [
            {"op": "rename", "from": "/body", "to": "/text"},
            {"op": "map_values", "path": "/level", "mapping": {"high": "hi", "low": "lo"}},
        ],
    ),
]
ASK: dict[str, Any] = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
ANSWER: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


# --- helpers ---------------------------------------------------------------------------------------


class Agent(Proc):
    """A broker process with shorthands for calling its tools."""

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """Call a tool that must succeed; its structured result."""
        result = await self.client.call_tool(tool, arguments, raise_on_error=False)
        text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
        assert not result.is_error, f"{tool}({arguments}) was refused: {text}"
        assert result.structured_content is not None, f"{tool} returned no structured content"
        return result.structured_content

    async def refusal(self, tool: str, **arguments: Any) -> str:
        """Call a tool that must be refused; the error text."""
        result = await self.client.call_tool(tool, arguments, raise_on_error=False)
        assert result.is_error, f"{tool}({arguments}) was not refused: {result.structured_content}"
        return result.content[0].text if result.content else ""  # type: ignore[union-attr]


async def receive_one(proc: Agent) -> dict[str, Any]:
    """The one message waiting for this session (long-polled), acked."""
    (message,) = (await proc.call("receive", wait_seconds=10))["messages"]
    await proc.call("ack", message_ids=[message["message_id"]])
    return message


async def receive_request(proc: Agent) -> dict[str, Any]:
    """The one request waiting for this session, leased (``reply`` acks it)."""
    (message,) = (await proc.call("receive", wait_seconds=10))["messages"]
    assert message["kind"] == "request"
    return message


def speaks(versions: str, name: str = "note") -> list[dict[str, str]]:
    return [{"name": name, "versions": versions}]


# --- tests -----------------------------------------------------------------------------------------


async def test_agents_on_three_versions_talk_through_adapters(spawn: Spawn) -> None:
    async with started(spawn, 4, Agent) as (old, mid, new, announcer):
        with anyio.fail_after(30):
            for version, schema in NOTES.items():
                await old.call(
                    "register_protocol", name="note", version=version, schema=schema, capabilities=CAPS
                )
            for source, target, steps in ADAPTERS:
                registered = await mid.call(
                    "register_adapter", protocol="note", from_version=source, to_version=target, steps=steps
                )
                assert registered["status"] == "registered"
            await old.call("connect", name="old", protocols=speaks("~1.0"))
            await mid.call("connect", name="mid", protocols=speaks("~1.1"))
            await new.call("connect", name="new", protocols=speaks("^2"))
            await announcer.call("connect", name="announcer", protocols=speaks(">=1.0"))

            # The 1.x and the 2.x agent negotiate: compatible only through adapters, each way.
            agreed = await old.call("negotiate", peer="new", required_protocols=["note"])
            assert agreed["compatible"]
            assert {(r["direction"], tuple(r["path"])) for r in agreed["adapted"]} == {
                ("to_peer", ("1.0.0", "1.1.0", "2.0.0")),
                ("from_peer", ("2.0.0", "1.1.0", "1.0.0")),
            }

            # 1.0.0 -> 2.0.0, in another process.
            up = await old.call(
                "send", to="new", protocol="note", payload={"text": "ship it?", "level": "hi"}
            )
            assert (up["version"], up["delivered_version"]) == ("1.0.0", "2.0.0")
            assert up["adapted_via"] == ["1.0.0", "1.1.0", "2.0.0"]
            got = await receive_one(new)
            assert got["payload"] == {"body": "ship it?", "lang": "en", "level": "high"}
            assert (got["version"], got["sent_version"], got["sender"]) == ("2.0.0", "1.0.0", "old")

            # 2.0.0 -> 1.0.0, the answer going back down.
            down = await new.call(
                "send", to="old", protocol="note", payload={"body": "shipped", "lang": "en", "level": "low"}
            )
            assert down["adapted_via"] == ["2.0.0", "1.1.0", "1.0.0"]
            back = await receive_one(old)
            assert back["payload"] == {"text": "shipped", "level": "lo"}
            assert (back["version"], back["sent_version"], back["adapted_via"]) == (
                "1.0.0",
                "2.0.0",
                ["2.0.0", "1.1.0", "1.0.0"],
            )
            status = await new.call("message_status", message_ids=[down["message_id"]])
            assert [d["delivered_version"] for d in status["messages"][0]["deliveries"]] == ["1.0.0"]

            # 1.1.0 lets unknown fields through, 2.0.0 does not: such a note is refused, not half-delivered.
            failed = await mid.refusal(
                "send", to="new", protocol="note", payload={"text": "x", "lang": "en", "draft": True}
            )
            assert failed.startswith("TRANSFORM_FAILED")
            assert "draft" in failed

            # One broadcast in 2.0.0 reaches three versions, each in its own shape.
            sent = await announcer.call(
                "broadcast", protocol="note", version="2.0.0", payload={"body": "release", "lang": "de"}
            )
            assert sent["recipient_count"] == 3
            assert sent["skipped"] == []
            assert {r["name"]: r["delivered_version"] for r in sent["recipients"]} == {
                "old": "1.0.0",
                "mid": "1.1.0",
                "new": "2.0.0",
            }
            shapes = {}
            for proc in (old, mid, new):
                message = await receive_one(proc)
                assert message["message_id"] == sent["message_id"]
                shapes[message["version"]] = message["payload"]
            assert shapes == {
                "1.0.0": {"text": "release"},
                "1.1.0": {"text": "release", "lang": "de"},
                "2.0.0": {"body": "release", "lang": "de"},
            }

            # Discovery and the matrix agree with what just happened.
            matrix = await announcer.call("compatibility_matrix", protocol="note")
            pairs = {(p["sender"], p["recipient"]): p["mode"] for p in matrix["protocols"][0]["pairs"]}
            assert pairs["old", "new"] == pairs["new", "mid"] == "adapted"
            assert pairs["old", "announcer"] == pairs["new", "announcer"] == "direct"
            found = await new.call("discover_protocols", name="note")
            assert {len(p["adapters"]) for p in found["protocols"]} == {2, 4}


async def test_request_reply_across_processes_and_after_the_requester_restarts(spawn: Spawn) -> None:
    async with started(spawn, 3, Agent) as (asker, oracle, asker_again):
        with anyio.fail_after(30):
            await oracle.call(
                "register_protocol",
                name="ask",
                version="1.0.0",
                schema=ASK,
                capabilities=["request_response"],
                response_schema=ANSWER,
            )
            await oracle.call("connect", name="oracle", protocols=speaks("^1", "ask"))
            await asker.call("connect", name="asker", protocols=speaks("^1", "ask"))

            # A round trip: the requester waits inside `request` while the oracle answers.
            async def answer() -> None:
                request = await receive_request(oracle)
                assert (request["payload"], request["sender"]) == ({"q": "6*7?"}, "asker")
                wrong = await oracle.refusal("reply", message_id=request["message_id"], payload={"a": "42"})
                assert wrong.startswith("PAYLOAD_INVALID")
                await oracle.call("reply", message_id=request["message_id"], payload={"a": 42})

            async with anyio.create_task_group() as tg:
                tg.start_soon(answer)
                result = await asker.call(
                    "request", to="oracle", protocol="ask", payload={"q": "6*7?"}, timeout_seconds=20
                )
            assert result["status"] == "answered"
            assert result["reply"]["payload"] == {"a": 42}
            assert result["reply"]["correlation_id"] == result["request_id"]

            # The requester asks, gives up waiting, and its process exits.
            pending = await asker.call(
                "request", to="oracle", protocol="ask", payload={"q": "still there?"}, timeout_seconds=0.5
            )
            assert pending["status"] == "pending"
            await asker.close()

            request = await receive_request(oracle)
            assert request["message_id"] == pending["request_id"]
            replied = await oracle.call("reply", message_id=request["message_id"], payload={"a": 1})
            assert (replied["recipient"], replied["status"]) == ("asker", "queued")

            # A new process takes the requester's name and picks the answer up.
            resumed = await asker_again.call("connect", name="asker", protocols=speaks("^1", "ask"))
            assert resumed["resumed"]
            answered = await asker_again.call(
                "await_reply", request_id=pending["request_id"], timeout_seconds=10
            )
            assert answered["status"] == "answered"
            assert answered["reply"]["payload"] == {"a": 1}
            assert answered["reply"]["sender"] == "oracle"
