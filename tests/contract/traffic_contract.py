"""The contract's traffic part: the event log, the overview, and dead letters across sessions.

Mixed into ``StoreContract``, so every engine runs it unchanged.
"""

from __future__ import annotations

import pytest

from mcp_broker.store.contract import Event, EventKind, EventQuery, SessionRow, Store

from .store_contract import T0, connect, lease, message, send


def kinds(page_events: list[Event]) -> list[tuple[str, str]]:
    return [(e.kind.value, e.recipient_name) for e in page_events]


class TrafficContract:
    async def test_every_state_change_appends_one_event(self, store: Store) -> None:
        alice, bob = await connect(store, "alice"), await connect(store, "bob")
        m = message(alice.id)
        await send(store, m, bob.id)
        await lease(store, bob, now=T0 + 1)
        await store.requeue(bob.id, [m.id], now=T0 + 2, from_states=("leased",), reset_attempts=False)
        await lease(store, bob, now=T0 + 3)
        await store.ack(bob.id, [m.id], T0 + 4)
        page = await store.events(EventQuery(message_id=m.id))
        assert kinds(page.events) == [
            ("sent", "bob"),
            ("leased", "bob"),
            ("released", "bob"),
            ("leased", "bob"),
            ("acked", "bob"),
        ]
        first = page.events[0]
        assert (first.sender_name, first.protocol, first.version, first.delivered_version) == (
            "alice",
            "chat",
            "1.0.0",
            "1.0.0",
        )
        assert [e.attempt for e in page.events] == [0, 1, 0, 2, 2]
        assert [e.at for e in page.events] == [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4]

    async def test_dead_letters_replay_and_purge_are_events_with_reasons(self, store: Store) -> None:
        alice, bob = await connect(store, "alice"), await connect(store, "bob")
        m = message(alice.id, expires_at=T0 + 5)
        await send(store, m, bob.id)
        await lease(store, bob, now=T0 + 10)
        assert await store.replay_dead([m.id], now=T0 + 11, max_inbox=10) == {m.id: 1}
        await lease(store, bob, now=T0 + 12, max_attempts=1)
        await lease(store, bob, now=T0 + 100, max_attempts=1)  # its one attempt ran out
        assert await store.purge_dead([m.id], now=T0 + 101) == {m.id: 1}
        assert await store.purge_dead([m.id], now=T0 + 102) == {m.id: 0}
        events = (await store.events(EventQuery(message_id=m.id))).events
        assert [(e.kind, e.reason) for e in events] == [
            (EventKind.sent, None),
            (EventKind.dead_lettered, "expired"),
            (EventKind.replayed, None),
            (EventKind.leased, None),
            (EventKind.dead_lettered, "max_attempts"),
            (EventKind.purged, None),
        ]
        assert (await store.dead_letters(bob.id, limit=10, cursor=None)).rows == []

    async def test_events_page_after_a_cursor_and_filter(self, store: Store) -> None:
        alice, bob, carol = [await connect(store, n) for n in ("alice", "bob", "carol")]
        assert (await store.events(EventQuery())).cursor is None  # nothing yet
        sent = []
        for n in range(5):
            m = message(alice.id, n, at=T0 + n)
            sent.append(m.id)
            await send(store, m, bob.id if n % 2 else carol.id)
        latest = await store.events(EventQuery(limit=2))
        assert [e.message_id for e in latest.events] == sent[3:]  # the latest, oldest first
        head = latest.cursor
        assert head is not None
        assert (await store.events(EventQuery(after=head))).events == []
        m = message(bob.id, 9, at=T0 + 9)
        await send(store, m, alice.id)
        after = await store.events(EventQuery(after=head))
        assert [e.message_id for e in after.events] == [m.id]
        assert (await store.events(EventQuery(after=after.cursor))).events == []
        first_page = await store.events(EventQuery(since=T0, limit=2))
        assert [e.message_id for e in first_page.events] == sent[:2]
        rest = await store.events(EventQuery(after=first_page.cursor, limit=100))
        assert [e.message_id for e in rest.events] == [*sent[2:], m.id]
        of_bob = await store.events(EventQuery(since=T0, session_id=bob.id))
        assert [e.message_id for e in of_bob.events] == [sent[1], sent[3], m.id]  # to bob, and from bob
        assert (await store.events(EventQuery(since=T0, protocol="other"))).events == []

    @pytest.mark.parametrize("cursor", ["", "garbage", "ZGw6MQ==", "ZXY6LTE="])
    async def test_a_cursor_the_store_did_not_issue_is_refused(self, store: Store, cursor: str) -> None:
        with pytest.raises(ValueError):
            await store.events(EventQuery(after=cursor))

    async def test_overview_counts_the_whole_store(self, store: Store) -> None:
        alice, bob, carol = [await connect(store, n) for n in ("alice", "bob", "carol")]
        empty = await store.overview(T0)
        assert (empty.waiting, empty.dead_letters, empty.oldest_waiting_at, empty.last_event_at) == (
            0,
            0,
            None,
            None,
        )
        await send(store, message(alice.id, 0, at=T0), bob.id, carol.id)
        await send(store, message(alice.id, 1, at=T0 + 5, expires_at=T0 + 6), bob.id)
        await lease(store, bob, now=T0 + 7)  # the second expires on the way
        seen = await store.overview(T0 + 8)
        assert (seen.waiting, seen.dead_letters, seen.oldest_waiting_at, seen.last_event_at) == (
            2,
            1,
            T0,
            T0 + 7,
        )

    async def test_dead_letters_across_sessions_say_whose(self, store: Store) -> None:
        alice, bob, carol = [await connect(store, n) for n in ("alice", "bob", "carol")]
        for n, who in enumerate((bob, carol, bob)):
            await send(store, message(alice.id, n, expires_at=T0 + 1), who.id)
        for who in (bob, carol):
            await lease(store, who, now=T0 + 2)
        first = await store.all_dead_letters(limit=2, cursor=None)
        second = await store.all_dead_letters(limit=2, cursor=first.next_cursor)
        rows = first.rows + second.rows
        assert [r.recipient_name for r in rows] == ["bob", "carol", "bob"]  # newest stored first
        assert second.next_cursor is None

    async def test_replay_keeps_a_full_inbox_dead(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        m = message(alice.id, expires_at=T0 + 1)
        await send(store, m, bob.id)
        await lease(store, bob, now=T0 + 2)
        await send(store, message(alice.id, 1, at=T0 + 3), bob.id)
        assert await store.replay_dead([m.id], now=T0 + 4, max_inbox=1) == {m.id: 0}
        assert len((await store.dead_letters(bob.id, limit=10, cursor=None)).rows) == 1

    async def test_prune_drops_old_events(self, store: Store, alice: SessionRow, bob: SessionRow) -> None:
        m = message(alice.id)
        await send(store, m, bob.id)
        await lease(store, bob, now=T0 + 1)
        await store.ack(bob.id, [m.id], T0 + 2)
        await store.prune(before=T0 + 1.5, now=T0 + 3)
        assert [e.kind for e in (await store.events(EventQuery(since=0))).events] == [EventKind.acked]
