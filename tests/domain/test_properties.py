"""Property-based tests: any arguments to any tool get a result or a coded error, and the broker lives on.

Every tool is called through the MCP layer (an in-memory ``fastmcp.Client``) with arguments that are
sometimes well typed, sometimes hostile: wrong types, missing and extra keys, huge and negative
numbers, odd Unicode, NUL bytes, injection and path strings, very long strings, random JSON. The
property for each call: a success with a structured result, or an error whose text starts with a
stable CODE; never "Error calling tool" (an unexpected exception that was masked), never a hang.
After each call the broker still answers, and after each tool's run the store passes
``PRAGMA integrity_check`` and ``PRAGMA foreign_key_check``.

The brokers live in one event loop run by a blocking portal for the whole module, so hypothesis
drives plain synchronous tests and no example pays for opening a store. Examples are derandomized
(the same on every run, so a failure is reproducible); ``HYPOTHESIS_EXPLORE=1`` explores new ones.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastmcp import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from mcp_broker.config import Settings
from mcp_broker.domain import Broker
from mcp_broker.mcp import build_server

pytestmark = pytest.mark.timeout(120)

CODE = re.compile(r"^[A-Z][A-Z_]+: ")
MASKED = "Error calling tool"
CALL_TIMEOUT = 20.0  # a single call taking this long is a hang
SHORT_WAIT = 0.05  # the longest wait a generated example may ask for (receive, request, await_reply)

EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "60"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("HYPOTHESIS_EXPLORE") != "1",
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

CHAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}},
    "required": ["text"],
}
CHAT2_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"body": {"type": "string"}},
    "required": ["body"],
}
CAPABILITIES = ["point_to_point", "broadcast", "request_response", "streaming"]


# --- hostile values ------------------------------------------------------------------------------

INJECTIONS = [
    "'; DROP TABLE sessions; --",
    '" OR 1=1 --',
    "') OR ('1'='1",
    "1; DELETE FROM messages",
    "%",
    "_",
    "*",
    "\\",
    "../../../../etc/passwd",
    "/dev/zero",
    "C:\\Windows\\System32\\drivers\\etc\\hosts",
    "file:///etc/shadow",
    "\x00",
    "a\x00b",
    "peer\x00",
    "NaN",
    "Infinity",
    "-Infinity",
    "null",
    "undefined",
    "true",
    "[]",
    "{}",
    "1e308",
    "-1",
    "0x7fffffff",
    "",
    " ",
    "\t\n\r",
    "\u202eevil",
    "a\u200db",
    "\ufeffme",
    "🙂" * 8,
    "e\u0301\u0301\u0301",
    "\U0010ffff",
    "${jndi:ldap://x/a}",
    "{{7*7}}",
    "<script>alert(1)</script>",
    "me",
    "peer",
    "chat",
    "1.0.0",
    "x" * 65,
]
HUGE_NUMBERS = [
    0,
    -1,
    -5,
    1,
    2**31,
    2**63,
    -(2**63),
    2**64,
    10**20,
    10**400,
    -(10**400),
    1e308,
    -1e308,
    5e-324,
    0.5,
    -0.0,
]

odd_chars = st.characters(exclude_categories=("Cs",))  # lone surrogates cannot travel in UTF-8 JSON
long_text = st.sampled_from([129, 201, 300, 5000, 70_000]).map(lambda n: "y" * n)  # past each max_length
injections = st.sampled_from(INJECTIONS)
odd_text = st.one_of(
    st.text(odd_chars, max_size=40), injections, st.text(odd_chars, max_size=40), injections, long_text
)
numbers = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(HUGE_NUMBERS),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), odd_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(odd_text, inner, max_size=5)),
    max_leaves=20,
)
# Small values of the wrong type first: the likeliest to slip past a check that expects a list or a dict.
wrong_types = st.sampled_from([True, 1, -1, 1.5, "x", None, [], {}, [[]], {"": None}, False, 0])
anything = st.one_of(wrong_types, json_values, numbers, odd_text, st.sampled_from(HUGE_NUMBERS))


def good_or_bad(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly well typed, often hostile."""
    return st.one_of(good, good, anything)


def no_long_wait(value: Any) -> bool:
    """False for values the input schema would coerce to a real wait longer than SHORT_WAIT."""
    try:
        seconds = TypeAdapter(float).validate_python(value)
    except (PydanticValidationError, TypeError, ValueError):
        return True
    return not SHORT_WAIT < seconds <= 60


