"""Figures from the store's event log, in pure code: running totals for the metrics, charts of a window.

Both read events in the order the store appended them, one page at a time, and keep only counts (and a
bounded sample of latencies per minute), never the events: a window or a store of any size costs the same
memory. Latency is a delivery's first lease minus its message's ``created_at``, both stored timestamps.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from ..store.contract import Event
from ..store.contract import EventKind as StoreKind
from .source import (
    DepthSample,
    EventKind,
    LatencyHistogram,
    LatencyPoint,
    MinuteCounts,
    Stats,
    Totals,
    TrafficEvent,
)

SAMPLES_PER_MINUTE = 2000  # latencies kept per minute for its percentiles (a uniform sample beyond)
# How one delivery's event moves its recipient's queue depth (waiting = queued or leased).
DEPTH_CHANGE = {
    EventKind.SENT: 1,
    EventKind.REPLAYED: 1,
    EventKind.ACKED: -1,
    EventKind.DEAD_LETTERED: -1,
    EventKind.EXPIRED: -1,
}


def kind_of(event: Event) -> EventKind:
    """The dashboard's kind: a dead letter whose TTL ran out reads as ``expired``."""
    if event.kind is StoreKind.dead_lettered and event.reason == "expired":
        return EventKind.EXPIRED
    return EventKind(event.kind.value)


def traffic_event(event: Event) -> TrafficEvent:
    return TrafficEvent(
        cursor=event.cursor,
        at=event.at,
        kind=kind_of(event),
        message_id=event.message_id,
        sender=event.sender_name,
        recipient=event.recipient_name or None,
        protocol=event.protocol,
        version=event.version,
        delivered_version=event.delivered_version or None,
        adapter_path=tuple(event.adapted_via.split(">")) if event.adapted_via else (),
        attempt=event.attempt or None,
        reason=event.reason,
    )


class FirstLeases:
    """Picks out the leases that deliver for the first time, and their latency.

    A replay queues a dead letter again with its attempts reset, so its next first lease is a delivery
    again, but its latency from the message's creation would count the time it lay dead: it is left out.
    """

    def __init__(self) -> None:
        self._replayed: set[tuple[str, str]] = set()

    def latency(self, event: Event) -> float | None:
        """For a first lease the seconds since the send (None after a replay); else None."""
        key = (event.message_id, event.recipient_id)
        if event.kind is StoreKind.replayed:
            self._replayed.add(key)
            return None
        if event.kind is not StoreKind.leased or event.attempt != 1:
            return None
        if key in self._replayed:
            self._replayed.discard(key)
            return None
        return max(0.0, event.at - event.created_at)


class Tally:
    """Running totals over every event added: counts by (protocol, kind), first leases, the histogram."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.events: Counter[tuple[str, EventKind]] = Counter()
        self.delivered: Counter[str] = Counter()
        self._buckets = [0] * (len(self.bounds) + 1)
        self._seconds = 0.0
        self._first = FirstLeases()

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            self.events[(event.protocol, kind_of(event))] += 1
            if event.kind is StoreKind.leased and event.attempt == 1:
                self.delivered[event.protocol] += 1
            seconds = self._first.latency(event)
            if seconds is not None:
                self._buckets[_bucket(self.bounds, seconds)] += 1
                self._seconds += seconds

    def totals(self, *, store_errors: int = 0, store_retries: int = 0) -> Totals:
        return Totals(
            events=dict(self.events),
            latency=LatencyHistogram(self.bounds, tuple(self._buckets), self._seconds),
            delivered=dict(self.delivered),
            store_errors=store_errors,
            store_retries=store_retries,
        )


def _bucket(bounds: Sequence[float], seconds: float) -> int:
    return next((i for i, bound in enumerate(bounds) if seconds <= bound), len(bounds))


class Window:
    """The charts from ``since`` to ``now``: per-minute counts, queue depth and latency percentiles."""

    def __init__(self, since: float, now: float) -> None:
        self.since = since
        self.now = now
        self.first_minute = math.floor(since / 60) * 60
        self._sent: defaultdict[float, Counter[str]] = defaultdict(Counter)
        self._kinds: defaultdict[float, Counter[str]] = defaultdict(Counter)
        self._depth: defaultdict[float, Counter[str]] = defaultdict(Counter)
        self._latency: defaultdict[float, list[float]] = defaultdict(list)
        self._latency_count: Counter[float] = Counter()
        self._first = FirstLeases()
        self._random = random.Random(0)

    def minute(self, at: float) -> float:
        return max(self.first_minute, math.floor(at / 60) * 60)

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            minute = self.minute(event.at)
            kind = kind_of(event)
            self._kinds[minute][kind.value] += 1
            if kind is EventKind.SENT:
                self._sent[minute][event.protocol] += 1
            change = DEPTH_CHANGE.get(kind)
            if change:
                self._depth[minute][event.recipient_name] += change
            seconds = self._first.latency(event)
            if seconds is not None:
                self._sample(minute, seconds)

    def _sample(self, minute: float, seconds: float) -> None:
        self._latency_count[minute] += 1
        kept = self._latency[minute]
        if len(kept) < SAMPLES_PER_MINUTE:
            kept.append(seconds)
            return
        slot = self._random.randrange(self._latency_count[minute])  # reservoir: each one equally likely
        if slot < SAMPLES_PER_MINUTE:
            kept[slot] = seconds

    def stats(self, depth_now: Mapping[str, int], *, partial: bool = False) -> Stats:
        """The figures; ``depth_now`` (waiting deliveries per session, read now) anchors the depth curve,
        which is walked back minute by minute through the events' changes."""
        minutes = []
        minute = self.first_minute
        while minute <= self.now:
            minutes.append(minute)
            minute += 60
        per_minute = tuple(
            MinuteCounts(m, dict(self._sent.get(m, {})), dict(self._kinds.get(m, {}))) for m in minutes
        )
        depth = Counter({name: count for name, count in depth_now.items() if count})
        names = set(depth) | {name for changes in self._depth.values() for name in changes}
        samples = []
        for m in reversed(minutes):
            samples.append(
                DepthSample(
                    min(m + 60, self.now), {name: max(0, depth.get(name, 0)) for name in sorted(names)}
                )
            )
            depth.subtract(self._depth.get(m, {}))
        latency = tuple(
            _percentiles(m, self._latency_count[m], self._latency[m]) for m in minutes if self._latency.get(m)
        )
        return Stats(per_minute, tuple(reversed(samples)), latency, partial=partial)


def _percentiles(minute: float, count: int, kept: list[float]) -> LatencyPoint:
    ordered = sorted(kept)

    def rank(q: float) -> float:  # nearest rank: a value that was measured
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return LatencyPoint(minute, count, rank(0.5), rank(0.9), rank(0.99))
