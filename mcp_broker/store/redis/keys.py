"""Where a namespace's state lives in Redis: one prefix with a hash tag, and one channel per session.

Every key of a namespace starts with ``mb:{<namespace>}:``. The braces are a Redis Cluster hash tag,
so all of a namespace's keys sit in one slot and a script may touch any of them. The Lua scripts
build the keys below the prefix (the table is in the package docstring); Python names only the
few that plain commands read.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config import DEFAULT_NAMESPACE, NAMESPACE

__all__ = ["DEFAULT_NAMESPACE", "Keys"]


@dataclass(frozen=True)
class Keys:
    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        # No glob characters either, so an ACL key pattern ``~mb:{<ns>}:*`` matches this namespace alone.
        if not NAMESPACE.fullmatch(self.namespace):
            raise ValueError(
                f"namespace {self.namespace!r}: use 1 to 32 of a-z, 0-9, '_' and '-', "
                "starting with a letter or digit"
            )

    @property
    def prefix(self) -> str:
        """``KEYS[1]`` of every script: the hash tag that routes it, and the start of every key."""
        return f"mb:{{{self.namespace}}}:"

    def protocol_rows(self, name: str) -> str:
        return f"{self.prefix}pr:{name}"

    def message(self, message_id: str) -> str:
        return f"{self.prefix}m:{message_id}"

    def bell(self, session_id: str) -> str:
        """The pub/sub channel that wakes the process holding ``session_id``."""
        return f"{self.prefix}bell:{session_id}"

    @property
    def traffic(self) -> str:
        """The pub/sub channel every notify also publishes to, for processes that watch all traffic."""
        return f"{self.prefix}traffic"
