"""7. Load: an open-loop offered rate across many broker processes, the way a fleet of agents uses it.

``N`` real broker processes (50; 10 with --quick) share one database, each bound to its own session.
Every agent long-polls its inbox and acks what it received (in the next ``receive`` where the broker
takes ``ack``, else with an ``ack`` call). A scheduler offers sends at a fixed rate for a fixed time,
each from a random agent to another random agent, whether or not earlier sends have been answered (an
open loop: a slow broker cannot slow the offered load down, so queueing shows as latency).

* Latency: the send request leaving -> the receive answer carrying that message arriving (one clock).
* Broker CPU per delivered message: the brokers' utime+stime from the first send until the last
  message was delivered, divided by the messages delivered.
* Idle: every process parked in ``receive(wait_seconds=30)`` with nothing to receive, in cores used.
* Lost (a send answered but never delivered), duplicates (delivered twice), errors (``STORE_BUSY``
  and ``OVERLOADED``, the early refusal past capacity, counted on their own too).

A sweep offers rising rates until p99 reaches 500 ms (or a message is lost or a call fails); the plan's
case, 50 agents x 100 msg/s, is printed against its P50 / P95 / P99 targets.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from . import procfs
from .client import BrokerProcess
from .common import PROTOCOL, REGISTER, SPEAKS, Progress, Run, percentile

P99_LIMIT_MS = 500.0
DRAIN_SECONDS = 60.0
IDLE_WAIT = 30.0
RATES = (50, 100, 150, 200, 300, 400, 500, 600, 800)
QUICK_RATES = (20, 50)
PLAN_RATE = 100


@dataclass
class _Step:
    rate: float
    sent_at: dict[int, float] = field(default_factory=dict)  # payload n -> its send request leaving
    answered: set[int] = field(default_factory=set)  # sends the broker answered with a message id
    received_at: dict[int, float] = field(default_factory=dict)  # n -> the receive answer carrying it
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)
    store_busy: int = 0
    overloaded: int = 0
    last_arrival: float = 0.0
    lag: float = 0.0  # how late the benchmark's own loop sent, at worst

    def fail(self, text: str) -> None:
        self.errors.append(text)
        if "STORE_BUSY" in text:
            self.store_busy += 1
        if "OVERLOADED" in text:
            self.overloaded += 1


class _Agents:
    """The processes, each long-polling its inbox for as long as the load runs."""

    def __init__(self, processes: list[BrokerProcess], ack_in_receive: bool) -> None:
        self.processes = processes
        self.ack_in_receive = ack_in_receive
        self.step: _Step | None = None
        self.stopping = False
        self._pending_acks: list[list[str]] = [[] for _ in processes]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self.stopping = False
        self._tasks = [asyncio.create_task(self._poll(i)) for i in range(len(self.processes))]

    async def stop(self) -> None:
        """Let each poller finish its wait and flush its last acks."""
        self.stopping = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for i, ids in enumerate(self._pending_acks):
            if ids:
                await self._ack(i, ids)

    async def _ack(self, i: int, ids: list[str]) -> None:
        self._pending_acks[i] = []
        try:
            if self.ack_in_receive:
                await self.processes[i].call("receive", {"max_messages": 1, "ack": ids})
            else:
                await self.processes[i].call("ack", {"message_ids": ids})
        except Exception as exc:
            if self.step is not None:
                self.step.fail(f"ack by load-{i}: {exc}")

    async def _poll(self, i: int) -> None:
        process = self.processes[i]
        while not self.stopping:
            arguments: dict[str, Any] = {"max_messages": 100, "wait_seconds": 0.5}
            acking = self._pending_acks[i]
            if acking and self.ack_in_receive:
                arguments["ack"] = acking
                self._pending_acks[i] = []
            try:
                result, arrived = await process.call("receive", arguments)
            except Exception as exc:
                if self.step is not None:
                    self.step.fail(f"receive by load-{i}: {exc}")
                await asyncio.sleep(0.05)
                continue
            messages = result["messages"]
            step = self.step
            if step is not None:
                for m in messages:
                    n = m["payload"]["n"]
                    if n in step.received_at:
                        step.duplicates += 1
                    else:
                        step.received_at[n] = arrived
                        step.last_arrival = arrived
            ids = [m["message_id"] for m in messages]
            if ids:
                self._pending_acks[i] = ids
                if not self.ack_in_receive:
                    await self._ack(i, ids)


async def _offer(run_step: _Step, processes: list[BrokerProcess], window: float, first_n: int) -> None:
    """Offer sends at ``run_step.rate`` for ``window`` seconds, on schedule, from random senders."""
    rng = random.Random(first_n)
    size = len(processes)
    calls: list[asyncio.Task[None]] = []

    async def one(n: int, due: float, sender: int, to: int) -> None:
        stamp: list[float] = []
        arguments = {"to": f"load-{to}", "protocol": PROTOCOL, "payload": {"n": n}}
        call = asyncio.ensure_future(processes[sender].call("send", arguments, sent=stamp))
        await asyncio.sleep(0)  # the call runs up to its first wait: its request has left
        if stamp:
            run_step.sent_at[n] = stamp[0]
            run_step.lag = max(run_step.lag, stamp[0] - due)
        try:
            await call
        except Exception as exc:
            run_step.fail(f"send from load-{sender}: {exc}")
            return
        run_step.answered.add(n)

    def launch(n: int, due: float) -> None:
        sender = rng.randrange(size)
        to = (sender + rng.randrange(1, size)) % size
        calls.append(asyncio.create_task(one(n, due, sender, to)))

    interval = 1.0 / run_step.rate
    total = int(window * run_step.rate)
    start = time.perf_counter()
    for k in range(total):
        due = start + k * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        launch(first_n + k, due)
    await asyncio.gather(*calls)


async def _step(
    agents: _Agents, rate: float, window: float, first_n: int, progress: Progress
) -> dict[str, Any]:
    processes = agents.processes
    step = _Step(rate)
    agents.step = step
    cpu_before = sum(procfs.cpu_seconds(p.pid) for p in processes)
    client_before = procfs.cpu_seconds(os.getpid())
    started = time.perf_counter()
    await _offer(step, processes, window, first_n)
    offered_for = time.perf_counter() - started
    deadline = time.perf_counter() + DRAIN_SECONDS
    while time.perf_counter() < deadline and not step.answered <= step.received_at.keys():
        await asyncio.sleep(0.01)
    cpu = sum(procfs.cpu_seconds(p.pid) for p in processes) - cpu_before
    client_cpu = procfs.cpu_seconds(os.getpid()) - client_before
    busy_for = max(step.last_arrival, started + offered_for) - started
    agents.step = None

    latencies = [step.received_at[n] - t for n, t in step.sent_at.items() if n in step.received_at]
    delivered = len(latencies)
    outcome = {
        "agents": len(processes),
        "offered_msgs_per_s": rate,
        "window_s": window,
        "offered": len(step.sent_at),
        "answered": len(step.answered),
        "delivered": delivered,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p95_ms": percentile(latencies, 95) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies) * 1000 if latencies else float("nan"),
        "broker_cpu_ms_per_msg": cpu / delivered * 1000 if delivered else float("nan"),
        "broker_cpu_cores": cpu / busy_for,
        "lost": len(step.answered - step.received_at.keys()),
        "duplicates": step.duplicates,
        "errors": len(step.errors),
        "store_busy": step.store_busy,
        "overloaded": step.overloaded,
        "error_samples": step.errors[:5],
        "client_lag_max_ms": step.lag * 1000,
        "client_cpu_cores": client_cpu / busy_for,
    }
    progress(
        f"{rate:g} msg/s: p50 {outcome['p50_ms']:.0f} / p95 {outcome['p95_ms']:.0f} / p99 "
        f"{outcome['p99_ms']:.0f} ms, {outcome['broker_cpu_ms_per_msg']:.2f} ms CPU/msg, "
        f"{outcome['broker_cpu_cores']:.2f} cores (client {outcome['client_cpu_cores']:.2f}), lost {outcome['lost']}, dup {step.duplicates}, "
        f"errors {len(step.errors)} (STORE_BUSY {step.store_busy}, OVERLOADED {step.overloaded})"
    )
    return outcome


def _passes(outcome: dict[str, Any]) -> bool:
    return (
        outcome["p99_ms"] < P99_LIMIT_MS
        and outcome["lost"] == 0
        and outcome["errors"] == 0
        and outcome["delivered"] > 0
    )


async def _idle(processes: list[BrokerProcess], seconds: float, wait: float, progress: Progress) -> float:
    """Cores used by every process parked in receive(wait_seconds=wait), nothing to receive."""
    parked = [
        asyncio.create_task(p.call("receive", {"max_messages": 10, "wait_seconds": wait})) for p in processes
    ]
    await asyncio.sleep(1.0)  # every request reached its broker and made its first empty check
    cpu_before, t_before = sum(procfs.cpu_seconds(p.pid) for p in processes), time.perf_counter()
    await asyncio.sleep(seconds)
    cpu = sum(procfs.cpu_seconds(p.pid) for p in processes) - cpu_before
    elapsed = time.perf_counter() - t_before
    if any(t.done() for t in parked):
        raise RuntimeError("a parked receive returned before its wait ended")
    progress(f"idle: {len(processes)} parked processes used {cpu / elapsed:.4f} cores over {elapsed:.1f} s")
    # The parked calls must end (empty) before the load: one still waiting would lease messages.
    for result, _ in await asyncio.gather(*parked):
        if result["messages"]:
            raise RuntimeError("a parked receive got a message")
    return cpu / elapsed


async def _ack_in_receive(process: BrokerProcess) -> bool:
    tools, _ = await process.request("tools/list")
    for tool in tools["tools"]:
        if tool["name"] == "receive":
            return "ack" in tool["inputSchema"].get("properties", {})
    return False


async def run_load(run: Run) -> None:
    progress = Progress("load")
    size = 10 if run.quick else 50
    window = 2.0 if run.quick else 10.0
    idle_seconds = 2.0 if run.quick else 10.0
    rates = QUICK_RATES if run.quick else RATES
    db = run.db("load")

    progress(f"starting {size} broker processes")
    started = time.perf_counter()
    processes: list[BrokerProcess] = []
    for first in range(0, size, 10):  # in waves, so start-up does not crowd the two cores
        processes += await asyncio.gather(
            *(run.spawn(db, f"load-{i}") for i in range(first, min(size, first + 10)))
        )
    await processes[0].call("register_protocol", REGISTER)
    await asyncio.gather(
        *(p.call("connect", {"name": f"load-{i}", "protocols": SPEAKS}) for i, p in enumerate(processes))
    )
    ack_in_receive = await _ack_in_receive(processes[0])
    progress(
        f"{size} processes up in {time.perf_counter() - started:.1f} s; "
        f"acks ride on receive: {ack_in_receive}"
    )

    await asyncio.sleep(2.0)  # start-up work (first heartbeats, caches) out of the idle figure
    idle_wait = idle_seconds + 2 if run.quick else IDLE_WAIT
    idle_cores = await _idle(processes, idle_seconds, idle_wait, progress)

    agents = _Agents(processes, ack_in_receive)
    agents.start()
    steps: list[dict[str, Any]] = []
    best = 0.0
    first_n = 0
    try:
        for rate in rates:
            outcome = await _step(agents, rate, window, first_n, progress)
            first_n += int(window * rate) + 1
            steps.append(outcome)
            if not _passes(outcome):
                break
            best = rate
        if not any(s["offered_msgs_per_s"] == PLAN_RATE for s in steps) and not run.quick:
            steps.append(await _step(agents, PLAN_RATE, window, first_n, progress))
    finally:
        await agents.stop()
    run.details["load"] = {"agents": size, "ack_in_receive": ack_in_receive, "steps": steps}

    run.figure("load.agents", size, "")
    run.figure(
        "load.idle_cores",
        idle_cores,
        "cores",
        f"{size} processes parked in receive(wait_seconds={idle_wait:g}), nothing to receive",
    )
    run.figure(
        "load.max_rate_p99_under_500ms",
        best,
        "msg/s",
        f"highest offered rate of {', '.join(f'{r:g}' for r in rates)} with p99 < 500 ms, 0 lost, 0 errors",
    )
    plan = next((s for s in steps if s["offered_msgs_per_s"] == PLAN_RATE), steps[0])
    tag = "plan" if plan["offered_msgs_per_s"] == PLAN_RATE else "first"
    rate_note = f"{size} agents x {plan['offered_msgs_per_s']:g} msg/s for {window:g} s"
    for q in ("p50", "p95", "p99"):
        run.figure(f"load.{tag}_{q}_ms", plan[f"{q}_ms"], "ms", rate_note if q == "p50" else "")
    run.figure(
        f"load.{tag}_cpu_ms_per_msg",
        plan["broker_cpu_ms_per_msg"],
        "ms",
        f"brokers used {plan['broker_cpu_cores']:.2f} cores",
    )
    worst = steps[-1]
    run.figure(f"load.{tag}_lost", plan["lost"], "")
    run.figure("load.lost", sum(s["lost"] for s in steps), "", "over every rate offered")
    run.figure("load.duplicates", sum(s["duplicates"] for s in steps), "")
    run.figure(
        "load.errors",
        sum(s["errors"] for s in steps),
        "",
        "; ".join(worst["error_samples"])[:300],
    )
    run.figure("load.store_busy", sum(s["store_busy"] for s in steps), "")
    run.figure("load.overloaded", sum(s["overloaded"] for s in steps), "", "refused early past capacity")
    progress("stopping the processes")
    await run.close(*processes)
