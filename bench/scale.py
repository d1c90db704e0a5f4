"""4. Scale: many broker processes sending and receiving at once, in a ring.

Process ``i`` sends to process ``i+1`` as fast as its answers come back (one send in flight per
process) while it long-polls its own inbox on the same connection, acking each batch. After the
window the senders stop and the receivers drain; every message id a send returned must then have
been acked (``lost`` counts those that were not). Processes are reused from one tier to the next
(10, then 40 more, then 50 more), so each is started once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from . import procfs
from .client import BrokerProcess
from .common import PROTOCOL, REGISTER, Progress, Run, payload, percentile, session

DRAIN_SECONDS = 60.0


async def _ring(processes: list[BrokerProcess], window: float, progress: Progress) -> dict[str, Any]:
    size = len(processes)
    sent_at: dict[str, float] = {}  # message id -> when its send request left
    received_at: dict[str, float] = {}  # message id -> when a receive answer first carried it
    acked: set[str] = set()
    errors: list[str] = []
    duplicates = 0
    stop = asyncio.Event()
    in_window = 0

    async def sender(i: int) -> None:
        nonlocal in_window
        process, to = processes[i], f"ring-{(i + 1) % size}"
        n = 0
        while not stop.is_set():
            stamp: list[float] = []
            try:
                result, arrived = await process.call(
                    "send", {"to": to, "protocol": PROTOCOL, "payload": payload(n)}, sent=stamp
                )
            except Exception as exc:
                errors.append(f"send from ring-{i}: {exc}")
                await asyncio.sleep(0.01)
                continue
            sent_at[result["message_id"]] = stamp[0]
            if arrived <= deadline:
                in_window += 1
            n += 1

    async def receiver(i: int) -> None:
        nonlocal duplicates
        process = processes[i]
        while True:
            ids: list[str] = []
            try:
                result, arrived = await process.call("receive", {"max_messages": 100, "wait_seconds": 0.5})
                ids = [m["message_id"] for m in result["messages"]]
                for message_id in ids:
                    if message_id in received_at:
                        duplicates += 1
                    else:
                        received_at[message_id] = arrived
                if ids:
                    answer, _ = await process.call("ack", {"message_ids": ids})
                    acked.update(
                        r["message_id"]
                        for r in answer["results"]
                        if r["status"] in ("acked", "already_acked")
                    )
            except Exception as exc:
                errors.append(f"receive/ack by ring-{i}: {exc}")
                await asyncio.sleep(0.01)
            if stop.is_set() and not ids and acked >= sent_at.keys():
                return

    receivers = [asyncio.create_task(receiver(i)) for i in range(size)]
    cpu_before = sum(procfs.cpu_seconds(p.pid) for p in processes)
    start = time.perf_counter()
    deadline = start + window
    senders = [asyncio.create_task(sender(i)) for i in range(size)]
    await asyncio.sleep(window)
    stop.set()
    await asyncio.gather(*senders)
    progress(f"{size} processes: window over, draining")
    _, still = await asyncio.wait(receivers, timeout=DRAIN_SECONDS)
    for task in still:
        task.cancel()
    await asyncio.gather(*receivers, return_exceptions=True)
    cpu = sum(procfs.cpu_seconds(p.pid) for p in processes) - cpu_before
    elapsed = time.perf_counter() - start

    latencies = [received_at[m] - t for m, t in sent_at.items() if m in received_at]
    rss = [procfs.rss_mb(p.pid) for p in processes]
    return {
        "processes": size,
        "window_s": window,
        "sent": len(sent_at),
        "sent_in_window": in_window,
        "msgs_per_s": in_window / window,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "errors": len(errors),
        "error_samples": errors[:5],
        "lost": len(sent_at.keys() - acked),
        "duplicates": duplicates,
        "broker_cpu_cores": cpu / elapsed,
        "rss_mb_max": max(rss),
    }


async def run_scale(run: Run) -> None:
    progress = Progress("scale")
    tiers = [10] if run.quick else [10, 50, 100]
    window = 1.0 if run.quick else 5.0
    db = run.db("scale")
    processes: list[BrokerProcess] = []
    results = []
    for tier in tiers:
        new = range(len(processes), tier)
        progress(f"starting {len(new)} broker processes (now {tier})")
        started = time.perf_counter()
        fresh = await asyncio.gather(*(run.spawn(db, f"ring-{i}") for i in new))
        if not processes:
            await fresh[0].call("register_protocol", REGISTER)
        await asyncio.gather(*(session(p, f"ring-{i}") for i, p in zip(new, fresh, strict=True)))
        processes.extend(fresh)
        progress(f"{tier} processes up in {time.perf_counter() - started:.1f} s; ring for {window:g} s")
        outcome = await _ring(processes, window, progress)
        results.append(outcome)
        note = f"{outcome['sent']} sent, {outcome['duplicates']} redelivered, brokers used {outcome['broker_cpu_cores']:.2f} cores"
        run.figure(f"scale.{tier}.msgs_per_s", outcome["msgs_per_s"], "msg/s", note)
        run.figure(f"scale.{tier}.p50_ms", outcome["p50_ms"], "ms")
        run.figure(f"scale.{tier}.p99_ms", outcome["p99_ms"], "ms")
        run.figure(f"scale.{tier}.errors", outcome["errors"], "", "; ".join(outcome["error_samples"])[:300])
        run.figure(f"scale.{tier}.lost", outcome["lost"], "")
        run.figure(f"scale.{tier}.rss_mb_max", outcome["rss_mb_max"], "MB")
    run.details["scale"] = results
    progress("stopping the processes")
    await run.close(*processes)
