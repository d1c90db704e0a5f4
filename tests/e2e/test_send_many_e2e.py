"""send_many across real ``python -m mcp_broker`` processes, on both engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import broker_process, call, text_of
from fastmcp import Client

from mcp_broker.config import url_namespace

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

NOTE = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
SPEAKS = [{"name": "note", "versions": "^1.0"}]


async def refusal(client: Client[Any], tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments, raise_on_error=False)
    assert result.is_error, f"{tool} was not refused"
    return text_of(result)


def note(to: str, n: Any, **extra: Any) -> dict[str, Any]:
    return {"to": to, "protocol": "note", "payload": {"n": n}, **extra}


async def drain(client: Client[Any]) -> list[int]:
    got = await call(client, "receive", max_messages=100)
    ids = [m["message_id"] for m in got["messages"]]
    if ids:
        await call(client, "ack", message_ids=ids)
    return [m["payload"]["n"] for m in got["messages"]]


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, db_path: Path) -> tuple[str, dict[str, Any]]:
    if request.param == "sqlite":
        return str(db_path), {}
    url = request.getfixturevalue("redis_url")  # a redis-server the tests start (skips without one)
    return url, {"namespace": url_namespace(url)}


async def test_each_message_is_its_own_send_and_a_refused_one_does_not_stop_the_others(
    store: tuple[str, dict[str, Any]],
) -> None:
    url, settings = store
    async with (
        broker_process(url, **settings) as sender,
        broker_process(url, **settings) as bob,
        broker_process(url, **settings) as carol,
    ):
        await call(sender, "register_protocol", name="note", version="1.0.0", schema=NOTE,
                   capabilities=["point_to_point"])  # fmt: skip
        await call(sender, "connect", name="sender", protocols=SPEAKS)
        await call(bob, "connect", name="bob", protocols=SPEAKS)
        await call(carol, "connect", name="carol", protocols=SPEAKS)
        messages = [
            note("bob", 1),
            note("carol", 2),
            note("bob", "three"),  # fails the schema
            note("nobody", 4),
            note("bob", 5, idempotency_key="k"),
            note("bob", 6, idempotency_key="k"),  # the same key: answered as the first, stored once
            note("carol", 7, priority="high"),
        ]
        answer = await call(sender, "send_many", messages=messages)
        results = answer["results"]
        assert [r["index"] for r in results] == list(range(len(messages)))
        assert [r["ok"] for r in results] == [True, True, False, False, True, True, True]
        assert (answer["sent"], answer["refused"]) == (5, 2)
        assert results[2]["code"] == "PAYLOAD_INVALID" and results[2]["error"].startswith("PAYLOAD_INVALID: ")
        assert results[3]["code"] == "UNKNOWN_SESSION"
        assert results[5]["result"]["duplicate"] is True
        assert results[5]["result"]["message_id"] == results[4]["result"]["message_id"]
        assert {r["result"]["recipient"] for r in results if r["ok"]} == {"bob", "carol"}
        assert await drain(bob) == [1, 5]  # in the items' order, the repeated key once
        assert await drain(carol) == [7, 2]  # high priority first, as with send


async def test_a_rate_limit_stops_the_rest_without_trying_them(store: tuple[str, dict[str, Any]]) -> None:
    url, settings = store
    limited = settings | {"rate_per_second": 0.01, "rate_burst": 3}
    async with broker_process(url, **limited) as sender, broker_process(url, **settings) as bob:
        await call(sender, "register_protocol", name="note", version="1.0.0", schema=NOTE,
                   capabilities=["point_to_point"])  # fmt: skip
        await call(sender, "connect", name="sender", protocols=SPEAKS)
        await call(bob, "connect", name="bob", protocols=SPEAKS)
        answer = await call(sender, "send_many", messages=[note("bob", n) for n in range(6)])
        codes = [r["code"] for r in answer["results"]]
        assert codes == [None, None, None, "RATE_LIMITED", "RATE_LIMITED", "RATE_LIMITED"]
        assert all(r["retry_after_seconds"] > 0 for r in answer["results"][3:])
        assert "not tried" not in answer["results"][3]["error"]
        assert all("not tried" in r["error"] for r in answer["results"][4:])
        assert await drain(bob) == [0, 1, 2]


async def test_a_malformed_call_is_refused_whole_and_stores_nothing(db_path: Path) -> None:
    async with broker_process(db_path) as sender, broker_process(db_path) as bob:
        assert (await refusal(sender, "send_many", messages=[note("bob", 1)])).startswith("NOT_CONNECTED")
        await call(sender, "register_protocol", name="note", version="1.0.0", schema=NOTE,
                   capabilities=["point_to_point"])  # fmt: skip
        await call(sender, "connect", name="sender", protocols=SPEAKS)
        await call(bob, "connect", name="bob", protocols=SPEAKS)
        for messages in (
            [],
            [note("bob", n) for n in range(101)],
            [note("bob", 1), {**note("bob", 2), "from": "carol"}],  # a key send does not take
            [note("bob", 1), {"to": "bob", "payload": {"n": 2}}],  # no protocol
            [note("bob", 1), note("bob", 2, priority="urgent")],
            "not a list",
        ):
            text = await refusal(sender, "send_many", messages=messages)
            assert text.startswith("INVALID_ARGUMENT"), text
        assert await drain(bob) == []
