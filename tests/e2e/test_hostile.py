"""Hostile input, case by case: every tool refuses it with its code, the store stays intact, the broker serves on.

Most cases go through the MCP layer in memory (``fastmcp.Client(build_server(broker))``); the ones about
the wire (nesting deeper than the JSON parser allows, garbage lines, NaN literals) talk to a real
``python -m mcp_broker`` process over stdio. After each group: ``PRAGMA integrity_check`` is ``ok``,
``PRAGMA foreign_key_check`` is empty, and the broker still answers.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import queue
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import broker_env
from fastmcp import Client

from mcp_broker.mcp import build_server

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]

KIB = 1024
MASKED = "Error calling tool"
CODE = re.compile(r"^[A-Z][A-Z_]+: ")
PROMPT = 10.0  # seconds: "answers promptly" for work that is bounded by design (regex budget 1 s)
BULK = 30.0  # seconds for a refusal that must first read 1,000,000 elements (about 2 s on an idle machine)

OPEN: dict[str, Any] = {}
CHAT: dict[str, Any] = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
CHAT2: dict[str, Any] = {"type": "object", "properties": {"body": {"type": "string"}}, "required": ["body"]}
SPEAKS = [
    {"name": "open", "versions": "*"},
    {"name": "chat", "versions": "*"},
    {"name": "ask", "versions": "*"},
    {"name": "evil", "versions": "*"},
]

ODD_NAMES = [
    "\u202eevil",  # right-to-left override
    "a\u200db",  # zero-width joiner
    "\u200b",  # zero-width space alone
    "🙂",
    "agent🙂",
    "e\u0301",  # combining acute accent
    "\ufeffme",  # byte order mark
    "\u0440eer",  # Cyrillic 'р': looks like "peer"
    "ｐｅｅｒ",  # fullwidth
    "a\x00b",
    "peer\x00",
    "a\nb",
    " peer",
]
INJECTIONS = [
    "'; DROP TABLE sessions; --",
    "peer' OR '1'='1",
    '" OR 1=1 --',
    "1; DELETE FROM messages",
    "%",
    "_",
    "*",
    "../../../../etc/passwd",
    "/dev/zero",
    "C:\\Windows\\System32",
]


def _cursor(offset: Any, filters: str | None = None, digest: str | None = None) -> str:
    if filters is not None:
        digest = hashlib.sha256(filters.encode()).hexdigest()[:16]
    return base64.urlsafe_b64encode(json.dumps([offset, digest]).encode()).decode()


def _nested(depth: int, leaf: Any = 0) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def assert_store_intact(db: Path) -> None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        con.close()


def tables(db: Path) -> list[str]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
    finally:
        con.close()


@dataclass
class World:
    """Two connected brokers on one file: ``me`` and ``peer``; both speak ``open`` (any JSON), ``chat``, ``ask``."""

    me: Client[Any]
    peer: Client[Any]
    db: Path

    async def call(self, tool: str, client: Client[Any] | None = None, **args: Any) -> Any:
        with anyio.fail_after(60):
            return await (client or self.me).call_tool(tool, args, raise_on_error=False)

    async def ok(self, tool: str, client: Client[Any] | None = None, **args: Any) -> dict[str, Any]:
        result = await self.call(tool, client, **args)
        assert not result.is_error, f"{tool} was refused: {_text(result)}"
        return result.structured_content

    async def refused(self, code: str, tool: str, client: Client[Any] | None = None, **args: Any) -> str:
        """Call ``tool``; it must be refused with ``code``. Returns the error text."""
        result = await self.call(tool, client, **args)
        text = _text(result)
        assert MASKED not in text, f"unmasked exception from {tool}: {text}"
        assert result.is_error, f"{tool} was not refused: {result.structured_content}"
        assert text.startswith(f"{code}: "), f"{tool}: expected {code}, got {text[:300]!r}"
        return text

    async def answered(self, tool: str, client: Client[Any] | None = None, **args: Any) -> Any:
        """Call ``tool``: a success or a coded refusal, never a masked exception."""
        result = await self.call(tool, client, **args)
        text = _text(result)
        assert MASKED not in text, f"unmasked exception from {tool}: {text}"
        if result.is_error:
            assert CODE.match(text), f"{tool}: no stable code: {text[:300]!r}"
        return result

    async def intact(self) -> None:
        """The broker still serves both sessions, and the store passes its checks."""
        sessions = await self.ok("list_sessions", status="active")
        assert {s["name"] for s in sessions["sessions"]} >= {"me", "peer"}
        await self.ok("discover_protocols", limit=1)
        await self.ok("receive", self.peer, max_messages=100)
        assert_store_intact(self.db)


@pytest.fixture
async def world(brokers: Any, db_path: Path) -> AsyncIterator[World]:
    async with AsyncExitStack() as stack:
        me = await stack.enter_async_context(Client(build_server(await brokers())))
        peer = await stack.enter_async_context(Client(build_server(await brokers())))
        w = World(me, peer, db_path)
        for name, version, schema, caps, extra in [
            ("open", "1.0.0", OPEN, ["point_to_point", "broadcast"], {}),
            ("chat", "1.0.0", CHAT, ["point_to_point", "broadcast"], {}),
            ("chat", "2.0.0", CHAT2, ["point_to_point", "broadcast"], {}),
            ("ask", "1.0.0", OPEN, ["point_to_point", "request_response"], {"response_schema": CHAT}),
        ]:
            await w.ok(
                "register_protocol", name=name, version=version, schema=schema, capabilities=caps, **extra
            )
        await w.ok("connect", name="me", protocols=SPEAKS, features=["python"])
        await w.ok("connect", peer, name="peer", protocols=SPEAKS, features=["python"])
        yield w


async def _received_request(w: World) -> str:
    """A request from peer that me has received, so me may reply to it."""
    asked = await w.ok("request", w.peer, to="me", protocol="ask", payload={}, timeout_seconds=0)
    got = await w.ok("receive", protocol="ask")
    assert [m["message_id"] for m in got["messages"]] == [asked["request_id"]]
    return asked["request_id"]


# --- size and depth ------------------------------------------------------------------------------


async def test_oversized_payloads_are_too_large_everywhere(world: World) -> None:
    big = {"text": "x" * (256 * KIB)}  # 256 KiB of text plus the envelope: just over the limit
    text = await world.refused("TOO_LARGE", "send", to="peer", protocol="open", payload=big)
    assert "262144" in text
    await world.refused("TOO_LARGE", "broadcast", protocol="open", payload=big)
    await world.refused("TOO_LARGE", "request", to="peer", protocol="ask", payload=big, timeout_seconds=0)
    request_id = await _received_request(world)
    await world.refused("TOO_LARGE", "reply", message_id=request_id, payload={"text": "y" * (300 * KIB)})
    await world.refused(
        "TOO_LARGE", "connect", name="me", protocols=SPEAKS, metadata={"blob": "z" * (17 * KIB)}
    )
    # Just under the limit is fine, and arrives whole.
    fits = {"text": "x" * (256 * KIB - 100)}
    sent = await world.ok("send", to="peer", protocol="open", payload=fits)
    got = await world.ok("receive", world.peer, max_messages=100)
    assert [m["payload"] for m in got["messages"] if m["message_id"] == sent["message_id"]] == [fits]
    await world.intact()


async def test_the_payload_limit_is_configurable(brokers: Any, db_path: Path) -> None:
    broker = await brokers(max_payload_bytes=1024)
    async with Client(build_server(broker)) as client:
        w = World(client, client, db_path)
        await w.ok(
            "register_protocol", name="open", version="1.0.0", schema={}, capabilities=["point_to_point"]
        )
        await w.ok("connect", name="solo", protocols=[{"name": "open"}])
        await w.ok("send", to="solo", protocol="open", payload="x" * 1000)
        text = await w.refused("TOO_LARGE", "send", to="solo", protocol="open", payload="x" * 1030)
        assert "1024" in text
    assert_store_intact(db_path)


async def test_oversized_schemas_are_too_large(world: World) -> None:
    huge = {"type": "object", "properties": {f"field_{i:05}": {"type": "string"} for i in range(3000)}}
    assert len(json.dumps(huge)) > 64 * KIB
    for args in (
        {"name": "huge", "schema": huge, "capabilities": ["point_to_point"]},
        {"name": "huge", "schema": {}, "response_schema": huge, "capabilities": ["request_response"]},
        {"name": "huge", "schema": {"description": "d" * (65 * KIB)}, "capabilities": ["point_to_point"]},
    ):
        text = await world.refused("TOO_LARGE", "register_protocol", version="1.0.0", **args)
        assert "65536" in text
    found = await world.ok("discover_protocols", name="huge")
    assert found["protocols"] == []
    await world.intact()


async def test_deep_nesting_is_too_large(world: World) -> None:
    deep = _nested(100)
    await world.refused("TOO_LARGE", "send", to="peer", protocol="open", payload=deep)
    await world.refused("TOO_LARGE", "send", to="peer", protocol="open", payload={"a": _nested(99, {})})
    await world.refused("TOO_LARGE", "broadcast", protocol="open", payload=deep)
    await world.refused("TOO_LARGE", "connect", name="me", protocols=SPEAKS, metadata={"m": deep})
    deep_schema: dict[str, Any] = {}
    for _ in range(100):
        deep_schema = {"items": deep_schema}
    await world.refused(
        "TOO_LARGE",
        "register_protocol",
        name="deep",
        version="1.0.0",
        schema=deep_schema,
        capabilities=["broadcast"],
    )
    steps = [{"op": "set_default", "path": "/x", "value": deep}]
    await world.refused(
        "TOO_LARGE",
        "register_adapter",
        protocol="chat",
        from_version="1.0.0",
        to_version="2.0.0",
        steps=steps,
    )
    # The limit is 64: exactly 64 levels pass, 65 do not.
    await world.ok("send", to="peer", protocol="open", payload=_nested(64))
    await world.refused("TOO_LARGE", "send", to="peer", protocol="open", payload=_nested(65))
    await world.intact()


async def test_a_million_element_array_is_refused_quickly(world: World) -> None:
    started = time.monotonic()
    text = await world.refused("TOO_LARGE", "send", to="peer", protocol="open", payload=[0] * 1_000_000)
    elapsed = time.monotonic() - started
    assert "2000001 bytes" in text
    assert elapsed < BULK, f"refusing a 1,000,000-element array took {elapsed:.1f}s"
    await world.refused("TOO_LARGE", "broadcast", protocol="open", payload={"a": [None] * 1_000_000})
    await world.intact()


async def test_big_arrays_within_the_limit_are_validated_quickly_and_arrive_whole(world: World) -> None:
    await world.ok(
        "register_protocol",
        name="evil",
        version="1.0.0",
        schema={"type": "array", "uniqueItems": True, "items": {"type": "object"}},
        capabilities=["point_to_point"],
    )
    many = [{"i": i} for i in range(20_000)]  # about 180 KB; unique-item checks must not be quadratic
    started = time.monotonic()
    sent = await world.ok("send", to="peer", protocol="evil", payload=many)
    await world.refused("PAYLOAD_INVALID", "send", to="peer", protocol="evil", payload=[*many, {"i": 0}])
    assert time.monotonic() - started < PROMPT
    got = await world.ok("receive", world.peer, protocol="evil")
    assert [m["payload"] for m in got["messages"] if m["message_id"] == sent["message_id"]] == [many]
    await world.intact()


async def test_huge_integers_are_stored_exactly_or_refused(world: World) -> None:
    # Past Python's 4300-digit limit for int <-> str the payload cannot be serialized: refused, not crashed.
    await world.refused("INVALID_ARGUMENT", "send", to="peer", protocol="open", payload={"n": 10**5000})
    sent = await world.ok("send", to="peer", protocol="open", payload={"n": 10**400, "m": -(10**400)})
    got = await world.ok("receive", world.peer)
    assert [m["payload"] for m in got["messages"] if m["message_id"] == sent["message_id"]] == [
        {"n": 10**400, "m": -(10**400)}
    ]
    await world.intact()


# --- odd text ------------------------------------------------------------------------------------


async def test_odd_unicode_in_names_is_refused(world: World) -> None:
    for name in ODD_NAMES:
        await world.refused("INVALID_ARGUMENT", "connect", world.me, name=name, protocols=SPEAKS)
        await world.refused(
            "INVALID_ARGUMENT",
            "register_protocol",
            name=name,
            version="1.0.0",
            schema={},
            capabilities=["broadcast"],
        )
        await world.refused("INVALID_ARGUMENT", "list_sessions", protocol=name)
        await world.refused("INVALID_ARGUMENT", "send", to="peer", protocol=name, payload={})
        # As an address it names no one: above all not "peer", which several of them resemble.
        await world.refused("UNKNOWN_SESSION", "send", to=name, protocol="open", payload={})
        await world.refused("UNKNOWN_SESSION", "negotiate", peer=name)
    for bad in ("a\x00b", "\x07bell", "tab\there", "x" * 65):
        await world.refused("INVALID_ARGUMENT", "connect", name="me", protocols=SPEAKS, features=[bad])
        await world.refused(
            "INVALID_ARGUMENT",
            "register_protocol",
            name="tagged",
            version="1.0.0",
            schema={},
            capabilities=["broadcast"],
            metadata={"tags": [bad]},
        )
    await world.intact()


async def test_odd_unicode_and_nul_in_payloads_arrive_unchanged(world: World) -> None:
    strings = [*ODD_NAMES, "\U0010ffff", "\x00" * 5, "\\u0000", "\x7f\x1b[31mred"]
    payload = {"values": strings, "keys": {s: s for s in strings}}
    sent = await world.ok("send", to="peer", protocol="open", payload=payload)
    got = await world.ok("receive", world.peer)
    assert [m["payload"] for m in got["messages"] if m["message_id"] == sent["message_id"]] == [payload]
    await world.intact()


async def test_nul_bytes_in_identifiers(world: World) -> None:
    await world.refused("INVALID_ARGUMENT", "connect", name="me\x00", protocols=SPEAKS)
    await world.refused("UNKNOWN_SESSION", "send", to="peer\x00", protocol="open", payload={})
    await world.refused("UNKNOWN_SESSION", "send", to="\x00", protocol="open", payload={})
    for key in ("idempotency_key", "correlation_id", "reply_to"):
        await world.refused(
            "INVALID_ARGUMENT", "send", to="peer", protocol="open", payload={}, **{key: "k\x00"}
        )
    await world.refused(
        "INVALID_ARGUMENT", "send", to="peer", protocol="open", payload={}, version="1.0.0\x00"
    )
    await world.refused(
        "INVALID_VERSION", "connect", name="me", protocols=[{"name": "open", "versions": "*\x00"}]
    )
    for tool in ("ack", "message_status", "release", "replay_dead_letters"):
        await world.refused("UNKNOWN_MESSAGE", tool, message_ids=["\x00", "id\x00"])
    await world.refused("INVALID_CURSOR", "discover_protocols", cursor="\x00")
    await world.refused("INVALID_CURSOR", "list_dead_letters", cursor="W10=\x00")
    found = await world.ok("discover_protocols", query="\x00")
    assert found["protocols"] == []
    await world.intact()


async def test_injection_strings_are_plain_data(world: World) -> None:
    before = tables(world.db)
    for text in INJECTIONS:
        await world.refused("INVALID_ARGUMENT", "connect", world.me, name=text, protocols=SPEAKS)
        await world.refused("UNKNOWN_SESSION", "send", to=text, protocol="open", payload={})
        await world.refused("UNKNOWN_SESSION", "negotiate", peer=text)
        await world.refused(
            "UNKNOWN_SESSION", "request", to=text, protocol="ask", payload={}, timeout_seconds=0
        )
        for tool in ("ack", "message_status", "release", "replay_dead_letters"):
            await world.refused("UNKNOWN_MESSAGE", tool, message_ids=[text])
        await world.refused("UNKNOWN_MESSAGE", "await_reply", request_id=text, timeout_seconds=0)
        await world.refused("UNKNOWN_MESSAGE", "reply", message_id=text, payload={"text": "x"})
        await world.refused("INVALID_CURSOR", "discover_protocols", cursor=text)
        await world.refused("INVALID_CURSOR", "list_dead_letters", cursor=text)
        assert (await world.ok("list_sessions", feature=text))["sessions"] == []
        assert (await world.ok("discover_protocols", query=text))["protocols"] == []
        # As data they are stored and returned verbatim.
        await world.ok(
            "send",
            to="peer",
            protocol="open",
            payload={text: text},
            idempotency_key=text,
            correlation_id=text,
        )
    got = await world.ok("receive", world.peer, max_messages=100)
    assert sorted(next(iter(m["payload"])) for m in got["messages"]) == sorted(INJECTIONS)
    assert tables(world.db) == before
    sessions = await world.ok("list_sessions")
    assert sorted(s["name"] for s in sessions["sessions"]) == ["me", "peer"]
    await world.intact()


# --- numbers -------------------------------------------------------------------------------------

ABSURD: list[tuple[str, dict[str, Any]]] = [
    ("receive", {"wait_seconds": -1}),
    ("receive", {"wait_seconds": 1e308}),
    ("receive", {"wait_seconds": 60.5}),
    ("receive", {"wait_seconds": "NaN"}),
    ("receive", {"wait_seconds": "inf"}),
    ("receive", {"max_messages": 0}),
    ("receive", {"max_messages": -1}),
    ("receive", {"max_messages": 101}),
    ("receive", {"max_messages": 10**20}),
    ("receive", {"max_messages": 1.5}),
    ("receive", {"max_messages": "many"}),
    ("receive", {"lease_seconds": 10**9}),
    ("receive", {"lease_seconds": 0}),
    ("receive", {"lease_seconds": -1}),
    ("receive", {"lease_seconds": "NaN"}),
    ("send", {"to": "peer", "protocol": "open", "payload": {}, "ttl_seconds": -5}),
    ("send", {"to": "peer", "protocol": "open", "payload": {}, "ttl_seconds": 0}),
    ("send", {"to": "peer", "protocol": "open", "payload": {}, "ttl_seconds": 2_592_001}),
    ("send", {"to": "peer", "protocol": "open", "payload": {}, "ttl_seconds": 1e308}),
    ("send", {"to": "peer", "protocol": "open", "payload": {}, "ttl_seconds": "NaN"}),
    ("send", {"to": "peer", "protocol": "open", "payload": {}, "priority": 10**9}),
    ("broadcast", {"protocol": "open", "payload": {}, "ttl_seconds": -5}),
    ("discover_protocols", {"limit": 0}),
    ("discover_protocols", {"limit": -1}),
    ("discover_protocols", {"limit": 101}),
    ("discover_protocols", {"limit": 10**400}),
    ("list_dead_letters", {"limit": 0}),
    ("list_dead_letters", {"limit": -(10**400)}),
    ("release", {"message_ids": ["m"], "delay_seconds": -1}),
    ("release", {"message_ids": ["m"], "delay_seconds": 3601}),
    ("release", {"message_ids": ["m"], "delay_seconds": 1e308}),
    ("request", {"to": "peer", "protocol": "ask", "payload": {}, "timeout_seconds": -1}),
    ("request", {"to": "peer", "protocol": "ask", "payload": {}, "timeout_seconds": 61}),
    ("await_reply", {"request_id": "r", "timeout_seconds": 1e308}),
    ("await_reply", {"request_id": "r", "timeout_seconds": -0.001}),
    ("register_protocol", {"name": "n", "version": "1.0.0", "schema": {}, "capabilities": []}),
    ("register_protocol", {"name": "nn", "version": "-1.0.0", "schema": {}, "capabilities": ["broadcast"]}),
    ("ack", {"message_ids": []}),
    ("ack", {"message_ids": [f"m{i}" for i in range(101)]}),
]


async def test_negative_and_absurd_numbers_are_invalid_arguments(world: World) -> None:
    started = time.monotonic()
    for tool, args in ABSURD:
        text = await world.refused("INVALID_ARGUMENT", tool, **args)
        assert len(text) < 2000, f"{tool}: the refusal is not short: {len(text)} characters"
    assert time.monotonic() - started < PROMPT, "an out-of-range wait was not refused at once"
    await world.intact()


# --- regular expressions -------------------------------------------------------------------------


async def test_a_catastrophic_pattern_answers_promptly_and_the_broker_serves_on(world: World) -> None:
    evil = "^(a|a)+$"
    hostile = "a" * 40 + "b"
    schemas: list[tuple[dict[str, Any], Any]] = [
        ({"type": "string", "pattern": evil}, hostile),
        ({"not": {"type": "string", "pattern": evil}}, hostile),  # a timeout must not turn into acceptance
        ({"type": "array", "items": {"type": "string", "pattern": evil}}, [hostile] * 1000),
        ({"type": "object", "patternProperties": {evil: {}}, "additionalProperties": False}, {hostile: 1}),
        ({"type": "object", "propertyNames": {"pattern": evil}}, {hostile: 1}),
        ({"anyOf": [{"pattern": evil}, {"pattern": "(x+x+)+y"}]}, hostile),
    ]
    for major, (schema, payload) in enumerate(schemas, start=1):
        version = f"{major}.0.0"
        await world.ok(
            "register_protocol", name="evil", version=version, schema=schema, capabilities=["point_to_point"]
        )
        started = time.monotonic()
        text = await world.refused(
            "PAYLOAD_INVALID", "send", to="peer", protocol="evil", version=version, payload=payload
        )
        elapsed = time.monotonic() - started
        assert elapsed < PROMPT, f"schema {schema}: the refusal took {elapsed:.1f}s"
        assert "too long" in text or "does not match" in text
    # Meanwhile other calls are answered, and a harmless payload still passes.
    async with anyio.create_task_group() as tg:
        slow = functools.partial(
            world.answered, to="peer", protocol="evil", version="1.0.0", payload=hostile * 100
        )
        tg.start_soon(slow, "send")
        with anyio.fail_after(PROMPT):
            await world.ok("list_sessions")
    await world.ok("send", to="peer", protocol="evil", version="1.0.0", payload="aaaa")
    await world.intact()


async def test_an_invalid_pattern_is_refused_at_registration(world: World) -> None:
    for pattern in ("(", "[a-", "(?P<x", "a{2,1}", "\\"):
        await world.refused(
            "INVALID_SCHEMA",
            "register_protocol",
            name="broken",
            version="1.0.0",
            schema={"type": "string", "pattern": pattern},
            capabilities=["point_to_point"],
        )
    await world.intact()


# --- cursors -------------------------------------------------------------------------------------

DISCOVER_FILTERS = json.dumps([None, None, [], None, None])
GARBAGE_CURSORS = [
    "garbage",
    "!!!",
    "=",
    "W10=",  # []
    "bnVsbA==",  # null
    "eyJhIjoxfQ==",  # {"a": 1}
    base64.urlsafe_b64encode(b"\xff\xfe\x00").decode(),  # not UTF-8
    _cursor(-1, DISCOVER_FILTERS),
    _cursor(1.5, DISCOVER_FILTERS),
    _cursor("1", DISCOVER_FILTERS),
    _cursor(None, DISCOVER_FILTERS),
    _cursor(1, digest="0" * 16),
    _cursor(1, "dead_letters"),  # another query's cursor
    "x" * 200,
]


async def test_garbage_cursors_are_invalid_cursor(world: World) -> None:
    for cursor in GARBAGE_CURSORS:
        await world.refused("INVALID_CURSOR", "discover_protocols", cursor=cursor)
    for cursor in [*GARBAGE_CURSORS[:7], _cursor(-1, "dead_letters"), _cursor(1, DISCOVER_FILTERS)]:
        await world.refused("INVALID_CURSOR", "list_dead_letters", cursor=cursor)
    await world.refused("INVALID_ARGUMENT", "discover_protocols", cursor="x" * 201)
    # A real cursor does not carry over to other filters.
    page = await world.ok("discover_protocols", limit=1)
    await world.refused(
        "INVALID_CURSOR", "discover_protocols", limit=1, name="open", cursor=page["next_cursor"]
    )
    await world.intact()


async def test_forged_cursors_with_huge_offsets_are_answered(world: World) -> None:
    """A cursor's digest only ties it to its filters; anyone can forge one for any offset."""
    for offset in (2**62, 2**63, 10**30):
        result = await world.answered("discover_protocols", cursor=_cursor(offset, DISCOVER_FILTERS))
        assert result.is_error or result.structured_content["protocols"] == []
        result = await world.answered("list_dead_letters", cursor=_cursor(offset, "dead_letters"))
        assert result.is_error or result.structured_content["dead_letters"] == []
    await world.intact()


