"""Each domain part built alone from its collaborators: a real store, a fake notifier, a fake clock.

No ``Broker``, no background tasks: what a part needs is handed to it, so a test can see exactly
which wake-ups it asks for and move its clock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest

from mcp_broker import procs, schemas
from mcp_broker.config import Settings
from mcp_broker.domain.binding import Binding
from mcp_broker.domain.catalog import Catalog
from mcp_broker.domain.inbox import Inbox
from mcp_broker.domain.messaging import Messaging
from mcp_broker.domain.presence import Presence
from mcp_broker.domain.rates import RateLimiter
from mcp_broker.domain.sessions import Sessions
from mcp_broker.errors import InvalidArgument, NameTaken, NotConnected, PayloadInvalid, UnknownSession
from mcp_broker.models import SessionStatus
from mcp_broker.store.contract import SessionRow
from mcp_broker.store.sqlite import SqliteStore

pytestmark = pytest.mark.anyio

CHAT = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
SPEAKS = [{"name": "chat", "versions": "^1.0"}]


class FakeNotifier:
    """Records what the parts ask for; wakes local waiters like the real one."""

    def __init__(self) -> None:
        self.bound: list[str | None] = []
        self.notified: list[str] = []
        self._event = anyio.Event()

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def listen(self) -> None: ...
    async def watch(self) -> None: ...

    async def bind(self, session_id: str | None) -> None:
        self.bound.append(session_id)

    def notify(self, session_ids: Sequence[str]) -> None:
        self.notified.extend(session_ids)
        self.poke()

    def poke(self) -> None:
        self._event.set()
        self._event = anyio.Event()

    def ticket(self) -> anyio.Event:
        return self._event


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Probe:
    """A liveness probe that knows only what the test tells it."""

    def __init__(self) -> None:
        self.answers: dict[str, bool | None] = {}

    def alive(self, row: SessionRow) -> bool | None:
        return self.answers.get(row.name)


@dataclass
class Agent:
    """One process's parts, wired by hand."""

    store: SqliteStore
    clock: FakeClock
    probe: Probe = field(default_factory=Probe)
    notifier: FakeNotifier = field(default_factory=FakeNotifier)

    def __post_init__(self) -> None:
        settings = Settings(store="unused", max_inbox=3)
        self.owner = uuid.uuid4().hex
        self.binding = Binding(self.notifier)
        self.presence = Presence(settings, self.probe)
        identity = procs.Identity(host="test-host", pid=4242, start=None)
        self.catalog = Catalog(self.store, self.binding, self.presence, self.clock, schemas.Limits())
        self.sessions = Sessions(self.store, self.binding, self.presence, identity, self.owner, self.clock)
        self.inbox = Inbox(self.store, self.notifier, self.binding, self.owner, settings, self.clock)
        self.limiter = RateLimiter(self.store, settings, self.clock)
        self.messaging = Messaging(
            self.store,
            self.notifier,
            self.binding,
            self.catalog,
            self.sessions,
            self.presence,
            self.limiter,
            settings,
            self.clock,
        )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(tmp_path / "parts.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


async def test_binding_is_written_by_connect_and_disconnect_only(
    store: SqliteStore, clock: FakeClock
) -> None:
    a = Agent(store, clock)
    with pytest.raises(NotConnected):
        a.binding.require()
    connected = await a.sessions.connect("alice", SPEAKS)
    assert a.binding.require() == connected.session_id
    assert a.notifier.bound == [connected.session_id]  # the notifier listens for the bound session
    await a.sessions.disconnect()
    assert a.binding.session_id is None and a.notifier.bound[-1] is None


async def test_presence_follows_the_clock_and_the_probe(store: SqliteStore, clock: FakeClock) -> None:
    a = Agent(store, clock)
    await a.sessions.connect("alice", SPEAKS)
    row = await store.find_session("alice", is_id=False, now=clock())
    assert row is not None
    assert a.presence.status_of(row, clock()) is SessionStatus.active
    clock.now += 30
    assert a.presence.status_of(row, clock()) is SessionStatus.stale
    clock.now += 570
    assert a.presence.status_of(row, clock()) is SessionStatus.disconnected
    a.probe.answers["alice"] = False  # its process is gone: disconnected at once, whatever the clock
    assert a.presence.status_of(row, row.last_seen) is SessionStatus.disconnected


async def test_a_name_held_by_a_live_process_is_refused_and_freed_when_it_dies(
    store: SqliteStore, clock: FakeClock
) -> None:
    holder, other = Agent(store, clock), Agent(store, clock)
    first = await holder.sessions.connect("worker", SPEAKS)
    with pytest.raises(NameTaken):
        await other.sessions.connect("worker", SPEAKS)
    other.probe.answers["worker"] = False  # the holder's process exited
    resumed = await other.sessions.connect("worker", SPEAKS)
    assert resumed.session_id == first.session_id and resumed.resumed
    assert not await holder.sessions.heartbeat()  # the old holder learns it lost the session
    assert holder.binding.session_id is None


async def test_a_name_shaped_like_a_session_id_is_refused(store: SqliteStore, clock: FakeClock) -> None:
    victim, squatter = Agent(store, clock), Agent(store, clock)
    held = await victim.sessions.connect("vic", SPEAKS)
    with pytest.raises(InvalidArgument, match="shape of a session id"):
        await squatter.sessions.connect(held.session_id, SPEAKS)
    with pytest.raises(InvalidArgument):
        await squatter.sessions.connect(held.session_id.upper(), SPEAKS)


async def test_references_resolve_by_shape(store: SqliteStore, clock: FakeClock) -> None:
    a = Agent(store, clock)
    held = await a.sessions.connect("alice", SPEAKS)
    assert (await a.sessions.peer(held.session_id)).name == "alice"
    assert (await a.sessions.peer("alice")).id == held.session_id
    with pytest.raises(UnknownSession):
        await a.sessions.peer(str(uuid.uuid4()))  # an id shape is never looked up as a name


async def test_send_notifies_the_recipient_once_stored(store: SqliteStore, clock: FakeClock) -> None:
    a, b = Agent(store, clock), Agent(store, clock)
    await a.catalog.register_protocol("chat", "1.0.0", CHAT, ["point_to_point"])
    await a.sessions.connect("alice", SPEAKS)
    bob = await b.sessions.connect("bob", SPEAKS)
    sent = await a.messaging.send("bob", "chat", {"text": "hi"})
    assert a.notifier.notified == [bob.session_id]
    assert sent.created_at.startswith("2023-11-14")  # the fake clock stamped it
    got = await b.inbox.receive()
    assert [m.payload for m in got.messages] == [{"text": "hi"}]


async def test_send_decides_again_when_the_recipient_reconnects_meanwhile(
    store: SqliteStore, clock: FakeClock
) -> None:
    a, b = Agent(store, clock), Agent(store, clock)
    await a.catalog.register_protocol("chat", "1.0.0", CHAT, ["point_to_point"])
    await a.catalog.register_protocol("chat", "2.0.0", CHAT, ["point_to_point"])
    await a.sessions.connect("alice", [{"name": "chat", "versions": "*"}])
    await b.sessions.connect("bob", SPEAKS)
    real_snapshot = store.snapshot
    calls = 0

    async def snapshot_then_reconnect(query: object) -> object:
        nonlocal calls
        calls += 1
        snap = await real_snapshot(query)  # type: ignore[arg-type]
        if calls == 1:  # bob moves to 2.x after the send read what he accepts
            await b.sessions.connect("bob", [{"name": "chat", "versions": "^2.0"}])
        return snap

    store.snapshot = snapshot_then_reconnect  # type: ignore[method-assign]
    sent = await a.messaging.send("bob", "chat", {"text": "hi"})
    assert calls == 2 and sent.version == "2.0.0"  # decided again on what bob accepts now


async def test_the_inbox_limit_comes_from_the_settings_handed_in(
    store: SqliteStore, clock: FakeClock
) -> None:
    a, b = Agent(store, clock), Agent(store, clock)
    await a.catalog.register_protocol("chat", "1.0.0", CHAT, ["point_to_point"])
    await a.sessions.connect("alice", SPEAKS)
    await b.sessions.connect("bob", SPEAKS)
    for i in range(3):
        await a.messaging.send("bob", "chat", {"text": str(i)})
    with pytest.raises(Exception, match="INBOX_FULL"):
        await a.messaging.send("bob", "chat", {"text": "one too many"})


async def test_a_waiting_receive_stops_when_its_session_is_unbound(
    store: SqliteStore, clock: FakeClock
) -> None:
    a = Agent(store, clock)
    await a.sessions.connect("t", SPEAKS)
    a.inbox.recheck_seconds = 30  # only the unbinding's poke can end the wait early
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            async def wait() -> None:
                with pytest.raises(NotConnected):
                    await a.inbox.receive(wait_seconds=20)

            tg.start_soon(wait)
            await anyio.sleep(0.05)
            await a.sessions.disconnect()


@pytest.mark.parametrize("sneaky", ["ci\u202e", "re\u200bview", "tab\there"])
async def test_text_other_agents_read_refuses_hidden_characters(
    store: SqliteStore, clock: FakeClock, sneaky: str
) -> None:
    a = Agent(store, clock)
    with pytest.raises(InvalidArgument):
        await a.sessions.connect("alice", SPEAKS, features=[sneaky])
    with pytest.raises(InvalidArgument):
        await a.catalog.register_protocol("chat", "1.0.0", CHAT, ["point_to_point"], {"tags": [sneaky]})
    with pytest.raises(InvalidArgument, match=r"metadata\.description"):
        await a.catalog.register_protocol(
            "chat", "1.0.0", CHAT, ["point_to_point"], {"description": f"plain {sneaky} text"}
        )
    assert not await store.list_protocols("chat")  # nothing was stored


async def test_a_costly_payload_is_validated_off_the_event_loop(store: SqliteStore, clock: FakeClock) -> None:
    a = Agent(store, clock)
    enum = {"type": "array", "items": {"enum": list(range(1000))}}
    await a.catalog.register_protocol("big", "1.0.0", enum, ["point_to_point"])
    proto = await a.catalog.protocol("big", "1.0.0")
    turns, done = 0, False

    async def other_calls() -> None:  # what the loop serves meanwhile: pings, other tools
        nonlocal turns
        while not done:
            turns += 1
            await anyio.sleep(0)

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_calls)
        await a.catalog.check_payload(proto, [999] * 300)  # valid, past the inline budget, within the whole
        done = True
    assert turns > 50  # the loop kept turning while the validation ran on a worker thread
    with pytest.raises(PayloadInvalid, match="its budget"):
        await a.catalog.check_payload(proto, [999] * 2000)  # past the whole budget: refused as before


async def test_the_catalog_keeps_a_bounded_number_of_versions_in_memory(
    store: SqliteStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("mcp_broker.domain.catalog.CACHED_VERSIONS", 3)
    a = Agent(store, clock)
    reads: list[str] = []
    get_protocol = store.get_protocol

    async def counted(name: str, version: str) -> object:
        reads.append(version)
        return await get_protocol(name, version)

    monkeypatch.setattr(store, "get_protocol", counted)
    await a.sessions.connect("alice", SPEAKS)
    for n in range(5):
        await a.catalog.register_protocol("chat", f"1.{n}.0", {"type": "object"}, ["point_to_point"])
    for n in (0, 1, 2, 0, 1, 2):
        await a.catalog.protocol("chat", f"1.{n}.0")
    assert reads == ["1.0.0", "1.1.0", "1.2.0"]  # cached after the first read
    for n in (3, 4, 0):
        await a.catalog.protocol("chat", f"1.{n}.0")
    assert reads[3:] == ["1.3.0", "1.4.0", "1.0.0"]  # 1.0.0 was dropped for the newer ones