waits = st.one_of(
    st.floats(0, SHORT_WAIT),
    st.sampled_from([-1, -1e-9, 60.000001, 61, 3601, 1e308, -1e308, 10**400, "abc", None, [], {}]),
    anything.filter(no_long_wait),
)

protocol_names = st.one_of(
    st.sampled_from(["chat", "ask", "nobcast", "fuzz", "unknown_proto"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,12}[a-z0-9]", fullmatch=True),
)
semvers = st.one_of(
    st.sampled_from(["1.0.0", "2.0.0", "1.1.0", "0.0.1", "9.9.9", "01.0.0", "99999999999999999999.0.0"]),
    st.from_regex(r"[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}", fullmatch=True),
)
ranges = st.one_of(
    st.sampled_from(
        [">=1.0,<2", "^1.2", "~1.2", "*", "==1.0.0", ">=1", "^", "~", "==", ">=1.0,<2" * 40, "1.0.0", "!=1.*"]
    ),
    odd_text,
)
priorities = st.sampled_from(["low", "normal", "high"])
statuses = st.sampled_from(["active", "stale", "disconnected"])
short_texts = st.lists(odd_text, max_size=4)
regexes = st.one_of(
    st.sampled_from(
        ["^a+$", "^(a|a)+$", "(a+)+b", "[", "(?P<x", "\\p{L}+", "(?i)abc", "a{1,100000}", ".*", "\\", "(?r)x"]
    ),
    st.text(alphabet="()[]{}*+?|^$.\\ab-0123456789:P<>=!,", max_size=20),
)
uris = st.one_of(
    st.sampled_from(
        [
            "http://[::1",
            "#",
            "#/$defs/a",
            "#/definitions/%ZZ",
            "#foo",
            "http://[::1]/s",
            "urn:x",
            "::::",
            "file:///etc/passwd",
            "https://example.com/s.json",
            "http://json-schema.org/draft-07/schema#",
            "https://json-schema.org/draft/2020-12/schema",
            "",
        ]
    ),
    odd_text,
)
leaf_schemas = st.fixed_dictionaries(
    {},
    optional={
        "type": st.one_of(
            st.sampled_from(["object", "array", "string", "number", "integer", "boolean", "null"]),
            anything,
        ),
        "pattern": regexes,
        "multipleOf": numbers,
        "minimum": numbers,
        "maximum": numbers,
        "maxLength": numbers,
        "enum": st.lists(json_values, max_size=3),
        "const": json_values,
        "format": st.sampled_from(["email", "date-time", "uri", "regex", "ipv4"]),
        "$ref": uris,
        "$id": uris,
        "$anchor": odd_text,
        "$dynamicRef": uris,
        "uniqueItems": st.booleans(),
    },
)
schemas = st.one_of(
    st.recursive(
        leaf_schemas,
        lambda inner: st.fixed_dictionaries(
            {},
            optional={
                "$schema": st.one_of(uris, anything),
                "type": st.sampled_from(["object", "array"]),
                "properties": st.dictionaries(odd_text, inner, max_size=3),
                "patternProperties": st.dictionaries(regexes, inner, max_size=2),
                "additionalProperties": st.one_of(st.booleans(), inner),
                "items": inner,
                "required": st.lists(odd_text, max_size=3),
                "$defs": st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2),
                "anyOf": st.lists(inner, min_size=1, max_size=3),
                "not": inner,
                "$ref": uris,
                "$id": uris,
            },
        ),
        max_leaves=8,
    ),
    st.dictionaries(odd_text, json_values, max_size=4),
)
pointers = st.one_of(
    st.sampled_from(
        ["/text", "/body", "/a/b", "", "/", "~", "/~2", "/a~1b", "/0", "/-", "/a" * 70, "/../etc", "text"]
    ),
    odd_text,
)
steps = st.lists(
    good_or_bad(
        st.fixed_dictionaries(
            {
                "op": good_or_bad(
                    st.sampled_from(["rename", "set_default", "remove", "map_values", "wrap", "unwrap"])
                )
            },
            optional={
                "from": pointers,
                "to": pointers,
                "path": pointers,
                "value": json_values,
                "mapping": st.dictionaries(odd_text, json_values, max_size=3),
            },
        )
    ),
    max_size=5,
)


def _cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode()