# --- adapters ------------------------------------------------------------------------------------


async def _adapter(world: World, code: str, steps: Any) -> str:
    return await world.refused(
        code, "register_adapter", protocol="chat", from_version="1.0.0", to_version="2.0.0", steps=steps
    )


async def test_hostile_adapters_are_refused(world: World) -> None:
    rename = {"op": "rename", "from": "/text", "to": "/body"}
    await _adapter(world, "INVALID_ARGUMENT", [rename] * 1000)
    await _adapter(world, "INVALID_ARGUMENT", [rename] * 65)
    await _adapter(world, "INVALID_ARGUMENT", [])
    for pointer in (
        "../../etc/passwd",
        "text",
        "",
        "/a/~2",
        "/a~",
        "/" + "a/" * 100,
        "/" + "x" * 1001,
    ):
        text = await _adapter(world, "INVALID_ARGUMENT", [{"op": "rename", "from": pointer, "to": "/body"}])
        assert len(text) < 1000
    for step in (
        {"op": "exec", "path": "/text"},
        {"op": "__import__('os').system('id')", "path": "/text"},
        {"path": "/text"},
        {"op": "remove", "path": "/text", "eval": "1"},
        {"op": "map_values", "path": "/text", "mapping": {}},
        {"op": "map_values", "path": "/text", "mapping": "not a mapping"},
        {"op": "rename", "from": 5, "to": "/body"},
        "rename /text /body",
        None,
        [],
    ):
        await _adapter(world, "INVALID_ARGUMENT", [rename, step])
    # A NUL is a legal character in a field name, so this pointer names a field the schema lacks.
    await _adapter(world, "INVALID_ADAPTER", [{"op": "rename", "from": "/text\x00", "to": "/body"}])
    huge_mapping = {f"k{i}": "v" * 10 for i in range(5000)}
    await _adapter(
        world, "TOO_LARGE", [rename, {"op": "map_values", "path": "/body", "mapping": huge_mapping}]
    )
    await _adapter(
        world, "TOO_LARGE", [rename, {"op": "set_default", "path": "/x", "value": "v" * (65 * KIB)}]
    )
    # Steps that do not fit the schemas, or versions that are not there.
    await _adapter(world, "INVALID_ADAPTER", [{"op": "rename", "from": "/text/deeper", "to": "/body"}])
    await world.refused(
        "INVALID_ARGUMENT",
        "register_adapter",
        protocol="chat",
        from_version="1.0.0",
        to_version="1.0.0",
        steps=[rename],
    )
    await world.refused(
        "UNKNOWN_PROTOCOL",
        "register_adapter",
        protocol="chat",
        from_version="1.0.0",
        to_version="9.0.0",
        steps=[rename],
    )
    assert all(p["adapters"] == [] for p in (await world.ok("discover_protocols", name="chat"))["protocols"])
    await world.intact()


