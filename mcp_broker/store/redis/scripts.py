"""The Lua scripts, one per store operation, each run atomically on the server by EVALSHA.

Every script in ``scripts/`` is sent with ``_lib.lua`` (the helpers they share) in front of it, and
with the namespace's prefix as its one key. A script never calls back into Python: it reads,
decides what the contract lets it decide (a guard, a depth, an idempotency key) and writes.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

NAMES = (
    "ack",
    "add",
    "agree",
    "all_dead",
    "append_chunk",
    "catalog",
    "charge",
    "claim",
    "dead",
    "end_session",
    "end_stream",
    "enqueue",
    "events",
    "heartbeat",
    "history",
    "lease",
    "open_stream",
    "overview",
    "peek",
    "prune",
    "purge_dead",
    "rate_states",
    "replay_dead",
    "reply",
    "requeue",
    "rows",
    "snapshot",
    "status",
    "streams",
    "take_reply",
)


def source(name: str) -> str:
    folder = resources.files(__package__) / "scripts"
    lib = (folder / "_lib.lua").read_text(encoding="utf-8")
    return lib + "\n" + (folder / f"{name}.lua").read_text(encoding="utf-8")


class Scripts:
    """The registered scripts of one client; redis-py loads each on first use (and after a restart)."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self._prefix = prefix
        self._scripts: dict[str, AsyncScript] = {n: client.register_script(source(n)) for n in NAMES}

    async def run(self, name: str, *args: Any) -> Any:
        return await self._scripts[name](keys=[self._prefix], args=args)