# Cursors shaped like the broker's (base64 of [offset, digest]) but lying about one or the other.
CURSORS = [
    "W10=",
    "bnVsbA==",
    "eyJhIjoxfQ==",
    "////",
    "%%%",
    _cursor(-1, "0" * 16),
    _cursor(2**63, "0" * 16),
    _cursor(10**30, "0" * 16),
    _cursor("1", "0" * 16),
    _cursor(1.5, "0" * 16),
    _cursor(True, "0" * 16),
    _cursor(None, None),
    _cursor(1, 2, 3),
]


# --- the brokers -----------------------------------------------------------------------------------


@dataclass
class Harness:
    """Three broker views on one file: ``me`` (connected), ``peer`` (connected) and ``fresh`` (not)."""

    portal: BlockingPortal
    db: Path
    me: Client[Any]
    peer: Client[Any]
    fresh: Client[Any]
    ids: dict[str, list[str]] = field(default_factory=dict)
    fuzz_versions: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def call(self, tool: str, args: dict[str, Any], client: Client[Any] | None = None) -> Any:
        return self.portal.call(_call, client or self.me, tool, args)

    def ok(self, tool: str, args: dict[str, Any], client: Client[Any] | None = None) -> dict[str, Any]:
        result = self.call(tool, args, client)
        assert not result.is_error, f"{tool} was refused: {_text(result)}"
        return result.structured_content

    def check(self, tool: str, args: dict[str, Any], result: Any) -> None:
        """The property: a structured success or a coded error, never a masked exception."""
        text = _text(result)
        assert MASKED not in text, f"unmasked exception: {tool}({_show(args)}) -> {text}"
        if result.is_error:
            assert CODE.match(text), f"error without a stable CODE: {tool}({_show(args)}) -> {text!r}"
        else:
            assert result.structured_content is not None, f"{tool}({_show(args)}) returned no structure"

    def still_serving(self) -> None:
        self.ok("list_sessions", {"status": "active"})

    def ensure_connected(self) -> None:
        self.ok("connect", {"name": "me", "protocols": ME_PROTOCOLS})


ME_PROTOCOLS = [
    {"name": "chat", "versions": ">=1.0,<3"},
    {"name": "ask", "versions": "*"},
    {"name": "nobcast", "versions": "*"},
    {"name": "fuzz", "versions": "*"},
    {"name": "open", "versions": "*"},
    {"name": "stream", "versions": "*"},
]
PEER_PROTOCOLS = [
    {"name": "chat", "versions": ">=2"},
    {"name": "open", "versions": "*"},
    {"name": "ask", "versions": "*"},
    {"name": "nobcast", "versions": "*"},
    {"name": "stream", "versions": "*"},
]


async def _call(client: Client[Any], tool: str, args: dict[str, Any]) -> Any:
    with anyio.fail_after(CALL_TIMEOUT):
        return await client.call_tool(tool, args, raise_on_error=False)


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def _show(args: dict[str, Any]) -> str:
    text = json.dumps(args, default=repr, ensure_ascii=True)
    return text if len(text) <= 400 else text[:400] + "..."


async def _ok(client: Client[Any], tool: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, args, raise_on_error=False)
    assert not result.is_error, f"setup: {tool} was refused: {_text(result)}"
    return result.structured_content