# --- wrong shapes ----------------------------------------------------------------------------------


async def test_wrong_types_missing_and_extra_keys_are_invalid_arguments(world: World) -> None:
    await world.refused("INVALID_ARGUMENT", "send", to="peer", protocol="open")
    await world.refused("INVALID_ARGUMENT", "send", to=["peer"], protocol="open", payload={})
    await world.refused("INVALID_ARGUMENT", "send", to="peer", protocol="open", payload={}, bcc="everyone")
    await world.refused("INVALID_ARGUMENT", "connect", name="me", protocols="open")
    await world.refused("INVALID_ARGUMENT", "connect", name="me", protocols=SPEAKS, metadata=[1, 2])
    await world.refused(
        "INVALID_ARGUMENT",
        "register_protocol",
        name="x1",
        version="1.0.0",
        schema=[],
        capabilities=["broadcast"],
    )
    await world.refused(
        "INVALID_ARGUMENT",
        "register_protocol",
        name="x1",
        version="1.0.0",
        schema={},
        capabilities=["telepathy"],
    )
    await world.refused("INVALID_ARGUMENT", "ack", message_ids="one-id")
    await world.refused("INVALID_ARGUMENT", "ack", message_ids=[{"id": 1}])
    await world.refused("INVALID_ARGUMENT", "disconnect", force=True)
    await world.refused(
        "INVALID_ARGUMENT", "broadcast", protocol="open", payload={}, filter={"names": ["peer"], "ids": [1]}
    )
    await world.refused(
        "INVALID_ARGUMENT", "broadcast", protocol="open", payload={}, filter={"status": ["asleep"]}
    )
    await world.refused(
        "INVALID_ARGUMENT", "broadcast", protocol="open", payload={}, filter={"names": [1, 2]}
    )
    await world.intact()


