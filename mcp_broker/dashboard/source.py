"""What the dashboard reads from the broker: one small typed interface and the plain values it returns.

The dashboard never touches a store. Whatever implements ``Source`` (the domain, over any backend; a fake
in the tests) answers these calls, and the app only renders them. Times are Unix seconds (float, UTC);
the page formats them. Cursors are opaque strings the source hands out and takes back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol, runtime_checkable


class EventKind(StrEnum):
    """What happened to one delivery (a message for one recipient), as the store's event log says."""

    SENT = "sent"  # stored for a recipient (a broadcast makes one per recipient), adapted if versions differ
    LEASED = "leased"  # handed out by a receive; attempt counts from 1
    ACKED = "acked"
    RELEASED = "released"  # given back before its lease ran out
    DEAD_LETTERED = "dead_lettered"  # leased max_attempts times without an ack; reason says so
    EXPIRED = "expired"  # dead-lettered because its TTL ran out before an ack
    REPLAYED = "replayed"  # taken out of the dead letters and queued again
    PURGED = "purged"  # a dead letter deleted for good


CompatMode = Literal["direct", "adapted", "none"]


@dataclass(frozen=True)
class ProtocolRange:
    name: str
    versions: str  # the specifier the session accepts, e.g. ">=1.0,<2"


@dataclass(frozen=True)
class SessionView:
    name: str
    session_id: str
    status: str  # active | stale | disconnected
    host: str | None
    pid: int | None
    protocols: tuple[ProtocolRange, ...]
    features: tuple[str, ...]
    queue_depth: int
    last_seen: float


@dataclass(frozen=True)
class ProtocolVersion:
    version: str
    capabilities: tuple[str, ...]
    schema: Mapping[str, Any]
    description: str | None = None


@dataclass(frozen=True)
class AdapterEdge:
    from_version: str
    to_version: str
    steps: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class ProtocolFamily:
    """Every registered version of one protocol and the adapters between them."""

    name: str
    versions: tuple[ProtocolVersion, ...]  # oldest first
    adapters: tuple[AdapterEdge, ...] = ()


@dataclass(frozen=True)
class CompatPair:
    sender: str
    recipient: str
    mode: CompatMode
    path: tuple[str, ...]  # direct: the common version; adapted: the versions walked; none: empty


@dataclass(frozen=True)
class ProtocolCompat:
    """Who among the live sessions can send this protocol to whom."""

    protocol: str
    sessions: tuple[str, ...]
    pairs: tuple[CompatPair, ...]


@dataclass(frozen=True)
class TrafficEvent:
    cursor: str
    at: float
    kind: EventKind
    message_id: str
    sender: str
    recipient: str | None
    protocol: str
    version: str  # as sent
    delivered_version: str | None = None  # as the recipient gets it, when an adapter changed it
    adapter_path: tuple[str, ...] = ()  # e.g. ("1.0.0", "1.1.0", "2.0.0")
    attempt: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class TrafficPage:
    events: tuple[TrafficEvent, ...]  # oldest first
    cursor: str | None  # pass as ``after`` to get what comes next; None when there was nothing at all


@dataclass(frozen=True)
class DeliveryView:
    recipient: str
    state: str  # queued | leased | acked | dead_lettered | expired
    attempts: int
    delivered_version: str
    adapter_path: tuple[str, ...] = ()
    reason: str | None = None
    updated_at: float | None = None
    acked_at: float | None = None


@dataclass(frozen=True)
class MessageStory:
    """One message from its send to each recipient's last word."""

    message_id: str
    sender: str
    protocol: str
    version: str
    created_at: float
    broadcast: bool
    payload: Any
    correlation_id: str | None
    events: tuple[TrafficEvent, ...]
    deliveries: tuple[DeliveryView, ...]


@dataclass(frozen=True)
class DeadLetterView:
    message_id: str
    sender: str
    recipient: str
    protocol: str
    version: str
    reason: str | None
    attempts: int
    dead_lettered_at: float
    payload: Any


@dataclass(frozen=True)
class ActionOutcome:
    message_id: str
    status: str  # replay: "requeued"; purge: "purged"; else the state it stays in, or "unknown"


