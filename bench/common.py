"""What every section shares: the run's settings and figures, spawned processes, and small statistics."""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .client import BrokerProcess
from .report import Figure

# The benchmark's agents are programs measuring the broker, not models: no per-session rate limit.
UNLIMITED: dict[str, Any] = {"rate_per_second": 1e9, "rate_burst": 1e9}
PROTOCOL = "bench"
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "text": {"type": "string", "maxLength": 1000}},
    "required": ["n"],
    "additionalProperties": False,
}
REGISTER: dict[str, Any] = {
    "name": PROTOCOL,
    "version": "1.0.0",
    "schema": SCHEMA,
    "capabilities": ["point_to_point", "broadcast"],
    "metadata": {"description": "benchmark messages"},
}
SPEAKS = [{"name": PROTOCOL, "versions": ">=1.0,<2"}]
TEXT = "a short message from one agent to another, about the size of a chat line"


def payload(n: int) -> dict[str, Any]:
    return {"n": n, "text": TEXT}


@dataclass
class Run:
    """One benchmark run: its options, its scratch folder, what it measured."""

    quick: bool
    messages: int
    workdir: Path
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    processes: list[BrokerProcess] = field(default_factory=list)
    store: str | None = None  # a Redis URL: every broker uses it, each section in its own namespace

    def figure(self, name: str, value: float, unit: str, note: str = "") -> None:
        self.figures.append(Figure.make(name, value, unit, note))

    def db(self, section: str) -> Path:
        """A fresh database per section, so one section's sessions and rows do not weigh on the next."""
        folder = self.workdir / section
        folder.mkdir(parents=True, exist_ok=True)
        return folder / "broker.db"

    async def spawn(self, db: Path, name: str, **settings: Any) -> BrokerProcess:
        if self.store is not None:
            settings = {"store": self.store, "namespace": db.parent.name, **settings}
        process = await BrokerProcess.spawn(db, db.parent, name, **settings)
        self.processes.append(process)
        return process

    async def close(self, *processes: BrokerProcess) -> None:
        targets = list(processes) or list(self.processes)
        await asyncio.gather(*(p.close() for p in targets))
        for p in targets:
            if p in self.processes:
                self.processes.remove(p)


async def session(process: BrokerProcess, name: str, *, register: bool = False) -> None:
    """Connect ``process`` as ``name``, registering the benchmark protocol first if asked."""
    if register:
        await process.call("register_protocol", REGISTER)
    await process.call("connect", {"name": name, "protocols": SPEAKS})


async def drain(process: BrokerProcess) -> int:
    """Receive and ack everything waiting for this process's session; returns how many."""
    total = 0
    while True:
        result, _ = await process.call("receive", {"max_messages": 100})
        ids = [m["message_id"] for m in result["messages"]]
        if not ids:
            return total
        await process.call("ack", {"message_ids": ids})
        total += len(ids)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), by linear interpolation between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max of durations given in seconds, in milliseconds."""
    return {
        "n": len(values),
        "p50": percentile(values, 50) * 1000,
        "p95": percentile(values, 95) * 1000,
        "p99": percentile(values, 99) * 1000,
        "max": max(values) * 1000 if values else float("nan"),
        "mean": statistics.fmean(values) * 1000 if values else float("nan"),
    }


class Progress:
    """One line per step on stderr, so a long run shows where it is; stdout keeps the table."""

    def __init__(self, section: str) -> None:
        self.section = section
        self.start = time.perf_counter()

    def __call__(self, text: str) -> None:
        print(
            f"[{time.perf_counter() - self.start:6.1f} s] {self.section}: {text}", file=sys.stderr, flush=True
        )
