"""1. Delivery latency across processes: a receiver parked in a long-poll, a sender in another process.

One clock, the benchmark's ``time.perf_counter``: *end to end* runs from the send request leaving to
the receiver's answer arriving; *wake* from the send's answer arriving to the receiver's answer
arriving (it can be slightly negative: both answers race back over separate pipes). Beside them, the
baseline: an MCP ping round trip on the receiver's connection, the floor of any answer.
"""

from __future__ import annotations

import asyncio

from . import procfs
from .common import PROTOCOL, Progress, Run, payload, session, summary_ms


async def run_latency(run: Run) -> None:
    progress = Progress("latency")
    count = run.messages
    db = run.db("latency")
    sender, receiver = await asyncio.gather(run.spawn(db, "sender"), run.spawn(db, "receiver"))
    await session(sender, "latency-sender", register=True)
    await session(receiver, "latency-receiver")
    progress(f"{count} messages, receiver parked in receive(wait_seconds=30) before each send")

    async def one(n: int) -> tuple[float, float, float, float, bool]:
        receiving = asyncio.create_task(
            receiver.call("receive", {"max_messages": 1, "wait_seconds": 30, "protocol": PROTOCOL})
        )
        # Parked: 2 ms for the request to reach the broker and its empty check to run, then until
        # every thread of the receiver process sleeps (it waits on its doorbell), at most 50 ms.
        parked = await procfs.until_asleep(receiver.pid, at_least=0.002, at_most=0.05)
        if receiving.done():
            raise RuntimeError(f"receive returned before message {n} was sent: {receiving.result()[0]}")
        sent: list[float] = []
        _, send_answered = await sender.call(
            "send", {"to": "latency-receiver", "protocol": PROTOCOL, "payload": payload(n)}, sent=sent
        )
        result, received = await receiving
        messages = result["messages"]
        if len(messages) != 1 or messages[0]["payload"]["n"] != n:
            raise RuntimeError(f"expected message {n}, received {messages}")
        await receiver.call("ack", {"message_ids": [messages[0]["message_id"]]})
        ping_sent: list[float] = []
        _, pong = await receiver.request("ping", sent=ping_sent)
        return (
            received - sent[0],
            received - send_answered,
            send_answered - sent[0],
            pong - ping_sent[0],
            parked,
        )

    for n in range(min(20, count)):  # warm up: imports, caches, the first WAL pages
        await one(-1 - n)
    e2e, wake, send, ping = [], [], [], []
    not_parked = 0
    for n in range(count):
        a, b, c, d, parked = await one(n)
        e2e.append(a)
        wake.append(b)
        send.append(c)
        ping.append(d)
        not_parked += not parked
        if (n + 1) % max(1, count // 4) == 0:
            progress(f"{n + 1}/{count}")
    await run.close(sender, receiver)

    e, w, s, p = summary_ms(e2e), summary_ms(wake), summary_ms(send), summary_ms(ping)
    run.details["latency"] = {
        "end_to_end_ms": e,
        "wake_ms": w,
        "send_call_ms": s,
        "ping_ms": p,
        "receiver_not_seen_asleep": not_parked,
    }
    run.figure("latency.messages", count, "")
    for q in ("p50", "p95", "p99"):
        run.figure(f"latency.e2e_{q}_ms", e[q], "ms")
    for q in ("p50", "p95", "p99"):
        run.figure(f"latency.wake_{q}_ms", w[q], "ms")
    run.figure(
        "latency.send_call_p50_ms", s["p50"], "ms", "the send call alone: end to end = send call + wake"
    )
    run.figure(
        "latency.ping_p50_ms",
        p["p50"],
        "ms",
        "baseline: MCP ping round trip on the receiver's connection, measured between messages",
    )
    run.figure("latency.ping_p99_ms", p["p99"], "ms")
