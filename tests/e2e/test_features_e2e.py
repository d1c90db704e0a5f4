"""Streams, rate limits and history across real ``python -m mcp_broker`` processes."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import broker_process, call, text_of
from fastmcp import Client

from mcp_broker.config import url_namespace

pytestmark = [pytest.mark.anyio, pytest.mark.e2e]

LOG = {"type": "object", "properties": {"line": {"type": "string"}}, "required": ["line"]}
SPEAKS = [{"name": "log", "versions": "^1.0"}]


@dataclass(frozen=True)
class Target:
    """The store a test's processes share, on one engine."""

    store: str
    settings: dict[str, Any]


@pytest.fixture(params=["sqlite", "redis"])
def target(request: pytest.FixtureRequest, db_path: Path) -> Target:
    if request.param == "sqlite":
        return Target(str(db_path), {})
    url = request.getfixturevalue("redis_url")  # a redis-server the tests start (skips without one)
    return Target(url, {"namespace": url_namespace(url)})


@asynccontextmanager
async def process(target: Target, **settings: Any) -> AsyncIterator[Client[Any]]:
    """A broker process that may be SIGKILLed under the test: closing it then is not an error."""
    cm = broker_process(target.store, **(target.settings | settings))
    client = await cm.__aenter__()
    try:
        yield client
    finally:
        with contextlib.suppress(Exception), anyio.move_on_after(30, shield=True):
            await cm.__aexit__(None, None, None)


async def pid_of(client: Client[Any], name: str) -> int:
    sessions = (await call(client, "list_sessions"))["sessions"]
    return next(s["pid"] for s in sessions if s["name"] == name)


async def until_gone(client: Client[Any], name: str) -> None:
    with anyio.fail_after(30):
        while True:
            sessions = (await call(client, "list_sessions"))["sessions"]
            if next(s for s in sessions if s["name"] == name)["status"] == "disconnected":
                return
            await anyio.sleep(0.05)


@pytest.mark.timeout(600)
async def test_a_stream_of_1000_chunks_arrives_whole_and_in_order_while_the_receiver_is_killed_twice(
    target: Target,
) -> None:
    # The full thousand on the embedded default; a shorter stream on Redis keeps the suite quick.
    total, kill_at = (1000, (300, 700)) if "://" not in target.store else (200, (60, 140))
    acked: list[int] = []
    handed_out: list[int] = []  # every chunk a receive returned, redeliveries included
    async with process(target) as writer:
        await call(writer, "register_protocol", name="log", version="1.0.0", schema=LOG,
                   capabilities=["point_to_point", "streaming"])  # fmt: skip
        await call(writer, "connect", name="writer", protocols=SPEAKS)
        async with process(target) as first:  # the reader exists (and goes offline) before the stream opens
            await call(first, "connect", name="reader", protocols=SPEAKS)
        stream_id = (await call(writer, "open_stream", to="reader", protocol="log"))["stream_id"]

        async def write() -> None:
            for n in range(1, total + 1):
                await call(writer, "append_chunk", stream_id=stream_id, payload={"line": f"line {n}"},
                           last=n == total)  # fmt: skip

        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            for stop in (*kill_at, None):
                async with process(target) as reader:
                    await call(reader, "connect", name="reader", protocols=SPEAKS)
                    while len(acked) < (stop or total):
                        got = await call(
                            reader, "receive", wait_seconds=10, lease_seconds=1, stream_id=stream_id
                        )
                        for m in got["messages"]:
                            assert (m["kind"], m["stream_id"]) == ("chunk", stream_id)
                            assert m["payload"] == {"line": f"line {m['stream_seq']}"}
                            handed_out.append(m["stream_seq"])
                            if stop is not None and len(acked) == stop - 1:
                                break  # this one is leased and never acked: the process dies holding it
                            await call(reader, "ack", message_ids=[m["message_id"]])
                            acked.append(m["stream_seq"])
                        else:
                            continue
                        os.kill(await pid_of(writer, "reader"), signal.SIGKILL)
                        await until_gone(writer, "reader")
                        break
        status = await call(writer, "stream_status", stream_id=stream_id)
    assert acked == list(range(1, total + 1))  # complete, in order, without gaps
    twice = sorted(n for n in set(handed_out) if handed_out.count(n) > 1)
    assert twice == list(kill_at)  # only the chunk each dead process held came again
    assert (status["state"], status["chunks"], status["acked"]) == ("closed", total, total)
    print(
        f"\n{total} chunks acked in order across three reader processes; redelivered after the kills: {twice}"
    )


