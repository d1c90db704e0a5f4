"""One broker process's view of the shared store: the parts of the domain, composed.

The MCP layer calls the parts (``broker.catalog``, ``broker.sessions``, ``broker.messaging``,
``broker.requests``, ``broker.inbox``); none of them knows it sits behind MCP. Each part receives its collaborators
(store, notifier, binding, clock, liveness probe) and can be built alone in a test.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio

from .. import procs, schemas
from ..config import Settings, retention_cutoffs
from ..store import open_engine
from ..store.contract import Notifier, Store, StoreError
from ..store.spool import spooling
from .binding import Binding
from .catalog import Catalog
from .failures import public
from .history import History
from .inbox import Inbox
from .messaging import Messaging
from .presence import LivenessProbe, LocalProcesses, Presence
from .rates import RateLimiter
from .requests import Requests
from .sessions import Sessions
from .streams import Streams

log = logging.getLogger(__name__)
PRUNE_EVERY = 3600.0


class Broker:
    """A store, a notifier, at most one bound session, the parts that act on them, and background work."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
        identity: procs.Identity | None = None,
        probe: LivenessProbe | None = None,
    ) -> None:
        # Long on purpose: it wires every part to its collaborators, one constructor call each.
        self.store = store
        self.notifier = notifier
        self.settings = settings
        self.clock = clock
        self.identity = identity or procs.Identity.current(settings.host_id or None)
        self.owner = uuid.uuid4().hex  # this broker instance, as recorded on the session it holds
        limits = schemas.Limits(
            max_payload_bytes=settings.max_payload_bytes,
            max_schema_bytes=settings.max_schema_bytes,
            max_depth=settings.max_depth,
        )
        self.binding = Binding(notifier)
        self.presence = Presence(settings, probe or LocalProcesses(self.identity))
        self.catalog = Catalog(
            store,
            self.binding,
            self.presence,
            clock,
            limits,
            max_versions=settings.max_protocol_versions,
            max_adapters=settings.max_adapters,
        )
        self.limiter = RateLimiter(store, settings, clock)
        self.sessions = Sessions(
            store,
            self.binding,
            self.presence,
            self.identity,
            self.owner,
            clock,
            rates=self.limiter,
            max_sessions=settings.max_sessions,
        )
        self.inbox = Inbox(store, notifier, self.binding, self.owner, settings, clock)
        self.messaging = Messaging(
            store,
            notifier,
            self.binding,
            self.catalog,
            self.sessions,
            self.presence,
            self.limiter,
            settings,
            clock,
        )
        self.requests = Requests(
            store,
            notifier,
            self.binding,
            self.catalog,
            self.sessions,
            self.messaging,
            self.presence,
            self.limiter,
            clock,
        )
        self.streams = Streams(
            store, notifier, self.binding, self.catalog, self.presence, self.limiter, settings, clock
        )
        self.history = History(
            store,
            notifier,
            self.binding,
            self.sessions,
            self.presence,
            self.limiter,
            settings.max_inbox,
            clock,
        )
        self._inbox_listeners: list[Callable[[], Awaitable[None]]] = []

    @classmethod
    @contextlib.asynccontextmanager
    async def running(
        cls, settings: Settings, *, clock: Callable[[], float] = time.time
    ) -> AsyncIterator[Broker]:
        """Open the store, listen for wake-ups and heartbeat; on exit end the session cleanly."""
        store, notifier = open_engine(settings)
        store = spooling(store, notifier, settings)  # an outbox for sends while a network store is down
        try:
            await store.open()
        except StoreError as exc:
            raise public(exc) from exc
        broker = cls(store, notifier, settings, clock=clock)
        try:
            await notifier.open()
            async with anyio.create_task_group() as tg:
                tg.start_soon(notifier.listen)
                tg.start_soon(broker._housekeeping)
                tg.start_soon(broker._watch_inbox)
                try:
                    yield broker
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await broker.close()

    @property
    def session_id(self) -> str | None:
        return self.binding.session_id

    @property
    def session_name(self) -> str | None:
        return self.binding.name

    async def close(self) -> None:
        try:
            name = self.binding.name
            await self.sessions.end()
            if name is not None:
                log.info("session %s disconnected", name)
        finally:
            try:
                await self.notifier.close()
            finally:
                await self.store.close()

    def on_inbox_change(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Call ``listener`` whenever a message is stored for the bound session (wake-ups while it runs coalesce)."""
        self._inbox_listeners.append(listener)

    async def _watch_inbox(self) -> None:
        while True:
            await self.notifier.ticket().wait()
            if self.binding.session_id is None:
                continue
            for listener in list(self._inbox_listeners):
                try:
                    await listener()
                except Exception:
                    log.warning("an inbox listener failed", exc_info=True)

    async def _housekeeping(self) -> None:
        """Heartbeat the bound session, and now and then prune what retention no longer keeps."""
        next_prune = time.monotonic() + random.uniform(5, 60)
        next_idle_check = time.monotonic()
        while True:
            await anyio.sleep(self.settings.heartbeat_interval)
            try:
                if not await self.sessions.heartbeat():
                    log.warning("the session was taken over or ended elsewhere; unbound")
                if (
                    time.monotonic() >= next_idle_check
                ):  # a tenth of the idle time: aborts come that late at most
                    next_idle_check = time.monotonic() + self.settings.stream_idle_seconds / 10
                    await self.streams.abort_idle()
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY
                    now = self.clock()
                    before, sessions_before = retention_cutoffs(self.settings, now)
                    counts = await self.store.prune(before=before, sessions_before=sessions_before, now=now)
                    if any(counts.values()):
                        log.info("pruned %s", counts)
            except Exception:
                log.exception("housekeeping failed; will retry")