async def test_an_unknown_tool_is_refused_with_a_stable_code(world: World) -> None:
    """SPEC: every refusal is a tool error whose text starts with a stable code (FastMCP says "Unknown tool: ...")."""
    result = await world.call("no_such_tool", to="peer")
    text = _text(result)
    assert result.is_error and MASKED not in text
    await world.intact()
    assert CODE.match(text), f"no stable code: {text!r}"


async def test_broadcast_filter_values_of_the_wrong_type_are_refused(world: World) -> None:
    for value in (5, 1.5, True):
        for key in ("names", "features", "status"):
            await world.refused(
                "INVALID_ARGUMENT", "broadcast", protocol="open", payload={}, filter={key: value}
            )
    await world.intact()


async def test_a_broadcast_filter_name_given_as_a_string_is_not_split_into_letters(world: World) -> None:
    """`status` accepts one string for a list; `names` must not silently turn "peer" into {"p", "e", "r"}."""
    result = await world.answered("broadcast", protocol="open", payload={}, filter={"names": "peer"})
    if not result.is_error:
        assert [r["name"] for r in result.structured_content["recipients"]] == ["peer"]
    await world.intact()


# --- schemas that crash validation ---------------------------------------------------------------


async def test_a_schema_id_that_is_not_a_valid_uri_is_invalid_schema(world: World) -> None:
    for major, schema in enumerate(
        [
            {"$id": "http://[::1"},
            {"$id": "http://[::1]:99999/"},
            {"$defs": {"a": {"$id": "http://[bad"}}, "$ref": "#/$defs/a"},
        ],
        start=1,
    ):
        result = await world.answered(
            "register_protocol",
            name="badid",
            version=f"{major}.0.0",
            schema=schema,
            capabilities=["point_to_point"],
        )
        text = _text(result)
        assert not result.is_error or text.startswith("INVALID_SCHEMA: "), text
    await world.intact()


