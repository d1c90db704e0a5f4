"""2. Send throughput over stdio, beside MCP ping round trips on the same connection.

Calls are sequential (one in flight), as a model calls tools. Blocks of sends and blocks of pings
alternate, and which goes first alternates too, so a noisy neighbour hits both alike. A second
process drains the recipient's inbox between blocks, outside the timed spans.
"""

from __future__ import annotations

import asyncio
import time

from .common import PROTOCOL, Progress, Run, drain, payload, session


async def run_throughput(run: Run) -> None:
    progress = Progress("throughput")
    block = 20 if run.quick else 100
    rounds = max(2, run.messages // block)
    db = run.db("throughput")
    sender, sink = await asyncio.gather(run.spawn(db, "sender"), run.spawn(db, "sink"))
    await session(sender, "tp-sender", register=True)
    await session(sink, "tp-sink")
    progress(f"{rounds} rounds of {block} sends and {block} pings, alternating")

    async def sends(start: int) -> float:
        t0 = time.perf_counter()
        for n in range(start, start + block):
            await sender.call("send", {"to": "tp-sink", "protocol": PROTOCOL, "payload": payload(n)})
        return time.perf_counter() - t0

    async def pings() -> float:
        t0 = time.perf_counter()
        for _ in range(block):
            await sender.ping()
        return time.perf_counter() - t0

    await sends(-block)  # warm up
    await pings()
    await drain(sink)
    send_time = ping_time = 0.0
    ratios = []
    for r in range(rounds):
        if r % 2:
            s = await sends(r * block)
            p = await pings()
        else:
            p = await pings()
            s = await sends(r * block)
        send_time += s
        ping_time += p
        ratios.append(p / s)
        if await drain(sink) != block:
            raise RuntimeError("the sink did not receive every message of the block")
    await run.close(sender, sink)

    total = rounds * block
    send_rate, ping_rate = total / send_time, total / ping_time
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
    run.figure("throughput.send_per_ping", send_rate / ping_rate, "")
