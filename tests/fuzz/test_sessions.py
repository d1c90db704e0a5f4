"""Cross-session attempts between real broker processes: one session must never act as, read or change
another's, whatever ids it passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fuzz.harness import CODES, brokers, lead

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}}
SPEAKS = [{"name": "chat", "versions": "*"}]


def _refusal(result: dict[str, object]) -> str:
    assert result.get("isError"), result
    text = str(result["content"][0]["text"])  # type: ignore[index]
    assert text.split(":", 1)[0] in CODES, text
    return text


def test_foreign_message_ids_are_refused_and_change_nothing(tmp_path: Path) -> None:
    with brokers(tmp_path / "broker.db", 3) as (mallory, alice, bob):
        alice.ok(
            "register_protocol",
            name="chat",
            version="1.0.0",
            schema=SCHEMA,
            capabilities=["point_to_point", "request_response"],
        )
        for broker, name in ((mallory, "mallory"), (alice, "alice"), (bob, "bob")):
            broker.ok("connect", name=name, protocols=SPEAKS)
        foreign = [
            alice.ok("send", to="bob", protocol="chat", payload={"text": f"secret {i}"})["message_id"]
            for i in range(3)
        ]
        for tool, arguments in [
            ("ack", {"message_ids": foreign}),
            ("release", {"message_ids": foreign}),
            ("replay_dead_letters", {"message_ids": foreign}),
            ("reply", {"message_id": foreign[-1], "payload": {"text": "forged"}}),
            ("await_reply", {"message_id": foreign[-1], "timeout_seconds": 0}),
        ]:
            result = mallory.call(tool, **arguments)
            text = json.dumps(result)
            assert "secret" not in text, (tool, text)
            # An answer per id is fine, as long as it reveals and changes nothing.
            if not result.get("isError"):
                assert "leased" not in text and "acked" not in text, (tool, text)
        status = mallory.call("message_status", message_ids=foreign)
        assert "secret" not in json.dumps(status)
        assert not mallory.ok("receive", max_messages=100)["messages"]
        got = bob.ok("receive", max_messages=100)["messages"]
        assert sorted(m["payload"]["text"] for m in got if m["sender"] == "alice") == [
            "secret 0",
            "secret 1",
            "secret 2",
        ]
        assert all(m["delivery_attempt"] == 1 for m in got)


@pytest.mark.parametrize("case", [lead("squat-a-live-session-id")])
def test_a_name_equal_to_a_live_session_id_is_refused(tmp_path: Path, case: str) -> None:
    with brokers(tmp_path / "broker.db", 3) as (squatter, victim, third):
        victim.ok(
            "register_protocol", name="chat", version="1.0.0", schema=SCHEMA, capabilities=["point_to_point"]
        )
        victim_id = victim.ok("connect", name="vic", protocols=SPEAKS)["session_id"]
        third.ok("connect", name="third", protocols=SPEAKS)
        text = _refusal(squatter.call("connect", name=victim_id, protocols=SPEAKS))
        assert text.startswith("INVALID_ARGUMENT"), text
        third.ok("send", to=victim_id, protocol="chat", payload={"text": "for vic"})
        assert [m["payload"] for m in victim.ok("receive")["messages"]] == [{"text": "for vic"}]


@pytest.mark.parametrize("case", [lead("stale-long-poll")])
def test_a_long_poll_stops_acting_for_a_session_its_process_gave_up(tmp_path: Path, case: str) -> None:
    with brokers(tmp_path / "broker.db", 3) as (first, second, sender):
        sender.ok(
            "register_protocol", name="chat", version="1.0.0", schema=SCHEMA, capabilities=["point_to_point"]
        )
        sender.ok("connect", name="sender", protocols=SPEAKS)
        first.ok("connect", name="t", protocols=SPEAKS)
        poll = first.send("tools/call", {"name": "receive", "arguments": {"wait_seconds": 8}})
        first.ok("disconnect")
        first.ok("connect", name="t-elsewhere", protocols=SPEAKS)
        second.ok("connect", name="t", protocols=SPEAKS)  # resumes the session first gave up
        sender.ok("send", to="t", protocol="chat", payload={"text": "for the new t"})
        stale = first.wait(poll)  # the old poll ends first: it must not have taken the message
        assert stale is not None, "the old long-poll was not answered"
        assert not (stale["result"].get("structuredContent") or {}).get("messages"), stale
        got = second.ok("receive", wait_seconds=2)["messages"]
        assert [m["payload"] for m in got] == [{"text": "for the new t"}]


@pytest.mark.parametrize("case", [lead("quiet-resource-refusals")])
def test_resource_refusals_are_answers_logged_without_traceback(tmp_path: Path, case: str) -> None:
    with brokers(tmp_path / "broker.db", 1) as (broker,):
        for uri in ("broker://protocols/nope/1.0.0", "broker://inbox", "broker://nothing"):
            answer = broker.request("resources/read", {"uri": uri})
            assert "error" in answer, answer
            assert "Traceback" not in answer["error"]["message"]
        broker.request("ping")
        assert "Traceback" not in broker.stderr, broker.stderr[-2000:]
