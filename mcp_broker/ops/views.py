"""What people's commands read and steer, as plain JSON-able values: the ``--json`` shapes.

A ``Views`` reads the store the hosts' processes share through the contract alone (so it works on
every engine) and as no session: it never leases or acks. Each method returns one command's answer;
``render.py`` turns the same values into tables. Times are ISO 8601 UTC, like every tool result.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from packaging.version import Version

from .. import config, procs
from ..domain.inbox import delivery_status
from ..domain.presence import LocalProcesses, Presence
from ..domain.rates import RateLimiter
from ..models import Priority, iso
from ..store import sqlite_path
from ..store.contract import Event, EventKind, EventQuery, InboxRow, Notifier, SessionRow, Store
from ..store.features import HistoryEntry, HistoryQuery

MAX_REPLAY_LOOKUP = 200  # events read per replayed id to find whom to wake


class NotFound(LookupError):
    """A name the store does not know; the message says which."""


class Views:
    """The store at a glance, for people: sessions, traffic, protocols, inboxes, dead letters."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier | None,
        settings: config.Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.settings = settings
        self.clock = clock
        self.presence = Presence(settings, LocalProcesses(procs.Identity.current(settings.host_id or None)))
        self.rates = RateLimiter(store, settings, clock)

    # --- reads ---------------------------------------------------------------------------------

    async def sessions(self) -> dict[str, Any]:
        """``{"sessions": [SessionInfo...]}``: the shape of the ``list_sessions`` tool."""
        now = self.clock()
        rows = await self.store.list_sessions(now)
        rates = await self.rates.infos()
        infos = [self.presence.info(r, now).model_copy(update={"rate": rates.get(r.id)}) for r in rows]
        return {"sessions": [info.model_dump(mode="json") for info in infos]}

    async def status(self) -> dict[str, Any]:
        now = self.clock()
        sessions = (await self.sessions())["sessions"]
        overview = await self.store.overview(now)
        by_status = {s: 0 for s in ("active", "stale", "disconnected")}
        for session in sessions:
            by_status[session["status"]] = by_status.get(session["status"], 0) + 1
        oldest = overview.oldest_waiting_at
        return {
            "store": self._store_info(),
            "sessions": sessions,
            "by_status": by_status,
            "waiting": overview.waiting,
            "dead_letters": overview.dead_letters,
            "oldest_waiting_at": iso(oldest),
            "oldest_waiting_age_seconds": None if oldest is None else round(max(0.0, now - oldest), 3),
            "last_activity": iso(overview.last_event_at),
        }

    def _store_info(self) -> dict[str, Any]:
        path = sqlite_path(self.settings.store)
        info: dict[str, Any] = {
            "url": self.store.url,
            "engine": "sqlite" if path is not None else "redis",
            "durability": self.settings.durability,
        }
        if path is not None:
            sizes = {}
            for suffix in ("", "-wal"):
                try:
                    sizes[suffix] = os.stat(f"{path}{suffix}").st_size
                except OSError:
                    sizes[suffix] = 0
            info["size_bytes"] = sizes[""]
            info["wal_bytes"] = sizes["-wal"]
        return info

    async def protocols(self, name: str | None = None) -> dict[str, Any]:
        """``{"protocols": [{"name", "versions": [...newest first], "adapters": [...]}]}``."""
        rows = await self.store.list_protocols(name)
        adapters = await self.store.list_adapters(name)
        if name is not None and not rows:
            raise NotFound(f"no protocol {name!r}; `mcp-broker protocols` lists them")
        families: dict[str, dict[str, Any]] = {}
        for row in sorted(rows, key=lambda r: (r.name, Version(r.version)), reverse=True):
            family = families.setdefault(row.name, {"name": row.name, "versions": [], "adapters": []})
            family["versions"].append(
                {
                    "version": row.version,
                    "capabilities": row.capabilities,
                    "description": row.metadata.get("description"),
                    "tags": row.metadata.get("tags", []),
                    "registered_at": iso(row.registered_at),
                }
            )
        for adapter in adapters:
            if adapter.protocol in families:
                families[adapter.protocol]["adapters"].append(
                    {
                        "from_version": adapter.from_version,
                        "to_version": adapter.to_version,
                        "steps": adapter.steps,
                    }
                )
        return {"protocols": sorted(families.values(), key=lambda f: f["name"])}

    async def protocol_version(self, name: str, version: str) -> dict[str, Any]:
        """One version in full: ``{"name", "version", "capabilities", "metadata", "schema", "response_schema"}``."""
        row = await self.store.get_protocol(name, version)
        if row is None:
            known = ", ".join(sorted((r.version for r in await self.store.list_protocols(name)), key=Version))
            raise NotFound(f"no protocol {name!r} {version}; registered versions: {known or 'none'}")
        return {
            "name": row.name,
            "version": row.version,
            "capabilities": row.capabilities,
            "metadata": row.metadata,
            "registered_at": iso(row.registered_at),
            "schema": json.loads(row.schema),
            "response_schema": json.loads(row.response_schema) if row.response_schema else None,
        }

    async def session(self, name: str) -> SessionRow:
        row = await self.store.find_session(name, is_id=False, now=self.clock())
        if row is None:
            raise NotFound(f"no session {name!r}; `mcp-broker sessions` lists them")
        return row

    async def inbox(self, name: str, limit: int = 50) -> dict[str, Any]:
        """What waits for one session, oldest first within priority, without leasing anything."""
        row = await self.session(name)
        now = self.clock()
        rows = await self.store.peek(row.id, limit, now)
        return {"session": row.name, "messages": [_message(r, now) for r in rows]}

    async def dead_letters(self, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        page = await self.store.all_dead_letters(limit=limit, cursor=cursor)
        return {
            "dead_letters": [{**_message(r, self.clock()), "recipient": r.recipient_name} for r in page.rows],
            "next_cursor": page.next_cursor,
        }

    async def history(
        self,
        session: str | None = None,
        *,
        peer: str | None = None,
        protocol: str | None = None,
        direction: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        """One session's sent and received messages (the ``history`` tool's shape, paginated), or
        with no session what every session sent, newest first (narrow it with since/until)."""
        now = self.clock()
        peer_id = (await self.session(peer)).id if peer is not None else None
        if session is not None:
            me = await self.session(session)
            query = HistoryQuery(peer_id, protocol, direction, since, until, limit, cursor)
            page = await self.store.history(me.id, query)
            return {"session": me.name, "messages": [_history(e, now) for e in page.entries],
                    "next_cursor": page.next_cursor}  # fmt: skip
        entries: list[HistoryEntry] = []
        for row in await self.store.list_sessions(now):
            sent = HistoryQuery(peer_id, protocol, "sent", since, until, limit)
            entries += (await self.store.history(row.id, sent)).entries
        entries.sort(key=lambda e: e.message.created_at, reverse=True)
        return {"session": None, "messages": [_history(e, now) for e in entries[:limit]], "next_cursor": None}

    # --- steering ------------------------------------------------------------------------------

    async def replay(self, message_ids: Sequence[str]) -> dict[str, Any]:
        """Queue the dead letters of these messages again (fresh attempts, no expiry), and wake the
        processes of their recipients. ``{"replayed": {id: deliveries moved}}``."""
        now = self.clock()
        moved = await self.store.replay_dead(list(message_ids), now=now, max_inbox=self.settings.max_inbox)
        recipients: set[str] = set()
        for message_id, count in moved.items():
            if count:
                page = await self.store.events(EventQuery(message_id=message_id, limit=MAX_REPLAY_LOOKUP))
                recipients |= {e.recipient_id for e in page.events if e.kind == EventKind.replayed}
        if self.notifier is not None:
            self.notifier.notify(sorted(recipients))
        return {"replayed": {m: moved.get(m, 0) for m in message_ids}}

    async def purge(self, message_ids: Sequence[str]) -> dict[str, Any]:
        """Delete the dead letters of these messages. ``{"purged": {id: deliveries deleted}}``."""
        gone = await self.store.purge_dead(list(message_ids), now=self.clock())
        if self.notifier is not None:
            self.notifier.notify([])  # wakes watchers: the dashboard, a tail
        return {"purged": {m: gone.get(m, 0) for m in message_ids}}

    async def prune(self, older_than_days: float | None = None) -> dict[str, Any]:
        """Delete what retention no longer keeps, by the rule every broker process applies now and then
        (``older_than_days`` replaces both retentions)."""
        now = self.clock()
        before, sessions_before = config.retention_cutoffs(self.settings, now)
        if older_than_days is not None:
            before = sessions_before = now - older_than_days * 86400
        counts = await self.store.prune(before=before, sessions_before=sessions_before, now=now)
        days = self.settings.history_retention_days if older_than_days is None else older_than_days
        return {"older_than_days": days, "pruned": counts}


def _history(entry: HistoryEntry, now: float) -> dict[str, Any]:
    m = entry.message
    return {
        **_message(m, now),
        "direction": entry.direction,
        "replay_of": m.replay_of,
        "stream_id": m.stream_id,
        "stream_seq": m.stream_seq,
        "deliveries": [delivery_status(d, now).model_dump(mode="json") for d in entry.deliveries],
    }


def _message(row: InboxRow, now: float) -> dict[str, Any]:
    leased = row.state == "leased" and row.visible_at > now
    return {
        "message_id": row.message_id,
        "sender": row.sender_name,
        "protocol": row.protocol,
        "version": row.version,
        "kind": row.kind,
        "priority": Priority.from_rank(row.priority).value,
        "state": row.state,
        "attempts": row.attempts,
        "created_at": iso(row.created_at),
        "leased_until": iso(row.visible_at) if leased else None,
        "expires_at": iso(row.expires_at),
        "reason": row.reason,
        "payload": json.loads(row.payload),
    }


def event_dict(event: Event) -> dict[str, Any]:
    """One line of ``tail --json``."""
    return {
        "cursor": event.cursor,
        "at": iso(event.at),
        "kind": event.kind.value,
        "message_id": event.message_id,
        "sender": event.sender_name,
        "recipient": event.recipient_name,
        "protocol": event.protocol,
        "version": event.version,
        "delivered_version": event.delivered_version,
        "adapted_via": event.adapted_via,
        "attempt": event.attempt,
        "reason": event.reason,
        "sent_at": iso(event.created_at),
    }