async def test_huge_numbers_against_multiple_of_are_answered(world: World) -> None:
    """jsonschema divides as floats: a number past float range must be refused, not crash validation."""
    cases: list[tuple[dict[str, Any], list[Any]]] = [
        ({"multipleOf": 0.5}, [10**400, -(10**400), [10**309], 1e308]),
        ({"multipleOf": 10**400}, [1.5, 10**401]),
    ]
    for major, (schema, payloads) in enumerate(cases, start=1):
        version = f"{major}.0.0"
        await world.ok(
            "register_protocol", name="evil", version=version, schema=schema, capabilities=["point_to_point"]
        )
        for payload in payloads:
            result = await world.answered(
                "send", to="peer", protocol="evil", version=version, payload=payload
            )
            text = _text(result)
            assert not result.is_error or text.startswith("PAYLOAD_INVALID: "), text
    await world.intact()


# --- over real stdio -------------------------------------------------------------------------------


async def test_hostile_calls_over_real_stdio(spawn: Any, db_path: Path) -> None:
    async with spawn() as client:
        w = World(client, client, db_path)
        await w.ok(
            "register_protocol", name="open", version="1.0.0", schema={}, capabilities=["point_to_point"]
        )
        await w.ok(
            "register_protocol",
            name="evil",
            version="1.0.0",
            schema={"type": "string", "pattern": "^(a|a)+$"},
            capabilities=["point_to_point"],
        )
        await w.ok("connect", name="me", protocols=[{"name": "open"}, {"name": "evil"}])
        await w.refused("TOO_LARGE", "send", to="me", protocol="open", payload={"t": "x" * (300 * KIB)})
        await w.refused("TOO_LARGE", "send", to="me", protocol="open", payload=_nested(100))
        await w.refused("TOO_LARGE", "send", to="me", protocol="open", payload=[0] * 1_000_000)
        started = time.monotonic()
        await w.refused("PAYLOAD_INVALID", "send", to="me", protocol="evil", payload="a" * 40 + "b")
        assert time.monotonic() - started < PROMPT
        await w.refused("INVALID_ARGUMENT", "connect", name="'; DROP TABLE sessions; --", protocols=[])
        await w.refused("INVALID_ARGUMENT", "receive", wait_seconds=-1)
        await w.refused("INVALID_CURSOR", "discover_protocols", cursor="garbage")
        sent = await w.ok("send", to="me", protocol="open", payload={"odd": ODD_NAMES})
        got = await w.ok("receive")
        assert [m["payload"] for m in got["messages"] if m["message_id"] == sent["message_id"]] == [
            {"odd": ODD_NAMES}
        ]
        assert (await w.ok("list_sessions"))["sessions"][0]["name"] == "me"
    assert_store_intact(db_path)


