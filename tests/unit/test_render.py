"""The people commands' readable output: tables show text as typed, tail lines and --since parse."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from rich.console import Console

from mcp_broker.ops import render, tail
from mcp_broker.store.contract import Event, EventKind


def printed(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(renderable)
    return out.getvalue()


def message(payload: object, **extra: object) -> dict[str, object]:
    return {
        "message_id": "m1",
        "sender": "author",
        "protocol": "chat",
        "version": "1.0.0",
        "state": "queued",
        "reason": None,
        "attempts": 0,
        "created_at": "2026-01-02T03:04:05.000Z",
        "payload": payload,
        **extra,
    }


def test_payloads_are_shown_as_typed_and_neutralised() -> None:
    text = printed(
        render.inbox({"session": "me", "messages": [message({"t": "[bold red]x[/] \u202eevil\nnext"})]})
    )
    assert "[bold red]x[/]" in text  # rich markup is not interpreted
    assert "\u202e" not in text and "\\u202e" in text  # a bidi override is made visible
    assert "\\nnext" in text


def test_dead_letters_show_the_reason_and_recipient() -> None:
    data = {
        "dead_letters": [message({"t": 1}, state="dead_lettered", reason="expired", recipient="rev")],
        "next_cursor": "abc",
    }
    text = printed(render.dead_letters(data))
    assert "expired" in text and "rev" in text and "--cursor abc" in text
    assert (
        printed(render.dead_letters({"dead_letters": [], "next_cursor": None})).strip() == "no dead letters"
    )


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "-"), (3.25, "3.2s"), (42, "42s"), (303, "5m 3s"), (7800, "2h 10m"), (273600, "3d 4h")],
)
def test_age(seconds: float | None, shown: str) -> None:
    assert render.age(seconds) == shown


def test_since_takes_durations_and_iso_times() -> None:
    now = 1_000_000.0
    assert tail.parse_since("10m", now) == now - 600
    assert tail.parse_since("1.5h", now) == now - 5400
    assert tail.parse_since("2d", now) == now - 172800
    assert (
        tail.parse_since("2026-01-02T03:04:05Z", now) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    )
    assert (
        tail.parse_since("2026-01-02T03:04:05", now) == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    )
    with pytest.raises(ValueError, match="--since takes"):
        tail.parse_since("yesterday", now)


def test_a_tail_line_says_what_happened_to_whom() -> None:
    event = Event(
        cursor="c",
        at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC).timestamp(),
        kind=EventKind.dead_lettered,
        message_id="m1",
        sender_id="a",
        sender_name="author",
        recipient_id="r",
        recipient_name="reviewer",
        protocol="review",
        version="2.0.0",
        delivered_version="1.0.0",
        adapted_via="2.0.0>1.0.0",
        attempt=5,
        reason="max_attempts",
        created_at=0.0,
    )
    assert tail.line(event) == (
        "03:04:05.678  dead_lettered author → reviewer  review 2.0.0→1.0.0  m1"
        "  (attempt 5, via 2.0.0>1.0.0, max_attempts)"
    )
