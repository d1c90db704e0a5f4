"""The store contract: what every backend offers the domain, and the rules it must keep.

The domain reads a snapshot in one call, decides in pure code, then writes once; a backend never
calls back into Python while it holds a lock or runs a script. Every operation is atomic: another
process sees all of it or none of it.

**Clocks.** Times are Unix seconds chosen by the caller (``now``, ``created_at``): a backend never
reads a clock of its own (not even a server's), so tests can move time and every engine decides
alike. Processes on several hosts compare each other's times (leases, expiry, heartbeats, the
idempotency window), so those hosts need synchronised clocks (NTP): a skew of a second or two is
harmless against the defaults (leases of 60 s, ``stale_after`` of 30 s); a larger one redelivers
early or marks sessions stale too soon. A lease never hands out a delivery stored with a time
later than its own ``now`` (a sender whose clock runs ahead), rather than reorder it.

Rules every backend keeps (the contract suite in ``tests/contract`` checks each one):

- **Delivery states.** One delivery per (message, recipient): ``queued -> leased -> acked``, or
  ``dead_lettered`` with a reason. A lease hides a delivery until ``visible_at``; a lapsed lease is
  ready again, and each lease counts one attempt.
- **Waiting.** A delivery *waits* while it is queued or leased and not expired (``expires_at`` unset
  or later than now). Inbox depth is the number of waiting deliveries: the only definition, used by
  the inbox limit, by ``SessionRow.queue_depth`` and by pruning.
- **Order.** A lease hands out ready deliveries by priority (high first), then in the order they
  were stored; so messages of one priority from one sender arrive in the order sent.
- **Dead letters.** On a lease, expired waiting deliveries become ``dead_lettered`` with reason
  ``expired``, and ready deliveries already leased ``max_attempts`` times become ``dead_lettered``
  with reason ``max_attempts``; neither is handed out.
- **Idempotency.** ``enqueue`` with an idempotency key that the same sender used within
  ``IDEMPOTENCY_WINDOW`` stores nothing and returns the first answer.
- **Retries.** ``enqueue`` and ``reply`` are idempotent by message id: a message id already stored
  stores nothing more. ``enqueue`` then answers ``stored`` with the recipients its deliveries went
  to, ``reply`` answers True. So a call a client library retried after a lost connection (its
  answer lost, its write done) never stores a message twice.
- **Leased rows.** ``lease`` returns each row as the lease left it: state ``leased``, ``attempts``
  counting this lease, ``visible_at`` when the lease runs out, ``updated_at`` the lease's ``now``.
- **Inbox limit.** ``enqueue`` never lets a recipient's depth pass ``max_inbox``: it refuses the
  whole message (``refuse_full``) or skips that recipient (a broadcast).
- **Ownership.** A session row names the broker instance that holds it (``owner``). Heartbeats,
  leases and ends act only while the caller is that owner; a claim is a compare-and-swap on it.
- **Immutability.** Protocol versions and adapters never change once stored, so a process may
  cache them for its whole life.
- **Events.** Every change of a delivery's state appends one event in the same atomic step: ``sent``
  (stored for a recipient), ``leased``, ``acked``, ``released``, ``replayed``, ``dead_lettered``
  (with the reason) and ``purged``. Events are read in the order appended, after an opaque cursor;
  pruning drops those older than retention.
- **Dead-letter order.** ``dead_letters`` pages newest first by the order deliveries were stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .features import AppendOutcome, Charge, HistoryPage, HistoryQuery, RateCharge, RateState, StreamRow

IDEMPOTENCY_WINDOW = 24 * 3600.0


# --- errors: the domain maps these to public codes --------------------------------------------


class StoreError(Exception):
    """Something the store could not do; never shown to a user as it is."""


class Retryable(StoreError):
    """The store is busy (locked by other writers); the same call may succeed shortly."""


class Overloaded(Retryable):
    """Past capacity: a write waited its whole turn behind other writers and was not made. Refused
    early rather than after a long stall; ``retry_after`` is when trying again is worth it."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(StoreError):
    """The store cannot be reached or used (closed, unreadable, disk full, server down)."""