class RawBroker:
    """A real ``python -m mcp_broker`` driven by raw JSON-RPC lines, for input no MCP client would send."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mcp_broker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=broker_env(db),
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        self._id = 0

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: Any = None, *, raw_params: bytes | None = None) -> dict[str, Any]:
        """Send one request (``raw_params`` verbatim if given) and return the answer with its id."""
        self._id += 1
        head = f'{{"jsonrpc": "2.0", "id": {self._id}, "method": "{method}"'.encode()
        body = raw_params if raw_params is not None else json.dumps(params).encode()
        self.write(head + b', "params": ' + body + b"}")
        return self.answer(self._id)

    def answer(self, request_id: Any, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            message = json.loads(line)  # stdout carries JSON-RPC only
            if message.get("id") == request_id:
                return message
        pytest.fail(
            f"no answer to request {request_id} within {timeout}s (alive: {self.proc.poll() is None})"
        )

    def call(self, tool: str, arguments: Any = None, *, raw_arguments: bytes | None = None) -> dict[str, Any]:
        if raw_arguments is None:
            return self.request("tools/call", {"name": tool, "arguments": arguments})
        return self.request(
            "tools/call",
            raw_params=b'{"name": "' + tool.encode() + b'", "arguments": ' + raw_arguments + b"}",
        )

    def close(self) -> int:
        """Close stdin as a host does when it quits; the exit code."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=30)
            self._pump_thread.join(timeout=30)
            self.proc.stdout.close()


