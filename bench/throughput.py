"""2. Send throughput over stdio, beside MCP ping round trips on the same connection.

Calls are sequential (one in flight), as a model calls tools. Blocks of sends, pings, calls of a
no-op tool with send's signature and result (``bench.baseline_server``) and the same messages as
``send_many`` calls of up to ``BATCH`` take turns, in a rotating order, so a noisy neighbour hits all
alike. The sender's CPU (all threads) is read around each block. A second process drains the
recipient's inbox between rounds, outside the timed spans.
"""

from __future__ import annotations

import asyncio
import sys
import time

from . import procfs
from .common import PROTOCOL, Progress, Run, drain, payload, session

BATCH = 50  # messages per send_many call


async def run_throughput(run: Run) -> None:
    progress = Progress("throughput")
    block = 20 if run.quick else 100
    rounds = max(2, run.messages // block)
    db = run.db("throughput")
    sender, sink = await asyncio.gather(
        run.spawn(db, "sender", command=[sys.executable, "-m", "bench.baseline_server"]),
        run.spawn(db, "sink"),
    )
    await session(sender, "tp-sender", register=True)
    await session(sink, "tp-sink")
    progress(
        f"{rounds} rounds of {block} sends, {block} pings, {block} no-op tool calls and {block} messages "
        f"in send_many calls of {min(BATCH, block)}, rotating"
    )

    async def sends(start: int) -> float:
        t0 = time.perf_counter()
        for n in range(start, start + block):
            await sender.call("send", {"to": "tp-sink", "protocol": PROTOCOL, "payload": payload(n)})
        return time.perf_counter() - t0

    async def pings(_: int) -> float:
        t0 = time.perf_counter()
        for _ in range(block):
            await sender.ping()
        return time.perf_counter() - t0

    async def noops(start: int) -> float:
        t0 = time.perf_counter()
        for n in range(start, start + block):
            await sender.call("noop_send", {"to": "tp-sink", "protocol": PROTOCOL, "payload": payload(n)})
        return time.perf_counter() - t0

    async def batches(start: int) -> float:
        t0 = time.perf_counter()
        for low in range(start, start + block, BATCH):
            numbers = range(low, min(low + BATCH, start + block))
            items = [{"to": "tp-sink", "protocol": PROTOCOL, "payload": payload(n)} for n in numbers]
            answer, _ = await sender.call("send_many", {"messages": items})
            if answer["sent"] != len(items):
                raise RuntimeError(f"send_many refused {answer['refused']} of {len(items)} messages")
        return time.perf_counter() - t0

    kinds = {"send": sends, "ping": pings, "noop": noops, "send_many": batches}
    for measure in kinds.values():  # warm up
        await measure(-block)
        await drain(sink)
    spent = dict.fromkeys(kinds, 0.0)
    cpu = dict.fromkeys(kinds, 0.0)
    ratios = []
    for r in range(rounds):
        took = {}
        for kind in [*kinds][r % len(kinds) :] + [*kinds][: r % len(kinds)]:
            before = procfs.cpu_seconds(sender.pid)
            took[kind] = await kinds[kind](r * block)
            cpu[kind] += procfs.cpu_seconds(sender.pid) - before
            spent[kind] += took[kind]
            if kind in ("send", "send_many") and await drain(sink) != block:
                raise RuntimeError(f"the sink did not receive every message of the {kind} block")
        ratios.append(took["ping"] / took["send"])
    await run.close(sender, sink)

    total = rounds * block
    send_rate, ping_rate, noop_rate, batch_rate = (total / spent[kind] for kind in kinds)
    ratios.sort()
    run.details["throughput"] = {
        "calls_per_kind": total,
        "block": block,
        "per_round_ratio_min_median_max": [ratios[0], ratios[len(ratios) // 2], ratios[-1]],
    }
    run.figure("throughput.send_per_s", send_rate, "calls/s", "sequential send calls on one stdio connection")
    run.figure(
        "throughput.ping_per_s", ping_rate, "calls/s", "baseline: MCP ping round trips, same connection"
    )
    run.figure(
        "throughput.noop_per_s",
        noop_rate,
        "calls/s",
        "baseline: a tool with send's parameters and result that does nothing, same connection",
    )
    run.figure("throughput.send_per_ping", send_rate / ping_rate, "")
    run.figure(
        "throughput.noop_per_ping", noop_rate / ping_rate, "", "what FastMCP's path around a tool leaves"
    )
    run.figure(
        "throughput.send_many_msgs_per_s",
        batch_rate,
        "msg/s",
        f"the same messages in send_many calls of {min(BATCH, block)}, same connection",
    )
    run.figure("throughput.send_many_per_send", batch_rate / send_rate, "", "messages/s, send_many over send")
    for kind in ("send", "send_many"):
        run.figure(
            f"throughput.{kind}_cpu_ms_per_msg",
            cpu[kind] / total * 1000,
            "ms",
            "the sending broker's CPU (all threads) per message stored",
        )
