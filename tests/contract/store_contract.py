"""The store contract as tests every backend runs unchanged, in the manner of huey's ``StorageTests``.

A backend's test module subclasses ``StoreContract`` and provides two fixtures: ``store``, an opened
store, and ``store_factory``, which opens another store on the same backend (a second broker
process). Only the contract is used here: no SQL, no private attributes. Every time is chosen by the
test (the contract takes ``now`` from its caller), so nothing sleeps and nothing reads a clock.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import anyio
import pytest

from mcp_broker.store.contract import (
    IDEMPOTENCY_WINDOW,
    AckState,
    AdapterRow,
    Added,
    Conflict,
    DeadReason,
    EnqueueOutcome,
    Guard,
    InboxRow,
    NewMessage,
    ProtocolRow,
    RequeueState,
    SessionClaim,
    SessionRow,
    SnapshotQuery,
    Store,
    Target,
    Unavailable,
)

StoreFactory = Callable[[], Awaitable[Store]]

T0 = 1_700_000_000.0  # the tests' epoch: every time is T0 plus what the test says


# --- builders ------------------------------------------------------------------------------------


def protocol(
    name: str = "chat",
    version: str = "1.0.0",
    *,
    fingerprint: str = "f1",
    capabilities: Sequence[str] = ("point_to_point",),
    metadata: dict[str, Any] | None = None,
    response_schema: str | None = None,
) -> ProtocolRow:
    return ProtocolRow(
        name=name,
        version=version,
        schema='{"type": "object"}',
        capabilities=list(capabilities),
        metadata=metadata or {},
        fingerprint=fingerprint,
        registered_at=T0,
        response_schema=response_schema,
    )


def adapter(
    protocol: str = "chat", from_version: str = "1.0.0", to_version: str = "2.0.0", fingerprint: str = "a1"
) -> AdapterRow:
    steps = [{"op": "rename", "from": "text", "to": "body"}]
    return AdapterRow(protocol, from_version, to_version, steps, fingerprint, T0)


def claim(
    name: str,
    owner: str,
    *,
    now: float = T0,
    seen: SessionRow | None = None,
    features: Sequence[str] = (),
    metadata: dict[str, Any] | None = None,
) -> SessionClaim:
    """A claim of ``name`` by ``owner``, expecting the row as ``seen`` (None: no row)."""
    return SessionClaim(
        new_id=str(uuid.uuid4()),
        name=name,
        owner=owner,
        host="host-a",
        pid=4242,
        proc_start="start-1",
        protocols=json.dumps([{"name": "chat", "versions": ">=1.0"}]),
        features=json.dumps(list(features)),
        metadata=json.dumps(metadata or {}),
        now=now,
        expect_exists=seen is not None,
        expect_owner=seen.owner if seen is not None else None,
    )


async def connect(store: Store, name: str, owner: str | None = None, *, now: float = T0) -> SessionRow:
    """Create or take over ``name`` as a broker does: read the row, then claim it as read."""
    seen = await store.find_session(name, is_id=False, now=now)
    return await store.claim_session(claim(name, owner or f"owner-{name}", now=now, seen=seen))


def message(sender_id: str, n: int = 0, *, at: float = T0, **fields: Any) -> NewMessage:
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "sender_id": sender_id,
        "broadcast": False,
        "protocol": "chat",
        "version": "1.0.0",
        "payload": json.dumps({"n": n}),
        "priority": 1,
        "created_at": at,
    }
    return NewMessage(**(values | fields))


async def send(
    store: Store,
    msg: NewMessage,
    *recipients: str,
    max_inbox: int = 10_000,
    refuse_full: bool = True,
    answer: dict[str, Any] | None = None,
    guard: Guard | None = None,
) -> EnqueueOutcome:
    return await store.enqueue(
        msg,
        [Target(r) for r in recipients],
        max_inbox=max_inbox,
        refuse_full=refuse_full,
        answer=answer,
        guard=guard,
    )


async def lease(
    store: Store,
    session: SessionRow,
    *,
    now: float,
    limit: int = 100,
    lease_seconds: float = 30.0,
    max_attempts: int = 5,
    protocol: str | None = None,
    owner: str | None = None,
) -> list[InboxRow]:
    """Lease for ``session`` as its owner (or as ``owner``)."""
    return await store.lease(
        session.id,
        owner or session.owner or "",
        limit=limit,
        lease_seconds=lease_seconds,
        now=now,
        max_attempts=max_attempts,
        protocol=protocol,
    )


async def dead(store: Store, session: SessionRow) -> dict[str, str | None]:
    """The session's dead letters: message id -> reason, newest first."""
    page = await store.dead_letters(session.id, limit=1000, cursor=None)
    return {r.message_id: r.reason for r in page.rows}


def ids(rows: Sequence[InboxRow]) -> list[str]:
    return [r.message_id for r in rows]


def numbers(rows: Sequence[InboxRow]) -> list[int]:
    return [json.loads(r.payload)["n"] for r in rows]


# --- the suite -----------------------------------------------------------------------------------


