"""Who this process is, and whether another broker process on this machine still runs."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

# Whether a pid still belongs to the process that recorded it, checked at most this often: reading
# /proc costs more than the rest of a send, and a pid is not reused within a second.
_START_TTL = 1.0
_starts: dict[int, tuple[float, str | None]] = {}


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), so a reused pid is told apart."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after its last ')' are fixed.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode() if len(fields) > 19 else None


def is_alive(pid: int, start: str | None) -> bool:
    """True if ``pid`` runs and, where the start time is known, is the same process that recorded it."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if start is not None:
        now_start = _recent_start(pid)
        if now_start is not None and now_start != start:
            return False
    return True


def _recent_start(pid: int) -> str | None:
    now = time.monotonic()
    seen = _starts.get(pid)
    if seen is None or now - seen[0] > _START_TTL:
        if len(_starts) >= 4096:
            _starts.clear()
        seen = _starts[pid] = (now, process_start(pid))
    return seen[1]


@dataclass(frozen=True)
class Identity:
    host: str
    pid: int
    start: str | None

    @classmethod
    def current(cls, host: str | None = None) -> Identity:
        """This process; ``host`` (the ``host_id`` setting) names the machine, else its hostname.

        Two processes with different hosts never check each other's pid, so tests can run two
        "machines" on one.
        """
        pid = os.getpid()
        return cls(host=host or socket.gethostname(), pid=pid, start=process_start(pid))
