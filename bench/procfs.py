"""What Linux says about a process: resident memory, CPU time, and whether it is asleep."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory (VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def private_mb(pid: int) -> float:
    """Memory only this process holds (USS: private clean + dirty pages), what each extra broker costs."""
    total = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith(("Private_Clean:", "Private_Dirty:")):
            total += int(line.split()[1])
    return total / 1024


def _stat_fields(path: str) -> list[str]:
    text = Path(path).read_text()
    return text[text.rindex(")") + 2 :].split()  # the command name may contain spaces


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of every thread of the process so far."""
    fields = _stat_fields(f"/proc/{pid}/stat")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15 of stat)


def all_threads_asleep(pid: int) -> bool:
    """True when no thread of the process is running or runnable."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return False
    for tid in tasks:
        try:
            state = _stat_fields(f"/proc/{pid}/task/{tid}/stat")[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if state not in ("S", "D", "I"):
            return False
    return True


async def until_asleep(pid: int, *, at_least: float, at_most: float) -> bool:
    """Wait ``at_least`` seconds, then until every thread of ``pid`` sleeps twice in a row (or ``at_most``)."""
    start = time.perf_counter()
    await asyncio.sleep(at_least)
    calm = 0
    while time.perf_counter() - start < at_most:
        calm = calm + 1 if all_threads_asleep(pid) else 0
        if calm >= 2:
            return True
        await asyncio.sleep(0.0005)
    return False


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
