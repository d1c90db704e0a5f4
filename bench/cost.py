"""6. Cost of a broker process: start-up, resident memory, CPU while idle in a long-poll.

* Start: process spawn -> ``initialize`` answer, median of several sequential starts; beside it the
  bare interpreter (``python -c`` writing one line), the floor for any Python server.
* Memory: VmRSS of each of two broker processes after a connect and a few sends, receives and acks.
* Idle CPU: utime+stime of a broker process (all threads) across one ``receive(wait_seconds=30)``
  that nothing answers (2 s with --quick); heartbeats and safety-net re-checks count, as they should.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from . import procfs
from .common import PROTOCOL, Progress, Run, drain, payload, session


async def _bare_python_start() -> float:
    spawned = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; sys.stdout.write('ready\\n')", stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    await proc.stdout.readline()
    ready = time.perf_counter() - spawned
    await proc.wait()
    return ready


async def run_cost(run: Run) -> None:
    progress = Progress("cost")
    starts = 2 if run.quick else 7
    idle_wait = 2.0 if run.quick else 30.0
    db = run.db("cost")

    progress(f"{starts} sequential starts, each beside a bare interpreter start; the last two stay up")
    broker_starts, bare_starts, kept = [], [], []
    for i in range(starts):
        bare_starts.append(await _bare_python_start())
        process = await run.spawn(db, f"start-{i}")
        broker_starts.append(process.initialized_at - process.spawned_at)
        if i >= starts - 2:
            kept.append(process)
        else:
            await run.close(process)
    a, b = kept
    rss_started = max(procfs.rss_mb(a.pid), procfs.rss_mb(b.pid))
    await session(a, "cost-a", register=True)
    await session(b, "cost-b")
    listed, _ = await a.call("list_sessions", {})
    pids = {s["name"]: s["pid"] for s in listed["sessions"]}
    if (pids.get("cost-a"), pids.get("cost-b")) != (a.pid, b.pid):
        raise RuntimeError(f"list_sessions reports pids {pids}, spawned {a.pid} and {b.pid}")
    idle_pid = pids["cost-b"]  # the broker's own word for its pid, as a host would get it
    for n in range(20):
        await a.call("send", {"to": "cost-b", "protocol": PROTOCOL, "payload": payload(n)})
        await b.call("send", {"to": "cost-a", "protocol": PROTOCOL, "payload": payload(n)})
    await drain(a)
    await drain(b)
    rss = max(procfs.rss_mb(a.pid), procfs.rss_mb(b.pid))
    private = max(procfs.private_mb(a.pid), procfs.private_mb(b.pid))

    progress(f"idle: one receive(wait_seconds={idle_wait:g}) with nothing to receive")
    receiving = asyncio.create_task(b.call("receive", {"max_messages": 10, "wait_seconds": idle_wait}))
    await procfs.until_asleep(idle_pid, at_least=0.05, at_most=1.0)
    cpu_before, t_before = procfs.cpu_seconds(idle_pid), time.perf_counter()
    result, _ = await receiving
    cpu_after, t_after = procfs.cpu_seconds(idle_pid), time.perf_counter()
    if result["messages"]:
        raise RuntimeError("the idle receiver got a message")
    idle_percent = (cpu_after - cpu_before) / (t_after - t_before) * 100
    await run.close(a, b)

    run.details["cost"] = {
        "start_s_each": broker_starts,
        "bare_python_start_s_each": bare_starts,
        "rss_mb_after_start": rss_started,
        "idle_window_s": t_after - t_before,
        "idle_cpu_s": cpu_after - cpu_before,
        "clock_ticks_per_s": procfs.CLOCK_TICKS,
    }
    run.figure(
        "cost.start_to_initialize_ms", statistics.median(broker_starts) * 1000, "ms", f"median of {starts}"
    )
    run.figure(
        "cost.python_start_ms",
        statistics.median(bare_starts) * 1000,
        "ms",
        "baseline: bare interpreter to first line",
    )
    run.figure(
        "cost.rss_mb",
        rss,
        "MB",
        f"max of two processes after a few calls; {rss_started:.0f} MB right after start",
    )
    run.figure("cost.private_mb", private, "MB", "USS: the part of RSS not shared with other processes")
    run.figure(
        "cost.idle_cpu_percent",
        idle_percent,
        "% core",
        f"{(cpu_after - cpu_before) * 1000:.0f} ms CPU over {t_after - t_before:.1f} s (clock tick {1000 // procfs.CLOCK_TICKS} ms)",
    )
    run.figure("cost.idle_wait_s", t_after - t_before, "s")
