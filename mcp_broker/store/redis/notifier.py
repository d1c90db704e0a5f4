"""Wake-ups across machines: Redis pub/sub, one channel per session (``mb:{ns}:bell:<session id>``).

A sender publishes to each recipient's channel after its write; the process holding that session
is subscribed to its channel and wakes its long-polls. Every notify also publishes to the
namespace's ``traffic`` channel, which processes that ``watch`` (people's tools following all
traffic) subscribe to. Publishing is scheduled, never awaited by
the caller, and a lost wake-up costs only latency: receivers re-check the store on a slow timer,
and every (re)subscription wakes them once, for what was sent while no one listened.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

import anyio
from redis import exceptions as rx

from ..contract import StoreError
from .base import RedisBase

log = logging.getLogger(__name__)
BACKOFF_FIRST, BACKOFF_CAP = 0.1, 5.0
HEALTH_EVERY = 30.0


class RedisNotifier:
    """The ``Notifier`` for a Redis store: one pub/sub connection for the bound session's channel."""

    def __init__(self, store: RedisBase) -> None:
        self._store = store
        self._channel: str | None = None
        self._watching = False
        self._changed = anyio.Event()
        self._rebound = anyio.Event()
        self._reading: anyio.CancelScope | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self._down = False  # the last state logged, so each change is logged once

    async def open(self) -> None:
        pass  # the store's client connects on first use

    async def close(self) -> None:
        await self.bind(None)
        for task in list(self._publishing):
            task.cancel()

    async def bind(self, session_id: str | None) -> None:
        self._channel = None if session_id is None else self._store.keys.bell(session_id)
        self._resubscribe()

    def _channels(self) -> tuple[str, ...]:
        bell = () if self._channel is None else (self._channel,)
        return bell + ((self._store.keys.traffic,) if self._watching else ())

    def _resubscribe(self) -> None:
        if self._reading is not None:
            self._reading.cancel()  # ``listen`` leaves the old channels' connection
        self._rebound.set()
        self._rebound = anyio.Event()

    def notify(self, session_ids: Sequence[str]) -> None:
        channels = [self._store.keys.bell(s) for s in session_ids]
        if self._channel in channels or self._watching:
            self.poke()
        if self._channel in channels:
            channels.remove(self._channel)
        channels.append(self._store.keys.traffic)
        task = asyncio.get_running_loop().create_task(self._publish(channels))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def watch(self) -> None:
        if not self._watching:
            self._watching = True
            self._resubscribe()

    async def _publish(self, channels: list[str]) -> None:
        try:
            async with self._store.client.pipeline(transaction=False) as pipe:
                for channel in channels:
                    pipe.publish(channel, "!")
                await pipe.execute()
        except (rx.RedisError, OSError, StoreError) as exc:
            log.debug("wake-up not published (%s); receivers will find the message on their re-check", exc)
        except Exception:
            log.warning("wake-up not published", exc_info=True)

    def poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def ticket(self) -> anyio.Event:
        return self._changed

    async def listen(self) -> None:
        delay = BACKOFF_FIRST
        while True:
            channels, rebound = self._channels(), self._rebound
            if not channels:
                await rebound.wait()
                continue
            try:
                await self._follow(channels)
                delay = BACKOFF_FIRST
            except (rx.RedisError, OSError, StoreError) as exc:  # StoreError: the store not open yet
                if not self._down:
                    self._down = True
                    log.warning("wake-ups from Redis lost (%s); reconnecting with backoff", exc)
                with anyio.move_on_after(delay * (0.5 + random.random())):
                    await rebound.wait()
                delay = min(delay * 2, BACKOFF_CAP)

    async def _follow(self, channels: tuple[str, ...]) -> None:
        """Subscribe to ``channels`` and poke on each message, until they are no longer the ones wanted."""
        with anyio.CancelScope() as scope:
            self._reading = scope
            if channels != self._channels():
                return
            pubsub = self._store.client.pubsub()
            try:
                await pubsub.subscribe(*channels)
                if self._down:
                    self._down = False
                    log.warning("wake-ups from Redis restored")
                self.poke()  # what was sent while no one listened is found by the waiters' re-check
                while True:
                    # Not forever: each return lets redis-py's health check ping a silent connection.
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=HEALTH_EVERY)
                    if message is not None:
                        self.poke()
            finally:
                self._reading = None
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await (getattr(pubsub, "aclose", None) or pubsub.reset)()