@asynccontextmanager
async def _world(db: Path) -> AsyncIterator[dict[str, Any]]:
    """Open the brokers, register protocols, connect, and leave messages in every state to act on."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(3):
            broker = await stack.enter_async_context(Broker.running(Settings(store=db)))
            clients.append(
                await stack.enter_async_context(Client(build_server(broker), timeout=CALL_TIMEOUT))
            )
        me, peer, fresh = clients
        for name, version, schema, caps, extra in [
            ("chat", "1.0.0", CHAT_SCHEMA, ["point_to_point", "broadcast"], {}),
            ("chat", "2.0.0", CHAT2_SCHEMA, ["point_to_point", "broadcast"], {}),
            (
                "ask",
                "1.0.0",
                CHAT_SCHEMA,
                ["point_to_point", "request_response"],
                {"response_schema": CHAT_SCHEMA},
            ),
            ("nobcast", "1.0.0", {}, ["point_to_point"], {"metadata": {"description": "d", "tags": ["t"]}}),
            ("open", "1.0.0", {}, ["point_to_point", "broadcast", "request_response"], {}),
            ("stream", "1.0.0", {}, ["point_to_point", "streaming"], {}),
        ]:
            await _ok(
                me, "register_protocol", name=name, version=version, schema=schema, capabilities=caps, **extra
            )
        await _ok(
            me,
            "register_adapter",
            protocol="chat",
            from_version="1.0.0",
            to_version="2.0.0",
            steps=[{"op": "rename", "from": "/text", "to": "/body"}],
        )
        connected = [
            await _ok(me, "connect", name="me", protocols=ME_PROTOCOLS, features=["python"]),
            await _ok(peer, "connect", name="peer", protocols=PEER_PROTOCOLS, features=["python", "ci"]),
        ]

        ids: dict[str, list[str]] = {"inbox": [], "sent": [], "requests_in": [], "requests_out": []}
        ids["session_ids"] = [c["session_id"] for c in connected]
        expiring = await _ok(peer, "send", to="me", protocol="nobcast", payload={}, ttl_seconds=1)
        for i in range(4):
            sent = await _ok(peer, "send", to="me", protocol="nobcast", payload={"i": i})
            ids["inbox"].append(sent["message_id"])
        for _ in range(5):
            asked = await _ok(
                peer, "request", to="me", protocol="ask", payload={"text": "?"}, timeout_seconds=0
            )
            ids["requests_in"].append(asked["request_id"])
        for i in range(2):
            sent = await _ok(
                me, "send", to="peer", protocol="chat", payload={"text": str(i)}, version="1.0.0"
            )
            ids["sent"].append(sent["message_id"])
        mine = await _ok(me, "request", to="peer", protocol="ask", payload={"text": "?"}, timeout_seconds=0)
        ids["requests_out"].append(mine["request_id"])
        ids["streams"] = [(await _ok(me, "open_stream", to="peer", protocol="stream"))["stream_id"]]
        await _ok(me, "append_chunk", stream_id=ids["streams"][0], payload={"part": 1})
        await anyio.sleep(1.1)  # let the ttl=1 message expire into a dead letter
        await _ok(me, "receive", max_messages=20, lease_seconds=3600)
        dead = await _ok(me, "list_dead_letters")
        ids["dead"] = [d["message_id"] for d in dead["dead_letters"]]
        assert expiring["message_id"] in ids["dead"], dead
        page = await _ok(me, "discover_protocols", limit=1)
        # A client can forge a cursor for any offset: the digest only ties it to the query's filters.
        ids["cursors"] = [
            _cursor(offset, hashlib.sha256(filters.encode()).hexdigest()[:16])
            for offset in (2**63, 10**30, -1, 2**62, 0)
            for filters in ("dead_letters", json.dumps([None, None, [], None, None]))
        ] + [page["next_cursor"]]
        yield {"me": me, "peer": peer, "fresh": fresh, "ids": ids}


@pytest.fixture(scope="module", autouse=True)
def _quiet_refusals() -> Iterator[None]:
    """Thousands of refusals are logged at INFO/WARNING; unexpected exceptions (ERROR) still show."""
    logger = logging.getLogger("fastmcp")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    db = tmp_path_factory.mktemp("properties") / "broker.db"
    with (
        start_blocking_portal(backend="asyncio") as portal,
        portal.wrap_async_context_manager(_world(db)) as world,
    ):
        yield Harness(portal=portal, db=db, **world)


def assert_store_intact(db: Path) -> None:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert con.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        con.close()


# --- what each tool takes --------------------------------------------------------------------------

Params = dict[str, st.SearchStrategy[Any]]


def message_ids(h: Harness, *kinds: str) -> st.SearchStrategy[Any]:
    known = [m for kind in kinds for m in h.ids[kind]]
    ids = st.one_of(st.sampled_from(known), st.sampled_from(known), st.uuids().map(str), odd_text)
    return st.one_of(st.lists(ids, min_size=1, max_size=4), st.lists(ids, max_size=120))


def tool_params(h: Harness) -> dict[str, tuple[Params, set[str]]]:
    """Each tool: (parameter -> a strategy that is mostly valid, so calls get deep; required parameters)."""
    sessions = st.sampled_from(["peer", "peer", "me", "ghost", *h.ids["session_ids"]])
    live = st.sampled_from(["open", "open", "open", "open", "chat", "ask", "nobcast", "unknown_proto"])
    protocols = st.one_of(live, live, protocol_names)
    versions = st.one_of(st.none(), st.sampled_from(["1.0.0", "2.0.0", "3.0.0"]), semvers)
    payloads = st.one_of(
        st.fixed_dictionaries({"text": odd_text}), st.fixed_dictionaries({"body": odd_text}), json_values
    )
    forged = st.sampled_from(h.ids["cursors"])
    cursors = st.one_of(forged, forged, st.sampled_from(CURSORS), odd_text)
    streams = st.one_of(st.sampled_from(h.ids["streams"]), st.uuids().map(str), odd_text)
    send_fields = {
        "to": sessions,
        "protocol": protocols,
        "payload": payloads,
        "version": versions,
        "correlation_id": odd_text,
        "reply_to": odd_text,
        "priority": priorities,
        "ttl_seconds": st.floats(1, 2_592_000),
        "idempotency_key": odd_text,
    }
    return {
        "register_protocol": (
            {
                "name": protocol_names,
                "version": semvers,
                "schema": schemas,
                "capabilities": st.lists(st.sampled_from(CAPABILITIES), min_size=1, max_size=4),
                "metadata": st.fixed_dictionaries(
                    {}, optional={"description": odd_text, "tags": short_texts, "owner": odd_text}
                ),
                "response_schema": schemas,
            },
            {"name", "version", "schema", "capabilities"},
        ),
        "register_adapter": (
            {
                "protocol": st.one_of(st.just("chat"), protocol_names),
                "from_version": versions,
                "to_version": versions,
                "steps": steps,
            },
            {"protocol", "from_version", "to_version", "steps"},
        ),
        "compatibility_matrix": ({"protocol": protocols}, set()),
        "discover_protocols": (
            {
                "name": protocols,
                "version_range": ranges,
                "tags": short_texts,
                "capability": st.sampled_from(CAPABILITIES),
                "query": odd_text,
                "limit": st.integers(1, 100),
                "cursor": cursors,
            },
            set(),
        ),
        "connect": (
            {
                "name": st.one_of(
                    st.sampled_from(["me", "peer", "other"]),
                    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,10}", fullmatch=True),
                ),
                "protocols": st.lists(
                    st.fixed_dictionaries({"name": protocols}, optional={"versions": ranges}), max_size=4
                ),
                "features": short_texts,
                "metadata": st.dictionaries(odd_text, json_values, max_size=3),
            },
            {"name", "protocols"},
        ),
        "list_sessions": ({"status": statuses, "protocol": protocols, "feature": odd_text}, set()),
        "negotiate": ({"peer": sessions, "required_protocols": st.lists(protocols, max_size=3)}, {"peer"}),
        "send": (send_fields, {"to", "protocol", "payload"}),
        "send_many": (
            {
                "messages": st.lists(
                    st.fixed_dictionaries(
                        {k: send_fields[k] for k in ("to", "protocol", "payload")},
                        optional={k: v for k, v in send_fields.items() if k not in ("to", "protocol", "payload")},
                    ),
                    max_size=4,
                )
            },
            {"messages"},
        ),
        "broadcast": (
            {
                "protocol": protocols,
                "payload": payloads,
                "version": versions,
                "filter": st.fixed_dictionaries(
                    {},
                    optional={
                        "names": good_or_bad(st.lists(sessions)),
                        "features": good_or_bad(short_texts),
                        "status": good_or_bad(st.one_of(statuses, st.lists(statuses))),
                    },
                ),
                "priority": priorities,
                "ttl_seconds": st.floats(1, 2_592_000),
            },
            {"protocol", "payload"},
        ),
        "receive": (
            {
                "max_messages": st.integers(1, 100),
                "wait_seconds": waits,
                "protocol": protocols,
                "lease_seconds": st.floats(1, 3600),
            },
            set(),
        ),
        "ack": ({"message_ids": message_ids(h, "inbox", "sent", "dead")}, {"message_ids"}),
        "disconnect": ({}, set()),
        "release": (
            {"message_ids": message_ids(h, "inbox", "sent"), "delay_seconds": st.floats(0, 3600)},
            {"message_ids"},
        ),
        "message_status": ({"message_ids": message_ids(h, "sent", "inbox", "requests_out")}, {"message_ids"}),
        "list_dead_letters": ({"limit": st.integers(1, 100), "cursor": cursors}, set()),
        "replay_dead_letters": ({"message_ids": message_ids(h, "dead", "inbox")}, {"message_ids"}),
        "request": (
            {
                "to": sessions,
                "protocol": protocols,
                "payload": payloads,
                "timeout_seconds": waits,
                "version": versions,
            },
            {"to", "protocol", "payload"},
        ),
        "await_reply": (
            {
                "request_id": st.one_of(
                    st.sampled_from(h.ids["requests_out"]), st.uuids().map(str), odd_text
                ),
                "timeout_seconds": waits,
            },
            {"request_id"},
        ),
        "reply": (
            {
                "message_id": st.one_of(st.sampled_from(h.ids["requests_in"] + h.ids["inbox"]), odd_text),
                "payload": payloads,
            },
            {"message_id", "payload"},
        ),
        "open_stream": ({"to": sessions, "protocol": st.one_of(st.just("stream"), protocols), "version": versions},
                        {"to", "protocol"}),
        "append_chunk": ({"stream_id": streams, "payload": payloads, "last": st.booleans()}, {"stream_id", "payload"}),
        "close_stream": ({"stream_id": streams, "payload": payloads}, {"stream_id", "payload"}),
        "abort_stream": ({"stream_id": streams, "reason": odd_text}, {"stream_id", "reason"}),
        "stream_status": ({"stream_id": streams}, {"stream_id"}),
        "history": (
            {
                "peer": sessions,
                "protocol": protocols,
                "direction": st.sampled_from(["sent", "received", "both"]),
                "since": st.floats(0, 4e9),
                "until": st.floats(0, 4e9),
                "limit": st.integers(1, 100),
                "cursor": cursors,
            },
            set(),
        ),
        "replay_message": ({"message_id": message_ids(h, "sent", "inbox"), "to_self": st.booleans()}, {"message_id"}),
    }  # fmt: skip


def baselines(h: Harness) -> dict[str, dict[str, Any]]:
    """One valid call per tool, with every parameter given a rich value: mutations corrupt parts of it."""
    return {
        "register_protocol": {
            "name": "base",
            "version": "1.0.0",
            "schema": {
                "$id": "urn:base",
                "type": "object",
                "properties": {"a": {"type": "string", "pattern": "^a"}, "n": {"multipleOf": 0.5}},
                "$defs": {"x": {"$ref": "#"}},
                "patternProperties": {"^p": {"type": "integer"}},
            },
            "capabilities": ["broadcast", "request_response"],
            "metadata": {"description": "d", "tags": ["t"], "owner": "o"},
            "response_schema": {"type": "object", "required": ["a"]},
        },
        "register_adapter": {
            "protocol": "chat",
            "from_version": "1.0.0",
            "to_version": "2.0.0",
            "steps": [
                {"op": "rename", "from": "/text", "to": "/body"},
                {"op": "set_default", "path": "/lang", "value": "en"},
                {"op": "remove", "path": "/draft"},
                {"op": "map_values", "path": "/level", "mapping": {"hi": "high"}},
                {"op": "wrap", "path": "/tag"},
                {"op": "unwrap", "path": "/tags"},
            ],
        },
        "compatibility_matrix": {"protocol": "open"},
        "discover_protocols": {
            "name": "nobcast",
            "version_range": ">=1.0,<2",
            "tags": ["t"],
            "capability": "point_to_point",
            "query": "d",
            "limit": 5,
        },
        "connect": {
            "name": "other",
            "protocols": [{"name": "open", "versions": "*"}, {"name": "chat", "versions": "^1.0"}],
            "features": ["python"],
            "metadata": {"team": ["a", {"b": 1}]},
        },
        "list_sessions": {"status": "active", "protocol": "open", "feature": "python"},
        "negotiate": {"peer": "peer", "required_protocols": ["open", "chat"]},
        "send": {
            "to": "peer",
            "protocol": "open",
            "payload": {"text": "hi", "list": [1, 2.5, None, True], "nested": {"k": "v"}},
            "priority": "high",
            "ttl_seconds": 3600,
            "correlation_id": "c",
            "reply_to": "r",
            "idempotency_key": "k",
        },
        "send_many": {
            "messages": [
                {"to": "peer", "protocol": "open", "payload": {"text": "one"}, "priority": "low"},
                {"to": "peer", "protocol": "open", "payload": {"text": "two"}, "idempotency_key": "m"},
            ]
        },
        "broadcast": {
            "protocol": "open",
            "payload": {"text": "hi", "list": [1, 2.5, None, True]},
            "filter": {"names": ["peer"], "features": ["python"], "status": ["active"]},
            "priority": "low",
            "ttl_seconds": 3600,
        },
        "receive": {"max_messages": 5, "wait_seconds": 0, "protocol": "open", "lease_seconds": 30},
        "ack": {"message_ids": h.ids["inbox"][:2]},
        "disconnect": {},
        "release": {"message_ids": h.ids["inbox"][:2], "delay_seconds": 0},
        "message_status": {"message_ids": h.ids["sent"]},
        "list_dead_letters": {"limit": 10},
        "replay_dead_letters": {"message_ids": h.ids["dead"][:1]},
        "request": {"to": "peer", "protocol": "open", "payload": {"q": [1]}, "timeout_seconds": 0},
        "await_reply": {"request_id": h.ids["requests_out"][0], "timeout_seconds": 0},
        "reply": {"message_id": h.ids["requests_in"][0], "payload": {"text": "fine"}},
        "open_stream": {"to": "peer", "protocol": "stream", "version": "1.0.0"},
        "append_chunk": {"stream_id": h.ids["streams"][0], "payload": {"part": 2}, "last": False},
        "close_stream": {"stream_id": h.ids["streams"][0], "payload": {"part": 3}},
        "abort_stream": {"stream_id": h.ids["streams"][0], "reason": "done with it"},
        "stream_status": {"stream_id": h.ids["streams"][0]},
        "history": {
            "peer": "peer",
            "protocol": "open",
            "direction": "sent",
            "since": 0,
            "until": 4e9,
            "limit": 5,
        },
        "replay_message": {"message_id": h.ids["sent"][0], "to_self": True},
    }


# Keys a corruption may add to an object: those that some tool reads from nested JSON.
NESTED_KEYS = [
    "$id",
    "$ref",
    "$schema",
    "pattern",
    "multipleOf",
    "names",
    "features",
    "status",
    "op",
    "path",
    "from",
    "to",
    "mapping",
    "value",
    "versions",
    "name",
    "tags",
]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*path, index))


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replace(value[path[0]], path[1:], new)
    return copy


@st.composite
def corrupted(draw: st.DrawFn, value: Any) -> Any:
    """``value`` with one node inside it replaced by something hostile, or a hostile key added."""
    path = draw(st.sampled_from(list(_paths(value))))
    node: Any = value
    for part in path:
        node = node[part]
    if isinstance(node, dict) and draw(st.booleans()):
        key = draw(st.one_of(st.sampled_from(NESTED_KEYS), st.sampled_from(NESTED_KEYS), odd_text))
        return _replace(value, path, {**node, key: draw(st.one_of(uris, anything))})
    return _replace(value, path, draw(st.one_of(anything, uris)))


# The parameters whose hostile values could turn into a real long wait: only `waits` may fill them,
# and those whose default is a long wait (30 s) are never left out.
WAIT_PARAMS = {"wait_seconds", "timeout_seconds"}
LONG_DEFAULT = {"timeout_seconds"}


CHOICES = st.sampled_from(["good"] * 7 + ["bad", "bad", "omit"])


@st.composite
def arguments(draw: st.DrawFn, params: Params, required: set[str]) -> dict[str, Any]:
    """Each parameter mostly valid, else hostile or left out (a required one rarely); sometimes extra keys.

    Mostly valid arguments get past the first check, so the hostile one reaches the code behind it.
    """
    args: dict[str, Any] = {}
    for name, good in params.items():
        choice = draw(CHOICES)
        if choice == "omit" and name not in LONG_DEFAULT and (name not in required or draw(st.booleans())):
            continue
        args[name] = draw(anything if choice == "bad" and name not in WAIT_PARAMS else good)
    if draw(st.integers(0, 9)) == 0:
        extra = draw(st.dictionaries(odd_text, anything, min_size=1, max_size=2))
        args.update({k: v for k, v in extra.items() if k not in params})
    return args


@st.composite
def mutations(draw: st.DrawFn, baseline: dict[str, Any], params: Params) -> dict[str, Any]:
    """A valid call with one or two arguments dropped, replaced, or corrupted somewhere inside."""
    args = dict(baseline)
    # Parameters that carry free-form JSON (payload, schema, filter, steps, ...) are picked twice as often.
    names = sorted(params) + sorted(k for k, v in baseline.items() if isinstance(v, dict | list))
    for name in draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True)):
        choice = draw(st.sampled_from(["corrupt", "corrupt", "good", "bad", "omit"]))
        if name in WAIT_PARAMS:
            args[name] = draw(params[name])
        elif choice == "omit" and name not in LONG_DEFAULT:
            args.pop(name, None)
        elif choice == "corrupt" and isinstance(args.get(name), dict | list):
            args[name] = draw(corrupted(args[name]))
        else:
            args[name] = draw(anything if choice == "bad" else params[name])
    return args


def any_call(h: Harness, tool: str) -> st.SearchStrategy[dict[str, Any]]:
    params, required = tool_params(h)[tool]
    if not params:
        return arguments(params, required)
    mutated = mutations(baselines(h)[tool], params)
    return st.one_of(mutated, mutated, arguments(params, required))


TOOLS = [
    "register_protocol",
    "register_adapter",
    "compatibility_matrix",
    "discover_protocols",
    "connect",
    "list_sessions",
    "negotiate",
    "send",
    "send_many",
    "broadcast",
    "receive",
    "ack",
    "disconnect",
    "release",
    "message_status",
    "list_dead_letters",
    "replay_dead_letters",
    "request",
    "await_reply",
    "reply",
    "open_stream",
    "append_chunk",
    "close_stream",
    "abort_stream",
    "stream_status",
    "history",
    "replay_message",
]


def test_every_tool_is_covered(h: Harness) -> None:
    """A tool added to the server without a strategy here must fail this, not go unfuzzed."""
    listed = {tool.name for tool in h.portal.call(h.me.list_tools)}
    assert listed == set(TOOLS) == set(tool_params(h)) == set(baselines(h))


# Tools with many or free-form (JSON) parameters get more examples.
RICH = {
    "register_protocol",
    "register_adapter",
    "connect",
    "send",
    "send_many",
    "broadcast",
    "request",
    "reply",
}


@pytest.mark.parametrize("tool", TOOLS)
def test_any_arguments_get_a_result_or_a_coded_error(h: Harness, tool: str) -> None:
    # connect runs on the broker without a session (then lets go), so it gets past ALREADY_CONNECTED.
    client = h.fresh if tool == "connect" else h.me

    @settings(SETTINGS, max_examples=EXAMPLES * 2 if tool in RICH else EXAMPLES)
    @given(args=any_call(h, tool))
    def run(args: dict[str, Any]) -> None:
        result = h.call(tool, args, client)
        h.check(tool, args, result)
        if tool == "connect" and not result.is_error:
            h.ok("disconnect", {}, h.fresh)
        if tool == "disconnect":
            h.ensure_connected()
        h.still_serving()

    run()
    h.ensure_connected()
    h.still_serving()
    assert_store_intact(h.db)


def test_whole_argument_objects_of_random_json(h: Harness) -> None:
    """Arguments that are nothing like the input schema: random keys, random values, every tool."""

    @SETTINGS
    @given(tool=st.sampled_from(TOOLS), args=st.dictionaries(odd_text, anything, max_size=4))
    def run(tool: str, args: dict[str, Any]) -> None:
        args = {k: v for k, v in args.items() if k not in WAIT_PARAMS}
        if tool in ("request", "await_reply"):
            args["timeout_seconds"] = 0  # its default is a real 30 s wait
        result = h.call(tool, args, h.fresh if tool == "connect" else h.me)
        h.check(tool, args, result)
        if tool == "connect" and not result.is_error:
            h.ok("disconnect", {}, h.fresh)
        if tool == "disconnect":
            h.ensure_connected()
        h.still_serving()

    run()
    h.ensure_connected()
    assert_store_intact(h.db)


def test_random_schemas_and_payloads(h: Harness) -> None:
    """Register a random schema, send random payloads under it; what is accepted is received intact."""

    @SETTINGS
    @given(
        schema=schemas,
        payloads=st.lists(json_values, min_size=1, max_size=3),
    )
    def run(schema: dict[str, Any], payloads: list[Any]) -> None:
        version = f"{next(h.fuzz_versions)}.0.0"
        args = {
            "name": "fuzz",
            "version": version,
            "schema": schema,
            "capabilities": ["point_to_point", "broadcast"],
        }
        registered = h.call("register_protocol", args)
        h.check("register_protocol", args, registered)
        if registered.is_error:
            return
        sent: dict[str, Any] = {}
        for payload in payloads:
            send = {"to": "me", "protocol": "fuzz", "payload": payload, "version": version}
            result = h.call("send", send)
            h.check("send", send, result)
            if not result.is_error:
                sent[result.structured_content["message_id"]] = payload
            cast = {"protocol": "fuzz", "payload": payload, "version": version}
            h.check("broadcast", cast, h.call("broadcast", cast))
        received = h.ok("receive", {"protocol": "fuzz", "max_messages": 100})["messages"]
        if received:
            h.ok("ack", {"message_ids": [m["message_id"] for m in received]})
        got = {m["message_id"]: m["payload"] for m in received}
        for message_id, payload in sent.items():
            assert message_id in got, f"accepted message {message_id} was not received"
            assert got[message_id] == payload, (
                f"payload changed in the store: {payload!r} -> {got[message_id]!r}"
            )
        h.still_serving()

    run()
    assert_store_intact(h.db)
