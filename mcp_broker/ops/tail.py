"""``mcp-broker tail``: follow the store's event log as it grows, across every process.

It wakes the way a receiver does: the notifier's ``watch`` makes every process's notify ring this
one too, and a ticket taken *before* each read means a ring during the read is not missed. A slow
recheck (``RECHECK_SECONDS``) is the safety net for a lost ring; there is no fast polling.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import anyio

from ..store.contract import Event, EventQuery, Notifier, Store

RECHECK_SECONDS = 5.0
PAGE = 500
_AGO = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: float) -> float:
    """``10m``, ``2h``, ``1d``, ``90s`` (ago), or an ISO 8601 time (UTC unless it says otherwise)."""
    match = _AGO.fullmatch(text.strip())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"--since takes 10m, 2h, 1d or an ISO 8601 time, not {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@dataclass(frozen=True)
class Follow:
    """What to follow: a session (as sender or recipient), a protocol, from ``since`` or from now."""

    session_id: str | None = None
    protocol: str | None = None
    since: float | None = None


async def start_cursor(store: Store, follow: Follow) -> tuple[str | None, list[Event]]:
    """Where following begins, and the events already past it that ``since`` asks for."""
    query = EventQuery(session_id=follow.session_id, protocol=follow.protocol, limit=PAGE)
    if follow.since is None:
        head = await store.events(replace(query, limit=1))
        return head.cursor, []
    backlog: list[Event] = []
    page = await store.events(replace(query, since=follow.since))
    while True:
        backlog += page.events
        if len(page.events) < PAGE or page.cursor is None:
            return page.cursor, backlog
        page = await store.events(replace(query, after=page.cursor))


async def follow(
    store: Store,
    notifier: Notifier,
    what: Follow,
    emit: Callable[[Event], None],
    *,
    recheck: float = RECHECK_SECONDS,
    ready: Callable[[], None] = lambda: None,
) -> None:
    """Emit every event from the start until cancelled; ``ready`` is called once following has begun
    (what comes later is not missed)."""
    await notifier.watch()
    async with anyio.create_task_group() as tg:
        tg.start_soon(notifier.listen)
        cursor, backlog = await start_cursor(store, what)
        ready()
        for event in backlog:
            emit(event)
        query = EventQuery(session_id=what.session_id, protocol=what.protocol, limit=PAGE)
        while True:
            ticket = notifier.ticket()
            # no cursor yet: the store had no event when we began, so the latest ones are all new
            page = await store.events(replace(query, after=cursor))
            for event in page.events:
                emit(event)
            if page.cursor is not None:
                cursor = page.cursor
            if len(page.events) >= PAGE:
                continue
            with anyio.move_on_after(recheck):
                await ticket.wait()


def line(event: Event) -> str:
    """One event as one line: time, what, who to whom, protocol and version, the message, details."""
    when = datetime.fromtimestamp(event.at, UTC).strftime("%H:%M:%S.%f")[:-3]
    version = event.version
    if event.delivered_version and event.delivered_version != event.version:
        version = f"{event.version}→{event.delivered_version}"
    details = []
    if event.kind.value in ("leased", "acked", "released", "dead_lettered") and event.attempt:
        details.append(f"attempt {event.attempt}")
    if event.adapted_via:
        details.append(f"via {event.adapted_via}")
    if event.reason:
        details.append(event.reason)
    who = f"{event.sender_name or '?'} → {event.recipient_name or '?'}"
    tail = f"  ({', '.join(details)})" if details else ""
    return f"{when}  {event.kind.value:<13} {who}  {event.protocol} {version}  {event.message_id}{tail}"