class Misconfigured(Unavailable):
    """The store is reachable but set up so that this broker must not use it (durability, ACL):
    retrying will not help, so a broker refuses to start on it."""


class Conflict(StoreError):
    """What a conditional write re-checked has changed since the snapshot; decide again."""


class Full(StoreError):
    """The store holds as many of these (sessions, protocol versions, adapters) as it may."""


# --- outcomes ------------------------------------------------------------------------------------


class Added(StrEnum):
    registered = "registered"
    unchanged = "unchanged"  # this exact definition is there already
    conflict = "conflict"  # another definition holds the same key
    full = "full"  # the store holds as many as the caller's cap allows: nothing stored


class AckState(StrEnum):
    acked = "acked"
    already_acked = "already_acked"
    dead_lettered = "dead_lettered"
    not_received = "not_received"
    unknown = "unknown"  # not this recipient's: nothing was changed


class RequeueState(StrEnum):
    requeued = "requeued"
    queued = "queued"
    leased = "leased"
    acked = "acked"
    dead_lettered = "dead_lettered"
    unknown = "unknown"  # not this recipient's: nothing was changed


class DeadReason(StrEnum):
    expired = "expired"
    max_attempts = "max_attempts"


class EventKind(StrEnum):
    sent = "sent"
    leased = "leased"
    acked = "acked"
    released = "released"
    replayed = "replayed"
    dead_lettered = "dead_lettered"
    purged = "purged"


# --- rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtocolRow:
    name: str
    version: str
    schema: str  # JSON text
    capabilities: list[str]
    metadata: dict[str, Any]
    fingerprint: str  # hash of the definition: same key and hash = an identical re-registration
    registered_at: float
    response_schema: str | None = None


@dataclass(frozen=True)
class AdapterRow:
    protocol: str
    from_version: str
    to_version: str
    steps: list[dict[str, Any]]
    fingerprint: str
    registered_at: float


@dataclass(frozen=True)
class SessionRow:
    id: str
    name: str
    protocols: list[dict[str, str]]  # [{"name", "versions"}]; shared between rows: never change it
    features: list[str]
    metadata: dict[str, Any]
    owner: str | None  # the broker instance holding it
    host: str | None
    pid: int | None
    proc_start: str | None  # so a reused pid is not mistaken for the process
    connected_at: float
    last_seen: float
    disconnected_at: float | None
    revision: int = 0  # bumped by every claim: what a conditional send re-checks
    broker_version: str | None = None  # the mcp-broker version of the process holding it
    queue_depth: int = 0  # waiting deliveries, where the read says it counts them


@dataclass(frozen=True)
class SessionClaim:
    """Create the session ``name`` or take over its row, if its owner is still ``expect_owner``.

    ``expect_exists`` is what the caller saw: a row (owned by ``expect_owner``) or none.
    """

    new_id: str
    name: str
    owner: str
    host: str
    pid: int | None
    proc_start: str | None
    protocols: str  # JSON text
    features: str  # JSON text
    metadata: str  # JSON text
    now: float
    expect_exists: bool
    expect_owner: str | None
    max_sessions: int | None = None  # a new session past this many raises Full
    broker_version: str | None = None


@dataclass(frozen=True)
class NewMessage:
    id: str
    sender_id: str
    broadcast: bool
    protocol: str
    version: str
    payload: str  # JSON text
    priority: int
    created_at: float
    expires_at: float | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    idempotency_key: str | None = None
    kind: str = "message"  # message | request | reply | chunk | stream_abort
    replay_of: str | None = None  # a copy made by replay_message of this message id
    stream_id: str | None = None  # a stream's chunk: its stream and its place in it
    stream_seq: int | None = None
    last: bool = False


@dataclass(frozen=True)
class Target:
    """One recipient of a message, with the payload transformed for it when an adapter applies."""

    recipient_id: str
    version: str | None = None
    payload: str | None = None
    adapted_via: str | None = None  # e.g. "1.0.0>1.1.0>2.0.0"


@dataclass(frozen=True)
class Guard:
    """What ``enqueue`` re-checks: the recipient still exists at the revision the decision read."""

    recipient_id: str
    revision: int