@dataclass(frozen=True)
class MinuteCounts:
    minute: float  # the minute's start
    sent_by_protocol: Mapping[str, int]  # deliveries stored (a broadcast counts once per recipient)
    by_kind: Mapping[str, int] = field(default_factory=dict)  # every event of the minute, by kind


@dataclass(frozen=True)
class DepthSample:
    at: float
    by_session: Mapping[str, int]  # waiting (queued or leased) deliveries per recipient


@dataclass(frozen=True)
class LatencyPoint:
    """Delivery latency (send to first lease) of the deliveries first leased within one minute."""

    minute: float
    count: int
    p50: float
    p90: float
    p99: float


@dataclass(frozen=True)
class Stats:
    per_minute: tuple[MinuteCounts, ...]
    queue_depth: tuple[DepthSample, ...]
    latency: tuple[LatencyPoint, ...]
    partial: bool = False  # the window held more events than one read takes: the newest minutes are missing


@dataclass(frozen=True)
class LatencyHistogram:
    """Non-cumulative counts: ``counts[i]`` fell at or under ``bounds[i]``, the last one above them all."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]  # len(bounds) + 1
    total_seconds: float


@dataclass(frozen=True)
class Totals:
    """Everything the store still holds, counted for Prometheus counters.

    ``events`` counts by (protocol, kind) every event since the store began, as far back as its
    retention keeps them; a source that stays up keeps counting past later prunes, so its counts only grow.
    ``store_errors`` and ``store_retries`` are this process's own calls: the store keeps no such count.
    """

    events: Mapping[tuple[str, EventKind], int]
    latency: LatencyHistogram
    delivered: Mapping[str, int] = field(default_factory=dict)  # by protocol: first leases of a delivery
    store_errors: int = 0  # store calls that failed after their retries
    store_retries: int = 0  # store calls retried because the store was busy


@runtime_checkable
class Source(Protocol):
    """The broker as the dashboard sees it: reads, two actions, and a wake-up."""

    async def sessions(self) -> Sequence[SessionView]:
        """Every session not yet pruned, with its status now."""
        ...

    async def protocols(self) -> Sequence[ProtocolFamily]: ...

    async def compatibility(self) -> Sequence[ProtocolCompat]:
        """Per protocol, every ordered pair of live sessions that speak it."""
        ...

    async def traffic(
        self,
        after: str | None = None,
        limit: int = 100,
        session: str | None = None,
        protocol: str | None = None,
    ) -> TrafficPage:
        """Events after the cursor, oldest first; without a cursor, the latest ``limit`` events.

        ``session`` keeps the events it sent or received (by name); ``protocol`` those of that protocol.
        The returned cursor moves past everything looked at, filtered out or not.
        """
        ...

    async def message_story(self, message_id: str) -> MessageStory | None: ...

    async def dead_letters(self, limit: int = 100) -> Sequence[DeadLetterView]:
        """The newest dead letters of every recipient, newest first."""
        ...

    async def replay(self, message_ids: Sequence[str]) -> Sequence[ActionOutcome]:
        """Queue every dead-lettered delivery of these messages again, with fresh attempts."""
        ...

    async def purge(self, message_ids: Sequence[str]) -> Sequence[ActionOutcome]:
        """Delete the dead-lettered deliveries of these messages for good."""
        ...

    async def stats(self, since: float) -> Stats:
        """Per-minute figures from ``since`` to now, from stored timestamps."""
        ...

    async def totals(self, latency_bounds: Sequence[float]) -> Totals:
        """Counts for the metrics; the latency histogram uses the bounds given."""
        ...

    async def wait_for_change(self, after: str | None, timeout: float) -> bool:
        """Return True as soon as traffic after the cursor exists (at once if it already does), else
        False after ``timeout`` seconds. ``after=None`` waits for any traffic at all.

        Taking the cursor makes the wait race-free: an event stored between the caller's last
        ``traffic`` read and this call must still end the wait. Meant to ride the broker's own wake-up
        (the doorbell receivers use) with a check of the store before sleeping, not a fast poll.
        A True with nothing new for the caller's filters is fine: its next ``traffic`` moves the cursor.
        """
        ...
