"""Domain tier for protocol evolution and request/reply: ``Broker`` methods, several brokers on one file.

The ``note`` protocol evolves the way real ones do: 1.1.0 adds a required ``lang``, 2.0.0 renames
``text`` to ``body``, spells ``level`` out and forbids unknown fields. Adapters lead 1.0.0 → 1.1.0 →
2.0.0 and back from 2.0.0 to 1.1.0, so each agent keeps speaking its own version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from mcp_broker.config import Settings
from mcp_broker.domain import Broker
from mcp_broker.errors import (
    BrokerError,
    CapabilityNotSupported,
    InvalidAdapter,
    InvalidArgument,
    NoCommonVersion,
    NotAccepted,
    NotConnected,
    PayloadInvalid,
    ProtocolConflict,
    TransformFailed,
    UnknownMessage,
    UnknownProtocol,
)

pytestmark = pytest.mark.anyio

BrokerFactory = Callable[..., Awaitable[Broker]]
CAPS = ["point_to_point", "broadcast"]

NOTE_1_0: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "level": {"enum": ["hi", "lo"]}},
    "required": ["text"],
}
NOTE_1_1: dict[str, Any] = {
    "type": "object",
    "properties": {"text": {"type": "string"}, "lang": {"type": "string"}, "level": {"enum": ["hi", "lo"]}},
    "required": ["text", "lang"],
}
NOTE_2_0: dict[str, Any] = {
    "type": "object",
    "properties": {
        "body": {"type": "string"},
        "lang": {"type": "string"},
        "level": {"enum": ["high", "low"]},
    },
    "required": ["body", "lang"],
    "additionalProperties": False,
}
UP_1_0 = [{"op": "set_default", "path": "/lang", "value": "en"}]
UP_1_1 = [
    {"op": "rename", "from": "/text", "to": "/body"},
    {"op": "map_values", "path": "/level", "mapping": {"hi": "high", "lo": "low"}},
]
DOWN_2_0 = [
    {"op": "rename", "from": "/body", "to": "/text"},
    {"op": "map_values", "path": "/level", "mapping": {"high": "hi", "low": "lo"}},
]

ASK: dict[str, Any] = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
ANSWER: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def speaks(name: str, versions: str) -> list[dict[str, str]]:
    return [{"name": name, "versions": versions}]


def code_of(info: pytest.ExceptionInfo[BrokerError]) -> str:
    return str(info.value).split(":", 1)[0]


async def note_versions(b: Broker, *, adapters: bool = True, v2_caps: list[str] | None = None) -> None:
    """Register note 1.0.0, 1.1.0 and 2.0.0, and (unless told not to) the adapters between them."""
    await b.catalog.register_protocol("note", "1.0.0", NOTE_1_0, CAPS)
    await b.catalog.register_protocol("note", "1.1.0", NOTE_1_1, CAPS)
    await b.catalog.register_protocol("note", "2.0.0", NOTE_2_0, v2_caps or CAPS)
    if adapters:
        await b.catalog.register_adapter("note", "1.0.0", "1.1.0", UP_1_0)
        await b.catalog.register_adapter("note", "1.1.0", "2.0.0", UP_1_1)
        await b.catalog.register_adapter("note", "2.0.0", "1.1.0", DOWN_2_0)


async def trio(brokers: BrokerFactory, **note_options: Any) -> tuple[Broker, Broker, Broker]:
    """``old`` speaks note ^1.0, ``mid`` ~1.1, ``new`` ^2, each in its own broker."""
    old, mid, new = await brokers(), await brokers(), await brokers()
    await note_versions(old, **note_options)
    await old.sessions.connect("old", speaks("note", "^1.0"))
    await mid.sessions.connect("mid", speaks("note", "~1.1"))
    await new.sessions.connect("new", speaks("note", "^2"))
    return old, mid, new


async def depth_of(b: Broker, name: str) -> int:
    (found,) = [s for s in (await b.sessions.list_sessions()).sessions if s.name == name]
    return found.queue_depth


# --- register_adapter ----------------------------------------------------------------------------


async def test_register_adapter_then_again_is_unchanged(brokers: BrokerFactory) -> None:
    a = await brokers()
    await note_versions(a, adapters=False)
    first = await a.catalog.register_adapter("note", "1.1.0", "2.0.0", UP_1_1)
    assert (first.name, first.version, first.status) == ("note", "1.1.0->2.0.0", "registered")
    # Another process registering the same steps is told nothing changed.
    b = await brokers()
    again = await b.catalog.register_adapter("note", "1.1.0", "2.0.0", [dict(s) for s in UP_1_1])
    assert again.status == "unchanged"
    assert "already registered" in again.message


async def test_register_adapter_with_other_steps_is_a_conflict(brokers: BrokerFactory) -> None:
    a = await brokers()
    await note_versions(a)
    with pytest.raises(ProtocolConflict, match="immutable") as info:
        await a.catalog.register_adapter(
            "note", "1.0.0", "1.1.0", [{"op": "set_default", "path": "/lang", "value": "de"}]
        )
    assert code_of(info) == "PROTOCOL_CONFLICT"
    (listed,) = [
        x
        for x in (await a.catalog.discover_protocols(name="note")).protocols[-1].adapters
        if x.to_version == "1.1.0"
    ]
    assert listed.steps == UP_1_0  # the original steps stand


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ([{"op": "rename", "from": "/nope", "to": "/body"}], "there is no /nope"),
        (
            [{"op": "map_values", "path": "/text", "mapping": {"a": "b"}}, {"op": "remove", "path": "/gone"}],
            "steps[1]",
        ),
        ([{"op": "set_default", "path": "/level", "value": "hi"}], "does not match the target schema"),
    ],
)
async def test_register_adapter_that_does_not_fit_the_schemas_is_invalid(
    brokers: BrokerFactory, steps: list[dict[str, Any]], fragment: str
) -> None:
    a = await brokers()
    await note_versions(a, adapters=False)
    with pytest.raises(InvalidAdapter) as info:
        await a.catalog.register_adapter("note", "1.0.0", "2.0.0", steps)
    assert code_of(info) == "INVALID_ADAPTER"
    assert fragment in info.value.message
    assert (await a.catalog.discover_protocols(name="note")).protocols[0].adapters == []


async def test_register_adapter_with_a_malformed_step_names_it(brokers: BrokerFactory) -> None:
    a = await brokers()
    await note_versions(a, adapters=False)
    with pytest.raises(InvalidArgument, match=r"steps\[1\]"):
        await a.catalog.register_adapter(
            "note", "1.0.0", "1.1.0", [*UP_1_0, {"op": "explode", "path": "/text"}]
        )


async def test_register_adapter_needs_both_versions_registered(brokers: BrokerFactory) -> None:
    a = await brokers()
    await note_versions(a, adapters=False)
    with pytest.raises(UnknownProtocol, match=r"registered versions: 1\.0\.0, 1\.1\.0, 2\.0\.0"):
        await a.catalog.register_adapter("note", "1.0.0", "3.0.0", UP_1_0)
    with pytest.raises(UnknownProtocol):
        await a.catalog.register_adapter("note", "0.9.0", "1.0.0", UP_1_0)
    with pytest.raises(UnknownProtocol, match="register_protocol"):
        await a.catalog.register_adapter("memo", "1.0.0", "2.0.0", UP_1_0)


async def test_register_adapter_between_a_version_and_itself_is_refused(brokers: BrokerFactory) -> None:
    a = await brokers()
    await note_versions(a, adapters=False)
    with pytest.raises(InvalidArgument, match="must differ"):
        await a.catalog.register_adapter("note", "1.0.0", "1.0.0", UP_1_0)


# --- send through adapters -----------------------------------------------------------------------


async def test_send_through_a_chain_transforms_and_records_both_versions(brokers: BrokerFactory) -> None:
    old, _, new = await trio(brokers)
    sent = await old.messaging.send("new", "note", {"text": "hello", "level": "hi"}, version="1.0.0")
    assert (sent.version, sent.delivered_version) == ("1.0.0", "2.0.0")
    assert sent.adapted_via == ["1.0.0", "1.1.0", "2.0.0"]

    (got,) = (await new.inbox.receive()).messages
    assert got.payload == {"body": "hello", "lang": "en", "level": "high"}
    assert (got.version, got.sent_version, got.adapted_via) == ("2.0.0", "1.0.0", ["1.0.0", "1.1.0", "2.0.0"])

    (status,) = (await old.inbox.message_status([sent.message_id])).messages
    assert status.version == "1.0.0"
    assert [d.delivered_version for d in status.deliveries] == ["2.0.0"]


async def test_send_back_down_to_the_older_agent(brokers: BrokerFactory) -> None:
    old, _, new = await trio(brokers)
    sent = await new.messaging.send("old", "note", {"body": "hey", "lang": "de", "level": "low"})
    assert (sent.version, sent.delivered_version, sent.adapted_via) == ("2.0.0", "1.1.0", ["2.0.0", "1.1.0"])
    (got,) = (await old.inbox.receive()).messages
    assert got.payload == {"text": "hey", "lang": "de", "level": "lo"}
    assert (got.version, got.sent_version) == ("1.1.0", "2.0.0")


async def test_a_direct_message_says_nothing_was_adapted(brokers: BrokerFactory) -> None:
    old, mid, _ = await trio(brokers)
    sent = await old.messaging.send("mid", "note", {"text": "plain", "lang": "fr"})
    assert (sent.version, sent.delivered_version, sent.adapted_via) == ("1.1.0", "1.1.0", None)
    (got,) = (await mid.inbox.receive()).messages
    assert (got.version, got.sent_version, got.adapted_via) == ("1.1.0", None, None)
    assert got.payload == {"text": "plain", "lang": "fr"}


async def test_the_payload_is_validated_against_the_sent_version_first(brokers: BrokerFactory) -> None:
    old, _, new = await trio(brokers)
    with pytest.raises(PayloadInvalid):
        await old.messaging.send("new", "note", {"body": "2.x shape"}, version="1.0.0")
    assert (await new.inbox.receive()).messages == []


async def test_a_transform_the_target_schema_refuses_fails_the_send_and_stores_nothing(
    brokers: BrokerFactory,
) -> None:
    old, _, new = await trio(brokers)
    # 1.0.0 allows extra fields; 2.0.0 does not, and no adapter removes this one.
    with pytest.raises(TransformFailed) as info:
        await old.messaging.send(
            "new", "note", {"text": "x", "extra": 1}, version="1.0.0", idempotency_key="k-1"
        )
    assert code_of(info) == "TRANSFORM_FAILED"
    message = info.value.message
    assert "1.0.0 to 2.0.0 for new" in message
    assert "extra" in message
    assert await depth_of(old, "new") == 0
    assert (await new.inbox.receive()).messages == []
    # The refusal did not claim the idempotency key: a fixed payload with the same key goes through.
    fixed = await old.messaging.send("new", "note", {"text": "x"}, version="1.0.0", idempotency_key="k-1")
    assert not fixed.duplicate
    assert [m.payload for m in (await new.inbox.receive()).messages] == [{"body": "x", "lang": "en"}]


async def test_a_step_that_cannot_apply_fails_the_send_naming_the_adapter(brokers: BrokerFactory) -> None:
    a, b = await brokers(), await brokers()
    tags = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
    tag = {"type": "object", "properties": {"tag": {"type": "string"}}}
    await a.catalog.register_protocol("label", "1.0.0", tags, CAPS)
    await a.catalog.register_protocol("label", "2.0.0", tag, CAPS)
    await a.catalog.register_adapter(
        "label",
        "1.0.0",
        "2.0.0",
        [{"op": "unwrap", "path": "/tags"}, {"op": "rename", "from": "/tags", "to": "/tag"}],
    )
    await a.sessions.connect("old", speaks("label", "^1"))
    await b.sessions.connect("new", speaks("label", "^2"))
    assert (await a.messaging.send("new", "label", {"tags": ["one"]})).adapted_via == ["1.0.0", "2.0.0"]
    with pytest.raises(TransformFailed, match=r"label 1.0.0 -> 2.0.0.*steps\[0\] \(unwrap /tags\)"):
        await a.messaging.send("new", "label", {"tags": ["one", "two"]})
    assert [m.payload for m in (await b.inbox.receive()).messages] == [{"tag": "one"}]


async def test_without_an_adapter_the_send_is_refused(brokers: BrokerFactory) -> None:
    old, _, _ = await trio(brokers, adapters=False)
    with pytest.raises(NotAccepted, match="accepts \\^2, and no adapter leads there"):
        await old.messaging.send("new", "note", {"text": "x"}, version="1.0.0")
    with pytest.raises(NoCommonVersion, match="register_adapter"):
        await old.messaging.send("new", "note", {"text": "x"})


async def test_an_idempotent_repeat_returns_the_adapted_result(brokers: BrokerFactory) -> None:
    old, _, new = await trio(brokers)
    first = await old.messaging.send("new", "note", {"text": "once"}, version="1.0.0", idempotency_key="once")
    again = await old.messaging.send("new", "note", {"text": "once"}, version="1.0.0", idempotency_key="once")
    assert again.duplicate
    assert (again.message_id, again.delivered_version, again.adapted_via) == (
        first.message_id,
        "2.0.0",
        first.adapted_via,
    )
    assert len((await new.inbox.receive()).messages) == 1


# --- broadcast through adapters ------------------------------------------------------------------


async def test_broadcast_gives_each_recipient_its_own_version(brokers: BrokerFactory) -> None:
    old, mid, new = await trio(brokers)
    result = await old.messaging.broadcast("note", {"text": "all", "level": "lo"}, version="1.0.0")
    assert result.recipient_count == 2
    assert result.skipped == []
    routes = {r.name: (r.delivered_version, r.adapted_via) for r in result.recipients}
    assert routes == {"mid": ("1.1.0", ["1.0.0", "1.1.0"]), "new": ("2.0.0", ["1.0.0", "1.1.0", "2.0.0"])}

    (to_mid,) = (await mid.inbox.receive()).messages
    (to_new,) = (await new.inbox.receive()).messages
    assert to_mid.payload == {"text": "all", "level": "lo", "lang": "en"}
    assert to_new.payload == {"body": "all", "level": "low", "lang": "en"}
    assert to_mid.message_id == to_new.message_id == result.message_id
    assert to_new.broadcast and to_new.sent_version == "1.0.0"

    (status,) = (await old.inbox.message_status([result.message_id])).messages
    assert {d.recipient: d.delivered_version for d in status.deliveries} == {"mid": "1.1.0", "new": "2.0.0"}


async def test_broadcast_skips_a_recipient_whose_transform_fails_with_the_reason(
    brokers: BrokerFactory,
) -> None:
    old, mid, new = await trio(brokers)
    result = await old.messaging.broadcast("note", {"text": "x", "extra": 1}, version="1.0.0")
    assert [r.name for r in result.recipients] == ["mid"]
    (skipped,) = result.skipped
    assert skipped.name == "new"
    assert skipped.reason.startswith("TRANSFORM_FAILED")
    assert "extra" in skipped.reason
    assert [m.payload for m in (await mid.inbox.receive()).messages] == [
        {"text": "x", "extra": 1, "lang": "en"}
    ]
    assert (await new.inbox.receive()).messages == []


async def test_broadcast_skips_a_recipient_no_adapter_reaches(brokers: BrokerFactory) -> None:
    old, _, _ = await trio(brokers, adapters=False)
    result = await old.messaging.broadcast("note", {"text": "x", "lang": "en"}, version="1.1.0")
    assert [r.name for r in result.recipients] == ["mid"]
    (skipped,) = result.skipped
    assert (skipped.name, skipped.reason) == (
        "new",
        "accepts note ^2; no adapter leads from 1.1.0 to a version there that allows broadcast",
    )
    assert await depth_of(old, "new") == 0


async def test_adapters_do_not_deliver_a_version_in_a_mode_it_does_not_allow(brokers: BrokerFactory) -> None:
    # note 2.0.0 allows point_to_point only: "a protocol without broadcast cannot be broadcast", so a
    # 1.x broadcast must not arrive at a 2.x agent as a 2.0.0 broadcast.
    old, _, new = await trio(brokers, v2_caps=["point_to_point"])
    result = await old.messaging.broadcast("note", {"text": "x"}, version="1.0.0")
    assert [r.name for r in result.recipients] == ["mid"]
    assert [s.name for s in result.skipped] == ["new"]
    assert "broadcast" in result.skipped[0].reason
    assert (await new.inbox.receive()).messages == []


async def test_adapters_do_not_turn_a_message_into_a_request_of_a_version_without_request_response(
    brokers: BrokerFactory,
) -> None:
    # The same rule for requests: 2.0.0 does not declare request_response, so a 2.x agent must not be
    # handed a 2.0.0 request it cannot know how to treat.
    old, new = await brokers(), await brokers()
    await old.catalog.register_protocol("quiz", "1.0.0", {"type": "object"}, ["request_response"])
    await old.catalog.register_protocol("quiz", "2.0.0", {"type": "object"}, ["point_to_point"])
    await old.catalog.register_adapter(
        "quiz", "1.0.0", "2.0.0", [{"op": "set_default", "path": "/v", "value": 2}]
    )
    await old.sessions.connect("old", speaks("quiz", "^1"))
    await new.sessions.connect("new", speaks("quiz", "^2"))
    with pytest.raises((CapabilityNotSupported, NotAccepted)):
        await old.requests.request("new", "quiz", {"q": "?"}, timeout_seconds=0)
    assert (await new.inbox.receive()).messages == []


# --- negotiate, compatibility_matrix, discover ---------------------------------------------------


async def test_negotiate_counts_versions_reachable_through_adapters(brokers: BrokerFactory) -> None:
    old, _, new = await trio(brokers)
    result = await old.sessions.negotiate("new", ["note"])
    assert result.compatible
    assert result.reasons == []
    assert result.agreed == {"note": "1.1.0"}
    paths = {(r.protocol, r.direction): r.path for r in result.adapted}
    assert paths == {("note", "to_peer"): ["1.1.0", "2.0.0"], ("note", "from_peer"): ["2.0.0", "1.1.0"]}
    # The agreement is remembered both ways: sends without version use it.
    assert (await old.messaging.send("new", "note", {"text": "t", "lang": "en"})).adapted_via == [
        "1.1.0",
        "2.0.0",
    ]
    assert (await new.messaging.send("old", "note", {"body": "b", "lang": "en"})).adapted_via == [
        "2.0.0",
        "1.1.0",
    ]


async def test_negotiate_with_adapters_one_way_only_is_not_compatible(brokers: BrokerFactory) -> None:
    old, new = await brokers(), await brokers()
    await note_versions(old, adapters=False)
    await old.catalog.register_adapter("note", "1.1.0", "2.0.0", UP_1_1)
    await old.sessions.connect("old", speaks("note", "^1.0"))
    await new.sessions.connect("new", speaks("note", "^2"))
    result = await old.sessions.negotiate("new", ["note"])
    assert not result.compatible
    assert "note" not in result.agreed
    assert [(r.direction, r.path) for r in result.adapted] == [("to_peer", ["1.1.0", "2.0.0"])]
    (reason,) = result.reasons
    assert "only one way" in reason


async def test_negotiate_prefers_a_common_version_to_adapters(brokers: BrokerFactory) -> None:
    old, _, _ = await trio(brokers)
    result = await old.sessions.negotiate("mid")
    assert result.compatible
    assert result.agreed == {"note": "1.1.0"}
    assert result.adapted == []


async def test_compatibility_matrix_shows_direct_adapted_and_none(brokers: BrokerFactory) -> None:
    old, _, _ = await trio(brokers)
    future = await brokers()
    await old.catalog.register_protocol("note", "3.0.0", {"type": "object"}, CAPS)
    await future.sessions.connect("future", speaks("note", "^3"))
    (table,) = (await old.catalog.compatibility_matrix("note")).protocols
    assert table.protocol == "note"
    assert sorted(table.sessions) == ["future", "mid", "new", "old"]
    pairs = {(p.sender, p.recipient): (p.mode, p.path) for p in table.pairs}
    assert len(pairs) == 12  # every ordered pair of four sessions
    assert pairs["old", "mid"] == ("direct", ["1.1.0"])
    assert pairs["mid", "old"] == ("direct", ["1.1.0"])
    assert pairs["old", "new"] == ("adapted", ["1.1.0", "2.0.0"])
    assert pairs["new", "old"] == ("adapted", ["2.0.0", "1.1.0"])
    assert pairs["new", "mid"] == ("adapted", ["2.0.0", "1.1.0"])
    assert pairs["future", "old"] == ("none", [])
    assert pairs["new", "future"] == ("none", [])


async def test_compatibility_matrix_leaves_out_disconnected_sessions_and_needs_a_session(
    brokers: BrokerFactory,
) -> None:
    old, mid, _ = await trio(brokers)
    await mid.sessions.disconnect()
    with pytest.raises(NotConnected):
        await mid.catalog.compatibility_matrix()
    matrix = await old.catalog.compatibility_matrix()
    (table,) = matrix.protocols
    assert sorted(table.sessions) == ["new", "old"]
    assert {(p.sender, p.recipient) for p in table.pairs} == {("old", "new"), ("new", "old")}
    assert (await old.catalog.compatibility_matrix("memo")).protocols[0].pairs == []


async def test_discover_lists_adapters_with_each_protocol_version(brokers: BrokerFactory) -> None:
    a = await brokers()
    await note_versions(a)
    found = {p.version: p.adapters for p in (await a.catalog.discover_protocols(name="note")).protocols}
    links = {v: sorted((x.from_version, x.to_version) for x in adapters) for v, adapters in found.items()}
    assert links == {
        "1.0.0": [("1.0.0", "1.1.0")],
        "1.1.0": [("1.0.0", "1.1.0"), ("1.1.0", "2.0.0"), ("2.0.0", "1.1.0")],
        "2.0.0": [("1.1.0", "2.0.0"), ("2.0.0", "1.1.0")],
    }
    (up,) = [x for x in found["2.0.0"] if x.from_version == "1.1.0"]
    assert up.steps == UP_1_1  # as the tool takes them: "from", not "from_"


# --- request / reply -----------------------------------------------------------------------------


async def asker_and_oracle(brokers: BrokerFactory) -> tuple[Broker, Broker]:
    asker, oracle = await brokers(), await brokers()
    await asker.catalog.register_protocol("ask", "1.0.0", ASK, ["request_response"], response_schema=ANSWER)
    await asker.sessions.connect("asker", speaks("ask", "^1"))
    await oracle.sessions.connect("oracle", speaks("ask", "^1"))
    return asker, oracle


async def test_request_and_reply_round_trip(brokers: BrokerFactory) -> None:
    asker, oracle = await asker_and_oracle(brokers)

    async def answer() -> None:
        (got,) = (await oracle.inbox.receive(wait_seconds=10)).messages
        assert (got.kind, got.payload, got.sender) == ("request", {"q": "6*7?"}, "asker")
        replied = await oracle.requests.reply(got.message_id, {"a": 42})
        assert (replied.request_id, replied.recipient, replied.status) == (
            got.message_id,
            "asker",
            "delivered",
        )

    with anyio.fail_after(15):
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer)
            result = await asker.requests.request("oracle", "ask", {"q": "6*7?"}, timeout_seconds=10)
    assert result.status == "answered"
    assert result.reply is not None
    assert (result.reply.kind, result.reply.payload) == ("reply", {"a": 42})
    assert (result.reply.correlation_id, result.reply.sender) == (result.request_id, "oracle")
    # The request was acked with the reply, and the reply was handed over once.
    (status,) = (await asker.inbox.message_status([result.request_id])).messages
    assert [d.state for d in status.deliveries] == ["acked"]
    assert (await oracle.inbox.receive()).messages == []
    assert (await asker.inbox.receive()).messages == []


async def test_a_reply_that_fails_the_response_schema_is_refused(brokers: BrokerFactory) -> None:
    asker, oracle = await asker_and_oracle(brokers)
    pending = await asker.requests.request("oracle", "ask", {"q": "?"}, timeout_seconds=0)
    (got,) = (await oracle.inbox.receive()).messages
    with pytest.raises(PayloadInvalid, match="/a") as info:
        await oracle.requests.reply(got.message_id, {"a": "forty-two"})
    assert code_of(info) == "PAYLOAD_INVALID"
    assert (await asker.requests.await_reply(pending.request_id, 0)).status == "pending"
    await oracle.requests.reply(got.message_id, {"a": 42})
    answered = await asker.requests.await_reply(pending.request_id, 5)
    assert answered.reply is not None and answered.reply.payload == {"a": 42}


async def test_reply_to_an_unknown_or_foreign_message_is_refused(brokers: BrokerFactory) -> None:
    asker, oracle = await asker_and_oracle(brokers)
    snoop = await brokers()
    await snoop.sessions.connect("snoop", speaks("ask", "^1"))
    pending = await asker.requests.request("oracle", "ask", {"q": "?"}, timeout_seconds=0)
    with pytest.raises(UnknownMessage) as info:
        await oracle.requests.reply("00000000-0000-0000-0000-000000000000", {"a": 1})
    assert code_of(info) == "UNKNOWN_MESSAGE"
    with pytest.raises(UnknownMessage):  # a request to someone else
        await snoop.requests.reply(pending.request_id, {"a": 1})
    with pytest.raises(UnknownMessage):  # one's own request
        await asker.requests.reply(pending.request_id, {"a": 1})
    assert (await asker.requests.await_reply(pending.request_id, 0)).status == "pending"


async def test_reply_to_a_message_that_is_not_a_request_is_refused(brokers: BrokerFactory) -> None:
    asker, oracle = await brokers(), await brokers()
    await asker.catalog.register_protocol("ask", "1.0.0", ASK, ["request_response", "point_to_point"])
    await asker.sessions.connect("asker", speaks("ask", "^1"))
    await oracle.sessions.connect("oracle", speaks("ask", "^1"))
    sent = await asker.messaging.send("oracle", "ask", {"q": "fyi"})
    (got,) = (await oracle.inbox.receive()).messages
    assert got.kind == "message"
    with pytest.raises(InvalidArgument, match="not a request; use send") as info:
        await oracle.requests.reply(sent.message_id, {"a": 1})
    assert code_of(info) == "INVALID_ARGUMENT"


async def test_a_request_is_answered_once(brokers: BrokerFactory) -> None:
    asker, oracle = await asker_and_oracle(brokers)
    pending = await asker.requests.request("oracle", "ask", {"q": "?"}, timeout_seconds=0)
    (got,) = (await oracle.inbox.receive()).messages
    await oracle.requests.reply(got.message_id, {"a": 1})
    with pytest.raises(InvalidArgument, match="one reply"):
        await oracle.requests.reply(got.message_id, {"a": 2})
    answered = await asker.requests.await_reply(pending.request_id, 5)
    assert answered.reply is not None and answered.reply.payload == {"a": 1}
    # taken already: await_reply still answers with it, it is not lost
    assert (await asker.requests.await_reply(pending.request_id, 0)).status == "answered"


async def test_a_request_must_be_received_before_it_is_answered(brokers: BrokerFactory) -> None:
    asker, oracle = await asker_and_oracle(brokers)
    pending = await asker.requests.request("oracle", "ask", {"q": "?"}, timeout_seconds=0)
    with pytest.raises(InvalidArgument, match="receive request"):
        await oracle.requests.reply(pending.request_id, {"a": 1})


async def test_a_timed_out_request_can_be_awaited_again(brokers: BrokerFactory) -> None:
    asker, oracle = await asker_and_oracle(brokers)
    with anyio.fail_after(10):
        pending = await asker.requests.request("oracle", "ask", {"q": "slow"}, timeout_seconds=0.2)
    assert pending.status == "pending"
    assert pending.reply is None
    assert "await_reply" in pending.message
    (got,) = (await oracle.inbox.receive()).messages
    assert got.message_id == pending.request_id

    async def answer_later() -> None:
        await oracle.requests.reply(got.message_id, {"a": 7})

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(answer_later)
            answered = await asker.requests.await_reply(pending.request_id, 10)
    assert answered.status == "answered"
    assert answered.reply is not None and answered.reply.payload == {"a": 7}


async def test_await_reply_only_for_own_requests(brokers: BrokerFactory) -> None:
    asker, oracle = await asker_and_oracle(brokers)
    pending = await asker.requests.request("oracle", "ask", {"q": "?"}, timeout_seconds=0)
    with pytest.raises(UnknownMessage):
        await oracle.requests.await_reply(pending.request_id, 0)
    with pytest.raises(UnknownMessage):
        await asker.requests.await_reply("no-such-request", 0)
    with pytest.raises(InvalidArgument):
        await asker.requests.await_reply(pending.request_id, 61)


async def test_a_requester_that_went_away_gets_its_reply_when_it_resumes(
    brokers: BrokerFactory, settings: Settings
) -> None:
    oracle = await brokers()
    await oracle.catalog.register_protocol("ask", "1.0.0", ASK, ["request_response"], response_schema=ANSWER)
    await oracle.sessions.connect("oracle", speaks("ask", "^1"))
    async with Broker.running(settings) as first:
        await first.sessions.connect("asker", speaks("ask", "^1"))
        pending = await first.requests.request("oracle", "ask", {"q": "later?"}, timeout_seconds=0)
    (got,) = (await oracle.inbox.receive()).messages
    replied = await oracle.requests.reply(got.message_id, {"a": 1})
    assert replied.status == "queued"
    again = await brokers()
    assert (await again.sessions.connect("asker", speaks("ask", "^1"))).resumed
    answered = await again.requests.await_reply(pending.request_id, 5)
    assert answered.reply is not None and answered.reply.payload == {"a": 1}


async def test_request_needs_the_request_response_capability(brokers: BrokerFactory) -> None:
    old, _, new = await trio(brokers)
    with pytest.raises(CapabilityNotSupported, match="request_response") as info:
        await old.requests.request("new", "note", {"text": "?"}, timeout_seconds=0)
    assert code_of(info) == "CAPABILITY_NOT_SUPPORTED"
    assert (await new.inbox.receive()).messages == []


async def test_response_schema_needs_request_response(brokers: BrokerFactory) -> None:
    a = await brokers()
    with pytest.raises(InvalidArgument, match="request_response"):
        await a.catalog.register_protocol("ask", "1.0.0", ASK, ["point_to_point"], response_schema=ANSWER)
    assert (await a.catalog.discover_protocols()).protocols == []


async def test_a_request_across_versions_is_adapted_and_the_reply_checked_for_the_requester(
    brokers: BrokerFactory,
) -> None:
    asker, oracle = await brokers(), await brokers()
    caps = ["request_response"]
    await asker.catalog.register_protocol("ask", "1.0.0", ASK, caps, response_schema=ANSWER)
    ask_2 = {"type": "object", "properties": {"question": {"type": "string"}}, "required": ["question"]}
    await asker.catalog.register_protocol("ask", "2.0.0", ask_2, caps, response_schema=ANSWER)
    await asker.catalog.register_adapter(
        "ask", "1.0.0", "2.0.0", [{"op": "rename", "from": "/q", "to": "/question"}]
    )
    await asker.sessions.connect("asker", speaks("ask", "^1"))
    await oracle.sessions.connect("oracle", speaks("ask", "^2"))
    pending = await asker.requests.request("oracle", "ask", {"q": "6*7?"}, timeout_seconds=0)
    (got,) = (await oracle.inbox.receive()).messages
    assert (got.kind, got.version, got.sent_version, got.payload) == (
        "request",
        "2.0.0",
        "1.0.0",
        {"question": "6*7?"},
    )
    await oracle.requests.reply(got.message_id, {"a": 42})
    answered = await asker.requests.await_reply(pending.request_id, 5)
    assert answered.reply is not None
    assert (answered.reply.version, answered.reply.payload) == ("1.0.0", {"a": 42})