class StoreContract:
    """Every operation and rule of ``mcp_broker.store.contract``; subclass it and provide the fixtures."""

    pytestmark = pytest.mark.anyio

    @pytest.fixture
    async def alice(self, store: Store) -> SessionRow:
        return await connect(store, "alice")

    @pytest.fixture
    async def bob(self, store: Store) -> SessionRow:
        return await connect(store, "bob")

    @pytest.fixture
    async def carol(self, store: Store) -> SessionRow:
        return await connect(store, "carol")

    # --- the catalog -----------------------------------------------------------------------------

    async def test_add_protocol_registers_once_and_refuses_another_definition(self, store: Store) -> None:
        first = protocol(metadata={"owner": {"team": "a"}}, response_schema='{"type": "string"}')
        assert await store.add_protocol(first) is Added.registered
        assert await store.add_protocol(first) is Added.unchanged
        assert await store.add_protocol(protocol(fingerprint="other")) is Added.conflict
        assert await store.get_protocol("chat", "1.0.0") == first  # immutable: the first one stays

    async def test_get_and_list_protocols(self, store: Store) -> None:
        rows = [protocol(), protocol(version="1.1.0", capabilities=["broadcast"]), protocol("todo")]
        for row in rows:
            await store.add_protocol(row)
        assert await store.get_protocol("chat", "1.1.0") == rows[1]
        assert await store.get_protocol("chat", "9.9.9") is None
        assert await store.get_protocol("nothing", "1.0.0") is None
        assert sorted(r.version for r in await store.list_protocols("chat")) == ["1.0.0", "1.1.0"]
        assert await store.list_protocols("nothing") == []
        every = await store.list_protocols()
        assert sorted(every, key=lambda r: (r.name, r.version)) == rows

    async def test_add_adapter_registers_once_and_refuses_another_definition(self, store: Store) -> None:
        first = adapter()
        assert await store.add_adapter(first) is Added.registered
        assert await store.add_adapter(first) is Added.unchanged
        assert await store.add_adapter(adapter(fingerprint="other")) is Added.conflict
        assert await store.list_adapters("chat") == [first]

    async def test_list_adapters(self, store: Store) -> None:
        rows = [adapter(), adapter(from_version="2.0.0", to_version="3.0.0"), adapter("todo")]
        for row in rows:
            await store.add_adapter(row)
        chat = await store.list_adapters("chat")
        assert sorted(chat, key=lambda r: r.from_version) == rows[:2]
        assert await store.list_adapters("nothing") == []
        assert len(await store.list_adapters()) == 3

    # --- snapshots -------------------------------------------------------------------------------

    async def test_snapshot_reads_sessions_by_id_and_by_reference(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        twin = await connect(store, alice.id)  # a session whose name is alice's id
        snap = await store.snapshot(
            SnapshotQuery(
                session_ids=[alice.id, "no-such-id"],
                session_refs=[
                    ("bob", False),
                    (bob.id, True),
                    ("alice", True),
                    (alice.id, False),
                    ("x", False),
                ],
            )
        )
        assert snap.refs == {"bob": bob.id, bob.id: bob.id, alice.id: twin.id}
        assert set(snap.sessions) == {alice.id, bob.id, twin.id}
        assert (snap.sessions[alice.id].name, snap.sessions[alice.id].owner) == ("alice", alice.owner)
        assert snap.sessions[bob.id].revision == bob.revision

    async def test_snapshot_of_all_sessions_counts_their_depth(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        await send(store, message(alice.id), bob.id)
        await send(store, message(alice.id, expires_at=T0 + 5), bob.id)
        query = SnapshotQuery(all_sessions=True, session_refs=[("bob", False), (alice.id, True)], now=T0 + 1)
        snap = await store.snapshot(query)
        assert {s.name: s.queue_depth for s in snap.sessions.values()} == {"alice": 0, "bob": 2}
        assert snap.refs == {"bob": bob.id, alice.id: alice.id}
        later = await store.snapshot(replace(query, now=T0 + 5))  # the second has expired
        assert later.sessions[bob.id].queue_depth == 1

    async def test_snapshot_reads_versions_with_capabilities_and_adapters(self, store: Store) -> None:
        await store.add_protocol(protocol())
        await store.add_protocol(protocol(version="2.0.0", capabilities=["point_to_point", "broadcast"]))
        await store.add_protocol(protocol("todo"))
        await store.add_adapter(adapter())
        snap = await store.snapshot(SnapshotQuery(protocols=["chat", "none"]))
        assert snap.versions == {
            "chat": {"1.0.0": ["point_to_point"], "2.0.0": ["point_to_point", "broadcast"]},
            "none": {},
        }
        assert snap.adapters == {"chat": [adapter()], "none": []}
        every = await store.snapshot(SnapshotQuery(protocols=None))
        assert set(every.versions) == {"chat", "todo"}
        assert every.versions["todo"] == {"1.0.0": ["point_to_point"]}
        assert every.adapters["chat"] == [adapter()] and every.adapters.get("todo", []) == []
        assert (await store.snapshot(SnapshotQuery())).versions == {}

    async def test_snapshot_reads_the_agreements_of_agreed_by(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        await store.save_agreements(
            [
                (alice.id, bob.id, "chat", "1.0.0"),
                (alice.id, carol.id, "chat", "2.0.0"),
                (bob.id, alice.id, "chat", "3.0.0"),
            ],
            T0,
        )

        async def agreed(by: str, *peers: str, refs: Sequence[tuple[str, bool]] = ()) -> dict[Any, str]:
            query = SnapshotQuery(session_ids=peers, session_refs=refs, agreed_by=by)
            return (await store.snapshot(query)).agreed

        assert await agreed(alice.id, bob.id) == {(bob.id, "chat"): "1.0.0"}
        assert await agreed(alice.id, refs=[("carol", False)]) == {(carol.id, "chat"): "2.0.0"}
        assert await agreed(bob.id, alice.id, carol.id) == {(alice.id, "chat"): "3.0.0"}
        assert await agreed(carol.id, alice.id, bob.id) == {}
        await store.save_agreements([(alice.id, bob.id, "chat", "1.1.0")], T0 + 1)  # a new one replaces
        assert await agreed(alice.id, bob.id, carol.id) == {
            (bob.id, "chat"): "1.1.0",
            (carol.id, "chat"): "2.0.0",
        }

    # --- sessions --------------------------------------------------------------------------------

    async def test_find_session_by_id_or_by_name_never_one_for_the_other(
        self, store: Store, alice: SessionRow
    ) -> None:
        twin = await connect(store, alice.id)

        async def find(ref: str, is_id: bool) -> str | None:
            row = await store.find_session(ref, is_id=is_id, now=T0)
            return None if row is None else row.id

        assert await find(alice.id, True) == alice.id
        assert await find("alice", False) == alice.id
        assert await find(alice.id, False) == twin.id
        assert await find("alice", True) is None
        assert await find("nobody", False) is None

    async def test_claim_creates_the_session_as_claimed(self, store: Store) -> None:
        wanted = claim("alice", "p1", now=T0, features=["f"], metadata={"team": "a"})
        row = await store.claim_session(wanted)
        assert (row.id, row.name, row.owner) == (wanted.new_id, "alice", "p1")
        assert (row.host, row.pid, row.proc_start) == ("host-a", 4242, "start-1")
        assert row.protocols == [{"name": "chat", "versions": ">=1.0"}]
        assert (row.features, row.metadata) == (["f"], {"team": "a"})
        assert (row.connected_at, row.last_seen, row.disconnected_at, row.queue_depth) == (T0, T0, None, 0)
        assert await store.find_session("alice", is_id=False, now=T0) == row
        assert [s.id for s in await store.list_sessions(T0)] == [row.id]

    async def test_the_same_owner_claims_again_in_place(self, store: Store, alice: SessionRow) -> None:
        await store.end_session(alice.id, alice.owner or "", T0 + 5)
        seen = await store.find_session("alice", is_id=False, now=T0 + 10)
        again = await store.claim_session(
            claim("alice", "owner-alice", now=T0 + 10, seen=seen, features=["new"], metadata={"v": 2})
        )
        assert again.id == alice.id and again.owner == alice.owner
        assert (again.features, again.metadata) == (["new"], {"v": 2})
        assert (again.connected_at, again.last_seen, again.disconnected_at) == (T0, T0 + 10, None)
        assert again.revision > alice.revision

    async def test_a_claim_takes_over_from_the_owner_it_saw(self, store: Store, bob: SessionRow) -> None:
        await send(store, message(bob.id), bob.id)
        taken = await store.claim_session(claim("bob", "p2", now=T0 + 10, seen=bob))
        assert (taken.id, taken.owner, taken.connected_at) == (bob.id, "p2", T0 + 10)
        assert taken.revision > bob.revision and taken.queue_depth == 1
        # The old owner can no longer heartbeat or end it; the new one can.
        assert await store.heartbeat(bob.id, "owner-bob", T0 + 11) is False
        assert await store.end_session(bob.id, "owner-bob", T0 + 11) is None
        assert await store.heartbeat(bob.id, "p2", T0 + 12) is True
        back = await store.claim_session(claim("bob", "p3", now=T0 + 20, seen=taken))
        assert back.revision > taken.revision

    async def test_a_claim_conflicts_when_the_row_is_not_as_seen(
        self, store: Store, alice: SessionRow
    ) -> None:
        stale = await store.claim_session(claim("alice", "p2", now=T0 + 1, seen=alice))
        for wrong in (
            claim("alice", "p3", seen=alice),  # p2 took it meanwhile
            replace(claim("alice", "p3", seen=stale), expect_owner="someone"),
            claim("alice", "p3"),  # expects no row
            claim("bob", "p3", seen=alice),  # expects a row
        ):
            with pytest.raises(Conflict):
                await store.claim_session(wrong)
        assert await store.find_session("alice", is_id=False, now=T0 + 1) == stale
        assert await store.find_session("bob", is_id=False, now=T0 + 1) is None

    async def test_heartbeat_and_end_only_by_the_owner(self, store: Store, alice: SessionRow) -> None:
        async def last_seen() -> float:
            row = await store.find_session(alice.id, is_id=True, now=T0)
            assert row is not None
            return row.last_seen

        await send(store, message(alice.id), alice.id)
        assert await store.heartbeat(alice.id, "someone-else", T0 + 1) is False
        assert await last_seen() == T0
        assert await store.heartbeat(alice.id, "owner-alice", T0 + 2) is True
        assert await last_seen() == T0 + 2
        assert await store.end_session(alice.id, "someone-else", T0 + 3) is None
        ended = await store.end_session(alice.id, "owner-alice", T0 + 4)
        assert ended is not None and ended.id == alice.id
        assert (ended.disconnected_at, ended.queue_depth) == (T0 + 4, 1)
        assert await store.heartbeat(alice.id, "owner-alice", T0 + 5) is False  # ended
        assert await store.heartbeat("no-such-id", "owner-alice", T0 + 5) is False
        assert await store.end_session("no-such-id", "owner-alice", T0 + 5) is None

    async def test_queue_depth_is_the_number_of_waiting_deliveries(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        acked, leased = message(alice.id), message(alice.id)
        for m in (acked, leased, message(alice.id), message(alice.id, expires_at=T0 + 10)):
            await send(store, m, bob.id)
        await lease(store, bob, now=T0 + 1, limit=2, lease_seconds=100)
        await store.ack(bob.id, [acked.id], T0 + 1)

        async def depths(now: float) -> set[int]:
            found = await store.find_session("bob", is_id=False, now=now)
            listed = {s.name: s.queue_depth for s in await store.list_sessions(now)}
            snap = await store.snapshot(SnapshotQuery(all_sessions=True, now=now))
            assert listed["alice"] == 0 and found is not None
            return {found.queue_depth, listed["bob"], snap.sessions[bob.id].queue_depth}

        assert await depths(T0 + 5) == {3}  # leased, queued, not yet expired
        assert await depths(T0 + 10) == {2}  # expired at its expires_at
        assert await depths(T0 + 200) == {2}  # a lapsed lease still waits
        # The inbox limit counts the same way.
        assert not (await send(store, message(alice.id, at=T0 + 5), bob.id, max_inbox=3)).stored
        assert (await send(store, message(alice.id, at=T0 + 10), bob.id, max_inbox=3)).stored

    # --- enqueue ---------------------------------------------------------------------------------

    async def test_enqueue_stores_one_delivery_per_target(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        m = message(
            alice.id, 1, broadcast=True, priority=2, expires_at=T0 + 100, correlation_id="c", reply_to="r"
        )
        adapted = Target(carol.id, version="2.0.0", payload='{"m": 1}', adapted_via="1.0.0>2.0.0")
        outcome = await store.enqueue(m, [Target(bob.id), adapted], max_inbox=10, refuse_full=True)
        assert outcome == EnqueueOutcome(delivered_to=(bob.id, carol.id), stored=True)
        (to_bob,) = await store.peek(bob.id, 10, T0)
        assert (to_bob.message_id, to_bob.sender_id, to_bob.sender_name) == (m.id, alice.id, "alice")
        assert (to_bob.broadcast, to_bob.kind, to_bob.protocol, to_bob.priority) == (
            True,
            "message",
            "chat",
            2,
        )
        assert (to_bob.version, to_bob.sent_version, to_bob.payload, to_bob.adapted_via) == (
            "1.0.0",
            "1.0.0",
            m.payload,
            None,
        )
        assert (to_bob.created_at, to_bob.expires_at, to_bob.correlation_id, to_bob.reply_to) == (
            T0,
            T0 + 100,
            "c",
            "r",
        )
        assert (to_bob.state, to_bob.attempts, to_bob.reason) == ("queued", 0, None)
        (to_carol,) = await store.peek(carol.id, 10, T0)
        assert (to_carol.version, to_carol.sent_version, to_carol.payload, to_carol.adapted_via) == (
            "2.0.0",
            "1.0.0",
            '{"m": 1}',
            "1.0.0>2.0.0",
        )

    async def test_a_repeated_idempotency_key_returns_the_first_answer_and_stores_nothing(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        first = message(alice.id, 1, idempotency_key="k")
        answer = {"message_id": first.id, "delivered_to": [bob.id]}
        assert (await send(store, first, bob.id, answer=answer)).stored
        again = message(alice.id, 2, at=T0 + IDEMPOTENCY_WINDOW - 1, idempotency_key="k")
        outcome = await send(store, again, bob.id, answer={"message_id": again.id})
        assert outcome == EnqueueOutcome(duplicate_result=answer)
        assert ids(await store.peek(bob.id, 10, T0 + 1)) == [first.id]
        assert (await store.message_status(alice.id, [again.id])).known == set()
        # The key is the sender's own: another sender may use it too.
        assert (await send(store, message(bob.id, idempotency_key="k"), bob.id)).stored

    async def test_an_idempotency_key_older_than_the_window_stores_again(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        first = message(alice.id, 1, idempotency_key="k")
        await send(store, first, bob.id, answer={"first": True})
        later = T0 + IDEMPOTENCY_WINDOW + 1
        second = message(alice.id, 2, at=later, idempotency_key="k")
        assert (await send(store, second, bob.id, answer={"second": True})).stored
        assert ids(await store.peek(bob.id, 10, later)) == [first.id, second.id]
        third = await send(store, message(alice.id, 3, at=later + 1, idempotency_key="k"), bob.id)
        assert third.duplicate_result == {"second": True}

    async def test_a_full_inbox_refuses_the_whole_message(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        for n in range(2):
            await send(store, message(alice.id, n), bob.id)
        refused = message(alice.id, 9, broadcast=True, idempotency_key="k")
        outcome = await send(store, refused, carol.id, bob.id, max_inbox=2, answer={"a": 1})
        assert outcome == EnqueueOutcome(full=((bob.id, 2),), stored=False)
        assert await store.peek(carol.id, 10, T0) == []
        assert len(await store.peek(bob.id, 10, T0)) == 2
        assert (await store.message_status(alice.id, [refused.id])).known == set()
        # Its key was not remembered: the same key is stored once there is room.
        retry = await send(store, message(alice.id, idempotency_key="k"), carol.id, bob.id, max_inbox=3)
        assert retry.stored and retry.duplicate_result is None

    async def test_a_broadcast_skips_full_inboxes(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        for n in range(2):
            await send(store, message(alice.id, n), bob.id)
        m = message(alice.id, 9, broadcast=True)
        outcome = await send(store, m, bob.id, carol.id, max_inbox=2, refuse_full=False)
        assert outcome == EnqueueOutcome(delivered_to=(carol.id,), full=((bob.id, 2),), stored=True)
        assert len(await store.peek(bob.id, 10, T0)) == 2
        assert ids(await store.peek(carol.id, 10, T0)) == [m.id]

    async def test_a_broadcast_is_stored_for_all_its_recipients_or_for_none(
        self, store: Store, alice: SessionRow
    ) -> None:
        crowd = [await connect(store, f"r{i}") for i in range(5)]
        await send(store, message(alice.id), crowd[3].id)
        m = message(alice.id, broadcast=True)
        everyone = [r.id for r in crowd]
        assert not (await send(store, m, *everyone, max_inbox=1)).stored
        for r in crowd:
            assert m.id not in ids(await store.peek(r.id, 10, T0))
        assert (await send(store, m, *everyone, max_inbox=2)).delivered_to == tuple(everyone)
        report = await store.message_status(alice.id, [m.id])
        assert [row.recipient_id for row in report.rows] == everyone

    async def test_the_guard_refuses_when_the_recipient_reconnected_or_is_gone(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        first = message(alice.id, 1)
        assert (await send(store, first, bob.id, guard=Guard(bob.id, bob.revision))).stored
        again = await connect(store, "bob")  # the same owner: still a new revision
        late = message(alice.id, 2)
        for guard in (Guard(bob.id, bob.revision), Guard("no-such-id", 0)):
            with pytest.raises(Conflict):
                await send(store, late, bob.id, guard=guard)
        assert ids(await store.peek(bob.id, 10, T0)) == [first.id]
        assert (await store.message_status(alice.id, [late.id])).known == set()
        assert (await send(store, late, bob.id, guard=Guard(bob.id, again.revision))).stored

    async def test_an_enqueue_retried_with_its_message_id_stores_nothing_more(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        """A client library retries a call whose connection broke after the write: one message."""
        m = message(alice.id, 1, broadcast=True, idempotency_key="k")
        first = await send(store, m, bob.id, carol.id, answer={"first": True})
        assert first == EnqueueOutcome(delivered_to=(bob.id, carol.id), stored=True)
        (leased,) = await lease(store, bob, now=T0 + 1)
        moved_on = await connect(store, "bob", "owner-bob-2", now=T0 + 2)  # the guard no longer holds
        guard = Guard(bob.id, bob.revision)
        for again in (m, replace(m, payload='{"n": 2}', created_at=T0 + 3)):  # the id decides
            outcome = await send(store, again, bob.id, carol.id, answer={"again": True}, guard=guard)
            assert outcome == EnqueueOutcome(delivered_to=(bob.id, carol.id), stored=True)
        assert [r.payload for r in await store.peek(carol.id, 10, T0 + 4)] == [m.payload]
        (still,) = await store.peek(moved_on.id, 10, T0 + 4)
        assert (still.message_id, still.state, still.attempts) == (leased.message_id, "leased", 1)
        report = await store.message_status(alice.id, [m.id])
        assert [r.recipient_id for r in report.rows] == [bob.id, carol.id]

    async def test_a_reply_retried_with_its_message_id_stores_nothing_more(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        request = message(alice.id, 1, kind="request")
        await send(store, request, bob.id)
        answer = message(bob.id, 2, at=T0 + 1, kind="reply", correlation_id=request.id)
        for _ in range(2):
            assert await store.reply(bob.id, request.id, answer, Target(alice.id)) is True
        assert ids(await store.peek(alice.id, 10, T0 + 2)) == [answer.id]

    # --- lease -----------------------------------------------------------------------------------

    async def test_lease_hands_out_by_priority_then_in_stored_order(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        # All at one time: only the order they were stored in can tell them apart.
        for n, sender, priority in [
            (0, alice, 1),
            (1, carol, 1),
            (2, alice, 2),
            (3, alice, 0),
            (4, carol, 2),
        ]:
            await send(store, message(sender.id, n, priority=priority), bob.id)
        await send(store, message(alice.id, 5), bob.id)
        first = await lease(store, bob, now=T0 + 1, limit=2)
        assert numbers(first) == [2, 4]
        assert all((r.attempts, r.visible_at) == (1, T0 + 31) for r in first)
        assert numbers(await lease(store, bob, now=T0 + 1)) == [0, 1, 5, 3]

    async def test_each_senders_messages_arrive_in_the_order_sent(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        for n in range(20):
            await send(store, message((alice, carol)[n % 3 == 0].id, n, at=T0 + n), bob.id)
        got: list[InboxRow] = []
        while batch := await lease(store, bob, now=T0 + 100, limit=3):
            got.extend(batch)
        by_sender: dict[str, list[int]] = {}
        for row in got:
            by_sender.setdefault(row.sender_name, []).append(json.loads(row.payload)["n"])
        assert by_sender == {
            "carol": [n for n in range(20) if n % 3 == 0],
            "alice": [n for n in range(20) if n % 3],
        }

    async def test_a_lease_hides_a_delivery_until_it_lapses(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        m = message(alice.id)
        await send(store, m, bob.id)
        assert await lease(store, bob, now=T0 - 1) == []  # not visible before it was sent
        (first,) = await lease(store, bob, now=T0 + 1, lease_seconds=30)
        assert (first.message_id, first.attempts, first.visible_at) == (m.id, 1, T0 + 31)
        assert await lease(store, bob, now=T0 + 30) == []
        (waiting,) = await store.peek(bob.id, 10, T0 + 30)
        assert (waiting.state, waiting.attempts) == ("leased", 1)
        (again,) = await lease(store, bob, now=T0 + 31, lease_seconds=30)
        assert (again.message_id, again.attempts, again.visible_at) == (m.id, 2, T0 + 61)

    async def test_leased_rows_come_back_as_the_lease_left_them(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        await send(store, message(alice.id), bob.id)
        (first,) = await lease(store, bob, now=T0 + 1, lease_seconds=30)
        assert (first.state, first.attempts, first.visible_at, first.updated_at) == (
            "leased",
            1,
            T0 + 31,
            T0 + 1,
        )
        (again,) = await lease(store, bob, now=T0 + 40, lease_seconds=10)  # the first lease lapsed
        assert (again.state, again.attempts, again.visible_at, again.updated_at) == (
            "leased",
            2,
            T0 + 50,
            T0 + 40,
        )
        (seen,) = await store.peek(bob.id, 10, T0 + 41)
        assert (seen.state, seen.attempts, seen.visible_at, seen.updated_at) == (
            "leased",
            2,
            T0 + 50,
            T0 + 40,
        )

    async def test_a_delivery_leased_max_attempts_times_is_dead_lettered(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        m, done = message(alice.id, 1), message(alice.id, 2)
        for each in (m, done):
            await send(store, each, bob.id)
        assert len(await lease(store, bob, now=T0 + 1, max_attempts=2)) == 2
        await store.ack(bob.id, [done.id], T0 + 2)
        (again,) = await lease(store, bob, now=T0 + 40, max_attempts=2)
        assert (again.message_id, again.attempts) == (m.id, 2)
        assert await lease(store, bob, now=T0 + 80, max_attempts=2) == []
        (letter,) = (await store.dead_letters(bob.id, limit=10, cursor=None)).rows
        assert (letter.message_id, letter.state, letter.reason) == (m.id, "dead_lettered", "max_attempts")
        assert letter.reason == DeadReason.max_attempts and letter.attempts == 2
        assert await store.ack(bob.id, [m.id], T0 + 81) == {m.id: AckState.dead_lettered}
        after = await store.find_session("bob", is_id=False, now=T0 + 81)
        assert after is not None and after.queue_depth == 0

    async def test_an_expired_delivery_is_dead_lettered_not_handed_out(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        expiring, lasting = message(alice.id, 1, expires_at=T0 + 10), message(alice.id, 2)
        for m in (expiring, lasting):
            await send(store, m, bob.id)
        assert ids(await lease(store, bob, now=T0 + 10)) == [lasting.id]
        (letter,) = (await store.dead_letters(bob.id, limit=10, cursor=None)).rows
        assert (letter.message_id, letter.reason, letter.attempts) == (expiring.id, DeadReason.expired, 0)

    async def test_an_expired_delivery_under_lease_is_dead_lettered_by_the_next_lease(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        # The rule holds on every lease, not only on one that finds something else ready.
        m = message(alice.id, expires_at=T0 + 10)
        await send(store, m, bob.id)
        await lease(store, bob, now=T0 + 1, lease_seconds=60)
        assert await lease(store, bob, now=T0 + 20) == []
        assert await dead(store, bob) == {m.id: DeadReason.expired}

    async def test_a_lease_acts_only_while_its_owner_holds_the_live_session(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        m, expiring = message(alice.id), message(alice.id, expires_at=T0 + 1)
        for each in (m, expiring):
            await send(store, each, bob.id)
        assert await lease(store, bob, now=T0 + 2, owner="someone-else") == []
        await store.end_session(bob.id, "owner-bob", T0 + 2)
        assert await lease(store, bob, now=T0 + 3) == []  # disconnected
        taken = await connect(store, "bob", "p2", now=T0 + 4)
        assert await lease(store, bob, now=T0 + 5) == []  # taken over
        assert await dead(store, bob) == {}  # a refused lease changed nothing
        (row,) = await lease(store, taken, now=T0 + 6)
        assert (row.message_id, row.attempts) == (m.id, 1)
        assert await dead(store, bob) == {expiring.id: DeadReason.expired}

    async def test_a_lease_can_take_one_protocol_only(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        chat1, todo, chat2 = message(alice.id), message(alice.id, protocol="todo"), message(alice.id)
        for m in (chat1, todo, chat2):
            await send(store, m, bob.id)
        assert ids(await lease(store, bob, now=T0 + 1, protocol="todo")) == [todo.id]
        assert await lease(store, bob, now=T0 + 1, protocol="none") == []
        assert ids(await lease(store, bob, now=T0 + 1, protocol="chat")) == [chat1.id, chat2.id]

    # --- ack, requeue, peek, dead letters --------------------------------------------------------

    async def test_ack_answers_each_state(self, store: Store, alice: SessionRow, bob: SessionRow) -> None:
        expiring, acked, leased = message(alice.id, expires_at=T0 + 5), message(alice.id), message(alice.id)
        for m in (expiring, acked, leased):
            await send(store, m, bob.id)
        await lease(store, bob, now=T0 + 5)
        await store.ack(bob.id, [acked.id], T0 + 6)
        queued = message(alice.id, at=T0 + 7)
        await send(store, queued, bob.id)
        outcome = await store.ack(bob.id, [leased.id, queued.id, expiring.id, acked.id], T0 + 8)
        assert outcome == {
            leased.id: AckState.acked,
            queued.id: AckState.not_received,
            expiring.id: AckState.dead_lettered,
            acked.id: AckState.already_acked,
        }
        assert all(type(state) is AckState for state in outcome.values())
        assert ids(await lease(store, bob, now=T0 + 9)) == [queued.id]  # not_received left it queued

    async def test_ack_with_any_foreign_id_changes_nothing(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        mine, theirs = message(alice.id), message(alice.id)
        await send(store, mine, bob.id)
        await send(store, theirs, carol.id)
        await lease(store, bob, now=T0 + 1)
        assert await store.ack(bob.id, [mine.id, theirs.id, "no-such-id"], T0 + 2) == {
            theirs.id: AckState.unknown,
            "no-such-id": AckState.unknown,
        }
        assert await store.ack(alice.id, [mine.id], T0 + 2) == {mine.id: AckState.unknown}
        assert await store.ack(bob.id, [mine.id], T0 + 3) == {mine.id: AckState.acked}

    async def test_release_requeues_a_leased_delivery_and_keeps_its_attempts(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        held, acked, queued = message(alice.id, 1), message(alice.id, 2), message(alice.id, 3)
        for m in (held, acked):
            await send(store, m, bob.id)
        await lease(store, bob, now=T0 + 1)
        await store.ack(bob.id, [acked.id], T0 + 1)
        await send(store, queued, bob.id)
        outcome = await store.requeue(
            bob.id,
            [held.id, acked.id, queued.id],
            now=T0 + 2,
            from_states=("leased",),
            delay=10,
            reset_attempts=False,
        )
        assert outcome.states == {
            held.id: RequeueState.requeued,
            acked.id: RequeueState.acked,
            queued.id: RequeueState.queued,
        }
        assert outcome.full_depth is None
        assert all(type(state) is RequeueState for state in outcome.states.values())
        assert ids(await lease(store, bob, now=T0 + 3)) == [queued.id]  # released, hidden for the delay
        (back,) = await lease(store, bob, now=T0 + 12)
        assert (back.message_id, back.attempts) == (held.id, 2)

    async def test_replay_requeues_a_dead_letter_with_fresh_attempts_and_no_expiry(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        tired = message(alice.id, 1)
        await send(store, tired, bob.id)
        await lease(store, bob, now=T0 + 1, max_attempts=1)
        expired = message(alice.id, 2, at=T0 + 2, expires_at=T0 + 5)
        await send(store, expired, bob.id)
        assert await lease(store, bob, now=T0 + 40, max_attempts=1) == []
        assert await dead(store, bob) == {expired.id: "expired", tired.id: "max_attempts"}
        outcome = await store.requeue(
            bob.id,
            [tired.id, expired.id],
            now=T0 + 41,
            from_states=("dead_lettered",),
            reset_attempts=True,
            max_inbox=10,
        )
        assert outcome.states == {tired.id: RequeueState.requeued, expired.id: RequeueState.requeued}
        assert await dead(store, bob) == {}
        rows = await lease(store, bob, now=T0 + 42, max_attempts=1)
        assert [(r.message_id, r.attempts, r.expires_at, r.reason) for r in rows] == [
            (tired.id, 1, None, None),
            (expired.id, 1, None, None),
        ]

    async def test_requeue_with_any_foreign_id_changes_nothing(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        m = message(alice.id, expires_at=T0 + 1)
        await send(store, m, bob.id)
        await lease(store, bob, now=T0 + 2)
        for from_states, reset in ((("dead_lettered",), True), (("leased",), False)):
            outcome = await store.requeue(
                bob.id, [m.id, "no-such-id"], now=T0 + 3, from_states=from_states, reset_attempts=reset
            )
            assert outcome.states == {"no-such-id": RequeueState.unknown}
        assert await dead(store, bob) == {m.id: "expired"}

    async def test_replay_that_would_overfill_the_inbox_changes_nothing(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        letters = [message(alice.id, n, expires_at=T0 + 1) for n in range(2)]
        for m in letters:
            await send(store, m, bob.id)
        await lease(store, bob, now=T0 + 2)
        await send(store, message(alice.id, 9, at=T0 + 2), bob.id)
        wanted = [m.id for m in letters]

        async def replay(max_inbox: int) -> Any:
            return await store.requeue(
                bob.id,
                wanted,
                now=T0 + 3,
                from_states=("dead_lettered",),
                reset_attempts=True,
                max_inbox=max_inbox,
            )

        refused = await replay(2)
        assert refused.full_depth == 1
        assert refused.states == dict.fromkeys(wanted, RequeueState.dead_lettered)
        assert set(await dead(store, bob)) == set(wanted)
        assert (await replay(3)).states == dict.fromkeys(wanted, RequeueState.requeued)

    async def test_peek_shows_waiting_deliveries_and_leases_nothing(
        self, store: Store, alice: SessionRow, bob: SessionRow
    ) -> None:
        low, high, expiring = (
            message(alice.id, 1),
            message(alice.id, 2, priority=2),
            message(alice.id, 3, expires_at=T0 + 5),
        )
        for m in (low, high, expiring):
            await send(store, m, bob.id)
        assert ids(await store.peek(bob.id, 10, T0 + 1)) == [high.id, low.id, expiring.id]
        assert ids(await store.peek(bob.id, 1, T0 + 1)) == [high.id]
        assert ids(await store.peek(bob.id, 10, T0 + 5)) == [high.id, low.id]  # expired: not waiting
        rows = await lease(store, bob, now=T0 + 6)
        assert [(r.message_id, r.attempts) for r in rows] == [(high.id, 1), (low.id, 1)]
        assert [(r.state, r.attempts) for r in await store.peek(bob.id, 10, T0 + 6)] == [("leased", 1)] * 2

    async def test_dead_letters_come_newest_first_in_pages(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        sent = [message(alice.id, n, expires_at=T0 + 5) for n in range(5)]
        for m in sent:
            await send(store, m, bob.id)
        await send(store, message(alice.id, expires_at=T0 + 5), carol.id)
        for who in (bob, carol):
            await lease(store, who, now=T0 + 10)
        pages: list[list[int]] = []
        cursor = None
        while True:
            page = await store.dead_letters(bob.id, limit=2, cursor=cursor)
            pages.append(numbers(page.rows))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert pages == [[4, 3], [2, 1], [0]]
        whole = await store.dead_letters(bob.id, limit=5, cursor=None)
        assert numbers(whole.rows) == [4, 3, 2, 1, 0] and whole.next_cursor is None
        assert all(r.state == "dead_lettered" for r in whole.rows)
        empty = await store.dead_letters(alice.id, limit=5, cursor=None)
        assert (empty.rows, empty.next_cursor) == ([], None)

    @pytest.mark.parametrize("cursor", ["garbage", "", "Zm9vOjE=", "%%%", "9" * 40, "ü"])
    async def test_a_cursor_the_store_did_not_issue_is_a_value_error(
        self, store: Store, bob: SessionRow, cursor: str
    ) -> None:
        with pytest.raises(ValueError):
            await store.dead_letters(bob.id, limit=5, cursor=cursor)

    # --- status, requests and replies, pruning ---------------------------------------------------

    async def test_message_status_reports_every_delivery_of_what_the_caller_sent(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        m = message(alice.id, broadcast=True)
        adapted = Target(carol.id, version="2.0.0", payload="{}", adapted_via="1.0.0>2.0.0")
        await store.enqueue(m, [Target(bob.id), adapted], max_inbox=10, refuse_full=True)
        await lease(store, bob, now=T0 + 1)
        await store.ack(bob.id, [m.id], T0 + 2)
        theirs = message(bob.id)
        await send(store, theirs, alice.id)
        nowhere = message(alice.id, broadcast=True)  # reached no one: still known
        await send(store, nowhere, bob.id, max_inbox=0, refuse_full=False)

        report = await store.message_status(alice.id, [m.id, theirs.id, nowhere.id, "no-such-id"])
        assert report.known == {m.id, nowhere.id}
        to_bob, to_carol = report.rows
        assert (to_bob.message_id, to_bob.recipient_id, to_bob.recipient_name) == (m.id, bob.id, "bob")
        assert (to_bob.state, to_bob.attempts, to_bob.acked_at, to_bob.reason) == ("acked", 1, T0 + 2, None)
        assert (to_bob.broadcast, to_bob.protocol, to_bob.version, to_bob.created_at) == (
            True,
            "chat",
            "1.0.0",
            T0,
        )
        assert (to_carol.recipient_name, to_carol.state, to_carol.attempts, to_carol.acked_at) == (
            "carol",
            "queued",
            0,
            None,
        )
        assert (to_bob.delivered_version, to_carol.delivered_version) == ("1.0.0", "2.0.0")
        assert (await store.message_status(bob.id, [theirs.id])).known == {theirs.id}

    async def test_a_request_is_answered_once_and_the_reply_taken_by_the_requester(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        request, plain = message(alice.id, 1, kind="request"), message(alice.id, 2)
        for m in (request, plain):
            await send(store, m, bob.id)
        assert await store.sent_request(alice.id, request.id) is True
        for sender, sent in ((bob, request), (alice, plain), (alice, message(alice.id))):
            assert await store.sent_request(sender.id, sent.id) is False
        assert await store.take_reply(alice.id, request.id, T0 + 1) is None
        got = await store.request_for_reply(bob.id, request.id)
        assert got is not None and (got.message_id, got.kind, got.sender_id) == (
            request.id,
            "request",
            alice.id,
        )
        assert await store.request_for_reply(carol.id, request.id) is None

        answer = message(bob.id, 3, at=T0 + 2, kind="reply", correlation_id=request.id)
        assert await store.reply(carol.id, request.id, answer, Target(alice.id)) is False  # not carol's
        assert await store.reply(bob.id, request.id, answer, Target(alice.id)) is True
        assert await store.ack(bob.id, [request.id], T0 + 3) == {request.id: AckState.already_acked}
        second = message(bob.id, 4, at=T0 + 3, kind="reply", correlation_id=request.id)
        assert await store.reply(bob.id, request.id, second, Target(alice.id)) is False
        assert (await store.message_status(bob.id, [second.id])).known == set()

        taken = await store.take_reply(alice.id, request.id, T0 + 4)
        assert taken is not None
        assert (taken.message_id, taken.kind, taken.correlation_id, taken.state) == (
            answer.id,
            "reply",
            request.id,
            "acked",
        )
        assert await store.peek(alice.id, 10, T0 + 4) == []  # handed over and acked at once
        again = await store.take_reply(alice.id, request.id, T0 + 5)
        assert again is not None and again.message_id == answer.id

    async def test_prune_lets_go_what_retention_no_longer_keeps(
        self, store: Store, alice: SessionRow, bob: SessionRow, carol: SessionRow
    ) -> None:
        idle = await connect(store, "idle")
        done, expiring = message(alice.id, 1), message(alice.id, 2, expires_at=T0 + 3)
        shared, waiting = message(alice.id, 3, broadcast=True), message(alice.id, 4)
        for m, to in ((done, [bob]), (expiring, [bob]), (shared, [bob, carol]), (waiting, [bob])):
            await send(store, m, *(r.id for r in to))
        unread = message(alice.id, 5, expires_at=T0 + 3)  # expires, and no lease dead-letters it
        await send(store, unread, carol.id)
        await lease(store, bob, now=T0 + 4)
        await store.ack(bob.id, [done.id, shared.id], T0 + 5)
        await store.end_session(alice.id, "owner-alice", T0 + 6)

        assert not any((await store.prune(before=T0 - 1, now=T0 + 100)).values())
        assert any((await store.prune(before=T0 + 100, now=T0 + 100)).values())
        sessions = {s.name: s.queue_depth for s in await store.list_sessions(T0 + 100)}
        assert sessions == {"bob": 1, "carol": 1}  # kept for their waiting messages
        assert await store.find_session(idle.id, is_id=True, now=T0 + 100) is None
        assert await dead(store, bob) == {}
        assert [(r.message_id, r.state) for r in await store.peek(bob.id, 10, T0 + 100)] == [
            (waiting.id, "leased")
        ]
        assert ids(await store.peek(carol.id, 10, T0 + 100)) == [shared.id]
        report = await store.message_status(alice.id, [done.id, unread.id, shared.id, waiting.id])
        assert report.known == {shared.id, waiting.id}
        assert [(r.message_id, r.recipient_id) for r in report.rows] == [
            (shared.id, carol.id),
            (waiting.id, bob.id),
        ]
        assert not any((await store.prune(before=T0 + 100, now=T0 + 100)).values())

    # --- two stores on one backend: two broker processes -----------------------------------------

    async def test_another_store_on_the_backend_sees_every_write(
        self, store: Store, store_factory: StoreFactory, alice: SessionRow, bob: SessionRow
    ) -> None:
        other = await store_factory()
        await store.add_protocol(protocol())
        m = message(alice.id)
        await send(store, m, bob.id)
        assert await other.get_protocol("chat", "1.0.0") == protocol()
        assert await other.find_session("bob", is_id=False, now=T0) == replace(bob, queue_depth=1)
        (row,) = await lease(other, bob, now=T0 + 1)
        assert row.message_id == m.id
        assert await store.ack(bob.id, [m.id], T0 + 2) == {m.id: AckState.acked}

    async def test_a_closed_store_is_unavailable(self, store: Store, store_factory: StoreFactory) -> None:
        assert store.url  # where it is, for people
        other = await store_factory()
        await other.close()  # and once more when the test ends: closing twice is harmless
        with pytest.raises(Unavailable):
            await other.get_protocol("chat", "1.0.0")
        with pytest.raises(Unavailable):
            await other.enqueue(message("x"), [Target("y")], max_inbox=10, refuse_full=True)
        assert await store.list_protocols() == []  # the others are not affected

    async def test_two_stores_claiming_one_free_name_one_wins(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        other = await store_factory()
        won = await store.claim_session(claim("alice", "p1"))
        with pytest.raises(Conflict):
            await other.claim_session(claim("alice", "p2"))  # it saw no row too
        assert await other.find_session("alice", is_id=False, now=T0) == won

    async def test_concurrent_enqueues_lose_nothing_and_keep_per_sender_order(
        self, store: Store, store_factory: StoreFactory
    ) -> None:
        inbox = await connect(store, "inbox")
        others = [await store_factory() for _ in range(4)]
        senders = [await connect(s, f"sender{i}") for i, s in enumerate(others)]

        async def send_many(s: Store, sender: SessionRow) -> None:
            for n in range(50):
                await send(s, message(sender.id, n, at=T0 + n), inbox.id)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for s, sender in zip(others, senders, strict=True):
                    tg.start_soon(send_many, s, sender)
        waiting = await store.peek(inbox.id, 1000, T0 + 100)
        by_sender: dict[str, list[int]] = {}
        for row in waiting:
            by_sender.setdefault(row.sender_name, []).append(json.loads(row.payload)["n"])
        assert by_sender == {f"sender{i}": list(range(50)) for i in range(4)}

    async def test_concurrent_leases_hand_each_delivery_out_once(
        self, store: Store, store_factory: StoreFactory, alice: SessionRow, bob: SessionRow
    ) -> None:
        sent = [message(alice.id, n) for n in range(120)]
        for m in sent:
            await send(store, m, bob.id)
        others = [await store_factory() for _ in range(4)]
        taken: list[InboxRow] = []

        async def drain(s: Store) -> None:
            while rows := await lease(s, bob, now=T0 + 1, limit=5, lease_seconds=600):
                taken.extend(rows)
                await anyio.sleep(0)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for s in others:
                    tg.start_soon(drain, s)
        assert sorted(ids(taken)) == sorted(m.id for m in sent)
        assert {r.attempts for r in taken} == {1}
