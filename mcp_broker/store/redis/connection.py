"""The connection to Redis: the URL, the client and its pool, what errors mean, and durability.

Every redis-py exception becomes a contract error in ``store_error`` and nowhere else: a server
that cannot be reached is ``Unavailable`` (with a retry hint), one that is busy, loading or
read-only for a moment is ``Retryable``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff

from ..contract import Misconfigured, Retryable, StoreError, Unavailable
from .keys import DEFAULT_NAMESPACE, Keys

log = logging.getLogger(__name__)

SCHEMES = ("redis", "rediss", "unix")
TIMEOUT = 10.0  # seconds for one call, a script included, before it counts as busy
# Reconnect attempts within one call: enough for a pool whose connections died with a restarted
# server, short enough that a server that is down is answered as such within about a second.
RETRY = Retry(EqualJitterBackoff(cap=0.5, base=0.05), retries=3)
# Answers that mean "not now": a script still running, a replica promoted or loading its data.
BUSY_REPLIES = ("BUSY", "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")


@dataclass(frozen=True)
class RedisUrl:
    """A store URL taken apart: what redis-py connects to, the namespace, and the URL for people."""

    connect: str  # for redis-py, without the query parameters that are ours
    namespace: str
    shown: str  # without the password

    @classmethod
    def parse(cls, url: str, namespace: str | None = None) -> RedisUrl:
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"not a Redis URL: {url!r}")
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k == "namespace"}
        theirs = [(k, v) for k, v in query if k != "namespace"]
        if parts.scheme == "unix":
            if not parts.path.startswith("/"):
                raise ValueError(f"use an absolute socket path: unix:///path/to/redis.sock (got {url!r})")
        elif parts.path not in ("", "/") and not parts.path.lstrip("/").isdigit():
            raise ValueError(f"the database is a number: redis://host:6379/0 (got {url!r})")
        named = ours.get("namespace")
        if namespace is not None and named is not None and named != namespace:
            raise ValueError(
                f"the store URL names namespace {named!r} but the namespace setting is {namespace!r}; "
                "make them agree, or drop ?namespace= from the URL"
            )
        chosen = Keys(namespace or named or DEFAULT_NAMESPACE).namespace  # checks it
        netloc = parts.netloc
        public = [(k, v) for k, v in theirs if k != "password"]  # redis-py also takes it as ?password=
        if parts.password is not None:
            user = parts.username or ""
            netloc = (f"{user}@" if user else "") + netloc.rpartition("@")[2]
        return cls(
            connect=_unsplit(parts.scheme, parts.netloc, parts.path, theirs),
            namespace=chosen,
            shown=_unsplit(parts.scheme, netloc, parts.path, [*public, ("namespace", chosen)]),
        )


def _unsplit(scheme: str, netloc: str, path: str, query: list[tuple[str, str]]) -> str:
    # Not urlunsplit: it writes unix:/path for an empty host, and people (and redis-py) expect unix:///path.
    return f"{scheme}://{netloc}{path}" + (f"?{urlencode(query)}" if query else "")


def client(url: RedisUrl) -> Redis:
    """A client with its own connection pool; connections are made on first use."""
    return Redis.from_url(
        url.connect,
        decode_responses=True,
        socket_timeout=TIMEOUT,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        retry=RETRY,
        retry_on_error=[rx.ConnectionError, rx.TimeoutError],
    )


def store_error(exc: rx.RedisError, where: str) -> StoreError:
    """The contract's error for what redis-py raised."""
    text = str(exc)
    if isinstance(exc, rx.BusyLoadingError | rx.TimeoutError) or text.startswith(BUSY_REPLIES):
        return Retryable(f"Redis at {where} is busy ({text or type(exc).__name__}). Retry shortly.")
    if isinstance(exc, rx.AuthenticationError | rx.AuthorizationError | rx.NoPermissionError):
        return Unavailable(
            f"Redis at {where} refused this broker ({text}). Check the user and password in the URL "
            "and the ACL rules for its keys and commands."
        )
    if isinstance(exc, rx.ConnectionError):
        return Unavailable(
            f"cannot reach Redis at {where} ({text or type(exc).__name__}). "
            "Retry in a few seconds; if it persists, check that the server runs."
        )
    if isinstance(exc, rx.OutOfMemoryError):
        return Unavailable(f"Redis at {where} is out of memory ({text}); raise maxmemory or free space.")
    return Unavailable(f"Redis at {where} failed: {text or type(exc).__name__}")


@contextlib.contextmanager
def mapped(where: str) -> Iterator[None]:
    try:
        yield
    except rx.RedisError as exc:
        raise store_error(exc, where) from exc
    except OSError as exc:  # a socket error redis-py did not wrap
        raise Unavailable(f"cannot reach Redis at {where} ({exc}). Retry in a few seconds.") from exc


# What a stored message survives, by (appendonly, appendfsync).
SURVIVES = {
    ("yes", "always"): "a Redis crash and a power loss (AOF, fsync on every write)",
    ("yes", "everysec"): "a Redis crash; a power loss or OS crash may cost the last second of writes",
    ("yes", "no"): "a Redis crash; a power loss may cost the writes the OS had not yet flushed (~30 s)",
}


async def check_durability(redis: Redis, where: str, durability: str) -> None:
    """Log what a stored message survives on this server; refuse ``full`` unless it is fsynced always."""
    try:
        found: dict[Any, Any] = {}
        for name in ("appendonly", "appendfsync"):
            found.update(await redis.config_get(name))
    except rx.ResponseError as exc:  # CONFIG refused by an ACL, or renamed away
        if durability == "full":
            raise Misconfigured(
                f"durability=full, but this broker may not read the persistence settings of Redis at "
                f"{where} ({exc}). Allow it `CONFIG GET` (ACL: +config|get), or use durability=normal."
            ) from exc
        log.warning("could not check what Redis at %s persists (%s); assuming nothing", where, exc)
        return
    pair = (str(found.get("appendonly", "no")), str(found.get("appendfsync", "everysec")))
    if durability == "full" and pair != ("yes", "always"):
        raise Misconfigured(
            f"durability=full needs Redis at {where} to fsync every write, but it has appendonly "
            f"{pair[0]}, appendfsync {pair[1]}. Set `appendonly yes` and `appendfsync always` "
            "(CONFIG SET, or redis.conf), or use durability=normal."
        )
    survives = SURVIVES.get(pair)
    if survives is None:
        log.warning(
            "Redis at %s has no append-only file (appendonly %s): a Redis crash or restart loses every "
            "message stored since its last snapshot. Set `appendonly yes` to keep them.",
            where,
            pair[0],
        )
    else:
        log.info("Redis at %s: a stored message survives %s", where, survives)
