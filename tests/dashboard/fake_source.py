"""A Source the tests drive by hand: in memory, thread-safe, and woken like the real one (no polling)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from mcp_broker.dashboard.source import (
    ActionOutcome,
    AdapterEdge,
    CompatPair,
    DeadLetterView,
    DeliveryView,
    DepthSample,
    EventKind,
    LatencyHistogram,
    LatencyPoint,
    MessageStory,
    MinuteCounts,
    ProtocolCompat,
    ProtocolFamily,
    ProtocolRange,
    ProtocolVersion,
    SessionView,
    Stats,
    Totals,
    TrafficEvent,
    TrafficPage,
)


@dataclass
class FakeSource:
    sessions_: list[SessionView] = field(default_factory=list)
    families: list[ProtocolFamily] = field(default_factory=list)
    compat: list[ProtocolCompat] = field(default_factory=list)
    dead: list[DeadLetterView] = field(default_factory=list)
    stats_: Stats = field(default_factory=lambda: Stats((), (), ()))
    latencies: list[float] = field(default_factory=list)
    store_retries: int = 0
    calls: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)  # replay/purge as called
    events: list[TrafficEvent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)

    # ---- driving it -------------------------------------------------------------------------

    def add_event(self, kind: EventKind, message_id: str, **fields: Any) -> TrafficEvent:
        """Append one event (from any thread) and wake whoever waits for traffic."""
        values: dict[str, Any] = {
            "sender": "author",
            "recipient": "reviewer",
            "protocol": "review",
            "version": "1.0.0",
        }
        values.update(fields)
        values.setdefault("at", time.time())
        with self._lock:
            event = TrafficEvent(cursor=str(len(self.events) + 1), kind=kind, message_id=message_id, **values)
            self.events.append(event)
            waiters, self._waiters = self._waiters, []
        for loop, flag in waiters:
            loop.call_soon_threadsafe(flag.set)
        return event

    # ---- the Source ---------------------------------------------------------------------------

    async def sessions(self) -> Sequence[SessionView]:
        return list(self.sessions_)

    async def protocols(self) -> Sequence[ProtocolFamily]:
        return list(self.families)

    async def compatibility(self) -> Sequence[ProtocolCompat]:
        return list(self.compat)

    async def traffic(
        self,
        after: str | None = None,
        limit: int = 100,
        session: str | None = None,
        protocol: str | None = None,
    ) -> TrafficPage:
        with self._lock:
            events = list(self.events)
        if not events:
            return TrafficPage((), None)
        if after is None:
            start = max(0, len(events) - limit)
            window = events[start:]
        else:
            window = events[int(after) : int(after) + limit]
        if not window:
            return TrafficPage((), after)
        kept = tuple(
            e
            for e in window
            if (session is None or session in (e.sender, e.recipient))
            and (protocol is None or e.protocol == protocol)
        )
        return TrafficPage(kept, window[-1].cursor)

    async def message_story(self, message_id: str) -> MessageStory | None:
        events = tuple(e for e in self.events if e.message_id == message_id)
        if not events:
            return None
        first = events[0]
        deliveries: dict[str, DeliveryView] = {}
        for e in events:
            if e.recipient is None:
                continue
            prior = deliveries.get(e.recipient) or DeliveryView(
                e.recipient, "queued", 0, e.delivered_version or e.version, e.adapter_path
            )
            state = {
                "leased": "leased",
                "acked": "acked",
                "dead_lettered": "dead_lettered",
                "replayed": "queued",
            }
            deliveries[e.recipient] = replace(
                prior,
                state=state.get(e.kind.value, prior.state),
                attempts=e.attempt or prior.attempts,
                reason=e.reason or prior.reason,
                delivered_version=e.delivered_version or prior.delivered_version,
                adapter_path=e.adapter_path or prior.adapter_path,
                updated_at=e.at,
            )
        return MessageStory(
            message_id=message_id,
            sender=first.sender,
            protocol=first.protocol,
            version=first.version,
            created_at=first.at,
            broadcast=first.recipient is None,
            payload={"text": "please review PR 17"},
            correlation_id=None,
            events=events,
            deliveries=tuple(deliveries.values()),
        )

    async def dead_letters(self, limit: int = 100) -> Sequence[DeadLetterView]:
        return list(self.dead[:limit])

    async def replay(self, message_ids: Sequence[str]) -> Sequence[ActionOutcome]:
        self.calls.append(("replay", tuple(message_ids)))
        outcomes = []
        for mid in message_ids:
            letter = next((d for d in self.dead if d.message_id == mid), None)
            if letter is None:
                outcomes.append(ActionOutcome(mid, "unknown"))
                continue
            self.dead.remove(letter)
            self.add_event(EventKind.REPLAYED, mid, sender=letter.sender, recipient=letter.recipient)
            outcomes.append(ActionOutcome(mid, "requeued"))
        return outcomes

    async def purge(self, message_ids: Sequence[str]) -> Sequence[ActionOutcome]:
        self.calls.append(("purge", tuple(message_ids)))
        before = len(self.dead)
        self.dead = [d for d in self.dead if d.message_id not in message_ids]
        return [
            ActionOutcome(mid, "purged" if before != len(self.dead) else "unknown") for mid in message_ids
        ]

    async def stats(self, since: float) -> Stats:
        return self.stats_

    async def totals(self, latency_bounds: Sequence[float]) -> Totals:
        with self._lock:
            counts = Counter((e.protocol, e.kind) for e in self.events)
        buckets = [0] * (len(latency_bounds) + 1)
        for seconds in self.latencies:
            index = next(
                (i for i, bound in enumerate(latency_bounds) if seconds <= bound), len(latency_bounds)
            )
            buckets[index] += 1
        histogram = LatencyHistogram(tuple(latency_bounds), tuple(buckets), sum(self.latencies))
        return Totals(dict(counts), histogram, store_errors=0, store_retries=self.store_retries)

    async def wait_for_change(self, after: str | None, timeout: float) -> bool:
        flag = asyncio.Event()
        with self._lock:
            if len(self.events) > (int(after) if after else 0):
                return True
            self._waiters.append((asyncio.get_running_loop(), flag))
        try:
            await asyncio.wait_for(flag.wait(), timeout)
        except TimeoutError:
            return False
        return True


def session(
    name: str, status: str, protocols: dict[str, str], features: Sequence[str], depth: int, pid: int
) -> SessionView:
    return SessionView(
        name=name,
        session_id=f"{name}-0000-4000-8000-{pid:012d}",
        status=status,
        host="devbox",
        pid=pid,
        protocols=tuple(ProtocolRange(n, v) for n, v in protocols.items()),
        features=tuple(features),
        queue_depth=depth,
        last_seen=time.time() - {"active": 2, "stale": 45, "disconnected": 900}[status],
    )


def demo_source() -> FakeSource:
    """A small fleet in the middle of a protocol upgrade: what the screenshots show."""
    schema_v1 = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    schema_v2 = {
        "type": "object",
        "properties": {"body": {"type": "string"}, "lang": {"type": "string"}},
        "required": ["body", "lang"],
    }
    rename = {"op": "rename", "from": "/text", "to": "/body"}
    source = FakeSource(
        sessions_=[
            session("author", "active", {"review": "==1.0.0", "chat": ">=1.0,<2"}, ["python"], 0, 4242),
            session(
                "reviewer",
                "active",
                {"review": "^2.0", "chat": ">=1.0,<2"},
                ["code_review", "python"],
                3,
                4243,
            ),
            session("ci", "stale", {"chat": ">=1.0,<2"}, ["ci"], 1, 4250),
            session("old-bot", "disconnected", {"review": "==1.1.0"}, [], 7, 3999),
        ],
        families=[
            ProtocolFamily(
                "review",
                (
                    ProtocolVersion("1.0.0", ("point_to_point",), schema_v1, "a review request"),
                    ProtocolVersion(
                        "1.1.0",
                        ("point_to_point",),
                        {**schema_v1, "properties": {"text": {"type": "string"}, "lang": {"type": "string"}}},
                    ),
                    ProtocolVersion(
                        "2.0.0", ("point_to_point", "request_response"), schema_v2, "body and language"
                    ),
                ),
                (
                    AdapterEdge("1.0.0", "1.1.0", ({"op": "set_default", "path": "/lang", "value": "en"},)),
                    AdapterEdge("1.1.0", "2.0.0", (rename,)),
                    AdapterEdge("2.0.0", "1.1.0", ({"op": "rename", "from": "/body", "to": "/text"},)),
                    AdapterEdge("1.1.0", "1.0.0", ({"op": "remove", "path": "/lang"},)),
                ),
            ),
            ProtocolFamily(
                "chat", (ProtocolVersion("1.0.0", ("point_to_point", "broadcast"), schema_v1, "plain chat"),)
            ),
        ],
        compat=[
            ProtocolCompat(
                "review",
                ("author", "reviewer"),
                (
                    CompatPair("author", "reviewer", "adapted", ("1.0.0", "1.1.0", "2.0.0")),
                    CompatPair("reviewer", "author", "adapted", ("2.0.0", "1.1.0", "1.0.0")),
                ),
            ),
            ProtocolCompat(
                "chat",
                ("author", "reviewer", "ci"),
                tuple(
                    CompatPair(a, b, "direct", ("1.0.0",))
                    for a in ("author", "reviewer", "ci")
                    for b in ("author", "reviewer", "ci")
                    if a != b
                ),
            ),
        ],
        dead=[
            DeadLetterView(
                "d3ad0001-0000-4000-8000-000000000001",
                "author",
                "reviewer",
                "review",
                "1.0.0",
                "not acked after 5 deliveries",
                5,
                time.time() - 300,
                {"text": "please review PR 12"},
            ),
            DeadLetterView(
                "d3ad0002-0000-4000-8000-000000000002",
                "ci",
                "old-bot",
                "chat",
                "1.0.0",
                "expired",
                1,
                time.time() - 1200,
                {"text": "build is green"},
            ),
        ],
        latencies=[0.004, 0.012, 0.03, 0.2, 1.5],
    )
    now = time.time()
    minute0 = now - now % 60 - 59 * 60
    source.stats_ = Stats(
        per_minute=tuple(
            MinuteCounts(minute0 + 60 * i, {"review": (i * 7) % 5 + 1, "chat": (i * 3) % 4})
            for i in range(60)
        ),
        queue_depth=tuple(
            DepthSample(minute0 + 60 * i, {"reviewer": (i // 6) % 4, "old-bot": min(7, i // 8)})
            for i in range(60)
        ),
        latency=tuple(
            LatencyPoint(
                minute0 + 60 * i, 5, 0.01 + (i % 5) * 0.002, 0.03 + (i % 7) * 0.01, 0.08 + (i % 4) * 0.05
            )
            for i in range(60)
        ),
    )
    mid = "5e7d0001-0000-4000-8000-000000000001"
    t = now - 20
    source.add_event(
        EventKind.SENT,
        mid,
        at=t,
        delivered_version="2.0.0",
        adapter_path=("1.0.0", "1.1.0", "2.0.0"),
    )
    source.add_event(EventKind.LEASED, mid, at=t + 0.012, delivered_version="2.0.0", attempt=1)
    source.add_event(EventKind.ACKED, mid, at=t + 0.4, delivered_version="2.0.0", attempt=1)
    for i, who in enumerate(("author", "reviewer")):  # a broadcast: one delivery per recipient
        source.add_event(
            EventKind.SENT,
            "c4a70001-0000-4000-8000-000000000002",
            at=t + 3.001 + i / 1000,
            sender="ci",
            recipient=who,
            protocol="chat",
        )
    source.add_event(
        EventKind.DEAD_LETTERED,
        "d3ad0001-0000-4000-8000-000000000001",
        at=t + 5,
        attempt=5,
        reason="not acked after 5 deliveries",
    )
    return source
