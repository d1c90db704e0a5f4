"""What people's tools read and steer, without a session of their own: the hooks and doctor.

An ``Operator`` opens the store the hosts' processes share and reads through the contract, so it
works on every engine. It never leases or acks: a peek hides nothing from the agents.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import anyio

from .. import config, procs
from ..domain.presence import LocalProcesses, Presence
from ..models import Priority, iso
from ..store import open_engine
from ..store.contract import InboxRow, Store
from .doctor import SessionRecord
from .hooks import Peek, SessionRef, Waiting

ARRIVAL_POLL_SECONDS = 0.5


class Operator:
    """Reads for the hooks (the ``hooks.Inbox`` protocol) and for doctor."""

    def __init__(
        self, store: Store, settings: config.Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.clock = clock
        self.presence = Presence(settings, LocalProcesses(procs.Identity.current()))

    async def session_by_pid(self, host: str, pid: int) -> SessionRef | None:
        live = [
            r
            for r in await self.store.list_sessions(self.clock())
            if r.host == host and r.pid == pid and r.disconnected_at is None
        ]
        return SessionRef(live[0].id, live[0].name) if live else None

    async def session_by_name(self, name: str) -> SessionRef | None:
        row = await self.store.find_session(name, is_id=False, now=self.clock())
        return SessionRef(row.id, row.name) if row else None

    async def waiting(self, session_id: str, limit: int) -> Peek:
        now = self.clock()
        ready = [r for r in await self.store.peek(session_id, 1000, now) if r.visible_at <= now]
        return Peek(total=len(ready), messages=[_waiting(r) for r in ready[:limit]])

    async def wait_for_arrival(self, session_id: str, timeout: float) -> Waiting | None:
        """The first message that starts waiting after the call began, or None after ``timeout``.

        Wake-ups go to the process holding the session, so this reader checks the inbox index twice
        a second instead: one small read, a few tens of microseconds of CPU on SQLite.
        """
        seen = {w.message_id for w in (await self.waiting(session_id, 1000)).messages}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await anyio.sleep(min(ARRIVAL_POLL_SECONDS, max(0.0, deadline - time.monotonic())))
            for message in (await self.waiting(session_id, 1000)).messages:
                if message.message_id not in seen:
                    return message
        return None

    async def session_records(self) -> list[SessionRecord]:
        now = self.clock()
        return [
            SessionRecord(
                name=r.name,
                status=self.presence.status_of(r, now).value,
                host=r.host,
                pid=r.pid,
                last_seen=datetime.fromtimestamp(r.last_seen, UTC),
                process_alive=self.presence.probe.alive(r),
                version=r.broker_version,
            )
            for r in await self.store.list_sessions(now)
        ]


@contextlib.asynccontextmanager
async def opened(store_url: str | None) -> AsyncIterator[Operator]:
    """An ``Operator`` on the store ``store_url`` names (None: as the environment configures it)."""
    settings = config.load(None)
    if store_url is not None:
        settings = config.Settings(**{**vars(settings), "store": store_url})
    store, _ = open_engine(settings)
    await store.open()
    try:
        yield Operator(store, settings)
    finally:
        await store.close()


async def read_sessions(store_url: str | None) -> list[SessionRecord]:
    async with opened(store_url) as operator:
        return await operator.session_records()


def _waiting(row: InboxRow) -> Waiting:
    return Waiting(
        message_id=row.message_id,
        sender=row.sender_name,
        protocol=row.protocol,
        version=row.version,
        created_at=iso(row.created_at) or "",
        payload=json.loads(row.payload),
        priority=Priority.from_rank(row.priority).value,
    )
