"""Prometheus text for the broker: a custom collector over one snapshot of the Source.

Traffic is counted from the store's event log, not in this process, so any number of dashboards (or
``mcp-broker metrics`` runs) on one store print the same counts; only the store errors and retries are
this process's own.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .source import EventKind, SessionView, Source, Totals

CONTENT_TYPE = CONTENT_TYPE_LATEST  # what generate_latest writes
# Upper bounds in seconds: a wake-up within milliseconds up to a message that waited for its reader.
LATENCY_BOUNDS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    3600,
)
STATUSES = ("active", "stale", "disconnected")

_KIND_HELP = {
    EventKind.SENT: "deliveries stored for a recipient (a broadcast counts once per recipient)",
    EventKind.LEASED: "deliveries handed out by a receive, every attempt counted",
    EventKind.ACKED: "deliveries acked by their recipient",
    EventKind.RELEASED: "deliveries released before their lease ran out",
    EventKind.DEAD_LETTERED: "deliveries dead-lettered after max_attempts leases without an ack",
    EventKind.EXPIRED: "deliveries dead-lettered because their TTL ran out before an ack",
    EventKind.REPLAYED: "dead-lettered deliveries replayed",
    EventKind.PURGED: "dead-lettered deliveries purged",
}
DELIVERED_HELP = "deliveries handed to their recipient for the first time (first lease; again after a replay)"


@dataclass(frozen=True)
class Snapshot:
    sessions: Sequence[SessionView]
    totals: Totals


async def snapshot(source: Source) -> Snapshot:
    """Read what the metrics need; the collector itself is synchronous, as prometheus-client wants."""
    return Snapshot(sessions=await source.sessions(), totals=await source.totals(LATENCY_BOUNDS))


class SnapshotCollector(Collector):
    def __init__(self, snap: Snapshot) -> None:
        self._snap = snap

    def collect(self) -> Iterator[Metric]:
        totals = self._snap.totals
        protocols = sorted({protocol for protocol, _ in totals.events} | set(totals.delivered))
        for kind in EventKind:
            family = CounterMetricFamily(
                f"mcp_broker_messages_{kind.value}", _KIND_HELP[kind] + ", by protocol", labels=["protocol"]
            )
            for protocol in protocols:
                family.add_metric([protocol], totals.events.get((protocol, kind), 0))
            yield family
            if kind is EventKind.SENT:
                delivered = CounterMetricFamily(
                    "mcp_broker_messages_delivered", DELIVERED_HELP + ", by protocol", labels=["protocol"]
                )
                for protocol in protocols:
                    delivered.add_metric([protocol], totals.delivered.get(protocol, 0))
                yield delivered

        depth = GaugeMetricFamily(
            "mcp_broker_queue_depth", "deliveries waiting (queued or leased) per session", labels=["session"]
        )
        by_status = dict.fromkeys(STATUSES, 0)
        for session in self._snap.sessions:
            depth.add_metric([session.name], session.queue_depth)
            by_status[session.status] = by_status.get(session.status, 0) + 1
        yield depth
        sessions = GaugeMetricFamily("mcp_broker_sessions", "sessions by status", labels=["status"])
        for status, count in by_status.items():
            sessions.add_metric([status], count)
        yield sessions

        hist = totals.latency
        running = 0
        buckets: list[tuple[str, float]] = []
        for bound, count in zip((*hist.bounds, float("inf")), hist.counts, strict=True):
            running += count
            buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
        yield HistogramMetricFamily(
            "mcp_broker_delivery_latency_seconds",
            "time from a send to the first lease of each delivery, from stored timestamps",
            buckets=buckets,
            sum_value=hist.total_seconds,
        )

        yield CounterMetricFamily(
            "mcp_broker_store_errors",
            "this process's store calls that failed after their retries",
            value=totals.store_errors,
        )
        yield CounterMetricFamily(
            "mcp_broker_store_retries",
            "this process's store calls retried because the store was busy",
            value=totals.store_retries,
        )


def render(snap: Snapshot) -> bytes:
    """The Prometheus text exposition of one snapshot (a registry of its own: no process metrics)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snap))
    return generate_latest(registry)


async def render_source(source: Source) -> bytes:
    return render(await snapshot(source))
