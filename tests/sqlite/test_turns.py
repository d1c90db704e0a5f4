"""Writers take turns on a lock file: a wait sleeps until the holder lets go, and can be given up."""

from __future__ import annotations

import threading
from pathlib import Path

from mcp_broker.store.sqlite.turns import Turns


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
