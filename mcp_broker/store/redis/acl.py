"""What a broker needs from a Redis ACL user, so one user per namespace can be limited to it.

Redis checks every command against the user, those the Lua scripts call included, and every key
and pub/sub channel against the user's patterns. A namespace's keys and channels all start with
``mb:{<namespace>}:`` (``keys.py``), so ``~mb:{<ns>}:*`` and ``&mb:{<ns>}:*`` give a user that
namespace and nothing else. The README's recipe is ``setuser(...)``'s output; a test applies it.
"""

from __future__ import annotations

from .keys import Keys

# The commands the broker sends itself: a health check, the scripts, the durability check, the
# two plain reads, and the wake-ups. (redis-py also sends CLIENT SETINFO on Redis 7.2 and later;
# it ignores a refusal, and naming it here would make the line an error on 7.0.)
BROKER = (
    "ping",
    "select",
    "evalsha",
    "eval",
    "script|load",
    "config|get",
    "hget",
    "hmget",
    "publish",
    "subscribe",
    "unsubscribe",
)
# The commands the Lua scripts call (``scripts/*.lua``).
SCRIPTS = (
    "del", "exists", "expire", "hdel", "hget", "hgetall", "hincrby", "hkeys", "hlen", "hmget", "hset",
    "hvals", "incr", "llen", "lrange", "lrem", "rpush", "sadd", "scard", "smembers", "srem", "sunion",
    "xadd", "xdel", "xrange", "xrevrange", "zadd", "zcard", "zcount", "zrange", "zrangebyscore", "zrem",
    "zremrangebyscore", "zrevrangebyscore", "zscore",
)  # fmt: skip
COMMANDS = tuple(dict.fromkeys(BROKER + SCRIPTS))


def rules(namespace: str) -> list[str]:
    """The ACL rules of a user limited to ``namespace``: its keys, its channels, the broker's commands."""
    prefix = Keys(namespace).prefix
    return [
        "resetkeys",
        f"~{prefix}*",
        "resetchannels",
        f"&{prefix}*",
        "-@all",
        *(f"+{command}" for command in COMMANDS),
    ]


def setuser(user: str, password: str, namespace: str) -> str:
    """The ``ACL SETUSER`` line that creates (or resets) ``user`` for ``namespace``."""
    return " ".join(["ACL SETUSER", user, "reset", "on", f">{password}", *rules(namespace)])