async def test_a_looping_sender_is_held_to_its_rate_while_another_sender_flows(target: Target) -> None:
    rate, burst = 5.0, 10.0
    limits = {"rate_per_second": rate, "rate_burst": burst}
    async with (
        process(target, **limits) as looper,
        process(target, **limits) as calm,
        process(target, **limits) as sink,
    ):
        await call(looper, "register_protocol", name="log", version="1.0.0", schema=LOG,
                   capabilities=["point_to_point"])  # fmt: skip
        for client, name in ((looper, "looper"), (calm, "calm"), (sink, "sink")):
            await call(client, "connect", name=name, protocols=SPEAKS)
        accepted = refused = 0
        retry_after: list[float] = []
        calm_sent: list[str] = []
        started = time.monotonic()

        async def loop() -> None:
            nonlocal accepted, refused
            while time.monotonic() - started < 3.0:
                result = await looper.call_tool(
                    "send",
                    {"to": "sink", "protocol": "log", "payload": {"line": "again"}},
                    raise_on_error=False,
                )
                if result.is_error:
                    assert text_of(result).startswith("RATE_LIMITED: "), text_of(result)
                    meta = result.meta or {}
                    error = meta.get("error", {})
                    assert error.get("code") == "RATE_LIMITED" and error["retry_after_seconds"] > 0
                    retry_after.append(error["retry_after_seconds"])
                    refused += 1
                else:
                    accepted += 1

        async def steady() -> None:
            for n in range(5):
                calm_sent.append(
                    (await call(calm, "send", to="sink", protocol="log", payload={"line": f"calm {n}"}))[
                        "message_id"
                    ]
                )
                await anyio.sleep(0.4)

        async with anyio.create_task_group() as tg:
            tg.start_soon(loop)
            tg.start_soon(steady)
        elapsed = time.monotonic() - started
        sessions = {s["name"]: s for s in (await call(sink, "list_sessions"))["sessions"]}
        got: list[dict[str, Any]] = []
        while batch := (await call(sink, "receive", max_messages=100))["messages"]:
            got += batch
            await call(sink, "ack", message_ids=[m["message_id"] for m in batch])
    assert accepted <= burst + rate * elapsed + 1, (accepted, elapsed)
    assert accepted >= burst and refused > 0
    assert {m["message_id"] for m in got} >= set(calm_sent)  # the other sender's messages all flowed
    assert len(got) == accepted + len(calm_sent)  # a refused send stored nothing
    assert sessions["looper"]["rate"]["sent_last_minute"] == accepted
    print(f"\nlooper: {accepted} accepted, {refused} refused with RATE_LIMITED in {elapsed:.1f} s "
          f"(rate {rate:g}/s, burst {burst:g}: at most {burst + rate * elapsed:.0f}); "
          f"retry_after_seconds {min(retry_after):.3f}-{max(retry_after):.3f}; calm: {len(calm_sent)} of 5 delivered")  # fmt: skip


async def test_history_shows_a_conversation_both_ways_and_replays_are_marked(target: Target) -> None:
    async with process(target) as a, process(target) as b:
        await call(
            a, "register_protocol", name="log", version="1.0.0", schema=LOG, capabilities=["point_to_point"]
        )
        await call(a, "connect", name="alice", protocols=SPEAKS)
        await call(b, "connect", name="bob", protocols=SPEAKS)
        asked = await call(a, "send", to="bob", protocol="log", payload={"line": "how is the build?"})
        [got] = (await call(b, "receive", wait_seconds=10))["messages"]
        await call(b, "ack", message_ids=[got["message_id"]])
        answered = await call(b, "send", to="alice", protocol="log", payload={"line": "green"})
        mine = (await call(a, "history"))["messages"]
        assert [(m["direction"], m["message_id"]) for m in mine] == [
            ("received", answered["message_id"]),
            ("sent", asked["message_id"]),
        ]
        sent = mine[1]
        assert [(d["recipient"], d["state"]) for d in sent["deliveries"]] == [("bob", "acked")]
        assert [(d["recipient"], d["state"]) for d in mine[0]["deliveries"]] == [("alice", "queued")]
        only_sent = (await call(a, "history", direction="sent", peer="bob"))["messages"]
        assert [m["message_id"] for m in only_sent] == [asked["message_id"]]

        copy = await call(a, "replay_message", message_id=asked["message_id"])
        assert copy["replay_of"] == asked["message_id"] and copy["recipients"] == ["bob"]
        [again] = (await call(b, "receive", wait_seconds=10))["messages"]
        assert (again["message_id"], again["replay_of"]) == (copy["message_id"], asked["message_id"])
        receipts = (await call(a, "message_status", message_ids=[asked["message_id"], copy["message_id"]]))[
            "messages"
        ]
        assert [r["deliveries"][0]["state"] for r in receipts] == ["acked", "leased"]  # receipts of their own
