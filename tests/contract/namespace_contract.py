"""Namespaces: two stores on one backend in different namespaces see nothing of each other.

Mixed into each engine's contract class, which provides ``namespaced``: open a store on the
backend the test uses, in the namespace named (the engine may make the name unique per test).
Everything is written in ``team-a`` and looked for, by every read and action, from ``team-b``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest

from mcp_broker.store.contract import AckState, EventQuery, RequeueState, SnapshotQuery, Store
from mcp_broker.store.features import HistoryQuery, StreamRow, StreamState

from .store_contract import T0, adapter, connect, dead, ids, lease, message, protocol, send

Namespaced = Callable[[str], Awaitable[Store]]


class NamespaceContract:
    pytestmark = pytest.mark.anyio

    @pytest.fixture
    async def a(self, namespaced: Namespaced) -> Store:
        return await namespaced("team-a")

    @pytest.fixture
    async def b(self, namespaced: Namespaced) -> Store:
        return await namespaced("team-b")

    async def test_a_name_is_free_in_each_namespace(self, a: Store, b: Store) -> None:
        alice_a, alice_b = await connect(a, "alice"), await connect(b, "alice", "other-owner")
        assert alice_a.id != alice_b.id
        assert alice_b.owner == "other-owner"
        assert [s.id for s in await a.list_sessions(T0)] == [alice_a.id]
        assert [s.id for s in await b.list_sessions(T0)] == [alice_b.id]

    async def test_sessions_of_one_are_not_found_from_the_other(self, a: Store, b: Store) -> None:
        alice = await connect(a, "alice")
        assert await b.find_session("alice", is_id=False, now=T0) is None
        assert await b.find_session(alice.id, is_id=True, now=T0) is None
        assert await b.list_sessions(T0) == []
        assert not await b.heartbeat(alice.id, "owner-alice", T0 + 1)
        assert await b.end_session(alice.id, "owner-alice", T0 + 1) is None
        seen = await b.snapshot(
            SnapshotQuery(session_ids=[alice.id], session_refs=[(alice.id, True), ("alice", False)])
        )
        assert (seen.sessions, seen.refs) == ({}, {})
        assert (await b.snapshot(SnapshotQuery(all_sessions=True, now=T0))).sessions == {}
        assert (await a.find_session("alice", is_id=False, now=T0 + 1)) is not None  # untouched

    async def test_protocols_and_adapters_are_per_namespace(self, a: Store, b: Store) -> None:
        assert await a.add_protocol(protocol("chat", "1.0.0", fingerprint="fa")) == "registered"
        assert await a.add_adapter(adapter("chat", fingerprint="xa")) == "registered"
        assert await b.get_protocol("chat", "1.0.0") is None
        assert await b.list_protocols() == [] and await b.list_protocols("chat") == []
        assert await b.list_adapters() == [] and await b.list_adapters("chat") == []
        everything = await b.snapshot(SnapshotQuery(protocols=None))
        assert (everything.versions, everything.adapters) == ({}, {})
        named = await b.snapshot(SnapshotQuery(protocols=["chat"]))
        assert named.versions == {"chat": {}} and named.adapters == {"chat": []}
        # The same name and version with another definition is no conflict in another namespace.
        assert await b.add_protocol(protocol("chat", "1.0.0", fingerprint="fb")) == "registered"
        assert await b.add_adapter(adapter("chat", fingerprint="xb")) == "registered"
        assert [p.fingerprint for p in await a.list_protocols()] == ["fa"]
        assert [p.fingerprint for p in await b.list_protocols()] == ["fb"]
        assert [x.fingerprint for x in await a.list_adapters("chat")] == ["xa"]

    async def test_sends_leases_and_acks_stay_in_their_namespace(self, a: Store, b: Store) -> None:
        alice, bob = await connect(a, "alice"), await connect(a, "bob")
        bob_b = await connect(b, "bob")
        sent = message(alice.id, 1, idempotency_key="k")
        assert (await send(a, sent, bob.id, answer={"n": 1})).stored
        assert [s.queue_depth for s in await b.list_sessions(T0)] == [0]
        assert await b.peek(bob_b.id, 10, T0) == [] and await b.peek(bob.id, 10, T0) == []
        assert await lease(b, bob_b, now=T0 + 1) == []
        assert await lease(b, bob, now=T0 + 1) == []  # bob's id, but not a session of team-b
        assert await b.ack(bob.id, [sent.id], T0 + 2) == {sent.id: AckState.unknown}
        again = await b.requeue(bob.id, [sent.id], now=T0, from_states=("leased",), reset_attempts=False)
        assert again.states == {sent.id: RequeueState.unknown}
        report = await b.message_status(alice.id, [sent.id])
        assert (report.rows, report.known) == ([], set())
        assert await b.request_for_reply(bob.id, sent.id) is None
        assert not await b.sent_request(alice.id, sent.id)
        # The idempotency key of team-a's sender means nothing in team-b.
        alice_b = await connect(b, "alice")
        repeat = await send(b, message(alice_b.id, 2, idempotency_key="k"), bob_b.id, answer={"n": 2})
        assert repeat.duplicate_result is None and repeat.stored
        assert ids(await lease(a, bob, now=T0 + 3)) == [sent.id]
        assert await a.ack(bob.id, [sent.id], T0 + 4) == {sent.id: AckState.acked}

    async def test_events_overview_and_dead_letters_stay_in_their_namespace(self, a: Store, b: Store) -> None:
        alice, bob = await connect(a, "alice"), await connect(a, "bob")
        doomed = message(alice.id, 1, expires_at=T0 + 1)
        await send(a, doomed, bob.id)
        await send(a, message(alice.id, 2), bob.id)
        await lease(a, bob, now=T0 + 2)  # dead-letters the expired one, leases the other
        assert await dead(a, bob) == {doomed.id: "expired"}
        assert (await b.events(EventQuery())).events == []
        assert (await b.events(EventQuery(since=T0 - 1))).events == []
        assert (await b.events(EventQuery(message_id=doomed.id))).events == []
        assert (await a.events(EventQuery())).events != []
        overview = await b.overview(T0 + 2)
        assert (overview.waiting, overview.dead_letters, overview.last_event_at) == (0, 0, None)
        assert (await b.all_dead_letters(limit=10, cursor=None)).rows == []
        assert (await b.dead_letters(bob.id, limit=10, cursor=None)).rows == []
        assert await b.replay_dead([doomed.id], now=T0 + 3, max_inbox=100) == {doomed.id: 0}
        assert await b.purge_dead([doomed.id], now=T0 + 3) == {doomed.id: 0}
        assert await dead(a, bob) == {doomed.id: "expired"}  # neither replayed nor purged

    async def test_history_rates_and_streams_stay_in_their_namespace(self, a: Store, b: Store) -> None:
        alice, bob = await connect(a, "alice"), await connect(a, "bob")
        sent = message(alice.id, 1)
        await send(a, sent, bob.id)
        assert [e.message.message_id for e in (await a.history(alice.id, HistoryQuery())).entries] == [
            sent.id
        ]
        assert (await b.history(alice.id, HistoryQuery())).entries == []
        assert (await b.history(bob.id, HistoryQuery(direction="received"))).entries == []
        assert (await a.charge(alice.id, 5, rate=1.0, burst=10.0, now=T0)).allowed
        assert alice.id in await a.rate_states(since=T0 - 1)
        assert await b.rate_states(since=T0 - 1) == {}
        stream = StreamRow(
            str(uuid.uuid4()), alice.id, bob.id, "chat", "1.0.0", StreamState.open, None, T0, T0, 0, 0, 0
        )
        assert await a.open_stream(stream, max_open=1)
        assert await b.stream(stream.id) is None
        assert await b.idle_streams(before=T0 + 1000, limit=10) == []
        notice = message(alice.id, 9, kind="stream_end", stream_id=stream.id)
        assert not await b.end_stream(stream.id, alice.id, reason="x", now=T0 + 1, notice=notice)
        assert (await a.stream(stream.id)) is not None

    async def test_prune_in_one_namespace_keeps_the_other(self, a: Store, b: Store) -> None:
        alice, bob = await connect(a, "alice"), await connect(a, "bob")
        waiting, done = message(alice.id, 1), message(alice.id, 2)
        await send(a, waiting, bob.id)
        await send(a, done, bob.id)
        await lease(a, bob, now=T0 + 1, limit=1)
        await a.ack(bob.id, [waiting.id], T0 + 2)
        await a.end_session(alice.id, "owner-alice", T0 + 3)
        pruned = await b.prune(before=T0 + 10_000, now=T0 + 10_000)
        assert not any(pruned.values())
        assert {s.name for s in await a.list_sessions(T0 + 4)} == {"alice", "bob"}
        assert ids(await a.peek(bob.id, 10, T0 + 4)) == [done.id]
        assert (await a.message_status(alice.id, [waiting.id])).known == {waiting.id}

    async def test_agreements_are_read_in_their_namespace_only(self, a: Store, b: Store) -> None:
        alice, bob = await connect(a, "alice"), await connect(a, "bob")
        await a.save_agreements([(alice.id, bob.id, "chat", "1.0.0")], T0)
        seen = await b.snapshot(SnapshotQuery(session_ids=[alice.id, bob.id], agreed_by=alice.id))
        assert seen.agreed == {}
        mine = await a.snapshot(SnapshotQuery(session_ids=[alice.id, bob.id], agreed_by=alice.id))
        assert mine.agreed == {(bob.id, "chat"): "1.0.0"}
