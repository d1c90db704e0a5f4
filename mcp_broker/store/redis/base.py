"""The Redis engine's base: the client, the scripts, the durability check, and the one call path."""

from __future__ import annotations

import logging
from typing import Any

from redis.asyncio import Redis

from ..contract import Unavailable
from .connection import RedisUrl, check_durability, client, mapped
from .keys import Keys
from .scripts import Scripts

log = logging.getLogger(__name__)


class RedisBase:
    """A client with its pool, the namespace's keys and scripts; every operation is one script call."""

    def __init__(self, url: str, *, namespace: str | None = None, durability: str = "normal") -> None:
        self.location = RedisUrl.parse(url, namespace)
        self.url = self.location.shown
        self.keys = Keys(self.location.namespace)
        self.durability = durability
        self._client: Redis | None = None
        self._scripts: Scripts | None = None

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise Unavailable("the store is closed")
        return self._client

    async def open(self) -> None:
        self._client = client(self.location)
        self._scripts = Scripts(self._client, self.keys.prefix)
        try:
            with mapped(self.url):
                await self._client.ping()
                await check_durability(self._client, self.url, self.durability)
        except Unavailable:
            await self.close()
            raise

    async def close(self) -> None:
        if self._client is not None:
            found, self._client, self._scripts = self._client, None, None
            # aclose() from redis 5.0.1 on; close() before it (and deprecated after).
            await (getattr(found, "aclose", None) or found.close)()

    async def _run(self, script: str, *args: Any) -> Any:
        """Run one script: one atomic step on the server."""
        if self._scripts is None:
            raise Unavailable("the store is closed")
        with mapped(self.url):
            return await self._scripts.run(script, *args)

    async def _command(self, *args: Any) -> Any:
        """One plain command, for reads a single command answers."""
        with mapped(self.url):
            return await self.client.execute_command(*args)