@dataclass(frozen=True)
class InboxRow:
    message_id: str
    sender_id: str
    sender_name: str
    broadcast: bool
    kind: str
    protocol: str
    version: str  # as delivered to this recipient
    payload: str
    priority: int
    created_at: float
    expires_at: float | None
    correlation_id: str | None
    reply_to: str | None
    attempts: int
    visible_at: float
    sent_version: str
    adapted_via: str | None
    state: str
    reason: str | None
    updated_at: float
    recipient_id: str = ""
    recipient_name: str = ""
    replay_of: str | None = None
    stream_id: str | None = None
    stream_seq: int | None = None
    last: bool = False


@dataclass(frozen=True)
class StatusRow:
    """One delivery of a message the caller sent, for ``message_status``."""

    message_id: str
    broadcast: bool
    protocol: str
    version: str
    created_at: float
    recipient_id: str
    recipient_name: str
    state: str
    reason: str | None
    attempts: int
    visible_at: float
    expires_at: float | None
    updated_at: float
    acked_at: float | None
    delivered_version: str


@dataclass(frozen=True)
class SnapshotQuery:
    """What one decision needs, read in one call.

    Sessions by id and by reference (``ref`` is an id when ``ref_is_id``, else a name), or all of
    them; for each protocol named (or every protocol, with ``protocols=None``) its versions with
    their capabilities and its adapters; and the versions ``agreed_by`` agreed with the sessions read.
    """

    session_ids: Sequence[str] = ()
    session_refs: Sequence[tuple[str, bool]] = ()  # (ref, ref_is_id)
    all_sessions: bool = False
    protocols: Sequence[str] | None = ()
    agreed_by: str | None = None
    now: float = 0.0  # for queue depths, when ``all_sessions``


@dataclass(frozen=True)
class Snapshot:
    """What ``Store.snapshot`` read. A store may hand the same snapshot to several calls while
    nothing in it changes, so its dicts and rows are shared: never change them."""

    sessions: dict[str, SessionRow]  # by id
    refs: dict[str, str]  # ref -> session id, for the refs that resolved
    versions: dict[str, dict[str, list[str]]]  # protocol -> version -> capabilities
    adapters: dict[str, list[AdapterRow]]  # protocol -> its adapters
    agreed: dict[tuple[str, str], str] = field(default_factory=dict)  # (peer id, protocol) -> version


@dataclass(frozen=True)
class EnqueueOutcome:
    """What one enqueue did."""

    duplicate_result: dict[str, Any] | None = None  # the first answer, for a repeated idempotency key
    delivered_to: tuple[str, ...] = ()
    full: tuple[tuple[str, int], ...] = ()  # (recipient_id, depth) not reached: the inbox is full
    stored: bool = False
    spooled: bool = False  # stored in this machine's outbox, to be forwarded when the store is back
    limited: Charge | None = None  # the rate charge was refused: nothing stored, nothing taken


@dataclass(frozen=True)
class RequeueOutcome:
    states: dict[str, RequeueState]
    full_depth: int | None = None  # set (and nothing changed) when requeueing would overfill the inbox


@dataclass(frozen=True)
class Event:
    """One change of one delivery, with what a person needs to read it."""

    cursor: str
    at: float
    kind: EventKind
    message_id: str
    sender_id: str
    sender_name: str
    recipient_id: str
    recipient_name: str
    protocol: str
    version: str  # as sent
    delivered_version: str
    adapted_via: str | None
    attempt: int
    reason: str | None
    created_at: float  # when the message was sent


@dataclass(frozen=True)
class EventQuery:
    """Events after ``after`` (a cursor ``events`` returned), or from ``since``, or else the latest
    ``limit``; narrowed to a session (as sender or recipient), a protocol or a message."""

    after: str | None = None
    since: float | None = None
    limit: int = 100
    session_id: str | None = None
    protocol: str | None = None
    message_id: str | None = None


@dataclass(frozen=True)
class EventPage:
    events: list[Event]  # in the order appended
    cursor: str | None  # pass as ``after`` for what comes next; None while no event exists


@dataclass(frozen=True)
class Overview:
    """The whole store at a glance, for people."""

    waiting: int
    dead_letters: int
    oldest_waiting_at: float | None
    last_event_at: float | None


