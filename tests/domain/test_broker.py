"""Domain tier: ``Broker`` methods called directly, several brokers ("processes") sharing one SQLite file.

Time is real where the behaviour is about waiting (long-poll, doorbell, a 1 s lease); elsewhere the
``clock`` fixture moves the broker's wall clock forward so expiry, staleness and redelivery need no sleep.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import pytest
from conftest import Clock

from mcp_broker.config import Settings
from mcp_broker.domain import Broker
from mcp_broker.errors import (
    AlreadyConnected,
    BrokerError,
    CapabilityNotSupported,
    InboxFull,
    InvalidArgument,
    InvalidCursor,
    InvalidSchema,
    InvalidVersion,
    LimitReached,
    NameTaken,
    NoCommonVersion,
    NotAccepted,
    NotConnected,
    PayloadInvalid,
    ProtocolConflict,
    TooLarge,
    UnknownMessage,
    UnknownProtocol,
    UnknownSession,
)
from mcp_broker.models import SessionStatus

pytestmark = pytest.mark.anyio

BrokerFactory = Callable[..., Awaitable[Broker]]

CHAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "n": {"type": "integer"}},
    "required": ["text"],
}
ANY_SCHEMA: dict[str, Any] = {}
P2P_AND_BROADCAST = ["point_to_point", "broadcast"]


# --- helpers and fixtures ------------------------------------------------------------------------


@asynccontextmanager
async def own_broker(settings: Settings, **overrides: Any) -> AsyncIterator[Broker]:
    """A broker this test closes itself, as when a host exits and its broker process ends."""
    async with Broker.running(replace(settings, **overrides)) as broker:
        yield broker


async def register(
    b: Broker,
    name: str = "chat",
    version: str = "1.0.0",
    schema: dict[str, Any] | None = None,
    capabilities: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    await b.catalog.register_protocol(
        name, version, CHAT_SCHEMA if schema is None else schema, capabilities or P2P_AND_BROADCAST, metadata
    )


def speaks(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"name": n, "versions": v} for n, v in pairs]


async def pair(brokers: BrokerFactory, **overrides: Any) -> tuple[Broker, Broker]:
    """Two connected brokers, alice and bob, both speaking chat 1.x."""
    a = await brokers(**overrides)
    b = await brokers(**overrides)
    await register(a)
    await a.sessions.connect("alice", speaks(("chat", "^1.0")))
    await b.sessions.connect("bob", speaks(("chat", "^1.0")))
    return a, b


async def statuses(b: Broker) -> dict[str, str]:
    return {s.name: s.status.value for s in (await b.sessions.list_sessions()).sessions}


def code_of(info: pytest.ExceptionInfo[BrokerError]) -> str:
    return str(info.value).split(":", 1)[0]


# --- register_protocol ---------------------------------------------------------------------------


async def test_register_then_identical_again_is_unchanged(brokers: BrokerFactory) -> None:
    a = await brokers()
    first = await a.catalog.register_protocol("chat", "1.0.0", CHAT_SCHEMA, ["point_to_point", "broadcast"])
    assert (first.name, first.version, first.status) == ("chat", "1.0.0", "registered")
    # Same definition, capabilities in another order and repeated: still the same definition.
    again = await a.catalog.register_protocol(
        "chat", "1.0.0", dict(CHAT_SCHEMA), ["broadcast", "point_to_point", "broadcast"]
    )
    assert again.status == "unchanged"
    assert "nothing changed" in again.message
    # Another process sees it too.
    b = await brokers()
    assert (
        await b.catalog.register_protocol("chat", "1.0.0", CHAT_SCHEMA, P2P_AND_BROADCAST)
    ).status == "unchanged"


@pytest.mark.parametrize(
    "change",
    [
        {"schema": {"type": "object"}},
        {"capabilities": ["point_to_point"]},
        {"metadata": {"description": "other"}},
    ],
)
async def test_register_different_definition_is_a_conflict(
    brokers: BrokerFactory, change: dict[str, Any]
) -> None:
    a = await brokers()
    await register(a)
    args: dict[str, Any] = {
        "schema": CHAT_SCHEMA,
        "capabilities": P2P_AND_BROADCAST,
        "metadata": None,
    } | change
    with pytest.raises(ProtocolConflict, match="bump the version") as info:
        await a.catalog.register_protocol("chat", "1.0.0", **args)
    assert code_of(info) == "PROTOCOL_CONFLICT"
    # The original definition is intact, and a new version is fine.
    (found,) = (await a.catalog.discover_protocols(name="chat")).protocols
    assert found.json_schema == CHAT_SCHEMA
    assert (await a.catalog.register_protocol("chat", "1.1.0", **args)).status == "registered"


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "nonsense"},
        {"properties": {"a": {"type": 5}}},
        {"required": "text"},
        {"$schema": "https://example.com/my-draft", "type": "object"},
        ["not", "an", "object"],
    ],
)
async def test_register_invalid_schema(brokers: BrokerFactory, schema: Any) -> None:
    a = await brokers()
    with pytest.raises(InvalidSchema) as info:
        await a.catalog.register_protocol("chat", "1.0.0", schema, ["point_to_point"])
    assert code_of(info) == "INVALID_SCHEMA"
    assert (await a.catalog.discover_protocols()).protocols == []


async def test_register_schema_too_large(brokers: BrokerFactory) -> None:
    a = await brokers(max_schema_bytes=200)
    big = {"type": "object", "description": "x" * 300}
    with pytest.raises(TooLarge):
        await a.catalog.register_protocol("chat", "1.0.0", big, ["point_to_point"])


@pytest.mark.parametrize("version", ["1.0", "v1.0.0", "1.0.0-rc1", "01.0.0", "", "1.0.0.0"])
async def test_register_invalid_version(brokers: BrokerFactory, version: str) -> None:
    a = await brokers()
    with pytest.raises(InvalidVersion) as info:
        await a.catalog.register_protocol("chat", version, CHAT_SCHEMA, ["point_to_point"])
    assert code_of(info) == "INVALID_VERSION"


@pytest.mark.parametrize("name", ["Chat", "c", "chat_", "chat-room", "a" * 65])
async def test_register_invalid_name(brokers: BrokerFactory, name: str) -> None:
    a = await brokers()
    with pytest.raises(InvalidArgument):
        await a.catalog.register_protocol(name, "1.0.0", CHAT_SCHEMA, ["point_to_point"])


@pytest.mark.parametrize("capabilities", [[], ["teleport"], ["point_to_point", "telepathy"]])
async def test_register_bad_capabilities(brokers: BrokerFactory, capabilities: list[str]) -> None:
    a = await brokers()
    with pytest.raises(InvalidArgument, match="point_to_point, broadcast, request_response, streaming"):
        await a.catalog.register_protocol("chat", "1.0.0", CHAT_SCHEMA, capabilities)
    assert (await a.catalog.discover_protocols()).protocols == []


async def test_register_response_schema_needs_request_response(brokers: BrokerFactory) -> None:
    a = await brokers()
    with pytest.raises(InvalidArgument, match="request_response"):
        await a.catalog.register_protocol(
            "ask", "1.0.0", CHAT_SCHEMA, ["point_to_point"], response_schema={"type": "object"}
        )
    ok = await a.catalog.register_protocol(
        "ask", "1.0.0", CHAT_SCHEMA, ["request_response"], response_schema={"type": "object"}
    )
    assert ok.status == "registered"
    (found,) = (await a.catalog.discover_protocols(name="ask")).protocols
    assert found.response_schema == {"type": "object"}


async def test_register_metadata_and_tags(brokers: BrokerFactory) -> None:
    a = await brokers()
    meta = {"description": "plain chat", "tags": ["demo", "text"], "owner": "team-a"}
    await register(a, metadata=meta)
    (found,) = (await a.catalog.discover_protocols()).protocols
    assert found.metadata.description == "plain chat"
    assert found.metadata.tags == ["demo", "text"]
    assert found.metadata.owner == "team-a"
    assert found.registered_at is not None and found.registered_at.endswith("Z")


@pytest.mark.parametrize("tags", [[""], ["bad\ntag"], ["x" * 65]])
async def test_register_bad_tags(brokers: BrokerFactory, tags: list[str]) -> None:
    a = await brokers()
    with pytest.raises(InvalidArgument, match="tags"):
        await register(a, metadata={"tags": tags})
    assert (await a.catalog.discover_protocols()).protocols == []


# --- discover_protocols --------------------------------------------------------------------------


async def _catalogue(b: Broker) -> None:
    for version in ("1.2.0", "1.10.0", "1.9.0", "2.0.0"):
        await register(b, "chat", version, metadata={"description": "Plain chat", "tags": ["demo", "text"]})
    await register(b, "review", "1.0.0", capabilities=["point_to_point"], metadata={"tags": ["code"]})
    await register(
        b, "ticker", "0.1.0", capabilities=["broadcast", "streaming"], metadata={"description": "prices"}
    )


def _keys(result: Any) -> list[str]:
    return [f"{p.name}@{p.version}" for p in result.protocols]


async def test_discover_works_without_session_and_orders_newest_first(brokers: BrokerFactory) -> None:
    a = await brokers()
    await _catalogue(a)
    result = await a.catalog.discover_protocols()
    assert _keys(result) == [
        "chat@2.0.0",
        "chat@1.10.0",
        "chat@1.9.0",
        "chat@1.2.0",
        "review@1.0.0",
        "ticker@0.1.0",
    ]
    assert result.next_cursor is None
    assert result.protocols[0].json_schema == CHAT_SCHEMA


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"name": "chat"}, ["chat@2.0.0", "chat@1.10.0", "chat@1.9.0", "chat@1.2.0"]),
        ({"name": "nobody"}, []),
        ({"name": "chat", "version_range": ">=1.9,<2"}, ["chat@1.10.0", "chat@1.9.0"]),
        ({"version_range": "^1.2"}, ["chat@1.10.0", "chat@1.9.0", "chat@1.2.0"]),
        ({"tags": ["demo", "text"]}, ["chat@2.0.0", "chat@1.10.0", "chat@1.9.0", "chat@1.2.0"]),
        ({"tags": ["code"]}, ["review@1.0.0"]),
        ({"tags": ["demo", "code"]}, []),
        ({"capability": "streaming"}, ["ticker@0.1.0"]),
        ({"capability": "point_to_point", "version_range": "<1.5"}, ["chat@1.2.0", "review@1.0.0"]),
        ({"query": "PRICES"}, ["ticker@0.1.0"]),
        ({"query": "view"}, ["review@1.0.0"]),
        ({"query": "cod"}, ["review@1.0.0"]),
        ({"query": "plain", "version_range": ">=2"}, ["chat@2.0.0"]),
    ],
)
async def test_discover_filters(brokers: BrokerFactory, filters: dict[str, Any], expected: list[str]) -> None:
    a = await brokers()
    await _catalogue(a)
    assert _keys(await a.catalog.discover_protocols(**filters)) == expected


async def test_discover_paginates_with_cursor(brokers: BrokerFactory) -> None:
    a = await brokers()
    for i in range(25):
        await register(a, f"proto_{i:02d}", "1.0.0")
    await register(a, "proto_00", "1.1.0")
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await a.catalog.discover_protocols(limit=10, cursor=cursor)
        pages += 1
        assert len(page.protocols) <= 10
        seen += _keys(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 26
    assert seen[:2] == ["proto_00@1.1.0", "proto_00@1.0.0"]
    assert seen == _keys(await a.catalog.discover_protocols(limit=100))
    # A page that ends exactly at the end says so.
    exact = await a.catalog.discover_protocols(limit=13)
    last = await a.catalog.discover_protocols(limit=13, cursor=exact.next_cursor)
    assert len(last.protocols) == 13 and last.next_cursor is None


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    [
        "garbage",
        "!!!",
        "éé",
        _b64([1]),
        _b64({"a": 1}),
        _b64("x"),
        _b64(7),
        _b64([-1, "0" * 16]),
        _b64(["1", "x"]),
    ],
)
async def test_discover_rejects_garbage_cursor(brokers: BrokerFactory, cursor: str) -> None:
    a = await brokers()
    await register(a)
    with pytest.raises(InvalidCursor) as info:
        await a.catalog.discover_protocols(cursor=cursor)
    assert code_of(info) == "INVALID_CURSOR"


async def test_discover_cursor_is_bound_to_its_filters(brokers: BrokerFactory) -> None:
    a = await brokers()
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        await register(a, "chat", version, metadata={"tags": ["demo"]})
    page = await a.catalog.discover_protocols(name="chat", limit=1)
    assert page.next_cursor is not None
    for other in (
        {},
        {"name": "chat", "tags": ["demo"]},
        {"name": "chat", "version_range": "*"},
        {"name": "chat", "query": "c"},
        {"name": "chat", "capability": "broadcast"},
    ):
        with pytest.raises(InvalidCursor, match="another query"):
            await a.catalog.discover_protocols(**other, limit=1, cursor=page.next_cursor)
    # The same filters (with another page size) follow on.
    rest = await a.catalog.discover_protocols(name="chat", limit=5, cursor=page.next_cursor)
    assert _keys(rest) == ["chat@1.1.0", "chat@1.0.0"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"limit": 0}, InvalidArgument),
        ({"limit": 101}, InvalidArgument),
        ({"capability": "teleport"}, InvalidArgument),
        ({"name": "Bad Name"}, InvalidArgument),
        ({"tags": ["a\x00"]}, InvalidArgument),
        ({"version_range": ">=banana"}, InvalidVersion),
    ],
)
async def test_discover_refuses_bad_arguments(
    brokers: BrokerFactory, kwargs: dict[str, Any], error: type
) -> None:
    a = await brokers()
    with pytest.raises(error):
        await a.catalog.discover_protocols(**kwargs)


# --- connect -------------------------------------------------------------------------------------


async def test_connect_new_session(brokers: BrokerFactory) -> None:
    a = await brokers()
    result = await a.sessions.connect(
        "alice", speaks(("chat", ">=1.0,<2")), features=["python"], metadata={"k": 1}
    )
    assert result.name == "alice" and result.resumed is False and result.queue_depth == 0
    uuid.UUID(result.session_id)
    (info,) = (await a.sessions.list_sessions()).sessions
    assert info.session_id == result.session_id
    assert info.status is SessionStatus.active
    assert [p.model_dump() for p in info.protocols] == [{"name": "chat", "versions": ">=1.0,<2"}]
    assert info.features == ["python"] and info.metadata == {"k": 1}
    assert info.process_alive is True and info.pid is not None


async def test_reconnect_same_name_in_same_process_updates_protocols(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    first = await a.sessions.connect("alice", speaks(("chat", "^1")), features=["python"])
    again = await a.sessions.connect("alice", speaks(("chat", "^2"), ("review", "*")), features=["go"])
    assert again.session_id == first.session_id
    assert again.resumed is False
    await b.sessions.connect("bob", [])
    (alice,) = [s for s in (await b.sessions.list_sessions()).sessions if s.name == "alice"]
    assert [p.model_dump() for p in alice.protocols] == [
        {"name": "chat", "versions": "^2"},
        {"name": "review", "versions": "*"},
    ]
    assert alice.features == ["go"]


async def test_connect_with_another_name_is_already_connected(brokers: BrokerFactory) -> None:
    a = await brokers()
    await a.sessions.connect("alice", [])
    with pytest.raises(AlreadyConnected, match="disconnect first") as info:
        await a.sessions.connect("carol", [])
    assert code_of(info) == "ALREADY_CONNECTED"
    await a.sessions.disconnect()
    assert (await a.sessions.connect("carol", [])).name == "carol"


async def test_name_taken_while_holder_is_open(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    await a.sessions.connect("alice", [])
    with pytest.raises(NameTaken) as info:
        await b.sessions.connect("alice", [])
    assert code_of(info) == "NAME_TAKEN"
    assert b.session_id is None
    with pytest.raises(NotConnected):
        await b.sessions.list_sessions()


async def test_resume_after_holder_closed_keeps_id_and_queue(
    brokers: BrokerFactory, settings: Settings
) -> None:
    sender = await brokers()
    await register(sender)
    await sender.sessions.connect("sender", speaks(("chat", "*")))
    async with own_broker(settings) as first:
        held = await first.sessions.connect("alice", speaks(("chat", "^1")))
        await sender.messaging.send("alice", "chat", {"text": "one"})
    # The holder's process is gone: the name is free to resume, and messages queue meanwhile.
    assert (await sender.messaging.send("alice", "chat", {"text": "two"})).status == "queued"
    (alice,) = [s for s in (await sender.sessions.list_sessions()).sessions if s.name == "alice"]
    assert alice.status is SessionStatus.disconnected
    second = await brokers()
    resumed = await second.sessions.connect("alice", speaks(("chat", "^1")))
    assert resumed.session_id == held.session_id
    assert resumed.resumed is True
    assert resumed.queue_depth == 2
    assert "resumed" in resumed.message
    got = await second.inbox.receive()
    assert [m.payload["text"] for m in got.messages] == ["one", "two"]


async def test_resume_after_heartbeat_expired(brokers: BrokerFactory, clock: Clock) -> None:
    holder = await brokers(heartbeat_interval=3600)
    held = await holder.sessions.connect("alice", [])
    taker = await brokers()
    with pytest.raises(NameTaken):
        await taker.sessions.connect("alice", [])
    clock.advance(601)  # past expire_after (600 s) without a heartbeat
    taken = await taker.sessions.connect("alice", [])
    assert taken.session_id == held.session_id and taken.resumed is True


@pytest.mark.parametrize(
    ("name", "protocols", "features", "error"),
    [
        ("", [], None, InvalidArgument),
        ("-alice", [], None, InvalidArgument),
        ("a" * 65, [], None, InvalidArgument),
        ("al ice", [], None, InvalidArgument),
        ("alice", speaks(("chat", "^1"), ("chat", "^2")), None, InvalidArgument),
        ("alice", speaks(("Chat", "^1")), None, InvalidArgument),
        ("alice", speaks(("chat", "one")), None, InvalidVersion),
        ("alice", [], ["ok", "bad\nfeature"], InvalidArgument),
        ("alice", [], [f"f{i}" for i in range(65)], InvalidArgument),
    ],
)
async def test_connect_refuses_bad_arguments(
    brokers: BrokerFactory,
    name: str,
    protocols: list[dict[str, str]],
    features: list[str] | None,
    error: type,
) -> None:
    a = await brokers()
    with pytest.raises(error):
        await a.sessions.connect(name, protocols, features=features)
    assert a.session_id is None


async def test_connect_refuses_too_many_protocols_and_huge_metadata(brokers: BrokerFactory) -> None:
    a = await brokers()
    with pytest.raises(InvalidArgument, match="64"):
        await a.sessions.connect("alice", speaks(*[(f"p{i}x", "*") for i in range(65)]))
    with pytest.raises(TooLarge):
        await a.sessions.connect("alice", [], metadata={"blob": "x" * 20_000})


# --- status and list_sessions --------------------------------------------------------------------


async def test_status_goes_active_stale_disconnected_in_real_time(brokers: BrokerFactory) -> None:
    quiet = await brokers(heartbeat_interval=3600)  # never heartbeats on its own during the test
    watcher = await brokers(stale_after=0.3, expire_after=1.5)
    await watcher.sessions.connect("watcher", [])
    await quiet.sessions.connect("quiet", [])
    seen: list[str] = []
    with anyio.fail_after(15):
        while not seen or seen[-1] != "disconnected":
            status = (await statuses(watcher))["quiet"]
            if not seen or seen[-1] != status:
                seen.append(status)
            await anyio.sleep(0.02)
    # Never back, never skipping stale (the poll is far finer than the 1.2 s stale window).
    assert seen in (["active", "stale", "disconnected"], ["stale", "disconnected"])


async def test_status_boundaries(brokers: BrokerFactory, clock: Clock) -> None:
    quiet = await brokers(heartbeat_interval=3600)
    watcher = await brokers(heartbeat_interval=3600, stale_after=30, expire_after=600)
    await quiet.sessions.connect("quiet", [])
    await watcher.sessions.connect("watcher", [])
    row = await watcher.store.find_session("quiet", is_id=False, now=clock.time())
    assert row is not None
    assert watcher.presence.status_of(row, row.last_seen + 29.9) is SessionStatus.active
    assert watcher.presence.status_of(row, row.last_seen + 30) is SessionStatus.stale
    assert watcher.presence.status_of(row, row.last_seen + 599) is SessionStatus.stale
    assert watcher.presence.status_of(row, row.last_seen + 600) is SessionStatus.disconnected
    clock.advance(31)
    assert (await statuses(watcher)) == {"quiet": "stale", "watcher": "stale"}
    clock.advance(600)
    assert (await statuses(watcher)) == {"quiet": "disconnected", "watcher": "disconnected"}


async def test_dead_process_means_disconnected_at_once(brokers: BrokerFactory) -> None:
    a = await brokers()
    await a.sessions.connect("alice", [])
    row = await a.store.find_session("alice", is_id=False, now=time.time())
    assert row is not None
    gone = replace(row, pid=2**22 + 12345, proc_start=None)  # beyond pid_max: no such process
    assert a.presence.probe.alive(gone) is False
    assert a.presence.status_of(gone, row.last_seen) is SessionStatus.disconnected
    reused = replace(row, proc_start="1")  # our pid, but a different start time: a reused pid
    assert a.presence.probe.alive(reused) is False
    elsewhere = replace(row, host=row.host + "-other" if row.host else "other")
    assert a.presence.probe.alive(elsewhere) is None
    assert a.presence.status_of(elsewhere, row.last_seen) is SessionStatus.active


async def test_heartbeat_keeps_session_active(brokers: BrokerFactory, clock: Clock) -> None:
    lively = await brokers(heartbeat_interval=0.05)
    watcher = await brokers(heartbeat_interval=3600)
    await lively.sessions.connect("lively", [])
    await watcher.sessions.connect("watcher", [])
    clock.advance(60)
    with anyio.fail_after(10):
        while (await statuses(watcher))["lively"] != "active":
            await anyio.sleep(0.02)
    assert (await statuses(watcher))["watcher"] == "stale"


async def test_list_sessions_filters_and_queue_depth(brokers: BrokerFactory, settings: Settings) -> None:
    a = await brokers()
    await register(a)
    await register(a, "review", "1.0.0")
    await a.sessions.connect("alice", speaks(("chat", "*")), features=["python"])
    b = await brokers()
    await b.sessions.connect("bob", speaks(("chat", "*"), ("review", "*")), features=["python", "ci"])
    async with own_broker(settings) as c:
        await c.sessions.connect("carol", speaks(("review", "*")))
    for _ in range(3):
        await a.messaging.send("bob", "chat", {"text": "hi"})
    await a.messaging.send("carol", "review", {"text": "later"})

    everyone = {s.name: s for s in (await a.sessions.list_sessions()).sessions}
    assert set(everyone) == {"alice", "bob", "carol"}
    assert {n: s.queue_depth for n, s in everyone.items()} == {"alice": 0, "bob": 3, "carol": 1}
    assert everyone["carol"].status is SessionStatus.disconnected

    async def names(**filters: Any) -> list[str]:
        return sorted(s.name for s in (await a.sessions.list_sessions(**filters)).sessions)

    assert await names(status="active") == ["alice", "bob"]
    assert await names(status="disconnected") == ["carol"]
    assert await names(status="stale") == []
    assert await names(protocol="review") == ["bob", "carol"]
    assert await names(protocol="nothing") == []
    assert await names(feature="ci") == ["bob"]
    assert await names(feature="python", protocol="chat", status="active") == ["alice", "bob"]
    with pytest.raises(InvalidArgument):
        await a.sessions.list_sessions(status="asleep")

    # A leased message still counts; an acked one does not.
    got = await b.inbox.receive(max_messages=2)
    assert {s.name: s.queue_depth for s in (await a.sessions.list_sessions()).sessions}["bob"] == 3
    await b.inbox.ack([m.message_id for m in got.messages])
    assert {s.name: s.queue_depth for s in (await a.sessions.list_sessions()).sessions}["bob"] == 1


# --- negotiate -----------------------------------------------------------------------------------


async def _negotiation_setup(brokers: BrokerFactory) -> tuple[Broker, Broker]:
    a = await brokers()
    b = await brokers()
    for version in ("1.0.0", "1.1.0", "2.0.0"):
        await register(a, "chat", version)
    await register(a, "notes", "1.0.0")
    await register(a, "files", "1.0.0")
    await a.sessions.connect(
        "alice", speaks(("chat", ">=1.0,<2"), ("notes", "*")), features=["python", "code_review"]
    )
    await b.sessions.connect("bob", speaks(("chat", "^1.0"), ("files", "*")), features=["python", "ci"])
    return a, b


async def test_negotiate_compatible(brokers: BrokerFactory) -> None:
    a, b = await _negotiation_setup(brokers)
    result = await a.sessions.negotiate("bob")
    assert result.peer == "bob" and result.peer_id == b.session_id
    assert result.compatible is True
    assert result.agreed == {"chat": "1.1.0"}
    assert [(u.protocol, u.side) for u in result.unsupported] == [("notes", "mine"), ("files", "theirs")]
    assert result.features.common == ["python"]
    assert result.features.only_mine == ["code_review"]
    assert result.features.only_theirs == ["ci"]
    assert result.reasons == []
    # By session id too, and from the other side.
    assert (await a.sessions.negotiate(b.session_id or "")).agreed == {"chat": "1.1.0"}
    back = await b.sessions.negotiate("alice")
    assert [(u.protocol, u.side) for u in back.unsupported] == [("files", "mine"), ("notes", "theirs")]
    assert back.features.only_mine == ["ci"]


async def test_negotiate_incompatible_versions(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    for version in ("1.0.0", "2.0.0"):
        await register(a, "chat", version)
    await a.sessions.connect("alice", speaks(("chat", "<2")))
    await b.sessions.connect("bob", speaks(("chat", ">=2")))
    result = await a.sessions.negotiate("bob")
    assert result.compatible is False
    assert result.agreed == {}
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith("chat: no registered version (2.0.0, 1.0.0)")
    assert "<2" in result.reasons[0] and ">=2" in result.reasons[0]


async def test_negotiate_unregistered_common_protocol(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    await a.sessions.connect("alice", speaks(("ghost", "*")))
    await b.sessions.connect("bob", speaks(("ghost", "*")))
    result = await a.sessions.negotiate("bob", ["ghost"])
    assert result.compatible is False
    assert "none" in result.reasons[0]


async def test_negotiate_nothing_in_common(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    await a.sessions.connect("alice", speaks(("notes", "*")))
    await b.sessions.connect("bob", speaks(("files", "*")))
    result = await a.sessions.negotiate("bob")
    assert result.compatible is False
    assert result.reasons == ["you and bob have no protocol in common"]


async def test_negotiate_required_protocols(brokers: BrokerFactory) -> None:
    a, _ = await _negotiation_setup(brokers)
    ok = await a.sessions.negotiate("bob", required_protocols=["chat", "chat"])
    assert ok.compatible is True and ok.reasons == []

    missing_mine = await a.sessions.negotiate("bob", required_protocols=["chat", "files"])
    assert missing_mine.compatible is False
    assert missing_mine.agreed == {"chat": "1.1.0"}
    assert missing_mine.reasons == ["files: you did not connect with it; reconnect listing it in protocols"]

    missing_theirs = await a.sessions.negotiate("bob", required_protocols=["notes"])
    assert missing_theirs.compatible is False
    assert missing_theirs.reasons == ["notes: bob does not speak it"]

    with pytest.raises(InvalidArgument):
        await a.sessions.negotiate("bob", required_protocols=["Not A Name"])


async def test_negotiate_required_ignores_other_incompatible_protocols(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    await register(a, "chat", "1.0.0")
    await register(a, "notes", "1.0.0")
    await a.sessions.connect("alice", speaks(("chat", "*"), ("notes", "<1")))
    await b.sessions.connect("bob", speaks(("chat", "*"), ("notes", "*")))
    assert (await a.sessions.negotiate("bob", ["chat"])).compatible is True
    unfocused = await a.sessions.negotiate("bob")
    assert unfocused.compatible is False
    assert unfocused.agreed == {"chat": "1.0.0"}
    assert [r.split(":")[0] for r in unfocused.reasons] == ["notes"]


async def test_negotiate_refusals(brokers: BrokerFactory) -> None:
    a, _ = await _negotiation_setup(brokers)
    with pytest.raises(UnknownSession) as info:
        await a.sessions.negotiate("nobody")
    assert code_of(info) == "UNKNOWN_SESSION"
    with pytest.raises(InvalidArgument, match="yourself"):
        await a.sessions.negotiate("alice")
    with pytest.raises(InvalidArgument):
        await a.sessions.negotiate("")


async def test_agreement_is_remembered_by_send(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    c = await brokers()
    for version in ("1.0.0", "1.1.0"):
        await register(a, "chat", version)
    await a.sessions.connect("alice", speaks(("chat", "*")))
    await b.sessions.connect("bob", speaks(("chat", "*")))
    await c.sessions.connect("carol", speaks(("chat", "*")))
    assert (await a.sessions.negotiate("bob")).agreed == {"chat": "1.1.0"}
    await register(a, "chat", "1.2.0")
    # With an agreement the agreed version is used, in both directions; without, the highest common one.
    assert (await a.messaging.send("bob", "chat", {"text": "x"})).version == "1.1.0"
    assert (await b.messaging.send("alice", "chat", {"text": "x"})).version == "1.1.0"
    assert (await a.messaging.send("carol", "chat", {"text": "x"})).version == "1.2.0"
    # An explicit version wins over the agreement.
    assert (await a.messaging.send("bob", "chat", {"text": "x"}, version="1.0.0")).version == "1.0.0"
    # Negotiating again moves the agreement forward.
    assert (await a.sessions.negotiate("bob")).agreed == {"chat": "1.2.0"}
    assert (await a.messaging.send("bob", "chat", {"text": "x"})).version == "1.2.0"


async def test_agreement_outside_recipient_range_is_not_used(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    for version in ("1.0.0", "2.0.0"):
        await register(a, "chat", version)
    await a.sessions.connect("alice", speaks(("chat", "*")))
    await b.sessions.connect("bob", speaks(("chat", "*")))
    assert (await a.sessions.negotiate("bob")).agreed == {"chat": "2.0.0"}
    await b.sessions.connect("bob", speaks(("chat", "<2")))  # bob narrows what it accepts
    assert (await a.messaging.send("bob", "chat", {"text": "x"})).version == "1.0.0"


# --- send ----------------------------------------------------------------------------------------


async def test_send_delivered_and_received(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    sent = await a.messaging.send(
        "bob",
        "chat",
        {"text": "hello"},
        correlation_id="c-1",
        reply_to="alice",
        priority="high",
        ttl_seconds=60,
    )
    assert sent.status == "delivered"
    assert (sent.recipient, sent.recipient_id, sent.protocol, sent.version) == (
        "bob",
        b.session_id,
        "chat",
        "1.0.0",
    )
    assert sent.duplicate is False and sent.expires_at is not None
    (got,) = (await b.inbox.receive()).messages
    assert got.message_id == sent.message_id
    assert (got.sender, got.sender_id) == ("alice", a.session_id)
    assert got.payload == {"text": "hello"}
    assert (got.correlation_id, got.reply_to, got.priority.value) == ("c-1", "alice", "high")
    assert got.delivery_attempt == 1 and got.broadcast is False and got.kind == "message"
    assert got.created_at == sent.created_at and got.expires_at == sent.expires_at


async def test_send_to_disconnected_recipient_is_queued(brokers: BrokerFactory, settings: Settings) -> None:
    a = await brokers()
    await register(a)
    await a.sessions.connect("alice", speaks(("chat", "*")))
    async with own_broker(settings) as b:
        await b.sessions.connect("bob", speaks(("chat", "*")))
    sent = await a.messaging.send("bob", "chat", {"text": "later"})
    assert sent.status == "queued"


async def test_send_to_stale_recipient_is_queued(brokers: BrokerFactory, clock: Clock) -> None:
    a = await brokers()
    b = await brokers(heartbeat_interval=3600)
    await register(a)
    await a.sessions.connect("alice", speaks(("chat", "*")))
    await b.sessions.connect("bob", speaks(("chat", "*")))
    clock.advance(45)
    assert (await statuses(a))["bob"] == "stale"
    assert (await a.messaging.send("bob", "chat", {"text": "x"})).status == "queued"
    # The stale recipient still gets it when it asks.
    assert len((await b.inbox.receive()).messages) == 1


async def test_send_chooses_highest_version_both_accept(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    for version in ("1.0.0", "1.5.0", "2.0.0", "3.0.0"):
        await register(a, "chat", version)
    await a.sessions.connect("alice", speaks(("chat", "<3")))
    await b.sessions.connect("bob", speaks(("chat", "<2.5")))
    assert (await a.messaging.send("bob", "chat", {"text": "x"})).version == "2.0.0"
    # A sender that does not list the protocol leaves the choice to the recipient's range.
    c = await brokers()
    await c.sessions.connect("carol", [])
    assert (await c.messaging.send("bob", "chat", {"text": "x"})).version == "2.0.0"
    assert (await c.messaging.send("alice", "chat", {"text": "x"})).version == "2.0.0"


async def test_send_not_accepted_lists_accepted_range(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    for version in ("1.0.0", "2.0.0"):
        await register(a, "chat", version)
    await register(a, "notes", "1.0.0")
    await a.sessions.connect("alice", speaks(("chat", "*"), ("notes", "*")))
    await b.sessions.connect("bob", speaks(("chat", ">=1.0,<2")))
    with pytest.raises(NotAccepted) as info:
        await a.messaging.send("bob", "chat", {"text": "x"}, version="2.0.0")
    assert code_of(info) == "NOT_ACCEPTED"
    assert "accepts >=1.0,<2" in str(info.value)
    with pytest.raises(NotAccepted, match="does not speak"):
        await a.messaging.send("bob", "notes", {"text": "x"})
    with pytest.raises(NotAccepted, match="does not speak"):
        await a.messaging.send("bob", "notes", {"text": "x"}, version="1.0.0")
    assert (await b.inbox.peek_inbox()) == []


async def test_send_no_common_version(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    for version in ("1.0.0", "2.0.0"):
        await register(a, "chat", version)
    await a.sessions.connect("alice", speaks(("chat", "<2")))
    await b.sessions.connect("bob", speaks(("chat", ">=2")))
    with pytest.raises(NoCommonVersion) as info:
        await a.messaging.send("bob", "chat", {"text": "x"})
    assert code_of(info) == "NO_COMMON_VERSION"
    assert "1.0.0" in str(info.value) and "2.0.0" in str(info.value) and ">=2" in str(info.value)
    c = await brokers()
    await c.sessions.connect("carol", speaks(("chat", ">=3")))
    with pytest.raises(NoCommonVersion):
        await a.messaging.send("carol", "chat", {"text": "x"})


async def test_send_unknown_protocol_or_version(brokers: BrokerFactory) -> None:
    a, _ = await pair(brokers)
    with pytest.raises(UnknownProtocol, match=r"registered versions: 1\.0\.0"):
        await a.messaging.send("bob", "chat", {"text": "x"}, version="1.4.0")
    with pytest.raises(UnknownProtocol, match="no protocol 'ghost'"):
        await a.messaging.send("bob", "ghost", {"text": "x"})
    with pytest.raises(InvalidVersion):
        await a.messaging.send("bob", "chat", {"text": "x"}, version="1.4")


async def test_send_capability_not_supported(brokers: BrokerFactory) -> None:
    a = await brokers()
    b = await brokers()
    await register(a, "ticker", "1.0.0", capabilities=["broadcast"])
    await a.sessions.connect("alice", speaks(("ticker", "*")))
    await b.sessions.connect("bob", speaks(("ticker", "*")))
    with pytest.raises(CapabilityNotSupported, match="point_to_point") as info:
        await a.messaging.send("bob", "ticker", {"text": "x"})
    assert code_of(info) == "CAPABILITY_NOT_SUPPORTED"
    assert await b.inbox.peek_inbox() == []


async def test_send_payload_invalid_lists_paths(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    with pytest.raises(PayloadInvalid) as info:
        await a.messaging.send("bob", "chat", {"text": 5, "n": "seven"})
    assert code_of(info) == "PAYLOAD_INVALID"
    errors = info.value.details["errors"]
    assert [e["path"] for e in errors] == ["/n", "/text"]
    assert all(e["message"] for e in errors)
    with pytest.raises(PayloadInvalid) as info:
        await a.messaging.send("bob", "chat", {"n": 1})
    assert info.value.details["errors"][0]["path"] == "/"
    assert "'text' is a required property" in str(info.value)
    assert await b.inbox.peek_inbox() == []


async def test_send_payload_too_large_or_too_deep(brokers: BrokerFactory) -> None:
    a = await brokers(max_payload_bytes=100, max_depth=5)
    b = await brokers()
    await register(a, "blob", "1.0.0", schema=ANY_SCHEMA)
    await a.sessions.connect("alice", speaks(("blob", "*")))
    await b.sessions.connect("bob", speaks(("blob", "*")))
    with pytest.raises(TooLarge, match="bytes") as info:
        await a.messaging.send("bob", "blob", {"text": "x" * 200})
    assert code_of(info) == "TOO_LARGE"
    deep: Any = "leaf"
    for _ in range(10):
        deep = [deep]
    with pytest.raises(TooLarge, match="depth"):
        await a.messaging.send("bob", "blob", deep)
    assert (await a.messaging.send("bob", "blob", [[["ok"]]])).status == "delivered"


async def test_send_to_unknown_recipient(brokers: BrokerFactory) -> None:
    a, _ = await pair(brokers)
    with pytest.raises(UnknownSession):
        await a.messaging.send("nobody", "chat", {"text": "x"})
    with pytest.raises(InvalidArgument):
        await a.messaging.send("x" * 65, "chat", {"text": "x"})


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl_seconds": 0},
        {"ttl_seconds": 0.5},
        {"ttl_seconds": 30 * 86400 + 1},
        {"idempotency_key": ""},
        {"idempotency_key": "k" * 129},
        {"correlation_id": "a\x00b"},
        {"reply_to": ""},
    ],
)
async def test_send_refuses_out_of_range_arguments(brokers: BrokerFactory, kwargs: dict[str, Any]) -> None:
    a, b = await pair(brokers)
    with pytest.raises(InvalidArgument):
        await a.messaging.send("bob", "chat", {"text": "x"}, **kwargs)
    assert await b.inbox.peek_inbox() == []


async def test_send_idempotency_key(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    first = await a.messaging.send("bob", "chat", {"text": "once"}, idempotency_key="r-17")
    again = await a.messaging.send("bob", "chat", {"text": "once"}, idempotency_key="r-17")
    assert again.duplicate is True
    assert again.model_dump(exclude={"duplicate"}) == first.model_dump(exclude={"duplicate"})
    assert len(await b.inbox.peek_inbox()) == 1
    # Another key, or the same key from another sender, is another message.
    await a.messaging.send("bob", "chat", {"text": "twice"}, idempotency_key="r-18")
    c = await brokers()
    await c.sessions.connect("carol", speaks(("chat", "*")))
    other = await c.messaging.send("bob", "chat", {"text": "once"}, idempotency_key="r-17")
    assert other.duplicate is False and other.message_id != first.message_id
    assert len((await b.inbox.receive()).messages) == 3


async def test_inbox_full_refuses_and_stores_nothing(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers, max_inbox=3)
    for i in range(3):
        await a.messaging.send("bob", "chat", {"text": str(i)})
    with pytest.raises(InboxFull) as info:
        await a.messaging.send("bob", "chat", {"text": "overflow"})
    assert code_of(info) == "INBOX_FULL"
    assert "bob" in str(info.value) and "3" in str(info.value) and "nothing was stored" in str(info.value)
    assert [m.payload["text"] for m in await b.inbox.peek_inbox()] == ["0", "1", "2"]
    # A retry with an idempotency key is not remembered as sent either.
    with pytest.raises(InboxFull):
        await a.messaging.send("bob", "chat", {"text": "overflow"}, idempotency_key="k")
    # Leased still counts; acked frees a place.
    got = await b.inbox.receive(max_messages=1)
    with pytest.raises(InboxFull):
        await a.messaging.send("bob", "chat", {"text": "overflow"})
    await b.inbox.ack([got.messages[0].message_id])
    retry = await a.messaging.send("bob", "chat", {"text": "overflow"}, idempotency_key="k")
    assert retry.duplicate is False
    assert len(await b.inbox.peek_inbox()) == 3


async def test_ttl_expired_message_is_never_handed_out(brokers: BrokerFactory, clock: Clock) -> None:
    a, b = await pair(brokers)
    short = await a.messaging.send("bob", "chat", {"text": "short"}, ttl_seconds=1)
    await a.messaging.send("bob", "chat", {"text": "long"}, ttl_seconds=3600)
    clock.advance(2)
    assert [m.payload["text"] for m in await b.inbox.peek_inbox()] == ["long"]
    got = await b.inbox.receive()
    assert [m.payload["text"] for m in got.messages] == ["long"]
    assert (await b.inbox.receive()).messages == []
    (dead,) = (await b.inbox.list_dead_letters()).dead_letters
    assert dead.message_id == short.message_id and dead.reason == "expired"
    (status,) = (await a.inbox.message_status([short.message_id])).messages
    assert status.deliveries[0].state == "expired"


async def test_ttl_expires_while_leased(brokers: BrokerFactory, clock: Clock) -> None:
    a, b = await pair(brokers)
    await a.messaging.send("bob", "chat", {"text": "x"}, ttl_seconds=5)
    assert len((await b.inbox.receive(lease_seconds=1)).messages) == 1
    clock.advance(10)
    assert (await b.inbox.receive()).messages == []


async def test_expired_messages_do_not_count_toward_inbox_limit(brokers: BrokerFactory, clock: Clock) -> None:
    """Messages that can never be delivered any more must not keep an inbox full.

    An offline recipient's inbox filled with messages whose TTL has run out refuses every new send
    with INBOX_FULL forever, although none of those messages will ever be handed out.
    """
    a, b = await pair(brokers, max_inbox=3)
    await b.sessions.disconnect()
    for i in range(3):
        await a.messaging.send("bob", "chat", {"text": str(i)}, ttl_seconds=1)
    clock.advance(5)
    sent = await a.messaging.send("bob", "chat", {"text": "fresh"})
    assert sent.status == "queued"


# --- broadcast -----------------------------------------------------------------------------------


async def test_broadcast_reaches_acceptors_and_skips_with_reasons(
    brokers: BrokerFactory, settings: Settings
) -> None:
    a = await brokers(max_inbox=2)
    for version in ("1.0.0", "2.0.0"):
        await register(a, "chat", version)
    await a.sessions.connect("alice", speaks(("chat", "^1")))
    bob, carol, dave, erin = [await brokers() for _ in range(4)]
    await bob.sessions.connect("bob", speaks(("chat", "^1")), features=["ci"])
    await carol.sessions.connect("carol", speaks(("chat", ">=2")))
    await dave.sessions.connect("dave", speaks(("notes", "*")))
    await erin.sessions.connect("erin", speaks(("chat", "*")))
    async with own_broker(settings) as f:
        await f.sessions.connect("frank", speaks(("chat", "*")))
    for _ in range(2):
        await a.messaging.send("erin", "chat", {"text": "fill"})

    result = await a.messaging.broadcast("chat", {"text": "build is green"}, priority="high")
    assert result.version == "1.0.0"
    assert {(r.name, r.status) for r in result.recipients} == {("bob", "delivered"), ("frank", "queued")}
    assert result.recipient_count == 2
    reasons = {s.name: s.reason for s in result.skipped}
    assert set(reasons) == {"carol", "dave", "erin"}
    assert reasons["carol"].startswith("accepts chat >=2")
    assert reasons["dave"] == "does not speak chat"
    assert reasons["erin"] == "inbox full (2 of 2)"
    assert all(s.session_id for s in result.skipped)
    (got,) = (await bob.inbox.receive()).messages
    assert got.message_id == result.message_id and got.broadcast is True and got.priority.value == "high"
    assert (await carol.inbox.receive()).messages == [] and (await dave.inbox.receive()).messages == []
    assert len((await erin.inbox.receive()).messages) == 2
    assert await a.inbox.peek_inbox() == []  # the sender is not a recipient of its own broadcast


async def test_broadcast_filters(brokers: BrokerFactory, settings: Settings) -> None:
    a = await brokers()
    await register(a)
    await a.sessions.connect("alice", speaks(("chat", "*")))
    b, c = await brokers(), await brokers()
    await b.sessions.connect("bob", speaks(("chat", "*")), features=["ci", "python"])
    await c.sessions.connect("carol", speaks(("chat", "*")), features=["python"])
    async with own_broker(settings) as d:
        await d.sessions.connect("dave", speaks(("chat", "*")), features=["ci"])

    async def reached(**kwargs: Any) -> list[str]:
        result = await a.messaging.broadcast("chat", {"text": "x"}, **kwargs)
        assert result.skipped == []
        return sorted(r.name for r in result.recipients)

    assert await reached() == ["bob", "carol", "dave"]
    assert await reached(filter={"names": ["carol", "alice", "nobody"]}) == ["carol"]
    assert await reached(filter={"features": ["ci"]}) == ["bob", "dave"]
    assert await reached(filter={"features": ["ci", "python"]}) == ["bob"]
    assert await reached(filter={"status": ["active"]}) == ["bob", "carol"]
    assert await reached(filter={"status": "disconnected"}) == ["dave"]
    assert await reached(filter={"status": ["stale"]}) == []
    assert await reached(filter={"features": ["ci"], "status": ["active"]}) == ["bob"]
    for bad in ({"colour": ["red"]}, {"status": ["asleep"]}, {"names": ["bad\nname"]}):
        with pytest.raises(InvalidArgument):
            await a.messaging.broadcast("chat", {"text": "x"}, filter=bad)


async def test_broadcast_refusals(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    await register(a, "review", "1.0.0", capabilities=["point_to_point"])
    with pytest.raises(CapabilityNotSupported, match="broadcast"):
        await a.messaging.broadcast("review", {"text": "x"})
    with pytest.raises(UnknownProtocol):
        await a.messaging.broadcast("ghost", {"text": "x"})
    with pytest.raises(PayloadInvalid):
        await a.messaging.broadcast("chat", {"text": 1})
    with pytest.raises(UnknownProtocol):
        await a.messaging.broadcast("chat", {"text": "x"}, version="9.0.0")
    with pytest.raises(InvalidArgument):
        await a.messaging.broadcast("chat", {"text": "x"}, ttl_seconds=0)
    await register(a, "chat", "2.0.0")
    await a.sessions.connect("alice", speaks(("chat", ">=3")))
    with pytest.raises(NoCommonVersion):
        await a.messaging.broadcast("chat", {"text": "x"})
    assert await b.inbox.peek_inbox() == []


async def test_broadcast_explicit_version(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    await register(a, "chat", "1.1.0")
    assert (await a.messaging.broadcast("chat", {"text": "x"})).version == "1.1.0"
    result = await a.messaging.broadcast("chat", {"text": "x"}, version="1.0.0")
    assert result.version == "1.0.0" and result.recipient_count == 1
    assert [m.version for m in (await b.inbox.receive()).messages] == ["1.1.0", "1.0.0"]


# --- receive -------------------------------------------------------------------------------------


async def test_receive_priority_then_fifo(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    order = [("low", "l1"), ("normal", "n1"), ("high", "h1"), ("normal", "n2"), ("low", "l2"), ("high", "h2")]
    for priority, text in order:
        await a.messaging.send("bob", "chat", {"text": text}, priority=priority)
    got = await b.inbox.receive(max_messages=100)
    assert [m.payload["text"] for m in got.messages] == ["h1", "h2", "n1", "n2", "l1", "l2"]


async def test_receive_fifo_per_sender_across_batches(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    c = await brokers()
    await c.sessions.connect("carol", speaks(("chat", "*")))
    for i in range(30):
        await a.messaging.send("bob", "chat", {"text": "alice", "n": i})
        await c.messaging.send("bob", "chat", {"text": "carol", "n": i})
    seen: dict[str, list[int]] = {"alice": [], "carol": []}
    while batch := (await b.inbox.receive(max_messages=7)).messages:
        assert len(batch) <= 7
        for m in batch:
            seen[m.sender].append(m.payload["n"])
        await b.inbox.ack([m.message_id for m in batch])
    assert seen == {"alice": list(range(30)), "carol": list(range(30))}


async def test_receive_max_messages_and_protocol_filter(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    await register(a, "notes", "1.0.0")
    await a.sessions.connect("alice", speaks(("chat", "*"), ("notes", "*")))
    await b.sessions.connect("bob", speaks(("chat", "*"), ("notes", "*")))
    for i in range(3):
        await a.messaging.send("bob", "chat", {"text": f"c{i}"})
        await a.messaging.send("bob", "notes", {"text": f"n{i}"})
    notes = await b.inbox.receive(protocol="notes", max_messages=2)
    assert [m.payload["text"] for m in notes.messages] == ["n0", "n1"]
    assert all(m.protocol == "notes" for m in notes.messages)
    rest = await b.inbox.receive(max_messages=100)
    assert [m.payload["text"] for m in rest.messages] == ["c0", "c1", "c2", "n2"]
    assert (await b.inbox.receive(protocol="chat")).messages == []


async def test_lease_hides_then_redelivers_in_real_time(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    sent = await a.messaging.send("bob", "chat", {"text": "x"})
    (first,) = (await b.inbox.receive(lease_seconds=1)).messages
    assert first.delivery_attempt == 1
    assert (await b.inbox.receive()).messages == []  # leased: invisible
    with anyio.fail_after(10):
        again = await b.inbox.receive(wait_seconds=5, lease_seconds=1)
    (second,) = again.messages
    assert second.message_id == sent.message_id and second.delivery_attempt == 2
    assert (await b.inbox.ack([sent.message_id])).acked == 1


async def test_dead_lettered_after_max_attempts(brokers: BrokerFactory, clock: Clock) -> None:
    a = await brokers()
    b = await brokers(max_attempts=2)
    await register(a)
    await a.sessions.connect("alice", speaks(("chat", "*")))
    await b.sessions.connect("bob", speaks(("chat", "*")))
    sent = await a.messaging.send("bob", "chat", {"text": "poison"})
    keep = await a.messaging.send("bob", "chat", {"text": "fine"})
    attempts = []
    for _ in range(2):
        got = await b.inbox.receive(lease_seconds=1)
        attempts.append([(m.payload["text"], m.delivery_attempt) for m in got.messages])
        if keep.message_id in {m.message_id for m in got.messages}:
            await b.inbox.ack([keep.message_id])
        clock.advance(2)
    assert attempts == [[("poison", 1), ("fine", 1)], [("poison", 2)]]
    assert (await b.inbox.receive()).messages == []
    clock.advance(3600)
    assert (await b.inbox.receive()).messages == []
    assert await b.inbox.peek_inbox() == []
    (dead,) = (await b.inbox.list_dead_letters()).dead_letters
    assert dead.message_id == sent.message_id
    assert dead.reason == "not acked after 2 deliveries" and dead.attempts == 2
    assert (await b.inbox.ack([sent.message_id])).results[0].status == "dead_lettered"


async def test_receive_wakes_on_doorbell_from_another_broker(
    brokers: BrokerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without the doorbell the long-poll would only recheck after 30 s: a quick return proves the ring.
    a, b = await pair(brokers)
    b.inbox.recheck_seconds = 30.0
    received: list[Any] = []
    elapsed: list[float] = []

    async def wait_for_mail() -> None:
        start = time.monotonic()
        received.extend((await b.inbox.receive(wait_seconds=30)).messages)
        elapsed.append(time.monotonic() - start)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_for_mail)
            await anyio.sleep(0.1)  # let the receiver start its wait; the result does not depend on it
            sent = await a.messaging.send("bob", "chat", {"text": "ding"})
    assert [m.message_id for m in received] == [sent.message_id]
    assert elapsed[0] < 10


async def test_receive_wait_returns_empty_after_wait(brokers: BrokerFactory) -> None:
    _, b = await pair(brokers)
    start = time.monotonic()
    with anyio.fail_after(10):
        got = await b.inbox.receive(wait_seconds=0.3)
    assert got.messages == []
    assert time.monotonic() - start >= 0.29


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_messages": 0},
        {"max_messages": 101},
        {"wait_seconds": -1},
        {"wait_seconds": 61},
        {"wait_seconds": float("nan")},
        {"lease_seconds": 0.5},
        {"lease_seconds": 3601},
        {"protocol": "Not-a-protocol"},
    ],
)
async def test_receive_refuses_out_of_range(brokers: BrokerFactory, kwargs: dict[str, Any]) -> None:
    a, b = await pair(brokers)
    await a.messaging.send("bob", "chat", {"text": "x"})
    with pytest.raises(InvalidArgument) as info:
        await b.inbox.receive(**kwargs)
    assert code_of(info) == "INVALID_ARGUMENT"
    # Nothing was leased by the refused call.
    assert (await b.inbox.receive()).messages[0].delivery_attempt == 1


async def test_receive_accepts_range_edges(brokers: BrokerFactory) -> None:
    _, b = await pair(brokers)
    assert (await b.inbox.receive(max_messages=1, wait_seconds=0, lease_seconds=1)).messages == []
    assert (await b.inbox.receive(max_messages=100, lease_seconds=3600)).messages == []


# --- ack -----------------------------------------------------------------------------------------


async def test_ack_outcomes(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    first = await a.messaging.send("bob", "chat", {"text": "1"})
    (got,) = (await b.inbox.receive(max_messages=1)).messages
    second = await a.messaging.send("bob", "chat", {"text": "2"})  # stored, never received
    result = await b.inbox.ack([got.message_id, second.message_id, got.message_id])
    assert result.acked == 1
    assert [(r.message_id, r.status) for r in result.results] == [
        (first.message_id, "acked"),
        (second.message_id, "not_received"),
    ]
    again = await b.inbox.ack([first.message_id])
    assert again.acked == 0 and again.results[0].status == "already_acked"
    # Acked is final: it does not come back after its lease.
    remaining = (await b.inbox.receive()).messages
    assert [m.message_id for m in remaining] == [second.message_id]


async def test_ack_unknown_ids_acks_nothing(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    await a.messaging.send("bob", "chat", {"text": "x"})
    (got,) = (await b.inbox.receive()).messages
    stranger = str(uuid.uuid4())
    with pytest.raises(UnknownMessage, match=stranger) as info:
        await b.inbox.ack([got.message_id, stranger])
    assert code_of(info) == "UNKNOWN_MESSAGE"
    assert "nothing was acked" in str(info.value)
    assert (await b.inbox.ack([got.message_id])).results[0].status == "acked"


async def test_sessions_cannot_touch_each_others_inbox(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    c = await brokers()
    await c.sessions.connect("carol", speaks(("chat", "*")))
    sent = await a.messaging.send("bob", "chat", {"text": "for bob only"})
    assert (await c.inbox.receive()).messages == []
    assert await c.inbox.peek_inbox() == []
    with pytest.raises(UnknownMessage):
        await c.inbox.ack([sent.message_id])
    with pytest.raises(UnknownMessage):
        await a.inbox.ack([sent.message_id])  # the sender cannot ack it either
    (got,) = (await b.inbox.receive()).messages
    with pytest.raises(UnknownMessage):
        await c.inbox.ack([got.message_id])
    assert (await b.inbox.ack([got.message_id])).acked == 1


@pytest.mark.parametrize("ids", [[], [""], ["x" * 65], [str(i) for i in range(101)]])
async def test_ack_refuses_bad_id_lists(brokers: BrokerFactory, ids: list[str]) -> None:
    _, b = await pair(brokers)
    with pytest.raises(InvalidArgument):
        await b.inbox.ack(ids)


# --- disconnect, peek, NOT_CONNECTED -------------------------------------------------------------


async def test_disconnect_then_not_connected_and_messages_queue(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    await a.messaging.send("bob", "chat", {"text": "before"})
    bob_id = b.session_id
    result = await b.sessions.disconnect()
    assert (result.session_id, result.name, result.queue_depth) == (bob_id, "bob", 1)
    assert "bob" in result.message
    for call in (b.sessions.disconnect(), b.inbox.receive(), b.sessions.list_sessions(), b.inbox.ack(["x"])):
        with pytest.raises(NotConnected) as info:
            await call
        assert code_of(info) == "NOT_CONNECTED"
    assert (await statuses(a))["bob"] == "disconnected"
    assert (await a.messaging.send("bob", "chat", {"text": "after"})).status == "queued"
    # Another process may now take the name and its inbox.
    c = await brokers()
    back = await c.sessions.connect("bob", speaks(("chat", "*")))
    assert back.session_id == bob_id and back.resumed is True and back.queue_depth == 2
    assert [m.payload["text"] for m in (await c.inbox.receive()).messages] == ["before", "after"]


async def test_reconnect_after_own_disconnect_keeps_inbox(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    await a.messaging.send("bob", "chat", {"text": "x"})
    bob_id = b.session_id
    await b.sessions.disconnect()
    back = await b.sessions.connect("bob", speaks(("chat", "*")))
    assert back.session_id == bob_id and back.queue_depth == 1
    assert (await statuses(a))["bob"] == "active"


async def test_closing_a_broker_disconnects_its_session(brokers: BrokerFactory, settings: Settings) -> None:
    a = await brokers()
    await a.sessions.connect("alice", [])
    async with own_broker(settings) as b:
        await b.sessions.connect("bob", [])
        assert (await statuses(a))["bob"] == "active"
    assert (await statuses(a))["bob"] == "disconnected"


async def test_peek_inbox_does_not_lease(brokers: BrokerFactory) -> None:
    a, b = await pair(brokers)
    await a.messaging.send("bob", "chat", {"text": "low"}, priority="low")
    await a.messaging.send("bob", "chat", {"text": "high"}, priority="high")
    peeked = await b.inbox.peek_inbox()
    assert [m.payload["text"] for m in peeked] == ["high", "low"]
    assert await b.inbox.peek_inbox() == peeked
    got = await b.inbox.receive()
    assert [m.payload["text"] for m in got.messages] == ["high", "low"]
    assert all(m.delivery_attempt == 1 for m in got.messages)
    assert len(await b.inbox.peek_inbox(limit=1)) == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda b: b.sessions.list_sessions(),
        lambda b: b.sessions.negotiate("bob"),
        lambda b: b.messaging.send("bob", "chat", {"text": "x"}),
        lambda b: b.messaging.broadcast("chat", {"text": "x"}),
        lambda b: b.inbox.receive(),
        lambda b: b.inbox.ack(["x"]),
        lambda b: b.sessions.disconnect(),
        lambda b: b.inbox.peek_inbox(),
    ],
)
async def test_tools_need_a_session(brokers: BrokerFactory, call: Callable[[Broker], Awaitable[Any]]) -> None:
    a = await brokers()
    await register(a)
    with pytest.raises(NotConnected, match="connect"):
        await call(a)


async def test_caps_on_what_the_store_holds_refuse_with_limit_reached(brokers: BrokerFactory) -> None:
    a = await brokers(max_sessions=2, max_protocol_versions=1, max_adapters=1)
    await a.catalog.register_protocol("chat", "1.0.0", CHAT_SCHEMA, ["point_to_point"])
    with pytest.raises(LimitReached, match="max_protocol_versions"):
        await a.catalog.register_protocol("chat", "2.0.0", CHAT_SCHEMA, ["point_to_point"])
    await a.sessions.connect("alice", speaks(("chat", "^1.0")))
    b, c = await brokers(max_sessions=2), await brokers(max_sessions=2)
    await b.sessions.connect("bob", speaks(("chat", "^1.0")))
    with pytest.raises(LimitReached, match="max_sessions"):
        await c.sessions.connect("carol", speaks(("chat", "^1.0")))
    assert [s.name for s in await a.sessions.sessions_view()] == ["alice", "bob"]


async def test_a_stream_whose_sender_went_quiet_is_aborted_and_the_recipient_told_why(
    brokers: BrokerFactory, clock: Clock
) -> None:
    a = await brokers(stream_idle_seconds=60)
    b = await brokers(stream_idle_seconds=60)
    log = {"type": "object", "properties": {"line": {"type": "string"}}}
    await a.catalog.register_protocol("log", "1.0.0", log, ["point_to_point", "streaming"])
    await a.sessions.connect("writer", speaks(("log", "^1.0")))
    await b.sessions.connect("reader", speaks(("log", "^1.0")))
    stream = await a.streams.open_stream("reader", "log")
    for n in (1, 2):
        await a.streams.append_chunk(stream.stream_id, {"line": f"part {n}"})
    assert await b.streams.abort_idle() == 0  # not quiet yet
    clock.advance(61)
    assert await b.streams.abort_idle() == 1  # any broker process notices
    status = await a.streams.stream_status(stream.stream_id)
    assert status.state == "aborted" and "60 s" in (status.reason or "")
    got = (await b.inbox.receive(max_messages=10)).messages
    assert [(m.kind, m.stream_id) for m in got] == [("stream_abort", stream.stream_id)]
    assert "appended nothing" in got[0].payload["reason"]
    with pytest.raises(BrokerError, match="STREAM_NOT_OPEN"):
        await a.streams.append_chunk(stream.stream_id, {"line": "too late"})
