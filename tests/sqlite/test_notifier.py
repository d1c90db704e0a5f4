"""``BellNotifier``: wake-ups between broker processes on one machine, one doorbell per bound session.

Two notifiers on one database path stand for two broker processes.
"""

from __future__ import annotations

import resource
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from mcp_broker.store.sqlite.notifier import BellNotifier

pytestmark = pytest.mark.anyio

QUIET = 0.2  # how long a wake-up that should not come is given to come anyway


@pytest.fixture
async def pair(db_path: Path) -> AsyncIterator[tuple[BellNotifier, BellNotifier]]:
    """A listening notifier (the receiver's process) and another one to ring it from."""
    receiver, sender = BellNotifier(db_path), BellNotifier(db_path)
    await receiver.open()
    await sender.open()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(receiver.listen)
            yield receiver, sender
            tg.cancel_scope.cancel()
    finally:
        await sender.close()
        await receiver.close()


async def woken(notifier: BellNotifier, ring: BellNotifier, session_ids: list[str], within: float) -> bool:
    """Whether ``ring.notify(session_ids)`` wakes a ticket of ``notifier`` taken before it, in time."""
    ticket = notifier.ticket()
    ring.notify(session_ids)
    with anyio.move_on_after(within):
        await ticket.wait()
        return True
    return False


async def test_a_notify_wakes_the_process_holding_the_session(
    pair: tuple[BellNotifier, BellNotifier],
) -> None:
    receiver, sender = pair
    await receiver.bind("S")
    assert await woken(receiver, sender, ["S"], within=1)
    assert await woken(receiver, sender, ["other", "S"], within=1)  # among others, and again


async def test_rebinding_moves_the_bell(pair: tuple[BellNotifier, BellNotifier]) -> None:
    receiver, sender = pair
    await receiver.bind("S")
    await receiver.bind("T")
    assert not await woken(receiver, sender, ["S"], within=QUIET)
    assert await woken(receiver, sender, ["T"], within=1)
    await receiver.bind(None)
    assert not await woken(receiver, sender, ["T"], within=QUIET)


async def test_a_notify_to_a_session_no_one_holds_does_nothing(
    pair: tuple[BellNotifier, BellNotifier],
) -> None:
    receiver, sender = pair
    await receiver.bind("S")
    assert not await woken(receiver, sender, ["nobody", "nobody-else"], within=QUIET)  # and did not fail
    assert await woken(receiver, sender, ["S"], within=1)  # nor break the ringer


async def test_a_notify_to_the_own_session_wakes_this_process(
    pair: tuple[BellNotifier, BellNotifier],
) -> None:
    receiver, _ = pair
    await receiver.bind("S")
    assert await woken(receiver, receiver, ["S"], within=1)


async def test_a_watcher_wakes_on_every_sessions_traffic(pair: tuple[BellNotifier, BellNotifier]) -> None:
    watcher, sender = pair
    await watcher.watch()  # bound to no session: follows everyone's
    assert await woken(watcher, sender, ["S"], within=1)
    assert await woken(watcher, sender, [], within=1)  # an ack or a lease: watchers alone
    await watcher.bind("T")  # a session of its own as well
    assert await woken(watcher, sender, ["T"], within=1)


async def test_with_no_watcher_a_notify_rings_only_the_sessions(
    pair: tuple[BellNotifier, BellNotifier],
) -> None:
    receiver, sender = pair
    await receiver.bind("S")
    assert not await woken(receiver, sender, [], within=QUIET)


@pytest.fixture
def descriptors() -> Iterator[int]:
    """Sockets the test may open: two per receiver. The soft limit is raised where the hard one
    allows (it is often 1,024 against a higher hard limit), and put back afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2048 if hard == resource.RLIM_INFINITY else min(2048, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 256  # what the rest of the run holds
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def test_a_notify_to_hundreds_of_sessions_wakes_every_one(db_path: Path, descriptors: int) -> None:
    """A broadcast's notify: more rings than one socket's buffer holds unread (some 280 on Linux)."""
    receivers = [BellNotifier(db_path) for _ in range(min(600, descriptors // 2))]
    sender = BellNotifier(db_path)
    async with anyio.create_task_group() as tg:
        for n, receiver in enumerate(receivers):
            await receiver.open()
            await receiver.bind(f"S{n}")
            tg.start_soon(receiver.listen)
        await sender.open()
        tickets = [receiver.ticket() for receiver in receivers]
        sender.notify([f"S{n}" for n in range(len(receivers))])
        with anyio.move_on_after(10):
            for ticket in tickets:
                await ticket.wait()
        woke = sum(ticket.is_set() for ticket in tickets)
        tg.cancel_scope.cancel()
    for notifier in (sender, *receivers):
        await notifier.close()
    assert woke == len(receivers)
