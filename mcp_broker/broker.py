"""The domain: register, discover, connect, negotiate, send, broadcast, receive, ack, disconnect.

A ``Broker`` is one broker process's view of the shared store. It does not know it sits behind MCP:
the tool layer calls these methods and turns ``BrokerError`` into tool errors. The process's bound
session lives here (never in the MCP session, whose id is not stable on every protocol version).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from .config import Settings
from .core import MAX_WAIT_SECONDS, RECHECK_SECONDS
from .inbox import Inbox
from .messaging import Messaging
from .protocols import Protocols
from .sessions import Sessions
from .store import SqliteStore

__all__ = ["MAX_WAIT_SECONDS", "RECHECK_SECONDS", "Broker"]

log = logging.getLogger(__name__)
PRUNE_EVERY = 3600.0


class Broker(Protocols, Sessions, Messaging, Inbox):
    """One broker process: a store, a doorbell, at most one bound session, and its background work."""

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, settings: Settings) -> AsyncIterator[Broker]:
        """Open the store, listen for doorbells and heartbeat; on exit end the session cleanly."""
        store = SqliteStore(settings.db, durability=settings.durability, busy_budget=settings.lock_timeout)
        await store.open()
        broker = cls(store, settings)
        broker.doorbell.open()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(broker.doorbell.listen)
                tg.start_soon(broker._housekeeping)
                tg.start_soon(broker._watch_inbox)
                try:
                    yield broker
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await broker.close()

    async def close(self) -> None:
        try:
            if self.session_id is not None:
                await self.store.end_session(self.session_id, self.owner, self.clock())
                log.info("session %s disconnected", self.session_name)
        finally:
            self.session_id = self.session_name = None
            self.doorbell.close()
            await self.store.close()

    def on_inbox_change(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Call ``listener`` whenever a message is stored for the bound session (rings while it runs coalesce)."""
        self._inbox_listeners.append(listener)

    async def _watch_inbox(self) -> None:
        while True:
            await self.doorbell.ticket().wait()
            if self.session_id is None:
                continue
            for listener in list(self._inbox_listeners):
                try:
                    await listener()
                except Exception:
                    log.warning("an inbox listener failed", exc_info=True)

    async def _housekeeping(self) -> None:
        """Heartbeat the bound session, and now and then prune what retention no longer keeps."""
        next_prune = time.monotonic() + random.uniform(5, 60)
        while True:
            await anyio.sleep(self.settings.heartbeat_interval)
            try:
                if self.session_id is not None and not await self.store.heartbeat(
                    self.session_id, self.owner, self.clock()
                ):
                    log.warning("session %s was taken over or ended elsewhere; unbinding", self.session_name)
                    self.session_id = self.session_name = None
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    counts = await self.store.prune(
                        before=self.clock() - self.settings.retention_days * 86400
                    )
                    if any(counts.values()):
                        log.info("pruned %s", counts)
            except Exception:
                log.exception("housekeeping failed; will retry")
