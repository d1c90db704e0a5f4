"""Which broker process belongs to the same host session as this process (a hook, usually).

A host such as Claude Code spawns its MCP servers and its hook commands as its own children (a hook may sit
under a ``sh -c``). So the broker process of *this* host session is the broker whose ancestry meets ours
soonest: walk our parent chain, and for each ancestor look for broker processes below it. Brokers of other
host sessions meet us only higher up (at a shell, a terminal multiplexer, init). When two brokers meet us at
the same ancestor, the one nearer to that ancestor wins (a ``claude`` started inside another one's shell
tool has its broker one level further down).

The process table comes from ``/proc`` on Linux and from ``ps`` elsewhere; where neither works (Windows),
the table is empty and callers fall back to other ways of telling.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    argv: tuple[str, ...]


def _from_proc() -> dict[int, Proc]:
    table: dict[int, Proc] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # exited meanwhile, or not ours to read
        fields = stat[stat.rfind(b")") + 2 :].split()  # the name (field 2) may hold spaces and ')'
        if len(fields) < 2:
            continue
        argv = tuple(part.decode(errors="replace") for part in cmdline.split(b"\0") if part)
        table[int(entry)] = Proc(int(entry), int(fields[1]), argv)
    return table


def _from_ps() -> dict[int, Proc]:
    try:
        out = subprocess.run(
            ["ps", "-axww", "-o", "pid=,ppid=,command="],
            capture_output=True,
            text=True,
            timeout=3,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    table: dict[int, Proc] = {}
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0].isdigit() and parts[1].isdigit():
            # ps joins argv with spaces; good enough to recognise our command, not to split paths with spaces
            table[int(parts[0])] = Proc(
                int(parts[0]), int(parts[1]), tuple((parts[2] if len(parts) > 2 else "").split())
            )
    return table


def process_table() -> dict[int, Proc]:
    """Every process we can see: pid → (parent pid, argv)."""
    if sys.platform.startswith("linux") and os.path.isdir("/proc"):
        return _from_proc()
    if sys.platform == "win32":
        return {}
    return _from_ps()


def _skip_options(args: Sequence[str]) -> str | None:
    """The subcommand in a broker's arguments: the first word that is not an option or an option's value."""
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            return args[index + 1] if index + 1 < len(args) else None
        if arg.startswith("-"):
            # every broker option takes a value (--db PATH) except these; "--opt=value" carries its own
            index += 1 if ("=" in arg or arg in ("--version", "-h", "--help")) else 2
            continue
        return arg
    return None


def is_broker(argv: Sequence[str]) -> bool:
    """Whether ``argv`` runs an MCP-serving broker: ``mcp-broker [serve]`` or ``python -m mcp_broker``."""
    for index, arg in enumerate(argv):
        name = os.path.basename(arg)
        if name in ("mcp-broker", "mcp-broker.exe") or name.startswith("mcp-broker-script"):
            rest = argv[index + 1 :]
            break
        if arg == "-m" and index + 1 < len(argv) and argv[index + 1] in ("mcp_broker", "mcp_broker.cli"):
            rest = argv[index + 2 :]
            break
    else:
        return False
    command = _skip_options(rest)
    return command in (None, "serve")


def _is_root(table: Mapping[int, Proc], pid: int) -> bool:
    proc = table.get(pid)
    return pid == 1 or proc is None or proc.ppid == 0


def ancestors(table: Mapping[int, Proc], pid: int) -> list[int]:
    """``pid``'s parent, grandparent, ... up to the first one we cannot see (or init)."""
    chain: list[int] = []
    seen = {pid}
    current = table.get(pid)
    while current is not None and current.ppid > 0 and current.ppid not in seen:
        chain.append(current.ppid)
        seen.add(current.ppid)
        current = table.get(current.ppid)
    return chain


def nearest_brokers(table: Mapping[int, Proc], me: int) -> list[int]:
    """Broker processes of our own host session, nearest first; empty when none meets us below init.

    Only the brokers that meet our ancestry at the nearest ancestor are returned (several when a host runs
    more than one broker), ordered by how far below that ancestor they are.
    """
    mine = ancestors(table, me)
    rank = {pid: index for index, pid in enumerate(mine)}
    excluded = {me, *mine}
    meetings: list[tuple[int, int, int]] = []  # (our distance, its distance, pid)
    for proc in table.values():
        if proc.pid in excluded or not is_broker(proc.argv):
            continue
        for depth, ancestor in enumerate(ancestors(table, proc.pid)):
            if ancestor in rank:
                # Everything meets at init: that proves nothing, unless init is the host itself (a container
                # running Claude Code as pid 1), which shows as our parent or grandparent (under ``sh -c``).
                if rank[ancestor] <= 1 or not _is_root(table, ancestor):
                    meetings.append((rank[ancestor], depth, proc.pid))
                break
    if not meetings:
        return []
    nearest = min(m[0] for m in meetings)
    return [pid for _, _, pid in sorted(m for m in meetings if m[0] == nearest)]


def cwd_of(pid: int) -> str | None:
    """A process's working directory (Linux only; None elsewhere or when it is not ours)."""
    try:
        return os.path.realpath(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return None


def brokers_in(table: Mapping[int, Proc], directory: str, me: int) -> list[int]:
    """Broker processes working in ``directory`` (the host starts its servers in the project)."""
    target = os.path.realpath(directory)
    return sorted(
        p.pid for p in table.values() if p.pid != me and is_broker(p.argv) and cwd_of(p.pid) == target
    )