@dataclass(frozen=True)
class DeadLetterPage:
    rows: list[InboxRow]
    next_cursor: str | None  # opaque, issued by the store


@dataclass(frozen=True)
class StatusReport:
    rows: list[StatusRow]  # every delivery of the known messages, in the order stored
    known: set[str]  # the ids the caller sent (a broadcast may have reached no one)


# --- the contracts -------------------------------------------------------------------------------


class Store(Protocol):
    """The shared state of every broker process on one store."""

    url: str  # where it is, for people (no password)

    async def open(self) -> None: ...
    async def close(self) -> None: ...

    # catalog: protocols and adapters, immutable once stored
    async def add_protocol(self, row: ProtocolRow, *, max_versions: int | None = None) -> Added: ...
    async def get_protocol(self, name: str, version: str) -> ProtocolRow | None: ...
    async def list_protocols(self, name: str | None = None) -> list[ProtocolRow]: ...
    async def add_adapter(self, row: AdapterRow, *, max_adapters: int | None = None) -> Added: ...
    async def list_adapters(self, protocol: str | None = None) -> list[AdapterRow]: ...

    # reads for one decision
    async def snapshot(self, query: SnapshotQuery) -> Snapshot: ...
    async def find_session(self, ref: str, *, is_id: bool, now: float) -> SessionRow | None: ...
    async def list_sessions(self, now: float) -> list[SessionRow]: ...

    # sessions
    async def claim_session(self, claim: SessionClaim) -> SessionRow:
        """The claimed row; ``Conflict`` when the row is not as the caller saw it."""
        ...

    async def heartbeat(self, session_id: str, owner: str, now: float) -> bool: ...
    async def end_session(self, session_id: str, owner: str, now: float) -> SessionRow | None: ...
    async def save_agreements(self, agreements: Sequence[tuple[str, str, str, str]], now: float) -> None:
        """Remember (sender, recipient, protocol, version): the version the sender writes in."""
        ...

    # the queue
    async def enqueue(
        self,
        message: NewMessage,
        targets: Sequence[Target],
        *,
        max_inbox: int,
        refuse_full: bool,
        answer: dict[str, Any] | None = None,
        guard: Guard | None = None,
        rate: RateCharge | None = None,
    ) -> EnqueueOutcome:
        """Store the message and one delivery per target, or nothing.

        Nothing is stored when the idempotency key was seen (``duplicate_result``), when a full inbox
        is refused (``full`` set, ``stored`` false), when ``guard`` fails (``Conflict``), or when the
        ``rate`` charge finds too few tokens (``limited``); the charge is taken only with a store.
        The checks run in that order. ``answer`` is kept to be replayed for a repeated idempotency key.
        """
        ...

    async def lease(
        self,
        recipient_id: str,
        owner: str,
        *,
        limit: int,
        lease_seconds: float,
        now: float,
        max_attempts: int,
        protocol: str | None = None,
        stream_id: str | None = None,
    ) -> list[InboxRow]:
        """Lease up to ``limit`` ready deliveries (of one protocol, or one stream, when given) while
        ``owner`` holds the live session."""
        ...

    async def ack(self, recipient_id: str, message_ids: Sequence[str], now: float) -> dict[str, AckState]: ...
    async def requeue(
        self,
        recipient_id: str,
        message_ids: Sequence[str],
        *,
        now: float,
        from_states: tuple[str, ...],
        delay: float = 0.0,
        reset_attempts: bool,
        max_inbox: int | None = None,
    ) -> RequeueOutcome:
        """Queue deliveries in ``from_states`` again (release, replay); a replay clears the expiry."""
        ...

    async def peek(self, recipient_id: str, limit: int, now: float) -> list[InboxRow]: ...
    async def dead_letters(self, recipient_id: str, *, limit: int, cursor: str | None) -> DeadLetterPage:
        """Newest first; a cursor this store did not issue raises ``ValueError``."""
        ...

    async def message_status(self, sender_id: str, message_ids: Sequence[str]) -> StatusReport: ...
    async def request_for_reply(self, recipient_id: str, message_id: str) -> InboxRow | None: ...
    async def reply(self, recipient_id: str, request_id: str, message: NewMessage, target: Target) -> bool:
        """Store the reply and ack the request together; False (nothing stored) if it was acked."""
        ...

    async def take_reply(self, requester_id: str, request_id: str, now: float) -> InboxRow | None: ...
    async def sent_request(self, sender_id: str, request_id: str) -> bool: ...
    async def prune(
        self, *, before: float, now: float, sessions_before: float | None = None
    ) -> dict[str, int]:
        """Delete finished deliveries and events older than ``before``, orphan messages, long-gone sessions."""
        ...

    # for people: traffic and the whole store, not one session's view
    async def events(self, query: EventQuery) -> EventPage:
        """A cursor this store did not issue raises ``ValueError``."""
        ...

    async def overview(self, now: float) -> Overview: ...

    # message features (features.py has their values and rules)
    async def open_stream(self, stream: StreamRow, *, max_open: int) -> bool:
        """Store a new open stream; False (nothing stored) when the sender has ``max_open`` open."""
        ...

    async def append_chunk(
        self, message: NewMessage, target: Target, *, max_chunks: int, max_inbox: int
    ) -> AppendOutcome:
        """Number ``message`` (``stream_id`` set, ``stream_seq`` ignored) and store it for the stream's
        recipient; with ``message.last``, the stream is closed by the same step."""
        ...

    async def end_stream(
        self, stream_id: str, sender_id: str, *, reason: str, now: float, notice: NewMessage
    ) -> bool:
        """Abort an open stream of this sender with ``reason``: dead-letter its chunks not yet
        leased and store ``notice`` for the recipient. False when it was not open (or not theirs)."""
        ...

    async def stream(self, stream_id: str) -> StreamRow | None: ...
    async def idle_streams(self, *, before: float, limit: int) -> list[StreamRow]:
        """Open streams with no append since ``before``."""
        ...

    async def charge(
        self, session_id: str, cost: int, *, rate: float, burst: float, now: float
    ) -> Charge: ...
    async def rate_states(self, *, since: float) -> dict[str, RateState]:
        """Every session's bucket as last charged, and what it sent since ``since``."""
        ...

    async def history(self, session_id: str, query: HistoryQuery) -> HistoryPage:
        """A cursor this store did not issue raises ``ValueError``."""
        ...

    async def all_dead_letters(self, *, limit: int, cursor: str | None) -> DeadLetterPage:
        """Every session's dead letters, newest first (``InboxRow.recipient_*`` says whose)."""
        ...

    async def replay_dead(self, message_ids: Sequence[str], *, now: float, max_inbox: int) -> dict[str, int]:
        """Queue every dead-lettered delivery of these messages again, fresh attempts and no expiry;
        per id, how many deliveries moved. A recipient whose inbox is full keeps its dead letter."""
        ...

    async def purge_dead(self, message_ids: Sequence[str], *, now: float) -> dict[str, int]:
        """Delete every dead-lettered delivery of these messages; per id, how many went."""
        ...


class Ticket(Protocol):
    async def wait(self) -> Any: ...


class Notifier(Protocol):
    """Wake-ups between broker processes: a hint that a session's inbox changed, never a promise.

    A lost wake-up costs latency only: waiters re-check the store on a slow timer as well.
    """

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def listen(self) -> None:
        """Turn incoming wake-ups into local ones; runs for the life of the broker."""
        ...

    async def bind(self, session_id: str | None) -> None:
        """Wake this process for ``session_id`` (None: for no session)."""
        ...

    def notify(self, session_ids: Sequence[str]) -> None:
        """After a commit: wake whoever holds these sessions, and every watcher (with no ids: the
        watchers alone, after a change that wakes no receiver, such as an ack). Never blocks, never
        fails the caller."""
        ...

    def poke(self) -> None:
        """Wake waiters in this process."""
        ...

    def ticket(self) -> Ticket:
        """Take this before looking at the store, then wait on it: a wake-up in between is not missed."""
        ...

    async def watch(self) -> None:
        """Also wake this process on every session's traffic (for people's tools that follow it)."""
        ...
