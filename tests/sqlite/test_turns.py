"""Writers take turns on a lock file: a wait sleeps until the holder lets go, and can be given up."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_broker.errors import Overloaded
from mcp_broker.store.sqlite.turns import Turns, turns_path

CHAT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
CHAT = [{"name": "chat", "versions": ">=1.0,<2"}]


def test_a_turn_is_waited_for_and_given_up_after_its_deadline(tmp_path: Path) -> None:
    path = tmp_path / "db.writers"
    holder, waiter = Turns(path), Turns(path)
    try:
        assert holder.take(1.0)
        assert not waiter.try_take()
        assert not waiter.take(0.2)  # given up: the holder keeps its turn
        threading.Timer(0.2, holder.give).start()
        assert waiter.take(5.0)  # the abandoned wait let go, and this one got the turn after the holder
        assert not holder.try_take()
        waiter.give()
        assert holder.try_take()
        holder.give_quick()
    finally:
        holder.close()
        waiter.close()


def test_a_quick_try_and_a_queued_wait_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    turns = Turns(tmp_path / "db.writers")
    try:
        assert turns.try_take()
        assert not turns.take(0.1)
        turns.give_quick()
        assert turns.take(1.0)
        assert not turns.try_take()
        turns.give()
    finally:
        turns.close()


@pytest.mark.anyio
async def test_a_write_that_cannot_get_its_turn_is_refused_early_as_overloaded(
    brokers: Any, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mcp_broker.store.sqlite.base.TURN_BUDGET", 0.3)
    broker = await brokers()
    await broker.catalog.register_protocol("chat", "1.0.0", CHAT_SCHEMA, ["point_to_point"])
    await broker.sessions.connect("writer", CHAT)
    other_writer = Turns(turns_path(db_path))  # another process's write, holding its turn
    try:
        assert other_writer.take(1.0)
        with anyio.fail_after(10), pytest.raises(Overloaded) as refused:
            await broker.messaging.send("writer", "chat", {"text": "past capacity"})
        assert str(refused.value).startswith("OVERLOADED: ")
        wait = refused.value.details["retry_after_seconds"]
        assert 0.15 <= wait <= 0.45 and f"Retry in {wait:g} s" in str(refused.value)
        other_writer.give()
        sent = await broker.messaging.send("writer", "chat", {"text": "after"})  # its turn came
        assert sent.status == "delivered"
    finally:
        other_writer.close()
    got = await broker.inbox.receive(max_messages=10)
    assert [m.payload for m in got.messages] == [{"text": "after"}]  # nothing of the refused one