@contextmanager
def raw_broker(db: Path) -> Iterator[RawBroker]:
    broker = RawBroker(db)
    try:
        hello = broker.request(
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "hostile", "version": "0"},
            },
        )
        assert "result" in hello, hello
        broker.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')
        yield broker
    finally:
        broker.close()


def _refusal(answer: dict[str, Any]) -> str:
    """The text of a JSON-RPC error or of a tool error; fails on a success."""
    if "error" in answer:
        return str(answer["error"].get("message", ""))
    result = answer["result"]
    assert result.get("isError"), f"not refused: {answer}"
    return "".join(block.get("text", "") for block in result["content"])


def test_input_no_client_would_send_over_real_stdio(db_path: Path) -> None:
    with raw_broker(db_path) as broker:
        ok = broker.call(
            "register_protocol",
            {"name": "open", "version": "1.0.0", "schema": {}, "capabilities": ["point_to_point"]},
        )
        assert not ok["result"].get("isError"), ok
        assert not broker.call("connect", {"name": "me", "protocols": [{"name": "open"}]})["result"].get(
            "isError"
        )

        # Nested far deeper than the JSON parser allows: an answer (an error) for this very request.
        deep = b'{"to": "me", "protocol": "open", "payload": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        started = time.monotonic()
        answer = broker.call("send", raw_arguments=deep)
        assert time.monotonic() - started < PROMPT
        _refusal(answer)
        deep_object = (
            b'{"to": "me", "protocol": "open", "payload": ' + b'{"a":' * 5000 + b"0" + b"}" * 5000 + b"}"
        )
        _refusal(broker.call("send", raw_arguments=deep_object))

        # Literals JSON does not have, arguments of the wrong shape, and a lone surrogate.
        for raw in (b'{"wait_seconds": NaN}', b'{"wait_seconds": Infinity}', b'{"max_messages": -Infinity}'):
            text = _refusal(broker.call("receive", raw_arguments=raw))
            assert MASKED not in text
        for raw in (b"[1, 2]", b'"send"', b"42"):
            assert MASKED not in _refusal(broker.call("send", raw_arguments=raw))
        answer = broker.call("connect", raw_arguments=b'{"name": "\\ud800", "protocols": []}')
        assert MASKED not in _refusal(answer)
        answer = broker.call("send", raw_arguments=b'{"to": "me", "protocol": "open", "payload": "\\udfff"}')
        assert MASKED not in _refusal(answer)
        answer = broker.call(
            "send", raw_arguments=b'{"to": "me", "protocol": "open", "payload": {"n": 1' + b"0" * 5000 + b"}}"
        )
        assert MASKED not in _refusal(answer)

        # Lines that are not JSON-RPC at all still get an answer, with a null id.
        broker.write(b"{{{{ not json")
        assert "error" in broker.answer(None)
        broker.write(b"\x00\xff\xfe garbage")
        assert "error" in broker.answer(None)

        # The process lives and serves on.
        assert broker.request("ping", {})["result"] == {}
        sent = broker.call("send", {"to": "me", "protocol": "open", "payload": {"still": "here"}})
        assert not sent["result"].get("isError"), sent
        assert broker.proc.poll() is None
        assert broker.close() == 0
    assert_store_intact(db_path)
