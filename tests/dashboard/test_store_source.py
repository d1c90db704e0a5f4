"""The broker's Source on a real SQLite file, with brokers in this process: reads, paging, waits, actions.

And the figures in pure code: kinds, first leases and their latency, the depth curve walked back from now.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import anyio
import pytest
from conftest import BrokerFactory, Clock

from mcp_broker.config import Settings
from mcp_broker.dashboard import store_source
from mcp_broker.dashboard.figures import Tally, Window, kind_of
from mcp_broker.dashboard.metrics import LATENCY_BOUNDS
from mcp_broker.dashboard.source import EventKind, Source
from mcp_broker.dashboard.store_source import open_store_source
from mcp_broker.store.contract import Event
from mcp_broker.store.contract import EventKind as StoreKind

pytestmark = pytest.mark.anyio
CHAT: dict[str, Any] = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
SPEAKS = [{"name": "chat", "versions": "^1"}]


async def pair(brokers: BrokerFactory, **overrides: Any) -> tuple[Any, Any]:
    alice, bob = await brokers(**overrides), await brokers(**overrides)
    await alice.catalog.register_protocol("chat", "1.0.0", CHAT, ["point_to_point", "broadcast"])
    await alice.sessions.connect("alice", SPEAKS, None, None)
    await bob.sessions.connect("bob", SPEAKS, None, None)
    return alice, bob


async def test_it_is_a_source_and_reads_sessions_traffic_and_stories(
    brokers: BrokerFactory, settings: Settings, clock: Clock
) -> None:
    alice, bob = await pair(brokers)
    async with open_store_source(settings, clock=clock.time) as source:
        assert isinstance(source, Source)
        sent = await alice.messaging.send("bob", "chat", {"text": "hi"})
        assert [(s.name, s.status, s.queue_depth) for s in await source.sessions()] == [
            ("alice", "active", 0),
            ("bob", "active", 1),
        ]
        page = await source.traffic()
        assert [(e.kind, e.sender, e.recipient) for e in page.events] == [(EventKind.SENT, "alice", "bob")]

        (got,) = (await bob.inbox.receive(wait_seconds=0)).messages
        await bob.inbox.ack([got.message_id])
        story = await source.message_story(sent.message_id)
        assert story is not None and story.payload == {"text": "hi"} and not story.broadcast
        assert [e.kind for e in story.events] == [EventKind.SENT, EventKind.LEASED, EventKind.ACKED]
        assert [(d.recipient, d.state, d.attempts) for d in story.deliveries] == [("bob", "acked", 1)]
        assert await source.message_story("no-such-message") is None


async def test_traffic_pages_filter_and_move_the_cursor_past_what_they_skip(
    brokers: BrokerFactory, settings: Settings, clock: Clock
) -> None:
    alice, _ = await pair(brokers)
    async with open_store_source(settings, clock=clock.time) as source:
        for n in range(5):
            await alice.messaging.send("bob", "chat", {"text": str(n)})
        first = await source.traffic(limit=2)
        assert len(first.events) == 2  # the latest two
        assert (await source.traffic(after=first.cursor)).events == ()
        nobody = await source.traffic(session="nobody")
        assert nobody.events == () and nobody.cursor == first.cursor
        assert len((await source.traffic(session="bob")).events) == 5
        assert (await source.traffic(protocol="other")).events == ()
        # A cursor from some other store reads as no cursor.
        assert len((await source.traffic(after="bm90LW91cnM=", limit=3)).events) == 3


async def test_a_wait_ends_on_traffic_from_another_broker_and_times_out_without(
    brokers: BrokerFactory, settings: Settings, clock: Clock
) -> None:
    alice, _ = await pair(brokers)
    async with open_store_source(settings, clock=clock.time) as source:
        cursor = (await source.traffic()).cursor
        assert await source.wait_for_change(cursor, 0.05) is False
        woke: list[float] = []

        async def wait() -> None:
            start = anyio.current_time()
            assert await source.wait_for_change(cursor, 10)
            woke.append(anyio.current_time() - start)

        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(wait)
                await anyio.sleep(0.05)
                await alice.messaging.send("bob", "chat", {"text": "wake"})
        assert woke[0] < store_source.RECHECK_SECONDS  # the notifier woke it, not the slow recheck
        assert await source.wait_for_change(cursor, 0)  # traffic after the cursor is there already


async def test_replay_and_purge_of_dead_letters(
    brokers: BrokerFactory, settings: Settings, clock: Clock
) -> None:
    alice, bob = await pair(brokers)
    async with open_store_source(settings, clock=clock.time) as source:
        kept = await alice.messaging.send("bob", "chat", {"text": "late"}, ttl_seconds=1)
        gone = await alice.messaging.send("bob", "chat", {"text": "later"}, ttl_seconds=1)
        clock.advance(2)
        assert (await bob.inbox.receive(wait_seconds=0)).messages == []
        dead = await source.dead_letters()
        assert {(d.message_id, d.reason, d.recipient) for d in dead} == {
            (kept.message_id, "expired", "bob"),
            (gone.message_id, "expired", "bob"),
        }
        assert [o.status for o in await source.replay([kept.message_id, "unknown-id"])] == [
            "requeued",
            "unknown",
        ]
        assert [o.status for o in await source.purge([gone.message_id])] == ["purged"]
        assert await source.dead_letters() == []
        (again,) = (await bob.inbox.receive(wait_seconds=0)).messages
        assert again.message_id == kept.message_id
        totals = await source.totals(LATENCY_BOUNDS)
        assert totals.events[("chat", EventKind.EXPIRED)] == 2
        assert totals.events[("chat", EventKind.REPLAYED)] == 1
        assert totals.events[("chat", EventKind.PURGED)] == 1


async def test_figures_page_through_the_log_and_totals_keep_running(
    brokers: BrokerFactory, settings: Settings, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_source, "PAGE", 3)
    alice, bob = await pair(brokers)
    async with open_store_source(settings, clock=clock.time) as source:
        for n in range(4):
            await alice.messaging.send("bob", "chat", {"text": str(n)})
        assert (await source.totals(LATENCY_BOUNDS)).events[("chat", EventKind.SENT)] == 4
        received = (await bob.inbox.receive(max_messages=10, wait_seconds=0)).messages
        await bob.inbox.ack([m.message_id for m in received[:2]])
        totals = await source.totals(LATENCY_BOUNDS)
        assert totals.events[("chat", EventKind.SENT)] == 4 and totals.delivered == {"chat": 4}
        assert sum(totals.latency.counts) == 4 and totals.events[("chat", EventKind.ACKED)] == 2

        stats = await source.stats(clock.time() - 3600)
        assert sum(m.sent_by_protocol.get("chat", 0) for m in stats.per_minute) == 4
        assert stats.queue_depth[-1].by_session == {"bob": 2}
        assert stats.queue_depth[0].by_session == {"bob": 0}
        assert sum(p.count for p in stats.latency) == 4 and not stats.partial

        monkeypatch.setattr(store_source, "STATS_MAX_EVENTS", 5)
        assert (await source.stats(clock.time() - 3600)).partial


def event(kind: StoreKind, at: float, *, attempt: int = 0, reason: str | None = None, **fields: Any) -> Event:
    values: dict[str, Any] = {
        "cursor": "c",
        "message_id": "m1",
        "sender_id": "a",
        "sender_name": "alice",
        "recipient_id": "b",
        "recipient_name": "bob",
        "protocol": "chat",
        "version": "1.0.0",
        "delivered_version": "1.0.0",
        "adapted_via": None,
        "created_at": 1000.0,
    }
    values.update(fields)
    return Event(at=at, kind=kind, attempt=attempt, reason=reason, **values)


def test_kinds_latency_and_the_depth_curve() -> None:
    assert kind_of(event(StoreKind.dead_lettered, 1, reason="expired")) is EventKind.EXPIRED
    assert kind_of(event(StoreKind.dead_lettered, 1, reason="max_attempts")) is EventKind.DEAD_LETTERED
    log = [
        event(StoreKind.sent, 1000.0),
        event(StoreKind.leased, 1000.5, attempt=1),
        event(StoreKind.released, 1001.0, attempt=1),
        event(StoreKind.leased, 1002.0, attempt=2),
        event(StoreKind.dead_lettered, 1003.0, attempt=2, reason="max_attempts"),
        event(StoreKind.replayed, 1100.0),
        event(StoreKind.leased, 1130.0, attempt=1),  # a first lease again, but not timed from creation
        event(StoreKind.acked, 1131.0, attempt=1),
        event(StoreKind.sent, 1140.0, message_id="m2", created_at=1140.0),
    ]
    tally = Tally((0.1, 1.0))
    tally.add(log)
    totals = tally.totals()
    assert totals.delivered == {"chat": 2}
    assert totals.latency.counts == (0, 1, 0) and totals.latency.total_seconds == pytest.approx(0.5)
    assert totals.events[("chat", EventKind.LEASED)] == 3

    window = Window(since=960.0, now=1150.0)  # minutes 960, 1020, 1080, 1140
    window.add(log)
    stats = window.stats({"bob": 1})
    assert [m.minute for m in stats.per_minute] == [960, 1020, 1080, 1140]
    assert [m.sent_by_protocol for m in stats.per_minute] == [{"chat": 1}, {}, {}, {"chat": 1}]
    assert [s.by_session["bob"] for s in stats.queue_depth] == [0, 0, 0, 1]
    assert [(p.minute, p.count, p.p50) for p in stats.latency] == [(960, 1, 0.5)]
    assert replace(stats, partial=True).partial
