"""The contract's message features: ordered streams, rate buckets, history (``store/features.py``).

Mixed into each engine's contract class, so every engine runs it unchanged.
"""

from __future__ import annotations

import uuid

import pytest

from mcp_broker.store.contract import NewMessage, SessionRow, Store, Target
from mcp_broker.store.features import AppendRefused, HistoryQuery, RateCharge, StreamRow, StreamState

from .store_contract import T0, connect, lease, message, send


def stream_row(sender: SessionRow, recipient: SessionRow, at: float = T0) -> StreamRow:
    return StreamRow(
        str(uuid.uuid4()), sender.id, recipient.id, "chat", "1.0.0", StreamState.open, None, at, at, 0, 0, 0
    )


def chunk(stream: StreamRow, n: int, *, at: float = T0, last: bool = False) -> NewMessage:
    return message(stream.sender_id, n, at=at, kind="chunk", stream_id=stream.id, last=last)


async def append(
    store: Store, stream: StreamRow, n: int, *, last: bool = False, max_chunks: int = 100
) -> int | None:
    outcome = await store.append_chunk(
        chunk(stream, n, at=T0 + n, last=last),
        Target(stream.recipient_id),
        max_chunks=max_chunks,
        max_inbox=100,
    )
    return outcome.seq


class FeaturesContract:
    async def test_chunks_are_numbered_and_handed_out_one_at_a_time_in_order(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        s = stream_row(alice, bob)
        assert await store.open_stream(s, max_open=5)
        assert [await append(store, s, n) for n in range(1, 4)] == [1, 2, 3]
        await send(store, message(alice.id, 99, at=T0 + 5), bob.id)  # other traffic flows beside
        first = await lease(store, bob, now=T0 + 10)
        assert sorted((r.stream_seq or 0, r.kind) for r in first) == [(0, "message"), (1, "chunk")]
        assert await lease(store, bob, now=T0 + 11) == []  # chunk 2 waits for chunk 1's ack
        one = next(r for r in first if r.stream_seq == 1)
        await store.ack(bob.id, [one.message_id], T0 + 12)
        (two,) = await lease(store, bob, now=T0 + 13)
        assert (two.stream_id, two.stream_seq, two.last) == (s.id, 2, False)

    async def test_redelivery_keeps_the_order(self, store: Store, alice: SessionRow, bob: SessionRow) -> None:
        s = stream_row(alice, bob)
        await store.open_stream(s, max_open=5)
        for n in (1, 2):
            await append(store, s, n)
        (one,) = await lease(store, bob, now=T0 + 10, lease_seconds=5)
        assert one.stream_seq == 1
        assert await lease(store, bob, now=T0 + 12) == []  # leased, not acked: nothing after it
        (again,) = await lease(store, bob, now=T0 + 16)  # the lease lapsed: chunk 1 again, not 2
        assert (again.stream_seq, again.attempts) == (1, 2)
        await store.ack(bob.id, [again.message_id], T0 + 17)
        assert [r.stream_seq for r in await lease(store, bob, now=T0 + 18)] == [2]

    async def test_a_lease_can_read_one_stream_only(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        s, t = stream_row(alice, bob), stream_row(alice, bob)
        for each in (s, t):
            await store.open_stream(each, max_open=5)
            await append(store, each, 1)
        await send(store, message(alice.id, 9), bob.id)
        got = await store.lease(
            bob.id, bob.owner or "", limit=10, lease_seconds=30, now=T0 + 5, max_attempts=5, stream_id=t.id
        )
        assert [(r.stream_id, r.stream_seq) for r in got] == [(t.id, 1)]

    async def test_last_chunk_closes_and_appends_are_refused_after(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        s = stream_row(alice, bob)
        await store.open_stream(s, max_open=5)
        await append(store, s, 1)
        assert await append(store, s, 2, last=True) == 2
        refused = await store.append_chunk(chunk(s, 3), Target(bob.id), max_chunks=100, max_inbox=100)
        assert (refused.seq, refused.refused) == (None, AppendRefused.not_open)
        state = await store.stream(s.id)
        assert state is not None and (state.state, state.chunks, state.acked) == (StreamState.closed, 2, 0)

    async def test_limits_on_streams_and_chunks(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        first, second = stream_row(alice, bob), stream_row(alice, bob)
        assert await store.open_stream(first, max_open=1)
        assert not await store.open_stream(second, max_open=1)
        assert await append(store, first, 1, max_chunks=1) == 1
        refused = await store.append_chunk(chunk(first, 2), Target(bob.id), max_chunks=1, max_inbox=100)
        assert refused.refused is AppendRefused.too_many_chunks
        stranger = stream_row(bob, alice)  # not alice's stream: refused as if unknown
        foreign = await store.append_chunk(chunk(stranger, 1), Target(alice.id), max_chunks=5, max_inbox=100)
        assert foreign.refused is AppendRefused.not_open

    async def test_an_abort_drops_what_waits_and_tells_the_recipient(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        s = stream_row(alice, bob)
        await store.open_stream(s, max_open=5)
        for n in (1, 2, 3):
            await append(store, s, n)
        (one,) = await lease(store, bob, now=T0 + 10)
        notice = message(alice.id, 0, at=T0 + 11, kind="stream_abort", stream_id=s.id)
        assert await store.end_stream(s.id, alice.id, reason="sender idle", now=T0 + 11, notice=notice)
        assert not await store.end_stream(s.id, alice.id, reason="again", now=T0 + 12, notice=notice)
        got = await lease(store, bob, now=T0 + 12)
        assert [(r.kind, r.stream_id) for r in got] == [("stream_abort", s.id)]  # not gated by chunk 1
        state = await store.stream(s.id)
        assert state is not None and (state.state, state.reason) == (StreamState.aborted, "sender idle")
        dead = (await store.dead_letters(bob.id, limit=10, cursor=None)).rows
        assert sorted(r.stream_seq or 0 for r in dead) == [2, 3] and one.stream_seq == 1

    async def test_idle_streams_are_those_without_a_recent_append(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        quiet, busy = stream_row(alice, bob, at=T0), stream_row(alice, bob, at=T0)
        for each in (quiet, busy):
            await store.open_stream(each, max_open=5)
        await append(store, busy, 50)  # appended at T0 + 50
        assert [s.id for s in await store.idle_streams(before=T0 + 30, limit=10)] == [quiet.id]

    async def test_a_bucket_starts_full_refills_and_refuses_without_taking(self, store: Store) -> None:
        first = await store.charge("s1", 3, rate=1.0, burst=3.0, now=T0)
        assert (first.allowed, first.tokens) == (True, 0.0)
        refused = await store.charge("s1", 2, rate=1.0, burst=3.0, now=T0 + 1)
        assert not refused.allowed and refused.retry_after == pytest.approx(1.0)
        later = await store.charge("s1", 2, rate=1.0, burst=3.0, now=T0 + 2)
        assert later.allowed and later.tokens == pytest.approx(0.0)
        capped = await store.charge("s1", 1, rate=1.0, burst=3.0, now=T0 + 100)
        assert capped.tokens == pytest.approx(2.0)  # refilled to the burst, no more
        assert (await store.charge("s2", 1, rate=1.0, burst=3.0, now=T0)).tokens == pytest.approx(2.0)

    async def test_an_enqueue_charges_only_what_it_stores(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        toll = RateCharge(alice.id, 2, rate=1.0, burst=3.0)
        first = message(alice.id, 1, at=T0)
        stored = await store.enqueue(first, [Target(bob.id)], max_inbox=10, refuse_full=True, rate=toll)
        assert stored.stored and stored.limited is None
        again = await store.enqueue(first, [Target(bob.id)], max_inbox=10, refuse_full=True, rate=toll)
        assert again.stored  # a retry of the same message is not charged again
        short = message(alice.id, 2, at=T0)
        refused = await store.enqueue(short, [Target(bob.id)], max_inbox=10, refuse_full=True, rate=toll)
        assert not refused.stored and refused.limited is not None
        assert refused.limited.retry_after == pytest.approx(1.0)
        full = await store.enqueue(short, [Target(bob.id)], max_inbox=1, refuse_full=True, rate=toll)
        assert full.full and full.limited is None  # refused as full: nothing taken
        assert (await store.message_status(alice.id, [short.id])).rows == []
        later = await store.enqueue(short, [Target(bob.id)], max_inbox=10, refuse_full=True, rate=toll)
        assert later.stored is False and later.limited is not None  # still one token short at T0
        refilled = message(alice.id, 3, at=T0 + 1)
        assert (
            await store.enqueue(refilled, [Target(bob.id)], max_inbox=10, refuse_full=True, rate=toll)
        ).stored
        assert (await store.charge(alice.id, 1, rate=1.0, burst=3.0, now=T0 + 1)).allowed is False

    async def test_rate_states_count_what_each_session_sent(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        await store.charge(alice.id, 1, rate=1.0, burst=5.0, now=T0)
        for n in range(3):
            await send(store, message(alice.id, n, at=T0 + n), bob.id)
        states = await store.rate_states(since=T0 + 1)
        assert states[alice.id].sent_recently == 2 and states[alice.id].tokens == pytest.approx(4.0)
        assert bob.id not in states

    async def test_history_shows_both_ways_newest_first_with_deliveries(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        carol = await connect(store, "carol")
        out = message(alice.id, 1, at=T0 + 1)
        await send(store, out, bob.id, carol.id)
        back = message(bob.id, 2, at=T0 + 2)
        await send(store, back, alice.id)
        await lease(store, alice, now=T0 + 3)
        await store.ack(alice.id, [back.id], T0 + 4)
        elsewhere = message(bob.id, 3, at=T0 + 5)
        await send(store, elsewhere, carol.id)  # not alice's
        page = await store.history(alice.id, HistoryQuery())
        assert [(e.direction, e.message.message_id) for e in page.entries] == [
            ("received", back.id),
            ("sent", out.id),
        ]
        received, sent = page.entries
        assert [(d.recipient_name, d.state) for d in received.deliveries] == [("alice", "acked")]
        assert [d.recipient_name for d in sent.deliveries] == ["bob", "carol"]
        assert sent.message.sender_name == "alice" and received.message.sender_name == "bob"

    async def test_history_filters_and_pages(self, store: Store, alice: SessionRow, bob: SessionRow) -> None:
        carol = await connect(store, "carol")
        sent = []
        for n in range(5):
            m = message(alice.id, n, at=T0 + n)
            sent.append(m.id)
            await send(store, m, bob.id if n % 2 else carol.id)
        first = await store.history(alice.id, HistoryQuery(limit=2))
        second = await store.history(alice.id, HistoryQuery(limit=2, cursor=first.next_cursor))
        third = await store.history(alice.id, HistoryQuery(limit=2, cursor=second.next_cursor))
        pages = [[e.message.message_id for e in p.entries] for p in (first, second, third)]
        assert pages == [[sent[4], sent[3]], [sent[2], sent[1]], [sent[0]]] and third.next_cursor is None
        to_bob = await store.history(alice.id, HistoryQuery(peer_id=bob.id))
        assert [e.message.message_id for e in to_bob.entries] == [sent[3], sent[1]]
        window = await store.history(alice.id, HistoryQuery(since=T0 + 1, until=T0 + 2))
        assert [e.message.message_id for e in window.entries] == [sent[2], sent[1]]
        assert (await store.history(alice.id, HistoryQuery(direction="received"))).entries == []
        assert (await store.history(alice.id, HistoryQuery(protocol="other"))).entries == []
        with pytest.raises(ValueError):
            await store.history(alice.id, HistoryQuery(cursor="nope"))

    async def test_a_replay_copy_says_what_it_copies(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        original = message(alice.id, 1)
        await send(store, original, bob.id)
        copy = message(alice.id, 1, at=T0 + 1, replay_of=original.id)
        await send(store, copy, bob.id)
        got = await lease(store, bob, now=T0 + 2)
        assert [(r.message_id, r.replay_of) for r in got] == [(original.id, None), (copy.id, original.id)]
